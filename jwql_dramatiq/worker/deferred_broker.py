"""The broker ``dramatiq.get_broker()`` returns before this package's broker is built.

``dramatiq jwql_dramatiq.actors`` imports the actors and then asks ``dramatiq.get_broker()`` for
the broker it will run. Importing must read no config and open no connection (monitors import the
actors too), so :mod:`jwql_dramatiq.actors` installs a :class:`DeferredBroker` as Dramatiq's
global broker. It holds nothing: each use passes on to :func:`jwql_dramatiq.broker.get_broker`,
which builds the real broker from the config on first call (without connecting). The CLI's first
use is emitting ``process_boot``, so a worker reads its config then, never at import.

Every method is written out (no ``__getattr__``) so the delegated interface is the documented
:class:`dramatiq.Broker` one and can be read and type-checked.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import Broker

from ..broker import current_broker, get_broker
from ..errors import ConfigError


class DeferredBroker(Broker):
    """Dramatiq's global broker until the real one is set: every use goes to the configured broker.

    A bad config raises :class:`jwql_dramatiq.worker.boot.WorkerConfigError` (a ``ConfigError`` and an
    ``ImportError``), which the ``dramatiq`` command line turns into exit 2.
    """

    def __init__(self) -> None:  # no Broker.__init__: the real broker holds the state
        #: The broker last resolved, once it has the worker middleware (every signal of every
        #: task comes through here, so the check is not repeated for it).
        self._resolved: Broker | None = None

    def resolve(self) -> Broker:
        """The configured broker, built (without connecting) on first call."""
        resolved = self._resolved
        if resolved is not None and current_broker() is resolved:
            return resolved
        from .boot import as_worker_config_error
        from .middleware import WorkerMiddleware

        try:
            broker = get_broker()
        except ConfigError as e:
            raise as_worker_config_error(e) from None
        if not any(isinstance(m, WorkerMiddleware) for m in broker.middleware):
            broker.add_middleware(WorkerMiddleware())  # boots the worker in after_process_boot; inert elsewhere
        self._resolved = broker
        return broker

    # -- state -------------------------------------------------------------------------------

    @property  # type: ignore[override]
    def middleware(self) -> list:  # noqa: D102
        return self.resolve().middleware

    @property  # type: ignore[override]
    def actors(self) -> dict:  # noqa: D102
        return self.resolve().actors

    @property  # type: ignore[override]
    def actor_options(self) -> set:  # noqa: D102
        return self.resolve().actor_options

    @property  # type: ignore[override]
    def queues(self) -> Any:  # noqa: D102
        return self.resolve().queues

    @property  # type: ignore[override]
    def delay_queues(self) -> set:  # noqa: D102
        return self.resolve().delay_queues

    # -- Broker's methods --------------------------------------------------------------------

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.resolve().emit_before(signal, *args, **kwargs)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.resolve().emit_after(signal, *args, **kwargs)

    def add_middleware(self, middleware, *, before=None, after=None) -> None:  # noqa: D102
        self.resolve().add_middleware(middleware, before=before, after=after)

    def close(self) -> None:  # noqa: D102
        self.resolve().close()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000):  # noqa: D102
        return self.resolve().consume(queue_name, prefetch, timeout)

    def declare_actor(self, actor) -> None:  # noqa: D102
        self.resolve().declare_actor(actor)

    def declare_queue(self, queue_name: str) -> None:  # noqa: D102
        self.resolve().declare_queue(queue_name)

    def enqueue(self, message, *, delay=None):  # noqa: D102
        return self.resolve().enqueue(message, delay=delay)

    def get_actor(self, actor_name: str):  # noqa: D102
        return self.resolve().get_actor(actor_name)

    def get_declared_actors(self) -> set[str]:  # noqa: D102
        return self.resolve().get_declared_actors()

    def get_declared_queues(self) -> set[str]:  # noqa: D102
        return self.resolve().get_declared_queues()

    def get_declared_delay_queues(self) -> set[str]:  # noqa: D102
        return self.resolve().get_declared_delay_queues()

    def get_results_backend(self):  # noqa: D102
        return self.resolve().get_results_backend()

    def flush(self, queue_name: str) -> None:  # noqa: D102
        self.resolve().flush(queue_name)

    def flush_all(self) -> None:  # noqa: D102
        self.resolve().flush_all()

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:  # noqa: D102
        self.resolve().join(queue_name, timeout=timeout)

    def __repr__(self) -> str:
        return "DeferredBroker()"


def install() -> None:
    """Make a :class:`DeferredBroker` Dramatiq's global broker, unless one is set already.

    Reads no config and opens no connection.
    """
    if dramatiq.broker.global_broker is None:
        dramatiq.set_broker(DeferredBroker())

