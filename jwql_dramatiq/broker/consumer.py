"""The Redis consumer every worker uses (built by :class:`jwql_dramatiq.broker.JwqlRedisBroker`).

Dramatiq's own consumer sleeps through a poll back-off when idle and trusts every payload;
this one wakes on sends and due times, and refuses what it cannot run (see the class).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import dramatiq
from dramatiq.common import current_millis
from dramatiq.message import Message

from ..connection import BLOCKING_SLICE_S, is_auth_error, is_outage
from ..errors import RedisUnavailable
from . import keys
from .marks import failure_of, results_middleware, results_options
from .scripts import FETCH, FINISH, finish_call

logger = logging.getLogger(__name__)


class WakingConsumer(dramatiq.Consumer):
    """A consumer of one queue on :class:`~jwql_dramatiq.broker.JwqlRedisBroker` (``fetch.lua``, ``finish.lua``).

    When idle it blocks on its queue's wake-up list instead of sleeping through a poll back-off.
    A consumer with a full prefetch sleeps instead of blocking, so that wake-up tokens go to
    consumers that can take the message. Every pass still runs a fetch, which is what records
    the worker's heartbeat (the lease its held messages live on), so heartbeats keep at most
    ``timeout`` ms (or a quarter of the broker's heartbeat timeout, if shorter) apart. Every
    fetch beats, in the same script that holds what it takes: a worker the sweeper forgot while
    it was silent is back in the heartbeat set before it holds anything.

    It also refuses, instead of crashing on or silently dropping, a message it cannot run: a
    payload that is not a JSON message (pickles are never unpickled), one larger than
    ``max_message_bytes``, or one naming an actor this worker does not have. Such a message is
    dead-lettered (moved to the queue's ``.XQ``) with one ERROR log line, and when its message id
    can be read the caller's result is a failure naming the problem at once (Dramatiq issue
    #448: an unknown actor otherwise leaves the caller waiting until its timeout).

    And it keeps a Redis outage from costing a caller its result: a failure is stored before the
    nack (so Dramatiq retries both until Redis is back), and a success whose result is missing at
    the ack is requeued to run again (see :meth:`_result_lost`). A timeout is a connection error
    too (a partition times out rather than closes), so Dramatiq restarts the consumer.

    Parameters
    ----------
    broker : JwqlRedisBroker
    queue_name : str
    prefetch : int
        Most messages held at once.
    timeout : int
        Longest idle wait between fetches, in ms.
    """

    def __init__(self, broker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        #: (redis id, payload) pairs fetched and not yet handed to the worker.
        self.message_cache: list[tuple[str, bytes]] = []
        #: Message ids handed to the worker and not yet settled.
        self.queued_message_ids: set[str] = set()
        self._slot_freed = threading.Event()
        # message id -> eta (ms) of delayed messages handed to the worker and not yet acked:
        # the delay-queue consumer wakes when the earliest is due instead of after a poll.
        self._etas: dict[str, int] = {}
        self._last_beat_ms = 0
        # Heartbeats go at most this far apart (ms): the idle poll, and well inside the lease.
        self._beat_every_ms = min(timeout, broker.heartbeat_timeout // 4)
        ns = broker.namespace
        self._fetch_keys = [keys.heartbeats_key(ns), keys.queue_key(ns, queue_name),
                            keys.messages_key(ns, queue_name), keys.held_key(ns, broker.broker_id, queue_name),
                            keys.levels_key(ns, queue_name)]

    @property
    def outstanding_message_count(self) -> int:
        """Messages fetched and not yet settled."""
        return len(self.queued_message_ids) + len(self.message_cache)

    def _settle(self, mode: str, messages) -> None:
        try:
            self.broker.settle(mode, self.queue_name, [m.options["redis_message_id"] for m in messages])
        except Exception as e:  # Dramatiq retries the ack until Redis is back (is_outage: NOREPLICAS too)
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise dramatiq.ConnectionClosed(e) from None

    def _finish(self, message, mode: str) -> None:
        """Ack or nack ``message`` with its deferred writes (final state, result) in one script (finish.lua)."""
        writes = getattr(message, "deferred_writes", None) or []
        if not writes:
            self._settle(mode, [message])
            if isinstance(message, dramatiq.MessageProxy):
                message.deferred_writes = None  # settled: later writes (after_ack, after_nack hooks) go at once
            return
        call = self.broker.settle_call(mode, self.queue_name, [message.options["redis_message_id"]])
        self.broker.run_script(FINISH, *finish_call([*writes, call]))
        message.deferred_writes = None

    def ack(self, message) -> None:  # noqa: D102
        try:
            if self._result_lost(message):
                return
            self._finish(message, "ack")
        except RedisUnavailable as e:
            raise dramatiq.ConnectionClosed(e) from None
        finally:
            self._forget(message)

    def nack(self, message) -> None:  # noqa: D102
        try:
            # Dramatiq's Results stores the failure after the nack and drops it if Redis is down then:
            # store it first (once: the backend then skips Results' own store), so that a failed store
            # raises here and Dramatiq retries the whole nack.
            exception = failure_of(message)
            store, ttl_ms = results_options(self.broker, message)
            backend = self._own_backend()
            if exception is not None and store and backend is not None:
                backend.store_exception(message, exception, ttl_ms)  # deferred to the nack's round trip
            self._finish(message, "nack")
        except RedisUnavailable as e:
            raise dramatiq.ConnectionClosed(e) from None
        except Exception as e:  # is_outage: NOREPLICAS too
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise dramatiq.ConnectionClosed(e) from None
        finally:
            self._forget(message)

    def requeue(self, messages) -> None:  # noqa: D102
        messages = list(messages)
        if messages:
            logger.debug("Requeueing %d message(s) on queue %r.", len(messages), self.queue_name)
            self._settle("requeue", messages)

    def close(self) -> None:
        """Put back what was fetched but never handed to the worker (best effort: else the sweeper does)."""
        cached, self.message_cache = self.message_cache, []
        if cached:
            try:
                self.broker.settle("requeue", self.queue_name, [redis_id for redis_id, _ in cached])
            except Exception:  # Redis away: the ids stay held, and come back when this worker's lease lapses
                logger.debug("Could not requeue %d fetched message(s) on close.", len(cached), exc_info=True)

    def _forget(self, message) -> None:
        self.queued_message_ids.discard(message.message_id)
        self._etas.pop(message.message_id, None)
        self._slot_freed.set()

    def _own_backend(self):
        """The Results middleware's backend if it is ours (which keeps the marks this consumer reads)."""
        from .results import JwqlResultsBackend

        results = results_middleware(self.broker)
        backend = results.backend if results is not None else None
        return backend if isinstance(backend, JwqlResultsBackend) else None

    def _fetch(self, count: int) -> list[tuple[str, bytes]]:
        self._last_beat_ms = current_millis()
        reply = FETCH.run(self.broker.client, keys=self._fetch_keys,
                          args=[self._last_beat_ms, self.broker.broker_id, count])
        return [((i.decode() if isinstance(i, bytes) else i), p) for i, p in zip(reply[::2], reply[1::2])]

    def _idle_wait_s(self) -> float:
        wait_s = min(self.timeout / 1000, BLOCKING_SLICE_S)
        if self._etas:
            wait_s = min(wait_s, max(0.0, (min(self._etas.values()) - current_millis()) / 1000))
        return wait_s

    def __next__(self):
        try:
            while True:
                if self.message_cache:
                    redis_id, data = self.message_cache.pop(0)
                    message = self._accept(redis_id, data)
                    if message is None:  # refused and dead-lettered
                        continue
                    self.queued_message_ids.add(message.message_id)
                    if "eta" in message.options:
                        self._etas[message.message_id] = int(message.options["eta"])
                    proxy = dramatiq.MessageProxy(message)
                    if self.queue_name == keys.queue_name_of(self.queue_name):
                        proxy.deferred_writes = []  # see defer_write (not on the delay queue: acked on moving)
                    return proxy

                idle = self.outstanding_message_count < self.prefetch
                if idle:
                    self.message_cache = self._fetch(self.prefetch - self.outstanding_message_count)
                    if self.message_cache:
                        continue
                    wait_s = self._idle_wait_s()
                    if wait_s > 0:
                        self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=wait_s)
                else:
                    if current_millis() - self._last_beat_ms >= self._beat_every_ms:
                        self._fetch(0)  # heartbeat only, while busy

                    # Wake as soon as the running message is acked, to fetch the next at once.
                    self._slot_freed.wait(self._idle_wait_s())
                    self._slot_freed.clear()
                return None
        except Exception as e:  # a partition times out rather than closes (is_outage: NOREPLICAS too)
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise dramatiq.ConnectionClosed(e) from None

    # -- results lost in a Redis outage ----------------------------------------------------------

    #: Times one message is run again because its result could not be stored.
    RESULT_RERUNS_MAX = 3

    #: A result kept shorter than this (ms) may have expired by the ack: its absence proves nothing.
    RESULT_TTL_CHECKED_MS = 60_000

    def _result_ttl_ms(self, message) -> int | None:
        """How long ``message``'s result is kept (ms), or None if it is not stored."""
        store, ttl_ms = results_options(self.broker, message)
        if not store:
            return None
        return int(ttl_ms if ttl_ms is not None else self.broker.jwql_config.result_ttl_s * 1000)

    def _result_lost(self, message) -> bool:
        """Requeue a succeeded message whose result is missing, and say so.

        Dramatiq stores a result before the ack, and if Redis is unreachable at that moment it
        logs the error and acks anyway (retrying the ack until Redis is back): the caller would
        wait until its timeout for a task that ran. Running the message again (at-least-once,
        at most :attr:`RESULT_RERUNS_MAX` times) gives the caller its result.
        """
        ttl_ms = self._result_ttl_ms(message)
        if self.queue_name.endswith(".DQ") or failure_of(message) is not None or self._own_backend() is None \
                or ttl_ms is None or ttl_ms < self.RESULT_TTL_CHECKED_MS:
            return False  # moved from the delay queue, a failure (nack) or a retry: no result is expected yet
        if getattr(message, "result_stored", False):  # set by the results backend once Redis took it
            return False
        broker = self.broker

        counter = f"{broker.namespace}:result-reruns:{message.message_id}"
        with broker.client.pipeline(transaction=False) as pipe:
            pipe.incr(counter)
            pipe.pexpire(counter, ttl_ms)
            reruns = pipe.execute()[0]
        if reruns > self.RESULT_RERUNS_MAX:
            logger.error("The result of message %s (%s) could not be stored %d times; acking it without a result.",
                         message.message_id, message.actor_name, reruns)
            return False
        logger.warning("The result of message %s (%s) was not stored (was Redis unreachable when it finished?); "
                       "requeueing it to run again rather than leave its caller waiting.",
                       message.message_id, message.actor_name)
        self._settle("requeue", [message])
        return True

    # -- refusing what cannot run ------------------------------------------------------------------

    def _accept(self, redis_id: str, data: bytes) -> Message | None:
        """Decode a fetched payload as a JSON message, or dead-letter it and return None."""
        limit = self.broker.jwql_config.max_message_bytes
        fields: Any = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            hint = ""
            if data[:1] == b"\x80":
                hint = f": it looks like a pickle (protocol {data[1]}); messages are JSON only and are never unpickled"
            self._refuse(redis_id, data, None, "MessageNotDecodable", f"the payload is not UTF-8 JSON{hint}")
            return None
        if len(data) > limit:
            try:
                fields = json.loads(text)
            except ValueError:
                fields = None
            self._refuse(redis_id, data, fields, "MessageTooLarge",
                         f"the message is {len(data)} bytes, more than max_message_bytes ({limit})")
            return None
        try:
            fields = json.loads(text)
        except ValueError as e:
            self._refuse(redis_id, data, None, "MessageNotDecodable", f"the payload is not JSON ({e})")
            return None
        problem = self._check_fields(fields)
        if problem:
            self._refuse(redis_id, data, fields if isinstance(fields, dict) else None, "MessageNotDecodable",
                         f"the payload is not a Dramatiq message: {problem}")
            return None
        message = Message(**{**fields, "args": tuple(fields["args"])})
        if message.actor_name not in self.broker.actors:
            known = ", ".join(sorted(self.broker.actors))
            self._refuse(redis_id, data, fields, "ActorNotFound",
                         f"no actor named {message.actor_name!r} is declared on this worker (queue "
                         f"{self.queue_name!r}); its actors are: {known}")
            return None
        return message

    @staticmethod
    def _check_fields(fields: Any) -> str | None:
        """Say what is wrong with a decoded payload's fields, or None."""
        if not isinstance(fields, dict):
            return f"a JSON {type(fields).__name__}, not an object"
        names = {str: "string", list: "array", dict: "object", int: "number"}
        types = {"queue_name": (str,), "actor_name": (str,), "args": (list,), "kwargs": (dict,), "options": (dict,),
                 "message_id": (str,), "message_timestamp": (int, float)}
        missing = sorted(set(types) - set(fields))
        if missing:
            return f"missing field(s) {', '.join(missing)}"
        extra = sorted(set(fields) - set(types))
        if extra:
            return f"unknown field(s) {', '.join(extra)}"
        for name, kinds in types.items():
            value = fields[name]
            if not isinstance(value, kinds) or isinstance(value, bool):
                return f"field {name!r} must be a JSON {names[kinds[0]]}, got {type(value).__name__} {value!r:.40}"
        return None

    def _refuse(self, redis_id: str, data: bytes, fields: dict | None, type_name: str, reason: str) -> None:
        """Dead-letter ``data``, log one line, and fail the caller's result when its id is known."""

        from ..errors import TaskFailed

        ids = [redis_id] if self.broker.settle("nack", self.queue_name, [redis_id]) else []
        message_id = fields.get("message_id") if isinstance(fields, dict) else None
        actor_name = fields.get("actor_name") if isinstance(fields, dict) else None
        what = f"message {message_id}" if isinstance(message_id, str) else f"a {len(data)}-byte payload"
        if isinstance(actor_name, str):
            what += f" for actor {actor_name!r}"
        logger.error("Refused %s on queue %r (redis id %s) and moved it to the dead-letter queue: %s: %s; "
                     "starts %r", what, self.queue_name, ", ".join(ids) or "unknown", type_name, reason, data[:32])
        if not isinstance(message_id, str):
            return  # nobody can be waiting for a message without an id
        queue_name = fields.get("queue_name") if isinstance(fields.get("queue_name"), str) else self.queue_name
        options = fields.get("options") if isinstance(fields.get("options"), dict) else {}
        message = Message(queue_name=queue_name, actor_name=actor_name if isinstance(actor_name, str) else "",
                          args=(), kwargs={}, options=options, message_id=message_id, message_timestamp=0)
        proxy = dramatiq.MessageProxy(message)
        proxy.fail()
        proxy.failure = TaskFailed(type_name, f"{what} was refused: {reason}", "", message_id)
        proxy.stuff_exception(proxy.failure)  # what Dramatiq's Results reads at after_nack
        self.broker.emit_after("nack", proxy)  # the results (for a known actor), task state, on_failure callbacks
        if message.actor_name not in self.broker.actors:
            # Results' after_nack skips unknown actors (#448): store the failure so the caller stops waiting.
            ttl_ms = int(self.broker.jwql_config.result_ttl_s * 1000)
            self.broker.results_backend.store_failure(
                message, {"type": type_name, "msg": f"{what} was refused: {reason}", "traceback": ""}, ttl_ms)
