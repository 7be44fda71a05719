"""Operator view of the locks: list them with their owners, and clear the ones whose owner is dead.

A lock's owner is alive while its lease is valid (the key expires one lease after the owner stops renewing)
and, when the owner ran on this host, while a process with the recorded pid and start time exists. Clearing
is a token-checked compare-and-delete (release.lua with the token recorded in the owner record), so it
never removes a lock that changed hands in the meantime, and it wakes the first waiter.
:func:`holder_fencing_token` reads the current holder's fencing token (for fenced writes elsewhere).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from jwql_dramatiq.errors import LockError
from jwql_dramatiq.locks import _redis
from jwql_dramatiq.locks._scripts import NOT_OWNED, RELEASE, RELEASED, RELEASED_WOKE
from jwql_dramatiq.locks.owner import is_process_alive

logger = logging.getLogger(__name__)

#: Keys fetched per SCAN step.
SCAN_COUNT = 500
#: How many times clear_lock re-reads a lock that changed owner while being cleared.
CLEAR_ATTEMPTS = 3


@dataclass(frozen=True)
class LockInfo:
    """A held lock as read from Redis.

    Attributes
    ----------
    name : str
        The lock name.
    fencing_token : int
        The fencing token of this acquisition.
    host : str
        The owner's host name.
    pid : int
        The owner's process id.
    pid_start_ticks : int or None
        The owner process's start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22).
    thread : str
        The owner's thread name.
    message_id : str or None
        The Dramatiq message the owner was processing, if any.
    actor_name : str or None
        The Dramatiq actor the owner was running, if any.
    acquired_at : float
        Unix time (s, the owner's clock) of acquisition.
    lease_s : float
        The lease, renewed every third of it while the owner lives.
    timeout_s : float or None
        The maximum hold time, None for none.
    ttl_s : float or None
        Time left on the lease, None when the key has no expiry (not written by this package).
    alive : bool
        Whether the owner is considered alive: its lease is valid, and if it ran on this host its process
        (same pid and start time) still exists.
    key : str
        The Redis key holding the token.
    token : bytes
        The token stored in the lock key, used for compare-and-delete (not shown in repr).
    """

    name: str
    fencing_token: int
    host: str
    pid: int
    pid_start_ticks: int | None
    thread: str
    message_id: str | None
    actor_name: str | None
    acquired_at: float
    lease_s: float
    timeout_s: float | None
    ttl_s: float | None
    alive: bool
    key: str
    token: bytes = field(repr=False)

    def describe(self) -> str:
        """Return a one-line description of the owner for log messages.

        Returns
        -------
        str
            E.g. ``host h1 pid 123 since 2024-05-01T12:00:00Z (actor a, message m)``.
        """
        since = datetime.datetime.fromtimestamp(self.acquired_at, datetime.UTC)
        text = f"host {self.host} pid {self.pid} since {since.isoformat(timespec='seconds').replace('+00:00', 'Z')}"
        if self.actor_name or self.message_id:
            text += f" (actor {self.actor_name}, message {self.message_id})"
        if not self.alive:
            text += " [owner dead]"
        return text


def _info_from_record(name: str, raw: Any, pttl_ms: int) -> LockInfo | None:
    try:
        rec = json.loads(_redis.text(raw))
        token = bytes.fromhex(rec["token_hex"])
        fence, key = int(rec["fence"]), str(rec["key"])
    except (ValueError, TypeError, KeyError):
        logger.warning("Lock %r has an owner record this package did not write: %.200r", name, raw)
        return None

    def number(key: str) -> float:
        value = rec.get(key)
        return float(value) if isinstance(value, (int, float)) else 0.0

    host = str(rec.get("host") or "")
    pid = int(number("pid"))
    start = rec.get("pid_start")
    start_ticks = int(start) if isinstance(start, int) else None
    ttl_s = None if pttl_ms < 0 else pttl_ms / 1000
    process_alive = is_process_alive(host, pid, start_ticks) if host and pid else None
    timeout = rec.get("timeout_s")
    return LockInfo(
        name=name,
        fencing_token=fence,
        host=host,
        pid=pid,
        pid_start_ticks=start_ticks,
        thread=str(rec.get("thread") or ""),
        message_id=rec.get("message_id"),
        actor_name=rec.get("actor"),
        acquired_at=number("acquired_at"),
        lease_s=number("lease_s"),
        timeout_s=float(timeout) if isinstance(timeout, (int, float)) else None,
        ttl_s=ttl_s,
        alive=(ttl_s is None or ttl_s > 0) and process_alive is not False,
        key=key,
        token=token,
    )


def get_lock_info(name: str, client: redis.Redis | None = None, namespace: str | None = None) -> LockInfo | None:
    """Read one lock's owner record.

    Parameters
    ----------
    name : str
        The lock name.
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    LockInfo or None
        The lock, or None when nobody holds it.

    Raises
    ------
    RedisUnavailable
        Redis could not be reached.
    """
    client, namespace, _ = _redis.resolve(client, namespace, 1.0)
    key = _redis.LockKeys(namespace, name).owner
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        record, pttl_ms = pipe.execute()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _redis.unavailable(client, exc) from exc
    except redis.exceptions.ResponseError as exc:  # WRONGTYPE: someone else's key under our prefix
        raise LockError(name, f"{key} is not a lock owner record: {exc}") from exc
    if record is None:
        return None
    return _info_from_record(name, record, int(pttl_ms))


def holder_fencing_token(name: str, client: Any = None, namespace: str | None = None) -> int | None:
    """Return the fencing token of the current holder of a lock, read from its owner record.

    One GET of ``<ns>:lock-owner:<name>`` (see :attr:`RedisLock.owner_key`), so it also works on a
    pipeline in WATCH mode, for a fenced write: WATCH the owner key, compare this with your own
    ``fencing_token``, then MULTI/EXEC.

    Parameters
    ----------
    name : str
        The lock name.
    client : redis.Redis or redis.client.Pipeline or None
        The client (or a watching pipeline); None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    int or None
        The holder's fencing token, or None when nobody holds the lock.

    Raises
    ------
    LockError
        The key holds something this package did not write.
    RedisUnavailable
        Redis could not be reached.
    """
    client, namespace, _ = _redis.resolve(client, namespace, 1.0)
    key = _redis.LockKeys(namespace, name).owner
    try:
        raw = client.get(key)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _redis.unavailable(client, exc) from exc
    if raw is None:
        return None
    try:
        return int(json.loads(_redis.text(raw))["fence"])
    except (ValueError, TypeError, KeyError) as exc:
        raise LockError(name, f"{key} is not a lock owner record: {_redis.text(raw)[:200]!r}") from exc


def describe_holder(name: str, client: redis.Redis | None = None, namespace: str | None = None) -> str:
    """Describe who holds a lock, for warnings and error messages.

    Parameters
    ----------
    name : str
        The lock name.
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    str
        :meth:`LockInfo.describe`, or ``"nobody (just released)"`` when it is free.
    """
    info = get_lock_info(name, client, namespace)
    return "nobody (just released)" if info is None else info.describe()


def list_locks(client: redis.Redis | None = None, namespace: str | None = None) -> list[LockInfo]:
    """List the held locks of a namespace with their owners (SCAN, never KEYS).

    Parameters
    ----------
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    list of LockInfo
        One per held lock, sorted by name.

    Raises
    ------
    RedisUnavailable
        Redis could not be reached.
    """
    client, namespace, _ = _redis.resolve(client, namespace, 1.0)
    prefix = f"{namespace}:lock-owner:"
    infos: list[LockInfo] = []
    try:
        cursor: int = 0
        while True:
            cursor, keys = client.scan(cursor, match=_redis.owner_key_pattern(namespace), count=SCAN_COUNT)
            if keys:
                pipe = client.pipeline(transaction=False)
                names = [_redis.text(key)[len(prefix) :] for key in keys]
                for key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                replies = pipe.execute(raise_on_error=False)
                for i, name in enumerate(names):
                    record, pttl_ms = replies[2 * i], replies[2 * i + 1]
                    if isinstance(record, Exception) or isinstance(pttl_ms, Exception):
                        logger.warning("Skipping lock %r: not a lock owner record (%s)", name, record)
                    elif record is not None:
                        info = _info_from_record(name, record, int(pttl_ms))
                        if info is not None:
                            infos.append(info)
            if int(cursor) == 0:
                break
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _redis.unavailable(client, exc) from exc
    return sorted(infos, key=lambda info: info.name)


def _compare_and_delete(client: redis.Redis, namespace: str, info: LockInfo) -> bool:
    keys = _redis.LockKeys(namespace, info.name, info.key)
    signal_ttl_ms = int(max(info.lease_s, 1.0) * 1000) + _redis.WAITER_GRACE_MS
    code = RELEASE.run(
        client, [keys.lock, keys.owner, keys.queue, keys.waiters], [info.token, keys.signal_prefix, signal_ttl_ms]
    )
    if code not in (NOT_OWNED, RELEASED, RELEASED_WOKE):
        raise _redis.unknown_code("release.lua", code, info.name)
    return bool(code != NOT_OWNED)


def clear_lock(
    name: str, force: bool = False, client: redis.Redis | None = None, namespace: str | None = None
) -> LockInfo | None:
    """Remove a lock whose owner is dead (or any lock, with ``force``), and wake its first waiter.

    Parameters
    ----------
    name : str
        The lock name.
    force : bool
        Remove the lock even though its owner looks alive. The owner may then run unprotected: it finds
        out only at its next renewal or release (:class:`LockNotOwned`).
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    LockInfo or None
        What was removed, or None when nobody held the lock.

    Raises
    ------
    LockError
        The owner is alive and ``force`` is False, or the lock kept changing owner while being cleared.
    RedisUnavailable
        Redis could not be reached.
    """
    client, namespace, _ = _redis.resolve(client, namespace, 1.0)
    for _attempt in range(CLEAR_ATTEMPTS):
        info = get_lock_info(name, client, namespace)
        if info is None:
            return None
        if info.alive and not force:
            raise LockError(name, f"Lock {name!r} is held by a live owner: {info.describe()}; not cleared")
        if _compare_and_delete(client, namespace, info):
            logger.warning("Cleared lock %r held by %s", name, info.describe())
            return info
    raise LockError(name, f"Lock {name!r} changed owner {CLEAR_ATTEMPTS} times while being cleared; not cleared")


def clear_stale_locks(client: redis.Redis | None = None, namespace: str | None = None,
                      owner: tuple[str, int] | None = None) -> list[LockInfo]:
    """Remove every lock whose owner is dead (see :func:`list_locks` for what "alive" means).

    Parameters
    ----------
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.
    owner : (host, pid), optional
        Only locks of that owner (e.g. a task child its worker just killed); still only if it is dead,
        so a reused pid keeps its lock.

    Returns
    -------
    list of LockInfo
        The locks removed.

    Raises
    ------
    RedisUnavailable
        Redis could not be reached.
    """
    client, namespace, _ = _redis.resolve(client, namespace, 1.0)
    removed = []
    for info in list_locks(client, namespace):
        if owner is not None and (info.host, info.pid) != owner:
            continue
        if not info.alive and _compare_and_delete(client, namespace, info):
            logger.warning("Cleared stale lock %r held by %s", info.name, info.describe())
            removed.append(info)
    return removed
