"""Operator actions on the queues: lengths, and a purge that leaves no monitor waiting.

Dramatiq's own ``flush`` deletes a queue's keys, so a monitor blocked on one of its results
waits until its bound (Celery's "wait forever" in the runbook). :func:`purge` instead gives
every purged message a ``TaskPurged`` failure result, so its waiter returns at once; an
interrupted purge loses none: the next one finishes it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dramatiq.common import dq_name, q_name
from dramatiq.message import Message

from . import keys, states
from .keys import revoked_key
from .revoke import REVOKED_KEEP_S
from .scripts import PURGE, PURGE_TAKE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueLengths:
    """Messages waiting (``ready``), not yet due (``delayed``) and dead-lettered (``dead``) in a queue.

    ``ready`` includes the messages a purge has taken off the queue and not yet failed (in its
    holding lists: being purged, or left by an interrupted purge for the next one to finish).
    """

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
    names |= {q_name(name[:-3] if name.endswith(".XQ") else name) for name in keys.queues_in_redis(client, ns)}
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
    lists = {name: keys.waiting_list_keys(client, ns, name) for name in names}
    for holding, queue_name in client.hgetall(keys.purging_key(ns)).items():  # (a delay queue's: in its HLEN)
        if queue_name.decode(errors="replace") in lists:
            lists[queue_name.decode(errors="replace")].append(holding.decode(errors="replace"))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for key in lists[name]:
                pipe.llen(key)
            pipe.hlen(keys.messages_key(ns, dq_name(name)))
            pipe.zcard(keys.dead_letters_key(ns, name))
        counts = iter(pipe.execute())
    return [QueueLengths(name, sum(next(counts) for _ in lists[name]), next(counts), next(counts)) for name in names]


#: Messages purged per pair of round trips (at 7 script arguments each, well inside Lua's limits).
PURGE_CHUNK = 2000


def purge(broker, queue: str | None = None, dead_letter: bool = False) -> list[dict[str, str]]:
    """Remove waiting and delayed messages, giving each a ``TaskPurged`` failure result.

    Running messages are left alone. The dead-letter queue is kept unless ``dead_letter``.

    Delayed messages a worker already holds in memory are failed the same way and skipped
    when they fall due. Messages go in chunks of :data:`PURGE_CHUNK`, two round trips each: read
    the payloads, then ``purge.lua`` writes the revocations, failures, states and removals.

    No message is lost if the purge is interrupted (Ctrl-C, a Redis error, the process killed):
    ``purge_take.lua`` renames each waiting list to a holding list of this purge
    (:func:`~jwql_dramatiq.broker.keys.holding_key`, registered in
    :func:`~jwql_dramatiq.broker.keys.purging_key`) instead of deleting it, and each chunk's
    ``purge.lua`` pops its ids off that list in the same script as its effects. Whatever is left
    held is finished first by the next purge (of any queue); meanwhile :func:`queue_lengths` counts
    it as ready. Two purges finishing the same holding list each fail a chunk at most once between
    them (``purge.lua`` checks the list's length first), and each reports the ones it failed.

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
        ``{"message_id", "actor", "queue", "was"}`` for each purged message, those of an interrupted
        purge finished here first.
    """
    client, ns = broker.client, broker.jwql_config.namespace
    ttl_ms = int(broker.jwql_config.result_ttl_s * 1000)
    names = [q_name(queue)] if queue else known_queues(broker)
    purge_id = uuid.uuid4().hex
    purged = _finish_interrupted(broker, ttl_ms)
    for name in names:
        for queue_name, was in ((name, states.QUEUED), (dq_name(name), states.SCHEDULED)):
            payloads = keys.messages_key(ns, queue_name)
            taken = broker.run_script(PURGE_TAKE, [keys.queue_key(ns, queue_name), keys.levels_key(ns, queue_name),
                                                   keys.holding_key(ns, queue_name, purge_id), keys.purging_key(ns)],
                                      [queue_name])
            batches = [_Batch(ids, holding.decode()) for holding, ids in zip(taken[::2], taken[1::2])]
            if queue_name != name:
                # Delayed messages a worker holds in memory until due are failed too (and skipped when
                # due), but their payloads stay until that worker settles them.
                waiting = {i for batch in batches for i in batch.ids}
                batches.append(_Batch([i for i in client.hkeys(payloads) if i not in waiting], None))
            purged += _purge_chunks(broker, batches, payloads, name, was, ttl_ms)
        if dead_letter:
            dead = keys.dead_letters_key(ns, name)
            client.delete(dead, dead + ".msgs")
    if purged:
        client.zremrangebyscore(revoked_key(ns), 0, time.time() - REVOKED_KEEP_S)
    return purged


def _finish_interrupted(broker, ttl_ms: int) -> list[dict[str, str]]:
    """Fail the ids an interrupted purge left in its holding lists (one round trip when there are none)."""
    client, ns = broker.client, broker.jwql_config.namespace
    registry = keys.purging_key(ns)
    holdings = sorted(client.hgetall(registry).items())
    if not holdings:
        return []
    with client.pipeline(transaction=False) as pipe:
        for holding, _ in holdings:
            pipe.lrange(holding, 0, -1)
        held = pipe.execute()
    reported: list[dict[str, str]] = []
    for (holding, queue_name_raw), ids in zip(holdings, held):
        if not ids:  # emptied meanwhile by another purge, or deleted by hand: nothing left to do
            client.hdel(registry, holding)
            continue
        queue_name = queue_name_raw.decode(errors="replace")
        name = q_name(queue_name)
        logger.warning("Finishing an interrupted purge: %d message(s) of queue %r held in %s",
                    len(ids), queue_name, holding.decode(errors="replace"))
        reported += _purge_chunks(broker, [_Batch(ids, holding.decode())], keys.messages_key(ns, queue_name), name,
                                  states.QUEUED if queue_name == name else states.SCHEDULED, ttl_ms)
    return reported


@dataclass(frozen=True)
class _Batch:
    """Ids of one queue to fail as purged, in chunks.

    ``holding`` is the purge's holding list they are (its whole content, head first), whose chunks
    ``purge.lua`` pops as it fails them and whose payloads it drops; ``None`` for delayed messages a
    worker holds in memory (not taken off a queue: payloads kept, ids marked revoked).
    """

    ids: list[bytes]
    holding: str | None


@dataclass
class _PurgeChunk:
    """One chunk's rows for ``purge.lua`` (its ARGV[6], as JSON) and what to report for it."""

    rows_json: str
    report: list[dict[str, str]]
    actors: dict[str, str]


def _prepare_chunk(broker, ids: list[bytes], payloads: list[bytes | None], taken: bool, queue: str,
                   was: str) -> _PurgeChunk:
    """Decode one chunk's payloads and build its rows for ``purge.lua`` (no Redis call).

    ``taken``: the ids were taken off their queue (their payloads are dropped).
    """
    chunk, rows = _PurgeChunk("", [], {}), []
    drop = "1" if taken else "0"
    for redis_id, data in zip(ids, payloads):
        if data is None:  # settled or purged meanwhile
            continue
        redis_id_text = redis_id.decode(errors="replace")
        try:
            message = Message.decode(data)
        except Exception:  # not a message this package can read: removed, and nobody to tell
            chunk.report.append({"message_id": "", "actor": "", "queue": queue, "was": was,
                                 "note": f"undecodable payload (redis id {redis_id_text})"})
            rows.append([redis_id_text, drop, "", "", "", "", "", "", ""])
            continue
        text = (f"task {message.message_id} ({message.actor_name}) was purged from queue "
                f"{q_name(message.queue_name)!r} before it ran")
        result_key, failure = broker.results_backend.failure_record(
            message, {"type": "TaskPurged", "msg": text, "traceback": ""})
        if isinstance(failure, bytes):  # Dramatiq's encoders give bytes
            failure = failure.decode("utf-8")
        # A first send has no record: its input file and enqueue time go into the "purged" one.
        told = states.first_send_fields(message) if redis_id_text == message.message_id else {}
        rows.append([redis_id_text, drop, message.message_id, result_key, failure, message.actor_name, text,
                     told.get("input_file", ""), told.get("enqueued_at", "")])
        chunk.actors[message.message_id] = message.actor_name
    chunk.rows_json = json.dumps(rows)
    return chunk


def _purge_chunks(broker, batches: list[_Batch], payloads_key: str, queue: str, was: str,
                  ttl_ms: int) -> list[dict[str, str]]:
    """Fail the ids of ``batches`` as purged, :data:`PURGE_CHUNK` at a time (``purge.lua``); return what to report.

    Every payload is read first, in one round trip; then the next chunk is decoded in a helper
    thread while Redis runs the current one's script, so the server's work and ours overlap (a
    read in the helper would wait for the script). A chunk of a holding list is popped off it by
    its script; if another purge got there first (the script returns nil), the rest of that
    list is left to it.
    """
    ns = broker.jwql_config.namespace
    shared = [time.time(), ttl_ms, states.INDEX_MAX, states.task_key(ns, ""), queue]
    # (ids, holding list they head or None, the holding list's length before them)
    chunks = [(batch.ids[start:start + PURGE_CHUNK], batch.holding, len(batch.ids) - start)
              for batch in batches for start in range(0, len(batch.ids), PURGE_CHUNK)]
    reported: list[dict[str, str]] = []
    with broker.client.pipeline(transaction=False) as pipe:
        for chunk_ids, _, _ in chunks:
            pipe.hmget(payloads_key, chunk_ids)
        payloads = pipe.execute() if chunks else []
    abandoned: set[str] = set()
    with ThreadPoolExecutor(max_workers=1) as reader:
        def read(index: int):
            chunk_ids, holding, _ = chunks[index]
            return reader.submit(_prepare_chunk, broker, chunk_ids, payloads[index], holding is not None, queue, was)

        upcoming = read(0) if chunks else None
        for index, (chunk_ids, holding, length) in enumerate(chunks):
            chunk = upcoming.result()
            if index + 1 < len(chunks):  # one chunk ahead: decode while Redis runs this one
                upcoming = read(index + 1)
            if holding in abandoned:
                continue
            script_keys = [revoked_key(ns), states.index_key(ns), payloads_key]
            script_args = [*shared, chunk.rows_json]
            if holding is not None:
                script_keys += [holding, keys.purging_key(ns)]
                script_args += [length, len(chunk_ids)]
            failed = broker.run_script(PURGE, script_keys, script_args)
            if failed is None:  # another purge (finishing this one) did this chunk, and reports it
                abandoned.add(holding)
                continue
            reported += chunk.report + [{"message_id": m, "actor": chunk.actors[m], "queue": queue, "was": was}
                                        for m in (raw.decode() for raw in failed)]
    return reported
