"""Task states kept in Redis: queued, scheduled, running, succeeded, failed, purged, revoked.

A middleware (:class:`~jwql_dramatiq.broker.state_recorder.TaskStates`) records each change in one
round trip (the ``task_state.lua`` script):

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
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from dramatiq.common import q_name
from dramatiq.message import Message

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


def first_send_fields(message) -> dict[str, str]:
    """What a first send's message tells that its task's first record keeps (it wrote none itself):
    ``enqueued_at`` (s) and :func:`described_arguments`."""
    return {"enqueued_at": f"{message.message_timestamp / 1000:.6f}", **described_arguments(message)}


def waiting_state(message: Message) -> TaskState:
    """The "queued" state of a task whose message waits since its first send, read from that message."""
    return TaskState(message_id=message.message_id, state=QUEUED, actor=message.actor_name,
                     queue=q_name(message.queue_name), updated_at=message.message_timestamp / 1000,
                     details={"redis_id": message.message_id, **first_send_fields(message)})


def waiting_tasks(client: redis.Redis, namespace: str, limit: int) -> list[TaskState]:
    """The ``limit`` newest tasks waiting since their first send (which have no record), newest first."""
    return [waiting_state(m) for m in waiting_messages.newest(client, namespace, limit,
                                                               lambda message_id: task_key(namespace, message_id))]


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
        found = sorted(found[:limit] + waiting_tasks(client, namespace, limit), key=lambda t: t.updated_at,
                       reverse=True)
    return found[:limit]


def _defaults(client: redis.Redis | None, namespace: str | None) -> tuple[redis.Redis, str]:
    if client is None or namespace is None:
        config, shared_client = shared()
        client = client or shared_client
        namespace = namespace or config.namespace
    return client, namespace
