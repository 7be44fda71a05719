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
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Middleware, Pipelines, Retries, ShutdownNotifications
from dramatiq.results import Results

from . import registry
from .config import Config, load_config
from .consumer import WakingConsumer
from .connection import is_auth_error, is_outage, redis_unavailable
from .results import JwqlResultsBackend
from .revoke import SkipRevoked, revoked_key
from .states import TaskStates
from .worker_middleware import WorkerMiddleware

#: Longest a wake-up list may grow while no worker is idle (extra tokens only cause a spare fetch).
WAKE_LIST_MAX = 64

_broker: "JwqlRedisBroker | None" = None
_config: Config | None = None
_lock = threading.RLock()


class JwqlRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker with wake-up on enqueue and errors that name the Redis address.

    Parameters
    ----------
    config : Config
        The validated configuration.
    **kwargs
        Passed to :class:`dramatiq.brokers.redis.RedisBroker`.
    """

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.jwql_config = config
        self.address = config.redis_address
        super().__init__(**kwargs)

    @property
    def consumer_class(self):  # noqa: D102
        return WakingConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):  # noqa: D102
        return WakingConsumer(self, queue_name, prefetch, self.jwql_config.idle_poll_ms)

    def wake_key(self, queue_name: str) -> str:
        """The list an idle consumer of ``queue_name`` blocks on."""
        return f"{self.namespace}:__wake__.{queue_name}"

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Dramatiq's enqueue, then a wake-up push and, when the client waits for replicas, ``WAIT``.

        ``WAIT`` covers the writes of its own connection, and the enqueue may have used another
        one: across a failover, to another master (an isolated old master that gets the send
        when the partition heals, then throws it away as it resyncs). So the same round trip also
        checks that this master holds the message: its payload (kept until the ack), or a
        worker's "running" or final state for it. A send that returns has reached a replica of
        the master that holds it; otherwise it raises :class:`~jwql_dramatiq.sentinel.ReplicaTimeout`
        (safe to repeat: same message id).
        """
        from .sentinel import ReplicaTimeout, wait_settings
        from .states import QUEUED, SCHEDULED, task_key

        replicas, wait_ms = wait_settings(self.client)
        try:
            message = super().enqueue(message, delay=delay)
            key = self.wake_key(message.queue_name)  # the delay queue's own list for delayed messages
            with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, current_millis())
                pipe.ltrim(key, -WAKE_LIST_MAX, -1)
                if replicas > 0:
                    pipe.execute_command("WAIT", replicas, wait_ms)
                    pipe.hexists(f"{self.namespace}:{message.queue_name}.msgs", message.options["redis_message_id"])
                    pipe.hget(task_key(self.namespace, message.message_id), "state")
                replies = pipe.execute()
        except Exception as e:  # an outage (connection.is_outage: NOREPLICAS too) or a refused login
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise redis_unavailable(e, address=self.address, client=self.client) from None
        if replicas > 0:
            acked, held, state = int(replies[2]), bool(replies[3]), (replies[4] or b"").decode()
            taken = state not in ("", QUEUED, SCHEDULED)  # a worker here fetched it (or it ended)
            if acked < replicas or not (held or taken):
                raise ReplicaTimeout(self.address, "enqueue" if held or taken else "enqueue (not on this master)",
                                     replicas, acked if held or taken else 0, wait_ms)
        return message


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
    from .connection import make_redis

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
        SkipRevoked(),
        Results(backend=backend, store_results=True, result_ttl=result_ttl_ms),
        # After Results: after-hooks run in reverse, so a task's final state is recorded before its
        # result, and a caller that has the result never reads "running".
        TaskStates(config.namespace, result_ttl_ms),
        _WorkerDefaults(),
        WorkerMiddleware(),  # boots the worker in after_process_boot; inert elsewhere
    ]
    broker = JwqlRedisBroker(
        config,
        client=client,
        namespace=config.namespace,
        heartbeat_timeout=int(config.heartbeat_timeout_s * 1000),
        maintenance_chance=config.maintenance_chance,
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
