"""The one place that names the broker's Redis keys.

Every queue ``Q`` (and its delay queue ``Q.DQ``) under the namespace ``<ns>`` uses:

- ``<ns>:Q``: a list of Redis message ids waiting to be fetched, oldest first (actors of
  priority 0, Dramatiq's default);
- ``<ns>:Q.P<p>``: the same for actors of another priority ``p`` (lower runs first, as in
  Dramatiq), and ``<ns>:Q.levels``, a sorted set of the priorities in use (member ``P<p>``,
  score ``p``), so that a fetch takes the highest-priority message waiting;
- ``<ns>:Q.msgs``: a hash, Redis message id -> JSON payload, kept until the message is settled.
  A message's first send uses its Dramatiq message id as its Redis id, so that a task still
  waiting is found by its message id without a record of its own (see
  :mod:`jwql_dramatiq.broker.waiting_messages`); a retry, a delayed message falling due and a
  repeated send get a fresh UUID;
- ``<ns>:Q.XQ`` and ``<ns>:Q.XQ.msgs``: the dead letters (a sorted set by time, and their
  payloads); a delay queue shares its queue's;
- ``<ns>:__acks__.W.Q``: the ids worker ``W`` has fetched from ``Q`` and not yet settled. They
  are held on the lease of ``W``'s heartbeat: when ``W`` stops beating for longer than the
  heartbeat timeout, the sweeper (``sweep.lua``) puts them back on ``Q``;
- ``<ns>:__heartbeats__``: a sorted set, worker id -> its last heartbeat (ms);
- ``<ns>:__wake__.Q``: a short list an idle consumer of ``Q`` blocks on, pushed by every send;
- ``<ns>:revoked``: revoked message ids, and purged delayed ones a worker holds in memory (see
  :mod:`jwql_dramatiq.broker.revoke`);
- ``<ns>:__purging__.Q.<purge id>`` (and ``+ ".P<p>"`` for a priority list): a purge's holding
  list. A purge renames each waiting list of ``Q`` to one (``purge_take.lua``), then fails its ids
  chunk by chunk, each chunk popping its ids off the head in the same script (``purge.lua``), so an
  interrupted purge leaves exactly the ids it has not failed; the list is gone once empty;
- ``<ns>:__purging__``: a hash, holding list -> its queue's name (``Q`` or ``Q.DQ``), written and
  cleared in the same scripts, so that the next purge finishes an interrupted one and ``status``
  counts the held ids as still waiting (see :mod:`jwql_dramatiq.broker.admin`).

The names are Dramatiq's Redis layout, kept so that queues written by an earlier release (or
read by Dramatiq's own tools) stay readable; the scripts that write them are ours
(:mod:`jwql_dramatiq.broker.scripts`).
"""

from __future__ import annotations

from dramatiq.common import dq_name, q_name

#: Length a wake-up list is trimmed back to, once twice as long, while no worker is idle (extra
#: tokens only cause a spare fetch).
WAKE_LIST_MAX = 64

__all__ = ["WAKE_LIST_MAX", "dead_letters_key", "delay_queue_name", "heartbeats_key", "held_key", "holding_key",
           "levels_key", "messages_key", "priority_queue_key", "purging_key", "queue_key", "queues_in_redis",
           "revoked_key", "waiting_list_keys", "queue_name_of", "wake_key"]


def queue_name_of(queue_name: str) -> str:
    """The canonical queue name (``Q`` for ``Q``, ``Q.DQ`` and ``Q.XQ``)."""
    return q_name(queue_name)


def delay_queue_name(queue_name: str) -> str:
    """The delay queue of ``queue_name`` (``Q.DQ``)."""
    return dq_name(queue_name)


def queue_key(namespace: str, queue_name: str) -> str:
    """The list of waiting Redis message ids of ``queue_name``."""
    return f"{namespace}:{queue_name}"


def revoked_key(namespace: str) -> str:
    """The sorted set of revoked (and purged) message ids (message id -> when, s)."""
    return f"{namespace}:revoked"


def priority_queue_key(namespace: str, queue_name: str, priority: int) -> str:
    """The list of waiting ids of ``queue_name``'s actors of ``priority`` (``<ns>:Q`` for 0)."""
    return queue_key(namespace, queue_name) if priority == 0 else f"{namespace}:{queue_name}.P{int(priority)}"


def levels_key(namespace: str, queue_name: str) -> str:
    """The sorted set of non-zero priorities with waiting messages on ``queue_name`` (member ``P<p>``)."""
    return f"{namespace}:{queue_name}.levels"


def messages_key(namespace: str, queue_name: str) -> str:
    """The hash of payloads (Redis message id -> JSON) of ``queue_name``."""
    return f"{namespace}:{queue_name}.msgs"


def dead_letters_key(namespace: str, queue_name: str) -> str:
    """The dead-letter sorted set of ``queue_name``'s canonical queue; its payloads are under ``+ ".msgs"``."""
    return f"{namespace}:{q_name(queue_name)}.XQ"


def purging_key(namespace: str) -> str:
    """The hash of the purges' holding lists still to finish (holding list key -> its queue's name)."""
    return f"{namespace}:__purging__"


def holding_key(namespace: str, queue_name: str, purge_id: str) -> str:
    """The list purge ``purge_id`` holds ``queue_name``'s priority-0 waiting ids in until it has failed them.

    The ids of the priority ``p`` list ``<ns>:Q.P<p>`` go to this key plus ``".P<p>"`` (named so by
    ``purge_take.lua``, as ``fetch.lua`` names the priority lists).
    """
    return f"{purging_key(namespace)}.{queue_name}.{purge_id}"


def held_key(namespace: str, worker_id: str, queue_name: str) -> str:
    """The set of ids worker ``worker_id`` fetched from ``queue_name`` and has not settled."""
    return f"{namespace}:__acks__.{worker_id}.{queue_name}"


def heartbeats_key(namespace: str) -> str:
    """The sorted set of workers' last heartbeats (worker id -> ms)."""
    return f"{namespace}:__heartbeats__"


def wake_key(namespace: str, queue_name: str) -> str:
    """The list an idle consumer of ``queue_name`` blocks on."""
    return f"{namespace}:__wake__.{queue_name}"


def waiting_list_keys(client, namespace: str, queue_name: str) -> list[str]:
    """Every list of waiting ids of ``queue_name``: ``<ns>:Q`` and one per non-zero priority in use.

    Raises
    ------
    redis.RedisError
        As raised by the client (one ``ZRANGE``).
    """
    levels = client.zrange(levels_key(namespace, queue_name), 0, -1)
    return [queue_key(namespace, queue_name)] + [f"{queue_key(namespace, queue_name)}.{m.decode()}" for m in levels]


def queues_in_redis(client, namespace: str) -> set[str]:
    """The names of every queue with a payload hash in Redis (``Q``, ``Q.DQ``, ``Q.XQ``; SCAN, never KEYS).

    Raises
    ------
    redis.RedisError
        As raised by the client.
    """
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in namespace)
    prefix = f"{namespace}:"
    names = set()
    for key in client.scan_iter(match=f"{escaped}:*.msgs", count=1000):
        name = (key.decode(errors="replace") if isinstance(key, bytes) else key)[len(prefix):-len(".msgs")]
        if ":" not in name:  # not some other key family of this namespace
            names.add(name)
    return names
