"""One acquisition's round trips to Redis: take the lock (try_acquire.lua, then the wait queue) and release it.

Acquire first runs try_acquire.lua (one round trip when nobody holds or waits for the lock). If the lock
is taken, a blocking caller joins a FIFO queue with acquire.lua and BLPOPs on its own wake-up list, which
release.lua LPUSHes for the first live waiter, so waiters wake on release rather than by polling, and in
arrival order (:mod:`jwql_dramatiq.locks._queue`). Each BLPOP is bounded by the holder's remaining lease
(and the client's socket timeout), so a lease that lapses because its holder died is noticed when it
lapses. A waiter that dies while queued loses its place after its deadline (its wait plus
:data:`~jwql_dramatiq.locks._redis.WAITER_GRACE_MS`).

These are functions of the resolved settings and a token, apart from the lock object, which keeps the
per-thread state (:mod:`jwql_dramatiq.locks._held`) and the renewal.
"""

from __future__ import annotations

import time

from jwql_dramatiq.errors import LockNotOwned
from jwql_dramatiq.locks import _redis, _scripts
from jwql_dramatiq.locks._queue import wait_in_queue
from jwql_dramatiq.locks._scripts import NOT_OWNED, RELEASED, RELEASED_WOKE, TRY_HELD, TRY_WAITERS


def take(
    s: _redis.LockSettings, name: str, token: bytes, record_tail: str, blocking: bool, deadline: float | None
) -> tuple[int, float] | None:
    """Take the lock at once if it is free and nobody waits, else in turn through its wait queue.

    Parameters
    ----------
    s : LockSettings
        The lock's resolved settings.
    name : str
        The lock name (for errors).
    token : bytes
        The token to store in the lock key.
    record_tail : str
        The owner record after its fence member, to write on success.
    blocking : bool
        Wait in the queue (True), or make one attempt (False).
    deadline : float or None
        ``time.monotonic()`` value after which to give up; None for no bound.

    Returns
    -------
    tuple of (int, float) or None
        The fencing token and the ``time.monotonic()`` value just before the winning attempt, or None when
        the lock was not acquired.

    Raises
    ------
    LockError
        A script returned an unknown code.
    RedisUnavailable
        Redis could not be reached.
    ReplicaTimeout
        No replica confirmed a grant; the caller is to give it back, as the lock may be held with ``token``.
    """
    started = time.monotonic()
    fence = _scripts.TRY_ACQUIRE.run(s.client, s.try_keys, [token, record_tail, s.first_ttl_ms])
    if fence >= 1:
        return fence, started
    if fence not in (TRY_HELD, TRY_WAITERS):
        raise _redis.unknown_code("try_acquire.lua", fence, name)
    if fence == TRY_HELD and not blocking:
        return None
    return wait_in_queue(s, name, token, record_tail, blocking, deadline)


def run_release(s: _redis.LockSettings, token: bytes) -> int:
    """Run release.lua for ``token`` with the lock's keys and wake-up settings; return its code."""
    return _scripts.RELEASE.run(s.client, s.release_keys, [token, s.keys.signal_prefix, s.signal_ttl_ms])


def release_token(s: _redis.LockSettings, name: str, token: bytes, fence: int) -> None:
    """Release the acquisition holding ``token`` and wake the first waiter (release.lua).

    Parameters
    ----------
    s : LockSettings
        The lock's resolved settings.
    name : str
        The lock name (for errors).
    token : bytes
        The token the lock key must hold.
    fence : int
        The acquisition's fencing token (for the error message).

    Raises
    ------
    LockNotOwned
        The lock key no longer holds ``token``; nothing was deleted.
    LockError
        release.lua returned an unknown code.
    RedisUnavailable
        Redis could not be reached.
    """
    code = run_release(s, token)
    if code == RELEASED or code == RELEASED_WOKE:
        return
    if code == NOT_OWNED:
        raise LockNotOwned(
            name,
            f"Lock {name!r} expired or was taken over before release (fencing token {fence}); nothing was deleted",
        )
    raise _redis.unknown_code("release.lua", code, name)
