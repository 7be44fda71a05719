"""Operator actions on the queues: lengths, and a purge that leaves no monitor waiting.

Dramatiq's own ``flush`` deletes a queue's keys, so a monitor blocked on one of its results
waits until its bound (Celery's "wait forever" in the runbook). :func:`purge` instead gives
every purged message a ``TaskPurged`` failure result, so its waiter returns at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dramatiq.common import q_name
from dramatiq.message import Message

from . import states
from .revoke import REVOKED_KEEP_S, revoked_key


@dataclass(frozen=True)
class QueueLengths:
    """Messages waiting (``ready``), not yet due (``delayed``) and dead-lettered (``dead``) in a queue."""

    queue: str
    ready: int
    delayed: int
    dead: int

    def to_dict(self) -> dict[str, int | str]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def known_queues(broker) -> list[str]:
    """Every queue name worth looking at: declared on ``broker``, the config's, and any found in Redis.

    A process declares only the actors it imported, so queues are also found by their message
    hashes (``<ns>:<queue>.msgs``, ``.DQ.msgs``, ``.XQ.msgs``; SCAN, never KEYS).

    Parameters
    ----------
    broker : JwqlRedisBroker

    Returns
    -------
    list of str
        Canonical queue names (no ``.DQ``/``.XQ``), sorted.
    """
    client, ns = broker.client, broker.jwql_config.namespace
    names = {q_name(q) for q in broker.get_declared_queues()} | {broker.jwql_config.queue_name}
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in ns)
    prefix = f"{ns}:"
    for key in client.scan_iter(match=f"{escaped}:*.msgs", count=1000):
        name = key.decode(errors="replace")[len(prefix):-len(".msgs")]
        if ":" not in name:  # not some other key family of this namespace
            names.add(q_name(name[:-3] if name.endswith(".XQ") else name))
    return sorted(names)


def queue_lengths(broker) -> list[QueueLengths]:
    """Return the lengths of every known queue (see :func:`known_queues`).

    Parameters
    ----------
    broker : JwqlRedisBroker

    Returns
    -------
    list of QueueLengths
    """
    client, ns = broker.client, broker.jwql_config.namespace
    names = known_queues(broker)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(f"{ns}:{name}")
            pipe.hlen(f"{ns}:{name}.DQ.msgs")
            pipe.zcard(f"{ns}:{name}.XQ")
        counts = pipe.execute()
    return [QueueLengths(name, *counts[3 * i:3 * i + 3]) for i, name in enumerate(names)]


def purge(broker, queue: str | None = None, dead_letter: bool = False) -> list[dict[str, str]]:
    """Remove waiting and delayed messages, giving each a ``TaskPurged`` failure result.

    Running messages are left alone. The dead-letter queue is kept unless ``dead_letter``.

    Delayed messages a worker already holds in memory are failed the same way and skipped
    when they fall due.

    Parameters
    ----------
    broker : JwqlRedisBroker
    queue : str, optional
        One queue; default every known queue (:func:`known_queues`).
    dead_letter : bool
        Also empty the dead-letter queue.

    Returns
    -------
    list of dict
        ``{"message_id", "actor", "queue", "was"}`` for each purged message.
    """
    client, ns = broker.client, broker.jwql_config.namespace
    ttl_ms = int(broker.jwql_config.result_ttl_s * 1000)
    names = [q_name(queue)] if queue else known_queues(broker)
    purged = []
    for name in names:
        for suffix, was in (("", states.QUEUED), (".DQ", states.SCHEDULED)):
            base = f"{ns}:{name}{suffix}"
            with client.pipeline(transaction=True) as pipe:  # take the waiting ids atomically
                pipe.lrange(base, 0, -1)
                pipe.delete(base)
                waiting, _ = pipe.execute()
            if suffix:  # also delayed messages a worker holds in memory until due: they will be skipped
                ids = list(client.hkeys(f"{base}.msgs"))
            else:
                ids = waiting
            for redis_id in ids:
                try:
                    item = _purge_one(broker, client.hget(f"{base}.msgs", redis_id), redis_id, name, was, ttl_ms)
                finally:
                    if redis_id in waiting:
                        client.hdel(f"{base}.msgs", redis_id)
                if item is not None:
                    purged.append(item)
        if dead_letter:
            client.delete(f"{ns}:{name}.XQ", f"{ns}:{name}.XQ.msgs")
    if purged:
        client.zremrangebyscore(revoked_key(ns), 0, time.time() - REVOKED_KEEP_S)
    return purged


def _purge_one(broker, data: bytes | None, redis_id: bytes, queue: str, was: str,
               ttl_ms: int) -> dict[str, str] | None:
    """Fail one taken message as purged; return what to report, or None if there is nothing to."""
    if data is None:
        return None
    try:
        message = Message.decode(data)
    except Exception:  # not a message this package can read: removed, and nobody to tell
        return {"message_id": "", "actor": "", "queue": queue, "was": was,
                "note": f"undecodable payload (redis id {redis_id.decode(errors='replace')})"}
    if broker.client.zscore(revoked_key(broker.jwql_config.namespace), message.message_id) is not None:
        return None  # already revoked or purged: its waiter was told then
    _fail_as_purged(broker, message, ttl_ms)
    return {"message_id": message.message_id, "actor": message.actor_name, "queue": queue, "was": was}


def _fail_as_purged(broker, message: Message, ttl_ms: int) -> None:
    client, ns = broker.client, broker.jwql_config.namespace
    client.zadd(revoked_key(ns), {message.message_id: time.time()})  # never run it, never overwrite the failure
    text = (f"task {message.message_id} ({message.actor_name}) was purged from queue "
            f"{q_name(message.queue_name)!r} before it ran")
    broker.results_backend.store_failure(message, {"type": "TaskPurged", "msg": text, "traceback": ""}, ttl_ms,
                                         force=True)
    states.write_state(client, ns, message.message_id, ttl_ms, mode="force", state=states.PURGED,
                       purged_at=time.time(), actor=message.actor_name, queue=q_name(message.queue_name),
                       error=f"TaskPurged: {text}")
