"""The lock: a short renewed lease, an owner record, a fencing token and a fair FIFO queue of waiters.

Acquire first runs try_acquire.lua (one round trip when nobody holds or waits for the lock). If the lock
is taken, a blocking caller joins a FIFO queue with acquire.lua and BLPOPs on its own wake-up list, which
release.lua LPUSHes for the first live waiter, so waiters wake on release rather than by polling, and in
arrival order. Each BLPOP is bounded by the holder's remaining lease (and the client's socket timeout), so
a lease that lapses because its holder died is noticed when it lapses. A waiter that dies while queued
loses its place after its deadline (its wait plus :data:`~jwql_dramatiq.locks._redis.WAITER_GRACE_MS`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import redis

from jwql_dramatiq.errors import LockError, LockNotAcquired, LockNotOwned
from jwql_dramatiq.locks import _redis, _scripts
from jwql_dramatiq.locks._queue import wait_in_queue
from jwql_dramatiq.locks._scripts import NOT_OWNED, RELEASED, RELEASED_WOKE, TRY_HELD, TRY_WAITERS
from jwql_dramatiq.locks.admin import describe_holder
from jwql_dramatiq.locks.owner import owner_json
from jwql_dramatiq.locks.renewal import Entry, get_renewer

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class RedisLock:
    """A Redis lock that cannot go stale, shows its owner, and is a context manager and a decorator.

    Nothing is read or connected until the first acquisition. A token is per acquisition, not per thread:
    a lock acquired in one thread may be released from another. One object holds the lock at most once;
    the decorator form uses a fresh copy per call, so decorated functions may run in several threads.

    Parameters
    ----------
    name : str
        The lock name; the Redis key is ``<namespace>:lock:<name>``.
    timeout : float or None
        Maximum hold time in seconds (redis-py's ``timeout``, for compatibility): the lock is released by
        Redis this long after acquisition even if its holder still lives. None for no maximum.
    lease_s : float or None
        The lease in seconds, renewed every third of it while the holder lives; a crashed holder's lock is
        free within one lease. None for the configured ``lock_lease_s``.
    blocking : bool
        Default for :meth:`acquire`: wait for the lock (True) or try once (False).
    blocking_timeout : float or None
        Default bound in seconds on the wait; None waits as long as it takes.
    client : redis.Redis or None
        The client; None for ``jwql_dramatiq.connection.get_redis()``, looked up at first acquisition.
    namespace : str or None
        The key prefix; None for the configured ``namespace``.
    raise_on_release_error : bool
        Whether leaving the ``with`` block raises :class:`LockNotOwned` when the lock was lost
        (True, as redis-py) or only logs it.

    Raises
    ------
    ValueError
        The name is empty or a duration is not positive.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: float | None = None,
        lease_s: float | None = None,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        client: redis.Redis | None = None,
        namespace: str | None = None,
        raise_on_release_error: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty str, got {name!r}")
        for label, value in (("timeout", timeout), ("lease_s", lease_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be > 0 seconds or None, got {value!r}")
        if blocking_timeout is not None and blocking_timeout < 0:
            raise ValueError(f"blocking_timeout must be >= 0 seconds or None, got {blocking_timeout!r}")
        self.name = name
        self.timeout = timeout
        self.lease_s = lease_s
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.raise_on_release_error = raise_on_release_error
        self._client = client
        self._namespace = namespace
        self._settings: _redis.LockSettings | None = None
        self._token: str | None = None
        self._owner_prefix = ""
        self._entry: Entry | None = None
        self._releasing = False
        self._lost = False
        self._fence: int | None = None

    # -- configuration -------------------------------------------------------------------------------

    @property
    def settings(self) -> _redis.LockSettings:
        """LockSettings: the resolved client, keys and durations (the config is read on first access)."""
        if self._settings is None:
            self._settings = _redis.bind(self.name, self._client, self._namespace, self.lease_s, self.timeout)
        return self._settings

    @property
    def client(self) -> redis.Redis:
        """redis.Redis: the client this lock uses."""
        return self.settings.client

    @property
    def namespace(self) -> str:
        """str: the key prefix this lock uses."""
        return self.settings.keys.namespace

    @property
    def key(self) -> str:
        """str: the Redis key of the owner record, ``<namespace>:lock:<name>``."""
        return self.settings.keys.lock

    @property
    def fencing_token(self) -> int | None:
        """int or None: the fencing token of the current (or most recent) acquisition; it only grows."""
        return self._fence

    @property
    def held(self) -> bool:
        """bool: whether this object believes it holds the lock (see :meth:`owned` to ask Redis)."""
        return self._token is not None and not self._lost

    # -- acquire / release ---------------------------------------------------------------------------

    def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None) -> bool:
        """Acquire the lock.

        Parameters
        ----------
        blocking : bool or None
            Wait for the lock (True) or try once (False); None for the object's default.
        blocking_timeout : float or None
            Bound in seconds on the wait; None for the object's default (None there waits for as long as
            it takes, woken by each release and checking again whenever the holder's lease could lapse).

        Returns
        -------
        bool
            True if the lock is now held by this object, False if it was taken and the bound ran out.

        Raises
        ------
        LockError
            This object already holds the lock, or a script returned an unknown code.
        RedisUnavailable
            Redis could not be reached.
        """
        if self._token is not None:
            raise LockError(self.name, f"Lock {self.name!r} is already held by this object")
        s = self.settings
        if blocking is None:
            blocking = self.blocking
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        deadline = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        token = os.urandom(16).hex()
        record = f'{{"token":"{token}","acquired_at":{time.time():.3f}{s.record_settings}{owner_json()}}}'
        client = s.client
        started = time.monotonic()
        fence = _scripts.TRY_ACQUIRE.run(client, s.try_keys, [record, s.first_ttl_ms])
        if fence >= 1:
            self._on_acquired(token, fence, started)
            return True
        if fence not in (TRY_HELD, TRY_WAITERS):
            raise _redis.unknown_code("try_acquire.lua", fence, self.name)
        if fence == TRY_HELD and not blocking:
            return False
        got = wait_in_queue(s, self.name, token, record, blocking, deadline)
        if got is None:
            return False
        self._on_acquired(token, *got)
        return True

    def _on_acquired(self, token: str, fence: int, started: float) -> None:
        self._token = token
        self._owner_prefix = f'{{"token":"{token}",'
        self._fence = fence
        self._lost = False
        s = self.settings
        if s.max_hold_ms and s.max_hold_ms <= s.lease_ms:
            self._entry = None  # the lease already ends at the maximum hold time: nothing to renew
        else:
            hold_deadline = started + s.max_hold_ms / 1000 if s.max_hold_ms else None
            self._entry = Entry(self, s.client, self.name, s.keys.lock, self._owner_prefix, s.lease_ms, hold_deadline)
            get_renewer().register(self._entry)
        logger.debug("Acquired lock %r (fencing token %d)", self.name, fence)

    def _mark_lost(self, owner_prefix: str) -> None:
        """Record that a renewal found the lock gone or owned by another token (renewal thread)."""
        if self._token is not None and self._owner_prefix == owner_prefix and not self._releasing:
            self._lost = True
            logger.error(
                "Lock %r was lost while held (fencing token %s): it expired or was cleared; "
                "the critical section is no longer protected",
                self.name,
                self._fence,
            )

    def release(self) -> None:
        """Release the lock, if it is still ours, and wake the first waiter.

        Raises
        ------
        LockNotOwned
            This object does not hold the lock, or the lock expired or was taken over before this release;
            nothing was deleted.
        LockError
            The script returned an unknown code.
        RedisUnavailable
            Redis could not be reached; renewal has stopped, so the lock lapses within one lease.
        """
        token = self._token
        if token is None:
            raise LockNotOwned(self.name, f"Lock {self.name!r} is not held by this object")
        self._releasing = True
        get_renewer().unregister(self._entry)
        s = self.settings
        try:
            args = [self._owner_prefix, s.keys.signal_prefix, s.signal_ttl_ms]
            code = _scripts.RELEASE.run(s.client, s.release_keys, args)
        finally:
            self._token = None
            self._entry = None
            self._releasing = False
        if code == RELEASED or code == RELEASED_WOKE:
            return
        if code == NOT_OWNED:
            raise LockNotOwned(
                self.name,
                f"Lock {self.name!r} expired or was taken over before release (fencing token {self._fence}); "
                "nothing was deleted",
            )
        raise _redis.unknown_code("release.lua", code, self.name)

    def locked(self) -> bool:
        """Tell whether anyone holds the lock.

        Returns
        -------
        bool
            True if the owner record exists.
        """
        try:
            return bool(self.client.exists(self.key))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise _redis.unavailable(self.client, exc) from exc

    def owned(self) -> bool:
        """Tell whether this object holds the lock, according to Redis.

        Returns
        -------
        bool
            True if the owner record carries this object's token.
        """
        if self._token is None:
            return False
        try:
            stored = self.client.get(self.key)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise _redis.unavailable(self.client, exc) from exc
        return stored is not None and _redis.text(stored).startswith(self._owner_prefix)

    # -- context manager and decorator ---------------------------------------------------------------

    def __enter__(self) -> RedisLock:
        """Acquire with the object's defaults; raise :class:`LockNotAcquired` (naming the holder) if taken."""
        if self.acquire():
            return self
        raise LockNotAcquired(
            self.name,
            f"Lock {self.name!r} is held by {describe_holder(self.name, self.client, self.namespace)}; "
            f"not acquired within {self.blocking_timeout if self.blocking else 0} s",
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Release; a lost lock raises :class:`LockNotOwned` unless ``raise_on_release_error`` is False."""
        try:
            self.release()
        except LockNotOwned:
            if self.raise_on_release_error:
                raise
            logger.warning("Lock %r was lost before the end of its with block", self.name)

    def copy(self) -> RedisLock:
        """Return an unheld lock with the same name and settings.

        Returns
        -------
        RedisLock
            A new object (sharing the resolved settings, if any).
        """
        clone = RedisLock(self.name, timeout=self.timeout, lease_s=self.lease_s, blocking=self.blocking,
                          blocking_timeout=self.blocking_timeout, client=self._client, namespace=self._namespace,
                          raise_on_release_error=self.raise_on_release_error)
        clone._settings = self._settings
        return clone

    def __call__(self, function: F) -> F:
        """Decorate a function so that each call runs under (a fresh copy of) this lock.

        Parameters
        ----------
        function : callable
            The function to protect.

        Returns
        -------
        callable
            The wrapper (``functools.wraps`` keeps the name and docstring). It raises
            :class:`LockNotAcquired` when the lock cannot be acquired.
        """

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.copy():
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = "held" if self.held else ("lost" if self._lost else "unheld")
        return f"<RedisLock {self.name!r} {state} fencing_token={self._fence}>"


def lock(
    name: str,
    *,
    timeout: float | None = None,
    lease_s: float | None = None,
    blocking: bool = True,
    blocking_timeout: float | None = None,
    client: redis.Redis | None = None,
    namespace: str | None = None,
    raise_on_release_error: bool = True,
) -> RedisLock:
    """Create a lock, usable as ``with lock(name):``, ``@lock(name)`` or with acquire()/release().

    Parameters
    ----------
    name : str
        The lock name; the Redis key is ``<namespace>:lock:<name>``.
    timeout : float or None
        Maximum hold time in seconds, None for none.
    lease_s : float or None
        The renewed lease in seconds; None for the configured ``lock_lease_s``.
    blocking : bool
        Wait for the lock (True) or try once (False).
    blocking_timeout : float or None
        Bound in seconds on the wait; None for no bound.
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.
    raise_on_release_error : bool
        Whether leaving a ``with`` block raises when the lock was lost.

    Returns
    -------
    RedisLock
        The (unheld) lock; see :class:`RedisLock`.

    Raises
    ------
    ValueError
        The name is empty or a duration is not positive.
    """
    return RedisLock(name, timeout=timeout, lease_s=lease_s, blocking=blocking, blocking_timeout=blocking_timeout,
                     client=client, namespace=namespace, raise_on_release_error=raise_on_release_error)
