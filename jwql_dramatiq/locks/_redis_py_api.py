"""redis-py's ``Lock`` methods beyond acquire and release: ``extend``, ``reacquire``, ``locked``, ``owned``.

:class:`RedisPyLockMixin` is a base of :class:`~jwql_dramatiq.locks.lock.RedisLock`. These methods move a held
lock's maximum hold time or ask Redis about the lock, as redis-py's do; they neither take nor release it, so
they are kept apart from lock.py, which does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import redis

from jwql_dramatiq.errors import LockError, LockNotOwned
from jwql_dramatiq.locks import _redis, _scripts
from jwql_dramatiq.locks._scripts import NOT_OWNED, RENEWED
from jwql_dramatiq.locks.renewal import get_renewer

if TYPE_CHECKING:
    from jwql_dramatiq.locks._held import Held


class RedisPyLockMixin:
    """``extend``, ``reacquire``, ``locked`` and ``owned``, as redis-py's ``Lock`` has them.

    The class using it provides ``name``, ``timeout``, ``local``, ``settings``, ``client``, ``key`` and
    ``_state()``, as :class:`~jwql_dramatiq.locks.lock.RedisLock` does.
    """

    name: str
    timeout: float | None
    local: Any

    if TYPE_CHECKING:

        @property
        def settings(self) -> _redis.LockSettings: ...

        @property
        def client(self) -> redis.Redis: ...

        @property
        def key(self) -> str: ...

        def _state(self) -> Held | None: ...

    def extend(self, additional_time: float, replace_ttl: bool = False) -> Literal[True]:
        """Add time to the maximum hold time of the held lock (redis-py's ``extend``).

        Parameters
        ----------
        additional_time : float
            Seconds to add to the time left, or (``replace_ttl``) the new time left.
        replace_ttl : bool
            Replace the time left instead of adding to it.

        Returns
        -------
        True

        Raises
        ------
        LockError
            The lock is not held, or it has no ``timeout`` (its lease is renewed while the holder lives).
        LockNotOwned
            The lock expired or was taken over; nothing was changed.
        RedisUnavailable
            Redis could not be reached.
        """
        state = self._held_with_timeout("extend")
        now = time.monotonic()
        start = now if replace_ttl or state.hold_deadline is None else state.hold_deadline
        hold_deadline = max(now, start) + float(additional_time)
        if hold_deadline <= now and state.hold_deadline is not None:
            hold_deadline = state.hold_deadline  # as redis-py: a time left <= 0 leaves the expiry as it was
        return self._set_hold_deadline(state, hold_deadline, "extend")

    def reacquire(self) -> Literal[True]:
        """Reset the time left on the held lock to ``timeout`` (redis-py's ``reacquire``).

        Returns
        -------
        True

        Raises
        ------
        LockError
            The lock is not held, or it has no ``timeout``.
        LockNotOwned
            The lock expired or was taken over; nothing was changed.
        RedisUnavailable
            Redis could not be reached.
        """
        state = self._held_with_timeout("reacquire")
        return self._set_hold_deadline(state, time.monotonic() + float(self.timeout or 0), "reacquire")

    def _held_with_timeout(self, verb: str) -> Held:
        state = self._state()
        if state is None:
            raise LockError(self.name, f"Cannot {verb} an unlocked lock")
        if self.timeout is None:
            raise LockError(self.name, f"Cannot {verb} a lock with no timeout")
        return state

    def _set_hold_deadline(self, state: Held, hold_deadline: float, verb: str) -> Literal[True]:
        s = self.settings
        state.hold_deadline = hold_deadline
        state.track(s)  # before the script, so a concurrent renewal already uses the new deadline
        ttl_ms = max(1, min(s.lease_ms, int((hold_deadline - time.monotonic()) * 1000)))
        code = _scripts.EXTEND.run(s.client, [s.keys.lock, s.keys.owner], [state.token, ttl_ms])
        if code == RENEWED:
            return True
        if state.entry is not None:
            get_renewer().unregister(state.entry)
            state.entry = None
        if code == NOT_OWNED:
            raise LockNotOwned(self.name, f"Cannot {verb} a lock that's no longer owned")
        raise _redis.unknown_code("extend.lua", code, self.name)

    def locked(self) -> bool:
        """Tell whether anyone holds the lock.

        Returns
        -------
        bool
            True if the lock key exists.

        Raises
        ------
        RedisUnavailable
            Redis could not be reached.
        """
        try:
            return bool(self.client.exists(self.key))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise _redis.unavailable(self.client, exc) from exc

    def owned(self) -> bool:
        """Tell whether this object (this thread, with ``thread_local``) holds the lock, according to Redis.

        Returns
        -------
        bool
            True if the lock key holds this object's token.

        Raises
        ------
        RedisUnavailable
            Redis could not be reached.
        """
        token = self.local.token
        if token is None:
            return False
        try:
            stored = self.client.get(self.key)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise _redis.unavailable(self.client, exc) from exc
        if stored is not None and not isinstance(stored, bytes):
            stored = self.client.get_encoder().encode(stored)
        return stored == token
