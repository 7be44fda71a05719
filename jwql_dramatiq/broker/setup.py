"""The one place that builds the Redis broker and its results backend from the config.

Defaults suit long astronomy jobs rather than Dramatiq's web-request defaults:

- no automatic retries unless an actor asks (``max_retries`` defaults to 0);
- no 10-minute time limit: the fresh-process executor enforces a per-actor hard limit
  (``time_limit_s``, default 4 h, the original's visibility timeout);
- results are stored for every actor and kept ``result_ttl_s`` (1 day);
- each worker thread prefetches exactly one message (Celery's ``--prefetch-multiplier 1``);
- an idle worker blocks on a per-queue wake-up list instead of sleeping through a poll
  back-off, so a message sent to an idle worker starts within a millisecond or two.

Nothing here runs at import time: :func:`get_broker` builds the broker on first call.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Middleware, Pipelines, Retries, ShutdownNotifications
from dramatiq.results import Results

from .. import registry
from ..config import Config, load_config
from ..connection import share
from .keys import revoked_key
from .marks import KeepFailure
from .redis_broker import JwqlRedisBroker
from .results import JwqlResultsBackend
from .state_recorder import TaskStates

_broker: "JwqlRedisBroker | None" = None
_config: Config | None = None
_lock = threading.RLock()


class _WorkerDefaults(Middleware):
    """Makes each worker thread prefetch exactly one message, whatever the thread count."""

    def before_worker_boot(self, broker, worker) -> None:  # noqa: D102
        worker.queue_prefetch = worker.worker_threads
        worker.delay_prefetch = max(worker.delay_prefetch, 1)


def build_broker(config: Config, declare_actors: bool = True) -> JwqlRedisBroker:
    """Build (but do not install) the broker and results backend for ``config``.

    Parameters
    ----------
    config : Config
    declare_actors : bool
        Bind every registered actor to this broker (what workers and monitors need). The
        operator CLI passes False: it only reads and edits queues, and must leave the actors
        of the process it runs in bound to their own broker.

    Returns
    -------
    JwqlRedisBroker
        No connection is opened.
    """
    from ..connection import make_redis

    client = make_redis(config)
    backend = JwqlResultsBackend(
        address=config.redis_address,
        revoked_key=revoked_key(config.namespace),
        client=client,
        namespace=f"{config.namespace}:results",
        use_namespace_prefix_keys=True,
    )
    result_ttl_ms = int(config.result_ttl_s * 1000)
    middleware = [
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=0),
        CurrentMessage(),
        KeepFailure(),
        Results(backend=backend, store_results=True, result_ttl=result_ttl_ms),
        # After Results: after-hooks run in reverse, so a task's final state is recorded before its
        # result, and a caller that has the result never reads "running".
        TaskStates(config.namespace, result_ttl_ms, revoked_key(config.namespace)),  # also skips revoked messages
        _WorkerDefaults(),
    ]
    broker = JwqlRedisBroker(
        config,
        client=client,
        namespace=config.namespace,
        heartbeat_timeout_ms=int(config.heartbeat_timeout_s * 1000),
        middleware=middleware,
    )
    broker.results_backend = backend
    if declare_actors:
        registry.declare_all(broker, config.queue_name)
    else:
        broker.declare_queue(config.queue_name)
    return broker


def setup_broker(config: Config | None = None) -> JwqlRedisBroker:
    """Build the broker from ``config`` (default: :func:`load_config`) and make it Dramatiq's global one.

    Parameters
    ----------
    config : Config, optional

    Returns
    -------
    JwqlRedisBroker
    """
    global _broker, _config
    with _lock:
        config = config or load_config()
        broker = build_broker(config)
        _broker, _config = broker, config
        dramatiq.set_broker(broker)
        share(config, broker.client)  # locks, states and waits use the broker's pool
        registry.bind(broker)  # actors declared from now on go to it too
        return broker


def get_broker() -> JwqlRedisBroker:
    """Return the configured broker, building it from the config file on first call."""
    with _lock:
        return _broker if _broker is not None else setup_broker()


def task_states(broker: JwqlRedisBroker) -> TaskStates:
    """The broker's task-state middleware."""
    return next(m for m in broker.middleware if isinstance(m, TaskStates))


def current_broker() -> JwqlRedisBroker | None:
    """Return the broker if it has been built, without building it."""
    return _broker


def get_config() -> Config:
    """Return the config the broker was built from (loading it, and building the broker, if needed)."""
    return get_broker().jwql_config


# Unbound actors (``ping.send()`` before any broker) get the configured one: a callback, no work.
registry.set_resolver(get_broker)
