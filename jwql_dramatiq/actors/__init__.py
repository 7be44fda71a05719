"""Every actor of the task server; the module a worker is started with.

    dramatiq jwql_dramatiq.actors -p1 -t1

Importing this package declares the actors and makes a :class:`~jwql_dramatiq.worker.deferred_broker.DeferredBroker`
Dramatiq's global broker (unless one is set), without reading the config or touching Redis, so
monitors can import it freely. The ``dramatiq`` command line then asks for that broker and emits
``process_boot``: the broker is built from the config, and its
:class:`~jwql_dramatiq.worker.middleware.WorkerMiddleware` boots the worker.
"""

from __future__ import annotations

from .. import broker  # noqa: F401  (registers how an actor used before set-up finds the broker; no work)
from ..worker import deferred_broker
from .health import ping
from .pipeline import calwebb_detector1_save_jump, run_calwebb_detector1

__all__ = ["calwebb_detector1_save_jump", "ping", "run_calwebb_detector1"]

deferred_broker.install()
