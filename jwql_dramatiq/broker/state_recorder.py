"""The middleware that records each message's state changes (see :mod:`jwql_dramatiq.broker.states`).

Each change rides on a round trip the worker makes anyway: "running" with the revocation check
before a task starts, the final state with the ack (``finish.lua``), a failure with the nack, and
a retry's "scheduled" or "queued" with its enqueue.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage

from ..config import worker_hostname
from . import states
from .marks import defer_write, failure_of, final_state_fields_of
from .results import describe_exception
from .scripts import TASK_STATE


class TaskStates(Middleware):
    """Records each message's state changes (see the module docstring).

    Parameters
    ----------
    namespace : str
        The key prefix.
    ttl_ms : int
        How long records are kept, in milliseconds; the same as results.
    """

    def __init__(self, namespace: str, ttl_ms: int, revoked_key: str | None = None) -> None:
        self.namespace = namespace
        self.ttl_ms = ttl_ms
        self.revoked_key = revoked_key
        self.host = worker_hostname()
        #: The worker's :class:`~jwql_dramatiq.broker.control.WorkerControl`, set when a worker boots.
        self.control = None
        self.tasks_done = 0
        # A failed run's worker-record fields and last-attempt figures (the executor's), written with
        # the nack or the retry's enqueue.
        self._pending = threading.local()
        self._first_records = 0  # racy across threads, harmlessly: it only spaces the index trims

    @staticmethod
    def _run(broker, call: tuple[list[Any], list[Any]]) -> None:
        try:
            TASK_STATE.run(broker.client, keys=call[0], args=call[1])
        except redis.RedisError:  # states are advisory: never fail a task for them
            pass

    def _write(self, broker, message, worker_fields: dict[str, Any] | None = None, mode: str = "guard",
               **fields: Any) -> None:
        self._run(broker, self._call(message, worker_fields, mode, **fields))

    def _call(self, message, worker_fields: dict[str, Any] | None, mode: str = "guard", trim_to: int | None = None,
              **fields: Any) -> tuple[list[Any], list[Any]]:
        also = (self.control.key, worker_fields) if self.control is not None and worker_fields else None
        return states.state_call(self.namespace, message.message_id, self.ttl_ms, also=also, mode=mode,
                                 trim_to=trim_to, actor=message.actor_name, queue=q_name(message.queue_name), **fields)

    def _trim_to(self) -> int:
        """``INDEX_MAX`` on one first record in ``INDEX_TRIM_EVERY`` (see :mod:`.states`), else 0 (no trim)."""
        self._first_records += 1
        return states.INDEX_MAX if (self._first_records - 1) % states.INDEX_TRIM_EVERY == 0 else 0

    def _take_pending(self, message) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        pending = getattr(self._pending, "value", None)
        if pending is not None and pending[0] == message.message_id:
            self._pending.value = None
            return pending[1], pending[2]
        return None, {}

    def enqueue_state(self, broker, message, delay) -> tuple[list[Any], list[Any]]:
        """The "queued" (or "scheduled") state write that the broker's enqueue script makes in the
        send's own round trip: ``task_state.lua``'s KEYS and ARGV.

        A delayed message is enqueued twice: on its delay queue, then on its queue when due. A
        failed run that Retries sends again arrives here too, with its worker's fields and its
        attempt's figures pending.
        """
        worker_fields, attempt_fields = self._take_pending(message)
        return self._call(message, worker_fields, mode="enqueue", state=states.SCHEDULED if delay else states.QUEUED,
                          eta=message.options.get("eta") if delay else None,
                          redis_id=message.options.get("redis_message_id"), enqueued_at=time.time(),
                          **states.described_arguments(message), **attempt_fields)

    def first_enqueue_state(self, message, delay) -> tuple[list[Any], list[Any]]:
        """The state write of a message's first enqueue, which ``enqueue.lua`` makes unread ("new"):
        its KEYS[5..6] and ARGV[7..15] (see the script's header). The broker asks for it for a
        delayed first send ("scheduled"); a first send to a ready queue records nothing.

        Nothing can have recorded the task before the script that queues it, so no guard is
        needed, and the arguments are few. The listing index is trimmed on one first record in
        ``INDEX_TRIM_EVERY``.
        """
        trim_to = self._trim_to()
        described = states.described_arguments(message)
        args = [message.message_id, self.ttl_ms, trim_to, states.SCHEDULED if delay else states.QUEUED,
                message.actor_name, q_name(message.queue_name), described["arguments"], described["input_file"]]
        if delay:
            args.append(message.options.get("eta", ""))
        while len(args) > 7 and args[-1] == "":  # trailing empty input_file, eta: left out (read as empty)
            args.pop()
        return [states.task_key(self.namespace, message.message_id), states.index_key(self.namespace)], args

    def before_process_message(self, broker, message) -> None:  # noqa: D102
        # One round trip: is it revoked (then skip it; the state write is refused, "revoked" being
        # final), and record "running" with this worker's record.
        worker_fields = None
        stale = getattr(self._pending, "value", None)  # a failed run neither nacked nor retried
        self._pending.value = None
        if self.control is not None:
            self.control.current = {"message_id": message.message_id, "queue_name": message.queue_name,
                                    "redis_message_id": message.options.get("redis_message_id")}
            worker_fields = {**(stale[1] if stale else {}), **self.control.record_fields(busy_with=message)}
        redis_id = message.options.get("redis_message_id")
        # A first send recorded nothing: this is the task's first record, so it carries what the
        # message told (a retried or delayed task's record already has it, with its own enqueue time).
        first_record = {**states.first_send_fields(message), "trim_to": self._trim_to()} \
            if redis_id == message.message_id else {"trim_to": 0}
        call = self._call(message, worker_fields, state=states.RUNNING, started_at=time.time(), host=self.host,
                          worker=broker.broker_id, pid=os.getpid(), redis_id=redis_id, **first_record)
        try:
            with broker.client.pipeline(transaction=False) as pipe:
                if self.revoked_key:
                    pipe.zscore(self.revoked_key, message.message_id)
                TASK_STATE.queue(pipe, keys=call[0], args=call[1])
                replies = pipe.execute(raise_on_error=False)
        except redis.RedisError:  # states are advisory; a revocation is also kept by the result's guard
            return
        if isinstance(replies[-1], redis.exceptions.NoScriptError):
            self._run(broker, call)  # loads the script
        if self.revoked_key and replies[0] is not None and not isinstance(replies[0], Exception):
            raise SkipMessage(f"message {message.message_id} was revoked")

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:  # noqa: D102
        worker_fields = None
        if self.control is not None:
            self.control.current = None
            self.tasks_done += 1
            worker_fields = {**self.control.record_fields(done=True), "tasks_done": self.tasks_done}
        if exception is None:
            call = self._call(message, worker_fields, state=states.SUCCEEDED, finished_at=time.time(),
                              **final_state_fields_of(message))
            if not defer_write(message, TASK_STATE, *call):  # with the ack, in its round trip
                self._run(broker, call)
        else:
            # Retries decides after this hook whether the message fails (after_nack) or runs again
            # (after_enqueue): record the outcome there, with this worker's fields and, on a retry's
            # "queued", the failed attempt's figures (the message there is a copy without them).
            self._pending.value = (message.message_id, worker_fields or {}, final_state_fields_of(message))

    def after_nack(self, broker, message) -> None:  # noqa: D102
        exception = failure_of(message)
        error = "message rejected"
        state = states.FAILED
        if exception is not None:
            exn = describe_exception(exception)
            error = f"{exn['type']}: {exn['msg']}"
            state = states.REVOKED if exn["type"] == "TaskRevoked" else states.FAILED
        worker_fields, _ = self._take_pending(message)  # (the attempt's figures are still on the message)
        self._write(broker, message, worker_fields, state=state, finished_at=time.time(), error=error,
                    **final_state_fields_of(message))
