"""Actors declared without a broker, bound to the configured broker on first use.

``@actor`` records the function and its options and returns a :class:`DeferredActor`. The
real :class:`dramatiq.Actor` is declared when the broker is built (:func:`declare_all`), so
importing an actor module reads no config and opens no connection, yet ``ping.send()`` and
``ping.message()`` work as on any Dramatiq actor.

Every actor is declared with :class:`jwql_dramatiq.worker.middleware.ForkingActor`: in a worker
whose fresh-process executor is running, the worker's call goes to a forked child; otherwise the
function runs directly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import dramatiq

from .errors import JwqlDramatiqError
from .worker.forking_actor import ForkingActor

#: actor name -> the deferred actor, in declaration order.
REGISTRY: dict[str, "DeferredActor"] = {}

# The broker set up for this process (bind), and how to get one when none is yet (set_resolver):
# registered by jwql_dramatiq.broker, which imports this module, never the other way round.
_bound: dramatiq.Broker | None = None
_resolver: Callable[[], dramatiq.Broker] | None = None


def bind(broker: dramatiq.Broker) -> None:
    """Make ``broker`` the one actors declared from now on go to (the process's set-up broker)."""
    global _bound
    _bound = broker


def set_resolver(resolver: Callable[[], dramatiq.Broker]) -> None:
    """Set what builds the broker when an actor is used before any is set up (and declares them all)."""
    global _resolver
    _resolver = resolver


class DeferredActor:
    """A Dramatiq actor whose declaration waits for the broker.

    Calling it runs the function in this process; every other attribute (``send``,
    ``send_with_options``, ``message``, ``actor_name``, ...) is the real actor's.

    Parameters
    ----------
    fn : callable
        The task function.
    actor_name : str
        The stable name messages carry.
    options : dict
        Dramatiq actor options (``store_results``, ``max_retries``, ...).
    """

    def __init__(self, fn: Callable[..., Any], actor_name: str, options: dict[str, Any]) -> None:
        self.fn = fn
        self.actor_name = actor_name
        self.options = options
        self._actor: dramatiq.Actor | None = None
        functools.update_wrapper(self, fn)

    @property
    def actor(self) -> dramatiq.Actor:
        """The real actor, declared on the configured broker on first access."""
        if self._actor is None:
            if _resolver is None:
                raise JwqlDramatiqError(f"actor {self.actor_name!r} has no broker yet: import jwql_dramatiq.broker "
                                        "(or jwql_dramatiq.actors) and call setup_broker(), or send through shared_tasks")
            _resolver()  # builds the configured broker, which declares every registered actor
        assert self._actor is not None
        return self._actor

    def declare(self, broker: dramatiq.Broker, queue_name: str) -> dramatiq.Actor:
        """Declare the real actor on ``broker`` (called by :func:`declare_all`)."""
        options = {"queue_name": queue_name, **self.options}
        self._actor = dramatiq.actor(self.fn, broker=broker, actor_name=self.actor_name, actor_class=ForkingActor,
                                     **options)
        return self._actor

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.actor, name)

    def __repr__(self) -> str:
        return f"DeferredActor({self.actor_name!r})"


def actor(fn: Callable[..., Any] | None = None, *, actor_name: str | None = None, **options: Any):
    """Declare a task, like :func:`dramatiq.actor`, without touching the broker yet.

    Parameters
    ----------
    fn : callable, optional
        The task function (when used as ``@actor`` without parentheses).
    actor_name : str, optional
        Defaults to the function's name; message routing depends on it, so keep it stable.
    **options
        Dramatiq actor options; the queue name comes from the config unless given.

    Returns
    -------
    DeferredActor, or a decorator that makes one.
    """

    def decorate(f: Callable[..., Any]) -> DeferredActor:
        name = actor_name or f.__name__
        if name in REGISTRY and REGISTRY[name].fn is not f:
            raise ValueError(f"an actor named {name!r} is already registered")
        REGISTRY[name] = deferred = DeferredActor(f, name, options)
        broker = _bound
        if broker is not None:  # declared after the broker was set up (e.g. test actors)
            deferred.declare(broker, broker.jwql_config.queue_name)
        return deferred

    return decorate(fn) if fn is not None else decorate


def declare_all(broker: dramatiq.Broker, queue_name: str) -> None:
    """Declare every registered actor on ``broker``, on ``queue_name`` unless an actor names its own."""
    for deferred in REGISTRY.values():
        deferred.declare(broker, queue_name)


def lookup(actor_name: str) -> DeferredActor:
    """Return the registered actor called ``actor_name``.

    Raises
    ------
    KeyError
        When no actor has that name.
    """
    return REGISTRY[actor_name]

