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
from .revoke import revoked_key


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


def queue_lengths(broker) -> list[QueueLengths]:
    """Return the lengths of every queue the broker declares."""
    client, ns = broker.client, broker.jwql_config.namespace
    names = sorted(q for q in broker.get_declared_queues() if not q.endswith(".DQ"))
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

    Parameters
    ----------
    broker : JwqlRedisBroker
    queue : str, optional
        One queue; default every declared queue.
    dead_letter : bool
        Also empty the dead-letter queue.

    Returns
    -------
    list of dict
        ``{"message_id", "actor", "queue", "was"}`` for each purged message.
    """
    client, ns = broker.client, broker.jwql_config.namespace
    ttl_ms = int(broker.jwql_config.result_ttl_s * 1000)
    names = [queue] if queue else sorted(q for q in broker.get_declared_queues() if not q.endswith(".DQ"))
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
                data = client.hget(f"{base}.msgs", redis_id)
                if data is None:
                    continue
                message = Message.decode(data)
                _fail_as_purged(broker, message, ttl_ms)
                if redis_id in waiting:
                    client.hdel(f"{base}.msgs", redis_id)
                purged.append({"message_id": message.message_id, "actor": message.actor_name, "queue": name,
                               "was": was})
        if dead_letter:
            client.delete(f"{ns}:{name}.XQ", f"{ns}:{name}.XQ.msgs")
    return purged


def _fail_as_purged(broker, message: Message, ttl_ms: int) -> None:
    client, ns = broker.client, broker.jwql_config.namespace
    client.zadd(revoked_key(ns), {message.message_id: time.time()})  # never run it, never overwrite the failure
    broker.results_backend.store_failure(
        message, {"type": "TaskPurged", "msg": f"task {message.message_id} ({message.actor_name}) was purged from "
                                               f"queue {message.queue_name!r} before it ran", "traceback": ""},
        ttl_ms, force=True)
    states.write_state(client, ns, message.message_id, ttl_ms, state=states.PURGED, purged_at=time.time(),
                       actor=message.actor_name, queue=q_name(message.queue_name))
