"""Everything the dashboard reads from Redis, in a few pipelined round trips per page.

Nothing here writes to the keys the task path uses, and nothing here is called by a worker:
the dashboard adds no Redis work to a task. Task listings walk the states index
(``<ns>:tasks``, a sorted set) a page at a time; queues and locks are found with SCAN, never KEYS.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from dramatiq.common import dq_name
from dramatiq.message import Message

from ..broker import keys, states
from ..broker.admin import QueueLengths, queue_lengths
from ..broker.control import WorkerInfo, list_workers
from ..locks.admin import LockInfo, list_locks

#: Most index entries one filtered listing looks through before it offers "older".
SCAN_BUDGET = 5_000
#: Index entries fetched per round trip while filtering.
SCAN_CHUNK = 500
#: Delayed messages shown per queue (read with HSCAN).
DELAYED_SHOWN = 20


@dataclass(frozen=True)
class QueueView:
    """A queue's lengths, its oldest waiting message's age (s) and the due times of delayed ones."""

    lengths: QueueLengths
    oldest_age_s: float | None
    delayed_due: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TaskPage:
    """One page of the task listing: rows, and the index offset of the next (older) page, or None."""

    tasks: list[states.TaskState]
    next_offset: int | None
    scanned: int


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def redis_now_s(client: redis.Redis) -> float:
    """Redis's own clock, the common reference of every host's records."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def read_message(client: redis.Redis, namespace: str, queue: str, redis_id: str) -> Message | None:
    """Return a message still held in Redis (waiting, delayed or running), or None once it is gone."""
    for name in (queue, dq_name(queue)):
        data = client.hget(keys.messages_key(namespace, name), redis_id)
        if data is not None:
            try:
                return Message.decode(data)
            except Exception:  # not a message this package wrote; show nothing rather than fail
                return None
    return None


def first_file(message: Message | None) -> str:
    """The first string argument of a message (the input file of the pipeline actors), or ``""``."""
    if message is None:
        return ""
    for value in list(message.args) + list(message.kwargs.values()):
        if isinstance(value, str):
            return value
    return ""


def workers(client: redis.Redis, namespace: str, heartbeat_timeout_s: float) -> list[tuple[WorkerInfo, str]]:
    """Every worker with a record, with the input file of the task it runs (``""`` if none or unknown)."""
    found = list_workers(client, namespace, heartbeat_timeout_s)
    result = []
    for worker in found:
        file = ""
        if worker.current_message:
            state = states.get_task_state(worker.current_message, client, namespace)
            if state is not None:
                file = state.details.get("input_file", "")
            if state is not None and not file and state.details.get("redis_id"):
                file = first_file(read_message(client, namespace, state.queue, state.details["redis_id"]))
        result.append((worker, file))
    return result


def queues(broker) -> list[QueueView]:
    """Every known queue's lengths, oldest waiting message's age and the first delayed messages' due times."""
    client, ns = broker.client, broker.jwql_config.namespace
    now_ms = redis_now_s(client) * 1000
    views = []
    for lengths in queue_lengths(broker):
        oldest = None
        head = client.lindex(keys.queue_key(ns, lengths.queue), 0)
        if head is not None:
            data = client.hget(keys.messages_key(ns, lengths.queue), head)
            if data is not None:
                try:
                    oldest = max(0.0, (now_ms - json.loads(data)["message_timestamp"]) / 1000)
                except (ValueError, KeyError, TypeError):
                    oldest = None
        delayed = []
        if lengths.delayed:
            _, items = client.hscan(keys.messages_key(ns, dq_name(lengths.queue)), 0, count=DELAYED_SHOWN)
            for data in list(items.values())[:DELAYED_SHOWN]:
                try:
                    message = json.loads(data)
                    delayed.append((message["message_id"], message["options"].get("eta", 0) / 1000))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        views.append(QueueView(lengths, oldest, sorted(delayed, key=lambda d: d[1])))
    return views


def locks(client: redis.Redis, namespace: str) -> list[LockInfo]:
    """Every held lock (SCAN) with its owner."""
    return list_locks(client, namespace)


def _decode_state(message_id: str, raw: dict[bytes, bytes]) -> states.TaskState | None:
    if not raw:
        return None
    data = {_text(k): _text(v) for k, v in raw.items()}
    return states.TaskState(message_id=message_id, state=data.pop("state", "unknown"), actor=data.pop("actor", ""),
                            queue=data.pop("queue", ""), updated_at=float(data.pop("updated_at", 0) or 0),
                            details=data)


def task_page(client: redis.Redis, namespace: str, limit: int = 50, offset: int = 0, state: str = "",
              actor: str = "", host: str = "", text: str = "") -> TaskPage:
    """One page of recent tasks, newest first, through the states index (never KEYS).

    The first page (``offset`` 0) starts with the newest ``limit`` tasks waiting since their first
    send that match, which have no record (:func:`~jwql_dramatiq.broker.states.waiting_tasks`).
    Without a filter the index's part is one ZREVRANGE and one pipeline of ``limit`` HGETALLs,
    whatever the number of stored states. With filters, the index is read in chunks until
    ``limit`` rows match or :data:`SCAN_BUDGET` entries were looked at; the page then offers the
    next offset.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    limit : int
        Most rows.
    offset : int
        Index position (0 is the most recent change) to start from.
    state, actor, host : str
        Exact matches; ``""`` for any.
    text : str
        A substring of the message id, the error, or the input file (the first string argument).

    Returns
    -------
    TaskPage
    """
    filtered = bool(state or actor or host or text)
    chunk = SCAN_CHUNK if filtered else limit
    found: list[states.TaskState] = []
    if offset == 0 and state in ("", states.QUEUED) and not host:
        # Tasks waiting since their first send have no record, so no index entry: the first page
        # lists the newest of them before the index's rows (the queues view counts them all).
        found = [t for t in states.waiting_tasks(client, namespace, limit)
                 if _matches(client, namespace, t, state, actor, host, text)]
        limit += len(found)
    position, scanned = offset, 0
    while len(found) < limit and scanned < (SCAN_BUDGET if filtered else limit):
        ids = [_text(i) for i in client.zrevrange(states.index_key(namespace), position, position + chunk - 1)]
        if not ids:
            return TaskPage(found, None, scanned)
        with client.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(states.task_key(namespace, message_id))
            raws = pipe.execute()
        for i, (message_id, raw) in enumerate(zip(ids, raws)):
            task = _decode_state(message_id, raw)
            if task is not None and _matches(client, namespace, task, state, actor, host, text):
                found.append(task)
                if len(found) == limit:
                    return TaskPage(found, position + i + 1, scanned + i + 1)
        position += len(ids)
        scanned += len(ids)
    more = client.zcard(states.index_key(namespace)) > position
    return TaskPage(found, position if more else None, scanned)


def _matches(client: redis.Redis, namespace: str, task: states.TaskState, state: str, actor: str, host: str,
             text: str) -> bool:
    if (state and task.state != state) or (actor and task.actor != actor) or \
            (host and task.details.get("host", "") != host):
        return False
    if not text:
        return True
    if text in task.message_id or text in task.details.get("error", "") or text in task.details.get("input_file", ""):
        return True
    redis_id = task.details.get("redis_id")
    if task.state in (states.QUEUED, states.SCHEDULED, states.RUNNING) and redis_id:
        message = read_message(client, namespace, task.queue, redis_id)
        return message is not None and text in json.dumps([message.args, message.kwargs])
    return False


def task_detail(broker, message_id: str) -> dict[str, Any] | None:
    """One task's state, its message (while Redis still holds it) and its stored result or failure."""
    client, ns = broker.client, broker.jwql_config.namespace
    task = states.get_task_state(message_id, client, ns)
    if task is None:
        return None
    message = None
    if task.details.get("redis_id"):
        message = read_message(client, ns, task.queue, task.details["redis_id"])
    result: Any = None
    failure: dict[str, str] | None = None
    if task.actor and task.queue:
        probe = Message(queue_name=task.queue, actor_name=task.actor, args=(), kwargs={}, options={},
                        message_id=message_id, message_timestamp=0)
        backend = broker.results_backend
        raw = client.lindex(backend.build_message_key(probe), -1)
        if raw is not None:
            try:
                payload = backend.encoder.decode(raw)
            except Exception:
                payload = None
            if isinstance(payload, dict) and "exn" in payload and "__t" in payload:
                failure = payload["exn"]
            else:
                result = payload
    details = dict(task.details)
    attempts = []
    if details.get("attempts"):
        try:
            attempts = json.loads(details["attempts"])
        except ValueError:
            attempts = []
    return {"task": task, "message": message, "result": result, "failure": failure, "attempts": attempts,
            "duration_s": duration_s(task)}


def duration_s(task: states.TaskState) -> float | None:
    """How long a task ran (finished or revoked minus started), or None."""
    try:
        start = float(task.details.get("started_at") or 0)
        end = float(task.details.get("finished_at") or task.details.get("revoked_at") or 0)
    except ValueError:
        return None
    return end - start if start > 0 and end >= start else None


def recent_rows(client: redis.Redis, namespace: str, since_s: float, most: int = 20_000,
                fields: tuple[str, ...] = ("state", "actor", "started_at", "finished_at", "updated_at",
                                           "memory_peak_mib")) -> list[tuple[str, dict[str, str]]]:
    """Selected fields of the tasks changed since ``since_s`` (Unix time), newest first, at most ``most``."""
    ids = [_text(i) for i in client.zrevrangebyscore(states.index_key(namespace), "+inf", since_s,
                                                     start=0, num=most)]
    rows = []
    for start in range(0, len(ids), 2000):
        part = ids[start:start + 2000]
        with client.pipeline(transaction=False) as pipe:
            for message_id in part:
                pipe.hmget(states.task_key(namespace, message_id), *fields)
            values = pipe.execute()
        for message_id, vals in zip(part, values):
            if vals[0] is not None:
                rows.append((message_id, {f: _text(v) for f, v in zip(fields, vals) if v is not None}))
    return rows


def waiting_rows(client: redis.Redis, namespace: str, since_s: float, most: int) -> list[tuple[str, dict[str, str]]]:
    """:func:`recent_rows` of the tasks waiting since their first send (they have no record), sent since ``since_s``."""
    return [(t.message_id, {"state": t.state, "actor": t.actor, "updated_at": str(t.updated_at)})
            for t in states.waiting_tasks(client, namespace, most) if t.updated_at >= since_s]


def now_s() -> float:
    """Local Unix time (for display of ages computed from records written with Unix times)."""
    return time.time()
