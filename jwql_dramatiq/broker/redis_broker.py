"""The Redis broker: Dramatiq's public :class:`dramatiq.Broker` API, with scripts and keys of our own."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import dramatiq
import redis
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import QueueJoinTimeout
from dramatiq.message import Message

from ..config import Config
from ..connection import is_auth_error, is_outage, redis_unavailable
from ..sentinel import ReplicaTimeout, wait_settings
from . import keys
from .consumer import WakingConsumer
from .scripts import ENQUEUE, SETTLE, load_all
from .states import QUEUED, SCHEDULED, task_key

#: How long dead-lettered messages are kept, in ms (Dramatiq's default: 7 days).
DEAD_MESSAGE_TTL_MS = 7 * 86_400_000
_NOT_LOOKED_UP = object()  # the broker's state recorder before its first send looks it up
#: Message ids of first sends a broker remembers, so that the same message sent again gets a fresh
#: Redis id (and a record) instead of being taken for a repeat of the first send's script.
FIRST_SENDS_REMEMBERED = 16_384


class JwqlRedisBroker(dramatiq.Broker):
    """A Redis broker written on Dramatiq's public :class:`dramatiq.Broker` API, with scripts of its own.

    - A send is one round trip and one script (``enqueue.lua``): the payload, the queue and a
      wake-up token for an idle consumer. A message's first send to a ready queue records no
      state (its Redis id is its message id, by which :mod:`~jwql_dramatiq.broker.states` finds
      the waiting task); any other send also records the task's "queued" or "scheduled" state,
      which a middleware supplies through an ``enqueue_state(broker, message, delay)`` hook
      returning ``task_state.lua``'s KEYS and ARGV, or, for a delayed first send, a
      ``first_enqueue_state(message, delay)`` hook returning a shorter form (plus ``WAIT`` and
      its checks, in the same pipeline, when the client waits for replicas).
    - Consumers (:class:`~jwql_dramatiq.broker.consumer.WakingConsumer`) fetch with ``fetch.lua``, which
      records the worker's heartbeat; the ids they take are held on that heartbeat's lease until
      ``settle.lua`` acks, dead-letters or requeues them, or the sweeper (``sweep.lua``, the one
      requeue path) finds the worker dead and puts them back.
    - The key layout is :mod:`jwql_dramatiq.broker.keys`.

    Parameters
    ----------
    config : Config
        The validated configuration.
    client : redis.Redis
        The client every command goes through (no connection is opened here).
    middleware : list of dramatiq.Middleware, optional
    namespace : str
        The key prefix.
    heartbeat_timeout_ms : int
        A worker silent this long is dead, and the sweeper requeues what it held.
    dead_message_ttl_ms : int
        How long dead letters are kept.
    """

    def __init__(self, config: Config, *, client: redis.Redis, middleware: list | None = None,
                 namespace: str = "dramatiq", heartbeat_timeout_ms: int = 60_000,
                 dead_message_ttl_ms: int = DEAD_MESSAGE_TTL_MS) -> None:
        super().__init__(middleware=middleware)
        self.jwql_config = config
        self.address = config.redis_address
        self.client = client
        self.namespace = namespace
        self.broker_id = str(uuid.uuid4())
        self.heartbeat_timeout = heartbeat_timeout_ms
        self.dead_message_ttl = dead_message_ttl_ms
        self.queues: set[str] = set()
        # Looked up once per send otherwise: (queue name, priority) -> enqueue.lua's first 4 KEYS,
        # and the middleware that records states (reset by add_middleware).
        self._enqueue_keys: dict[tuple[str, int], list[str]] = {}
        self._recorder: Any = _NOT_LOOKED_UP
        self._first_sent: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._first_sent_lock = threading.Lock()
        self._as_error = _UnavailableAsError(self)

    # -- dramatiq.Broker ---------------------------------------------------------------------------

    def add_middleware(self, middleware, *, before=None, after=None) -> None:
        """Add ``middleware`` as :meth:`dramatiq.Broker.add_middleware` does (and look up the state recorder again)."""
        super().add_middleware(middleware, before=before, after=after)
        self._recorder = _NOT_LOOKED_UP

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakingConsumer:
        """A consumer of ``queue_name`` holding at most ``prefetch`` messages (``timeout`` is unused:
        an idle consumer wakes on sends, and polls every ``idle_poll_ms`` of the config)."""
        return WakingConsumer(self, queue_name, prefetch, self.jwql_config.idle_poll_ms)

    def declare_queue(self, queue_name: str) -> None:
        """Declare ``queue_name`` and its delay queue (no Redis command: queues exist when used)."""
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues.add(queue_name)
            self.emit_after("declare_queue", queue_name)
            delayed = dq_name(queue_name)
            self.delay_queues.add(delayed)
            self.emit_after("declare_delay_queue", delayed)

    def get_declared_queues(self) -> set[str]:
        """The names of the queues declared on this broker."""
        return self.queues.copy()

    def get_declared_delay_queues(self) -> set[str]:
        """The names of their delay queues."""
        return self.delay_queues.copy()

    def wake_key(self, queue_name: str) -> str:
        """The list an idle consumer of ``queue_name`` blocks on."""
        return keys.wake_key(self.namespace, queue_name)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Put ``message`` on its queue (its delay queue with ``delay`` ms) in one round trip.

        With Sentinel's ``WAIT`` on, the same round trip also checks that this master holds the
        message: its payload (kept until the ack), or a worker's "running" or final state for it.
        (A send stalled toward an isolated old master can land there when the partition heals,
        and be thrown away as it resyncs.) A send that returns has reached a replica of the master
        that holds it; otherwise it raises :class:`~jwql_dramatiq.sentinel.ReplicaTimeout` (safe to
        repeat: same message id).

        Raises
        ------
        RedisUnavailable
            Redis could not be reached (naming its address).
        """
        queue_name = message.queue_name
        unsent = "redis_message_id" not in message.options  # not a retry, nor a delayed message falling due
        replicas, wait_ms = wait_settings(self.client)
        # A first send to a ready queue records no state: its Redis id is its message id, by which
        # the waiting task is found (waiting_messages). A message sent again by this process (the
        # same Message object) gets a fresh id and a record, as does everything under WAIT (a send
        # that raised ReplicaTimeout may be repeated).
        recorded = not unsent or delay is not None or replicas > 0 or message.message_id in self._first_sent
        if not recorded:
            with self._first_sent_lock:
                self._first_sent[message.message_id] = None
                if len(self._first_sent) > FIRST_SENDS_REMEMBERED:
                    del self._first_sent[next(iter(self._first_sent))]
        message = message.copy(options={"redis_message_id": str(uuid.uuid4()) if recorded else message.message_id})
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        redis_id = message.options["redis_message_id"]

        actor = self.actors.get(message.actor_name)
        priority = int(actor.priority) if actor is not None and delay is None else 0  # delays are ordered by eta

        ns = self.namespace
        queue_keys = self._enqueue_keys.get((queue_name, priority))
        if queue_keys is None:
            queue_keys = self._enqueue_keys[(queue_name, priority)] = [
                keys.priority_queue_key(ns, queue_name, priority), keys.messages_key(ns, queue_name),
                self.wake_key(queue_name), keys.levels_key(ns, queue_name)]
        script_keys = list(queue_keys)
        # now in ms with its fraction: the state's times and the listing order keep sub-ms precision
        script_args = [redis_id, message.encode(), time.time() * 1000, keys.WAKE_LIST_MAX, priority]
        # The task's "queued" or "scheduled" state, written by the same script: unread for a delayed
        # first send, guarded otherwise (under WAIT, a repeated send must not undo what a worker
        # recorded meanwhile).
        recorder = self._recorder
        if recorder is _NOT_LOOKED_UP:
            recorder = self._recorder = next((m for m in self.middleware if hasattr(m, "enqueue_state")), None)
        if recorder is not None and recorded:
            if unsent and replicas == 0 and hasattr(recorder, "first_enqueue_state"):
                state_keys, state_args = recorder.first_enqueue_state(message, delay)
                script_args.append("new")
            else:
                state_keys, state_args = recorder.enqueue_state(self, message, delay)
                script_args.append("guarded")
            script_keys += state_keys
            script_args += state_args
        if replicas == 0:
            self.run_script(ENQUEUE, script_keys, script_args)
            self.emit_after("enqueue", message, delay)
            return message

        def build(pipe) -> None:
            ENQUEUE.queue(pipe, keys=script_keys, args=script_args)
            pipe.execute_command("WAIT", replicas, wait_ms)
            pipe.hexists(keys.messages_key(ns, queue_name), redis_id)
            pipe.hget(task_key(ns, message.message_id), "state")

        acked, held, state_now = self.run_pipeline(build)[-3:]
        acked, held, state_now = int(acked), bool(held), (state_now or b"").decode()
        taken = state_now not in ("", QUEUED, SCHEDULED)  # a worker here fetched it (or it ended)
        if acked < replicas or not (held or taken):
            raise ReplicaTimeout(self.address, "enqueue" if held or taken else "enqueue (not on this master)",
                                 replicas, acked if held or taken else 0, wait_ms)
        self.emit_after("enqueue", message, delay)
        return message

    def flush(self, queue_name: str) -> None:
        """Drop every message of ``queue_name`` and its delay queue, waiting, held or dead (no waiter is told)."""
        names = [queue_name, dq_name(queue_name)]
        doomed = [k for name in names for k in (*keys.waiting_list_keys(self.client, self.namespace, name),
                                                keys.levels_key(self.namespace, name),
                                                keys.messages_key(self.namespace, name))]
        doomed += [keys.dead_letters_key(self.namespace, queue_name),
                   keys.dead_letters_key(self.namespace, queue_name) + ".msgs"]
        for name in names:
            doomed += [k for k in self.client.scan_iter(match=keys.held_key(self.namespace, "*", name), count=1000)]
        self.client.delete(*doomed)

    def flush_all(self) -> None:
        """Drop every message of every declared queue."""
        for queue_name in self.queues:
            self.flush(queue_name)

    def join(self, queue_name: str, *, interval: int = 100, timeout: int | None = None) -> None:
        """Wait until ``queue_name`` and its delay queue hold no message (for tests).

        Raises
        ------
        dramatiq.QueueJoinTimeout
            When ``timeout`` (ms) passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hlen(keys.messages_key(self.namespace, queue_name))
                pipe.hlen(keys.messages_key(self.namespace, dq_name(queue_name)))
                if sum(pipe.execute()) == 0:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    # -- used by the consumer, the control channel and the CLI --------------------------------------

    def _unavailable_as_error(self) -> "_UnavailableAsError":
        """Raise an outage (connection.is_outage: NOREPLICAS too) or a refused login as RedisUnavailable."""
        return self._as_error

    def run_script(self, script, script_keys: list[Any], script_args: list[Any]) -> Any:
        """Run one of the broker's scripts in one round trip (loading it on NOSCRIPT) and return its reply.

        Raises
        ------
        RedisUnavailable
            Redis could not be reached.
        """
        with self._unavailable_as_error():
            return script.run(self.client, keys=script_keys, args=script_args)

    def run_pipeline(self, build) -> list[Any]:
        """Run the commands ``build(pipe)`` queues in one round trip, loading the scripts on NOSCRIPT.

        Raises
        ------
        RedisUnavailable
            Redis could not be reached.
        """
        with self._unavailable_as_error():
            for attempt in (1, 2):
                with self.client.pipeline(transaction=False) as pipe:
                    build(pipe)
                    try:
                        return pipe.execute()
                    except redis.exceptions.NoScriptError:
                        if attempt == 2:
                            raise
                        load_all(self.client)  # first use, or Redis restarted: every script is idempotent
        raise AssertionError("unreachable")

    def settle(self, mode: str, queue_name: str, redis_ids: list[str], worker_id: str | None = None) -> int:
        """Ack, nack (dead-letter) or requeue ids held by ``worker_id`` (default: this broker's worker).

        Parameters
        ----------
        mode : {"ack", "nack", "requeue"}
        queue_name : str
        redis_ids : list of str
        worker_id : str, optional

        Returns
        -------
        int
            How many ids were still held, and so settled.

        Raises
        ------
        redis.RedisError
            As raised by the client.
        """
        if not redis_ids:
            return 0
        script, keys_, args = self.settle_call(mode, queue_name, redis_ids, worker_id)
        return int(script.run(self.client, keys=keys_, args=args))

    def settle_call(self, mode: str, queue_name: str, redis_ids: list[str],
                    worker_id: str | None = None) -> tuple[Any, list[str], list[Any]]:
        """The script, KEYS and ARGV of :meth:`settle` (to queue it on a pipeline)."""
        ns = self.namespace
        dead = keys.dead_letters_key(ns, queue_name)
        return (SETTLE, [keys.held_key(ns, worker_id or self.broker_id, queue_name), keys.queue_key(ns, queue_name),
                         keys.messages_key(ns, queue_name), dead, dead + ".msgs", self.wake_key(queue_name)],
                [mode, current_millis(), keys.WAKE_LIST_MAX, *redis_ids])


class _UnavailableAsError:
    """A broker's ``with`` block that raises an outage or a refused login as RedisUnavailable.

    A class, not a ``contextlib.contextmanager``: it wraps every send, and a generator costs
    microseconds more each time. It holds no state between uses, so one serves every thread.
    """

    def __init__(self, broker: JwqlRedisBroker) -> None:
        self.broker = broker

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or not isinstance(error, Exception) or not (is_outage(error) or is_auth_error(error)):
            return False
        raise redis_unavailable(error, address=self.broker.address, client=self.broker.client) from None
