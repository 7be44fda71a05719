"""The fair waiting protocol: queue up for a taken lock, sleep until woken, take it in arrival order.

A waiter runs acquire.lua, which either gives it the lock or puts a waiter id in the lock's FIFO queue and
hands back how long to wait. It then BLPOPs its own wake-up list ``<ns>:lock-signal:<name>:<waiter id>`` for
that long: release.lua (or leave.lua) LPUSHes the list of the first live waiter, so waiters wake on release,
not by polling, one at a time, in arrival order. The wait is never longer than the holder's remaining lease,
so a lapsed lease (a dead holder) is noticed when it lapses, and each pass pushes the waiter's own deadline
back, so a waiter that died loses its place (see acquire.lua).
"""

from __future__ import annotations

import logging
import os
import time

import redis

from jwql_dramatiq.connection import is_auth_error, is_outage
from jwql_dramatiq.locks import _redis
from jwql_dramatiq.locks._scripts import ACQUIRE, ACQUIRED, HELD, LEAVE, LEFT, LEFT_WOKE, QUEUED

logger = logging.getLogger(__name__)


def wait_in_queue(
    s: _redis.LockSettings, name: str, token: bytes, record_tail: str, blocking: bool, deadline: float | None
) -> tuple[int, float] | None:
    """Take the lock in turn, waiting in its queue if ``blocking``, until it is ours or the bound runs out.

    Parameters
    ----------
    s : LockSettings
        The lock's resolved settings.
    name : str
        The lock name (for errors).
    token : bytes
        The token to store in the lock key on success.
    record_tail : str
        The owner record after its fence member, to write on success.
    blocking : bool
        Queue up and wait (True), or make one attempt (False).
    deadline : float or None
        ``time.monotonic()`` value after which to give up; None for no bound.

    Returns
    -------
    tuple of (int, float) or None
        The fencing token and the ``time.monotonic()`` value just before the winning attempt, or None when
        the lock was not acquired (the waiter has then left the queue).

    Raises
    ------
    LockError
        A script returned an unknown code.
    RedisUnavailable
        Redis could not be reached (the waiter leaves the queue if it still can).
    """
    client = s.client
    waiter_id = os.urandom(8).hex()
    signal_key = s.keys.signal_prefix + waiter_id
    queued = False
    try:
        while True:
            started = time.monotonic()
            max_wait_ms = s.poll_ms if blocking else 0
            if blocking and deadline is not None:
                max_wait_ms = min(max_wait_ms, int((deadline - started) * 1000))
            args = [waiter_id, token, record_tail, s.first_ttl_ms, max(0, max_wait_ms), _redis.WAITER_GRACE_MS,
                    s.keys.signal_prefix]
            code, value = ACQUIRE.run(client, s.acquire_keys, args)
            if code == ACQUIRED:
                return int(value), started
            if code not in (HELD, QUEUED):
                raise _redis.unknown_code("acquire.lua", code, name)
            if max_wait_ms <= 0:
                if queued:
                    queued = False
                    leave_queue(s, name, waiter_id)
                return None
            queued = True
            wait_s = min(int(value), max_wait_ms) / 1000
            try:
                client.blpop([signal_key], timeout=max(0.001, round(wait_s, 3)))
            except redis.exceptions.RedisError as exc:  # an outage (is_outage: UNBLOCKED by a failover too)
                if not (is_outage(exc) or is_auth_error(exc)):
                    raise
                raise _redis.unavailable(client, exc) from exc
    except BaseException:
        if queued:
            try:
                leave_queue(s, name, waiter_id)
            except Exception:  # noqa: BLE001 - the original error matters more
                logger.warning("Could not leave the wait queue of lock %r", name, exc_info=True)
        raise


def leave_queue(s: _redis.LockSettings, name: str, waiter_id: str) -> None:
    """Take a waiter out of a lock's queue, passing any wake-up on to the next waiter.

    Parameters
    ----------
    s : LockSettings
        The lock's resolved settings.
    name : str
        The lock name (for errors).
    waiter_id : str
        The waiter's id.

    Raises
    ------
    LockError
        leave.lua returned an unknown code.
    RedisUnavailable
        Redis could not be reached.
    """
    code = LEAVE.run(s.client, s.leave_keys, [waiter_id, s.keys.signal_prefix, s.signal_ttl_ms])
    if code not in (LEFT, LEFT_WOKE):
        raise _redis.unknown_code("leave.lua", code, name)
