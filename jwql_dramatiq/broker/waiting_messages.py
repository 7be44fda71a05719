"""Tasks waiting on a queue since their first send, read from their messages.

A message's first send (not delayed) records no state: ``enqueue.lua`` writes the payload, the
queue and the wake-up, as stock Dramatiq's send does, and nothing else. Its Redis message id is
its Dramatiq message id, so while ``<ns>:Q.msgs`` holds its payload the task is "queued" and is
found by its message id, with what a record would hold (actor, queue, arguments, enqueue time)
read from the message itself. Its first record is the worker's "running", or a revoke's or a
purge's. :mod:`jwql_dramatiq.broker.states` reads these through :func:`find` and :func:`newest`.
"""

from __future__ import annotations

from typing import Callable

import redis
from dramatiq.message import Message

from . import keys


def _ready_queues(client: redis.Redis, namespace: str) -> list[str]:
    # delayed first sends write "scheduled" records, and dead letters have records: ready queues only
    return sorted(n for n in keys.queues_in_redis(client, namespace) if not n.endswith((".DQ", ".XQ")))


def _decode(payload: bytes, redis_id: str) -> Message | None:
    try:
        message = Message.decode(payload)
    except Exception:  # not a message this package wrote: no state to show rather than a failure
        return None
    # a retry or a repeated send waits under a fresh id, and has a record of its own
    return message if message.message_id == redis_id else None


def find(client: redis.Redis, namespace: str, message_id: str) -> Message | None:
    """Return the message of ``message_id`` if it waits on a ready queue since its first send, else None.

    One SCAN of the payload hashes' names, then one round trip.

    Raises
    ------
    redis.RedisError
        As raised by the client.
    """
    names = _ready_queues(client, namespace)
    if not names:
        return None
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(keys.messages_key(namespace, name), message_id)
        payloads = pipe.execute()
    for payload in payloads:
        message = _decode(payload, message_id) if payload is not None else None
        if message is not None:
            return message
    return None


def newest(client: redis.Redis, namespace: str, limit: int, record_key: Callable[[str], str]) -> list[Message]:
    """The ``limit`` newest messages waiting since their first send that have no record, newest first.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    limit : int
        Most messages returned (and read from the tail of each waiting list).
    record_key : callable
        The key of a task's state record, given its message id: a message whose task has one
        (a task requeued from a dead worker) is listed through that record instead.

    Raises
    ------
    redis.RedisError
        As raised by the client.
    """
    if limit <= 0:
        return []
    found: list[Message] = []
    for name in _ready_queues(client, namespace):
        lists = keys.waiting_list_keys(client, namespace, name)
        with client.pipeline(transaction=False) as pipe:
            for key in lists:
                pipe.lrange(key, -limit, -1)
            ids = [redis_id for tail in pipe.execute() for redis_id in tail]
        if not ids:
            continue
        payloads = client.hmget(keys.messages_key(namespace, name), ids)
        for redis_id, payload in zip(ids, payloads):
            message = _decode(payload, redis_id.decode(errors="replace")) if payload is not None else None
            if message is not None:
                found.append(message)
    if not found:
        return []
    with client.pipeline(transaction=False) as pipe:
        for message in found:
            pipe.exists(record_key(message.message_id))
        recorded = pipe.execute()
    unrecorded = [m for m, has_record in zip(found, recorded) if not has_record]
    unrecorded.sort(key=lambda m: m.message_timestamp, reverse=True)
    return unrecorded[:limit]
