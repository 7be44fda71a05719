"""Redis locks that cannot go stale and that show their owner.

- :func:`lock` / :class:`RedisLock`: one lock; a context manager, a decorator, or acquire()/release().
  A short lease renewed in the background while the holder lives, an owner record (host, pid, process start
  time, acquired_at, and the Dramatiq message and actor), a fencing token that only grows, owner-checked
  release (:class:`~jwql_dramatiq.errors.LockNotOwned`), and a fair FIFO queue of waiters woken on release.
- :func:`locks` / :class:`MultiLock`: several locks in sorted order, all or nothing, within one bound.
- :func:`only_one` and :data:`REDIS_CLIENT`: drop-ins for JWQL's decorator and custom-lock code.
- :class:`Lock`: a drop-in for redis-py's ``Lock`` (``client.lock(name, lock_class=Lock)``).
- :func:`list_locks`, :func:`get_lock_info`, :func:`clear_lock`, :func:`clear_stale_locks`: for operators.
- :func:`holder_fencing_token`: the current holder's fencing token, for fenced writes.

Importing this package neither reads the configuration nor connects to Redis.
"""

from __future__ import annotations

from jwql_dramatiq.locks.admin import (
    LockInfo,
    clear_lock,
    clear_stale_locks,
    get_lock_info,
    holder_fencing_token,
    list_locks,
)
from jwql_dramatiq.locks.compat import REDIS_CLIENT, Lock, LockingRedis, only_one
from jwql_dramatiq.locks.lock import RedisLock, lock
from jwql_dramatiq.locks.multi import MultiLock, locks

__all__ = [
    "REDIS_CLIENT",
    "Lock",
    "LockInfo",
    "LockingRedis",
    "MultiLock",
    "RedisLock",
    "clear_lock",
    "clear_stale_locks",
    "get_lock_info",
    "holder_fencing_token",
    "list_locks",
    "lock",
    "locks",
    "only_one",
]
