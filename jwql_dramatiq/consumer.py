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
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.message import Message
from dramatiq.results import Results

from .connection import BLOCKING_SLICE_S, is_auth_error, is_outage

logger = logging.getLogger(__name__)

class WakingConsumer(_RedisConsumer):
    """A Redis consumer that, when idle, blocks on its queue's wake-up list instead of sleeping.

    A consumer with a full prefetch sleeps instead of blocking, so that wake-up tokens go to
    consumers that can take the message. Every pass still runs a fetch, which is what
    records the worker's heartbeat, so heartbeats keep at most ``timeout`` ms apart.

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
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot_freed = threading.Event()
        # message id -> eta (ms) of delayed messages handed to the worker and not yet acked:
        # the delay-queue consumer wakes when the earliest is due instead of after a poll.
        self._etas: dict[str, int] = {}

    def ack(self, message) -> None:  # noqa: D102
        try:
            if self._result_lost(message):
                return
            super().ack(message)
        except Exception as e:  # Dramatiq retries the ack until Redis is back (is_outage: NOREPLICAS too)
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise dramatiq.ConnectionClosed(e) from None
        finally:
            self._etas.pop(message.message_id, None)
            self._slot_freed.set()

    def nack(self, message) -> None:  # noqa: D102
        try:
            # Dramatiq stores the failure after the nack and drops it if Redis is down then: store it
            # first, so that a failed store raises here and Dramatiq retries the whole nack.
            exception = getattr(message, "_exception", None)
            ttl_ms = self._result_ttl_ms(message)
            if exception is not None and ttl_ms is not None:
                self.broker.results_backend.store_exception(message, exception, ttl_ms)
            super().nack(message)
        except Exception as e:  # is_outage: NOREPLICAS too
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise dramatiq.ConnectionClosed(e) from None
        finally:
            self._etas.pop(message.message_id, None)
            self._slot_freed.set()

    def _idle_wait_s(self) -> float:
        wait_s = min(self.timeout / 1000, BLOCKING_SLICE_S)
        if self._etas:
            wait_s = min(wait_s, max(0.0, (min(self._etas.values()) - current_millis()) / 1000))
        return wait_s

    def __next__(self):
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    message = self._accept(data)
                    if message is None:  # refused and dead-lettered
                        continue
                    self.queued_message_ids.add(message.message_id)
                    if "eta" in message.options:
                        self._etas[message.message_id] = int(message.options["eta"])
                    return dramatiq.MessageProxy(message)

                idle = self.outstanding_message_count < self.prefetch
                if idle:
                    self.message_cache = self.broker.do_fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
                    if self.message_cache:
                        continue
                    wait_s = self._idle_wait_s()
                    if wait_s > 0:
                        self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=wait_s)
                else:
                    self.broker.do_fetch(self.queue_name, 0)  # heartbeat only
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
        results = next((m for m in self.broker.middleware if isinstance(m, Results)), None)
        if results is None:
            return None
        store, ttl_ms = results._lookup_options(self.broker, message)
        return int(ttl_ms if ttl_ms is not None else self.broker.jwql_config.result_ttl_s * 1000) if store else None

    def _result_lost(self, message) -> bool:
        """Requeue a succeeded message whose result is missing, and say so.

        Dramatiq stores a result before the ack, and if Redis is unreachable at that moment it
        logs the error and acks anyway (retrying the ack until Redis is back): the caller would
        wait until its timeout for a task that ran. Running the message again (at-least-once,
        at most :attr:`RESULT_RERUNS_MAX` times) gives the caller its result.
        """
        ttl_ms = self._result_ttl_ms(message)
        if self.queue_name.endswith(".DQ") or getattr(message, "_exception", None) is not None \
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
        self.requeue([message])
        self.queued_message_ids.discard(message.message_id)
        return True

    # -- refusing what cannot run ------------------------------------------------------------------

    def _accept(self, data: bytes) -> Message | None:
        """Decode a fetched payload as a JSON message, or dead-letter it and return None."""
        limit = self.broker.jwql_config.max_message_bytes
        fields: Any = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            hint = ""
            if data[:1] == b"\x80":
                hint = f": it looks like a pickle (protocol {data[1]}); messages are JSON only and are never unpickled"
            self._refuse(data, None, "MessageNotDecodable", f"the payload is not UTF-8 JSON{hint}")
            return None
        if len(data) > limit:
            try:
                fields = json.loads(text)
            except ValueError:
                fields = None
            self._refuse(data, fields, "MessageTooLarge",
                         f"the message is {len(data)} bytes, more than max_message_bytes ({limit})")
            return None
        try:
            fields = json.loads(text)
        except ValueError as e:
            self._refuse(data, None, "MessageNotDecodable", f"the payload is not JSON ({e})")
            return None
        problem = self._check_fields(fields)
        if problem:
            self._refuse(data, fields if isinstance(fields, dict) else None, "MessageNotDecodable",
                         f"the payload is not a Dramatiq message: {problem}")
            return None
        message = Message(**{**fields, "args": tuple(fields["args"])})
        if message.actor_name not in self.broker.actors:
            known = ", ".join(sorted(self.broker.actors))
            self._refuse(data, fields, "ActorNotFound",
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

    def _refuse(self, data: bytes, fields: dict | None, type_name: str, reason: str) -> None:
        """Dead-letter ``data``, log one line, and fail the caller's result when its id is known."""

        from .errors import TaskFailed

        ids = self._dead_letter(data)
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
        proxy.stuff_exception(TaskFailed(type_name, f"{what} was refused: {reason}", "", message_id))
        self.broker.emit_after("nack", proxy)  # the results (for a known actor), task state, on_failure callbacks
        if message.actor_name not in self.broker.actors:
            # Results' after_nack skips unknown actors (#448): store the failure so the caller stops waiting.
            ttl_ms = int(self.broker.jwql_config.result_ttl_s * 1000)
            self.broker.results_backend.store_failure(
                message, {"type": type_name, "msg": f"{what} was refused: {reason}", "traceback": ""}, ttl_ms)

    def _dead_letter(self, data: bytes) -> list[str]:
        """Move every message this consumer holds whose payload is ``data`` to the dead-letter queue.

        The payload's own ``redis_message_id`` cannot be trusted (it may not decode at all), so
        the ids are found in this consumer's ack set, which holds at most ``prefetch`` entries.
        """
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        ids = sorted(broker.client.smembers(acks))
        if not ids:
            return []
        payloads = broker.client.hmget(f"{broker.namespace}:{self.queue_name}.msgs", ids)
        matched = [i.decode() for i, payload in zip(ids, payloads) if payload == data]
        for redis_id in matched:
            broker.do_nack(self.queue_name, redis_id)
        return matched
