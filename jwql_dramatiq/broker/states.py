"""Task states kept in Redis: queued, scheduled, running, succeeded, failed, purged, revoked.

A middleware records each change in one round trip (the ``task_state.lua`` script):

- ``<ns>:task:<message_id>``: a hash with ``state``, ``actor``, ``queue``, ``updated_at`` and,
  as they become known, ``enqueued_at``, ``eta``, ``redis_id``, ``input_file`` and ``arguments``
  (the first string argument, and the arguments as JSON cut to :data:`ARGUMENTS_MAX_CHARS`, so
  the task can be found and shown once its message is gone), ``started_at``, ``finished_at``,
  ``host``, ``worker``, ``pid`` and ``error``; it expires with the results (``result_ttl_s``).
- ``<ns>:tasks``: a sorted set of message ids scored by their last change, for listings
  (trimmed to :data:`INDEX_MAX` entries; a sender trims it on one send in
  :data:`INDEX_TRIM_EVERY`, so it may hold that many more for a while).

A message's first send records nothing: the task is "queued" while its message waits, and
:func:`get_task_state` and :func:`list_tasks` read that state from the message itself
(:mod:`jwql_dramatiq.broker.waiting_messages`), so a send costs what stock Dramatiq's does. The
worker's "running" is then the task's first record, and carries what the message told. A delayed
first send records "scheduled" in ``enqueue.lua``, the script that queues it, without reading the
record first: nothing can have written it before. A retry, a delayed message falling due and a
task requeued from a dead worker record "queued".

The script never moves a task out of a final state (a revoked task that goes on running does
not become "succeeded"; a purged delayed message re-enqueued by a worker does not become
"queued"), and a sender's "queued" never overwrites the worker's "running" of the same enqueue.
A failure is recorded when Dramatiq rejects the message (``after_nack``), so a message that
will be retried goes from "running" to "scheduled", never through "failed".

Monitor code asks :func:`get_task_state`; the CLI's ``tasks`` command lists :func:`list_tasks`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from ..config import worker_hostname
from ..connection import shared
from . import waiting_messages
from .scripts import TASK_STATE

#: The states a task goes through.
QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, PURGED, REVOKED = (
    "queued", "scheduled", "running", "succeeded", "failed", "purged", "revoked")
#: Every state, in the order a task goes through them.
ALL_STATES = (QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, PURGED, REVOKED)
#: States after which a task never changes again.
FINAL_STATES = frozenset({SUCCEEDED, FAILED, PURGED, REVOKED})
#: Longest ``arguments`` text kept in a task's state, in characters.
ARGUMENTS_MAX_CHARS = 2000
#: Most entries kept in the listing index.
INDEX_MAX = 10_000
#: A task's first record trims the listing index on one in this many (a trim costs a command).
INDEX_TRIM_EVERY = 64
#: Write modes of :func:`write_state`.
MODES = ("guard", "enqueue", "force")



def task_key(namespace: str, message_id: str) -> str:
    """The hash holding one task's state."""
    return f"{namespace}:task:{message_id}"


#: :func:`described_arguments` of a call without arguments.
NO_ARGUMENTS = {"input_file": "", "arguments": json.dumps({"args": [], "kwargs": {}})}


def described_arguments(message) -> dict[str, str]:
    """``input_file`` (the first string argument: the pipeline actors' file) and ``arguments`` (JSON,
    cut to :data:`ARGUMENTS_MAX_CHARS`) of a message, for its state."""
    if not message.args and not message.kwargs:
        return dict(NO_ARGUMENTS)
    values = [*message.args, *message.kwargs.values()]
    text = json.dumps({"args": list(message.args), "kwargs": message.kwargs}, default=repr)
    if len(text) > ARGUMENTS_MAX_CHARS:
        text = text[:ARGUMENTS_MAX_CHARS] + "..."
    return {"input_file": next((v for v in values if isinstance(v, str)), "")[:ARGUMENTS_MAX_CHARS],
            "arguments": text}


def index_key(namespace: str) -> str:
    """The sorted set of recent task ids."""
    return f"{namespace}:tasks"


def _encode(value: Any) -> str | int | float:
    return value if isinstance(value, (str, int, float)) else json.dumps(value)


def write_state(client: redis.Redis, namespace: str, message_id: str, ttl_ms: int,
                also: tuple[str, dict[str, Any]] | None = None, mode: str = "guard", **fields: Any) -> bool:
    """Record a state change in one round trip.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    message_id : str
    ttl_ms : int
        How long the record is kept, in milliseconds.
    also : (key, fields), optional
        Another hash to update in the same round trip (the worker's own record); written even
        when the task's change is refused.
    mode : {"guard", "enqueue", "force"}
        ``guard`` refuses to change a task in a final state; ``enqueue`` also refuses when the
        task already runs the same Redis message (``redis_id``); ``force`` always writes.
    **fields
        Hash fields; ``state`` among them. None values are left out.

    Returns
    -------
    bool
        Whether the task's record was written.

    Raises
    ------
    ValueError
        For an unknown ``mode``.
    redis.RedisError
        As raised by the client.
    """
    keys, args = state_call(namespace, message_id, ttl_ms, also=also, mode=mode, **fields)
    return bool(TASK_STATE.run(client, keys=keys, args=args))


def state_call(namespace: str, message_id: str, ttl_ms: int, also: tuple[str, dict[str, Any]] | None = None,
               mode: str = "guard", trim_to: int | None = None, **fields: Any) -> tuple[list[Any], list[Any]]:
    """The KEYS and ARGV of ``task_state.lua`` for :func:`write_state` (to run it, or queue it on a pipeline).

    ``trim_to`` is how many entries the listing index is trimmed to if the task is new to it
    (default :data:`INDEX_MAX`; 0: not this time).

    Raises
    ------
    ValueError
        For an unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    task_fields = [x for k, v in fields.items() if v is not None for x in (k, _encode(v))]
    keys = [task_key(namespace, message_id), index_key(namespace)]
    trim_to = INDEX_MAX if trim_to is None else trim_to
    args: list[Any] = [message_id, time.time(), int(ttl_ms), trim_to, mode, len(task_fields) // 2, *task_fields]
    if also is not None and also[1]:
        keys.append(also[0])
        args.extend(x for k, v in also[1].items() for x in (k, _encode(v)))
    return keys, args


@dataclass(frozen=True)
class TaskState:
    """One task's recorded state (see the module docstring for the fields in ``details``)."""

    message_id: str
    state: str
    actor: str = ""
    queue: str = ""
    updated_at: float = 0.0
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"message_id": self.message_id, "state": self.state, "actor": self.actor, "queue": self.queue,
                "updated_at": self.updated_at, **self.details}


def _decode(message_id: str, raw: dict[bytes, bytes]) -> TaskState | None:
    if not raw:
        return None
    data = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    return TaskState(message_id=message_id, state=data.pop("state", "unknown"), actor=data.pop("actor", ""),
                     queue=data.pop("queue", ""), updated_at=float(data.pop("updated_at", 0) or 0), details=data)


def waiting_state(message: Message) -> TaskState:
    """The "queued" state of a task whose message waits since its first send, read from that message."""
    enqueued_at = message.message_timestamp / 1000
    return TaskState(message_id=message.message_id, state=QUEUED, actor=message.actor_name,
                     queue=q_name(message.queue_name), updated_at=enqueued_at,
                     details={"redis_id": message.message_id, "enqueued_at": f"{enqueued_at:.6f}",
                              **described_arguments(message)})


def get_task_state(message_id: str, client: redis.Redis | None = None,
                   namespace: str | None = None) -> TaskState | None:
    """Return the state of ``message_id``: its record, or "queued" while its first-sent message waits,
    or None if neither exists (or the record expired).

    Parameters
    ----------
    message_id : str
    client : redis.Redis, optional
        Defaults to the configured client.
    namespace : str, optional
        Defaults to the configured namespace.

    Returns
    -------
    TaskState or None
    """
    client, namespace = _defaults(client, namespace)
    recorded = _decode(message_id, client.hgetall(task_key(namespace, message_id)))
    if recorded is not None:
        return recorded
    message = waiting_messages.find(client, namespace, message_id)
    if message is not None:
        return waiting_state(message)
    # it may have been fetched and recorded since the first read
    return _decode(message_id, client.hgetall(task_key(namespace, message_id)))


def list_tasks(limit: int = 50, client: redis.Redis | None = None, namespace: str | None = None,
               states: tuple[str, ...] | list[str] | None = None) -> list[TaskState]:
    """Return the ``limit`` most recently changed tasks, newest first (those waiting since their first
    send, which have no record, by their enqueue time).

    Parameters
    ----------
    limit : int
        Most tasks returned.
    client : redis.Redis, optional
        Defaults to the configured client.
    namespace : str, optional
        Defaults to the configured namespace.
    states : sequence of str, optional
        Only tasks in one of these states.

    Returns
    -------
    list of TaskState
        Expired records are left out (and dropped from the index).
    """
    client, namespace = _defaults(client, namespace)
    wanted = set(states or ())
    found: list[TaskState] = []
    start, page = 0, max(limit, 100)
    while len(found) < limit:
        ids = [i.decode() for i in client.zrevrange(index_key(namespace), start, start + page - 1)]
        if not ids:
            break
        with client.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(task_key(namespace, message_id))
            raws = pipe.execute()
        expired = []
        for message_id, raw in zip(ids, raws):
            state = _decode(message_id, raw)
            if state is None:
                expired.append(message_id)
            elif not wanted or state.state in wanted:
                found.append(state)
        if expired:
            client.zrem(index_key(namespace), *expired)
            start -= len(expired)
        start += len(ids)
    if not wanted or QUEUED in wanted:
        waiting = waiting_messages.newest(client, namespace, limit, lambda m: task_key(namespace, m))
        found = sorted(found[:limit] + [waiting_state(m) for m in waiting], key=lambda t: t.updated_at, reverse=True)
    return found[:limit]


def _defaults(client: redis.Redis | None, namespace: str | None) -> tuple[redis.Redis, str]:
    if client is None or namespace is None:
        config, shared_client = shared()
        client = client or shared_client
        namespace = namespace or config.namespace
    return client, namespace


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
        return state_call(self.namespace, message.message_id, self.ttl_ms, also=also, mode=mode, trim_to=trim_to,
                          actor=message.actor_name, queue=q_name(message.queue_name), **fields)

    def _trim_to(self) -> int:
        """:data:`INDEX_MAX` on one first record in :data:`INDEX_TRIM_EVERY`, else 0 (no trim)."""
        self._first_records += 1
        return INDEX_MAX if (self._first_records - 1) % INDEX_TRIM_EVERY == 0 else 0

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
        return self._call(message, worker_fields, mode="enqueue", state=SCHEDULED if delay else QUEUED,
                          eta=message.options.get("eta") if delay else None,
                          redis_id=message.options.get("redis_message_id"), enqueued_at=time.time(),
                          **described_arguments(message), **attempt_fields)

    def first_enqueue_state(self, message, delay) -> tuple[list[Any], list[Any]]:
        """The state write of a message's first enqueue, which ``enqueue.lua`` makes unread ("new"):
        its KEYS[5..6] and ARGV[7..15] (see the script's header). The broker asks for it for a
        delayed first send ("scheduled"); a first send to a ready queue records nothing.

        Nothing can have recorded the task before the script that queues it, so no guard is
        needed, and the arguments are few. The listing index is trimmed on one first record in
        :data:`INDEX_TRIM_EVERY`.
        """
        trim_to = self._trim_to()
        described = described_arguments(message)
        args = [message.message_id, self.ttl_ms, trim_to, SCHEDULED if delay else QUEUED, message.actor_name,
                q_name(message.queue_name), described["arguments"], described["input_file"]]
        if delay:
            args.append(message.options.get("eta", ""))
        while len(args) > 7 and args[-1] == "":  # trailing empty input_file, eta: left out (read as empty)
            args.pop()
        return [task_key(self.namespace, message.message_id), index_key(self.namespace)], args

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
        first_record = {"enqueued_at": message.message_timestamp / 1000, **described_arguments(message),
                        "trim_to": self._trim_to()} if redis_id == message.message_id else {"trim_to": 0}
        call = self._call(message, worker_fields, state=RUNNING, started_at=time.time(), host=self.host,
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
        from .marks import defer_write, final_state_fields_of

        worker_fields = None
        if self.control is not None:
            self.control.current = None
            self.tasks_done += 1
            worker_fields = {**self.control.record_fields(done=True), "tasks_done": self.tasks_done}
        if exception is None:
            call = self._call(message, worker_fields, state=SUCCEEDED, finished_at=time.time(),
                              **final_state_fields_of(message))
            if not defer_write(message, TASK_STATE, *call):  # with the ack, in its round trip
                self._run(broker, call)
        else:
            # Retries decides after this hook whether the message fails (after_nack) or runs again
            # (after_enqueue): record the outcome there, with this worker's fields and, on a retry's
            # "queued", the failed attempt's figures (the message there is a copy without them).
            self._pending.value = (message.message_id, worker_fields or {}, final_state_fields_of(message))

    def after_nack(self, broker, message) -> None:  # noqa: D102
        from .results import describe_exception

        from .marks import failure_of, final_state_fields_of

        exception = failure_of(message)
        error = "message rejected"
        state = FAILED
        if exception is not None:
            exn = describe_exception(exception)
            error = f"{exn['type']}: {exn['msg']}"
            state = REVOKED if exn["type"] == "TaskRevoked" else FAILED
        worker_fields, _ = self._take_pending(message)  # (the attempt's figures are still on the message)
        self._write(broker, message, worker_fields, state=state, finished_at=time.time(), error=error,
                    **final_state_fields_of(message))
