"""The lock: a short renewed lease, an owner record, a fencing token and a fair FIFO queue of waiters.

Acquire first runs try_acquire.lua (one round trip when nobody holds or waits for the lock). If the lock
is taken, a blocking caller joins a FIFO queue with acquire.lua and BLPOPs on its own wake-up list, which
release.lua LPUSHes for the first live waiter, so waiters wake on release rather than by polling, and in
arrival order. Each BLPOP is bounded by the holder's remaining lease (and the client's socket timeout), so
a lease that lapses because its holder died is noticed when it lapses. A waiter that dies while queued
loses its place after its deadline (its wait plus :data:`~jwql_dramatiq.locks._redis.WAITER_GRACE_MS`).

The lock key holds the token, as redis-py's ``Lock`` does; ``acquire(token=...)``, ``.local.token``,
``extend``, ``reacquire``, ``locked`` and ``owned`` behave as redis-py's.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace, TracebackType
from typing import Any, Literal, TypeVar

import redis

from jwql_dramatiq.errors import LockError, LockNotAcquired, LockNotOwned
from jwql_dramatiq.locks import _redis, _scripts
from jwql_dramatiq.locks._queue import wait_in_queue
from jwql_dramatiq.locks._scripts import NOT_OWNED, RELEASED, RELEASED_WOKE, RENEWED, TRY_HELD, TRY_WAITERS
from jwql_dramatiq.locks.admin import describe_holder
from jwql_dramatiq.locks.owner import owner_json
from jwql_dramatiq.locks.renewal import Entry, get_renewer
from jwql_dramatiq.sentinel import ReplicaTimeout

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class _Held:
    """One acquisition: its token, fencing token, renewal entry and maximum-hold deadline.

    The renewal thread holds a weak reference to it (it lives as long as the lock object's ``.local``).
    """

    __slots__ = ("name", "token", "fence", "entry", "hold_deadline", "lost", "__weakref__")

    def __init__(self, name: str, token: bytes, fence: int, hold_deadline: float | None) -> None:
        self.name = name
        self.token = token
        self.fence = fence
        self.entry: Entry | None = None
        self.hold_deadline = hold_deadline
        self.lost = False

    def _mark_lost(self, token: bytes) -> None:
        """Record that a renewal found the lock gone or held by another token (renewal thread)."""
        if token == self.token:
            # logged first, so that whoever sees the lock no longer held finds the error in the log
            logger.error(
                "Lock %r was lost while held (fencing token %s): it expired or was cleared; "
                "the critical section is no longer protected",
                self.name,
                self.fence,
            )
            self.lost = True


class _ThreadLocal(threading.local):
    """Per-thread ``.local`` (redis-py's ``thread_local=True``): every thread starts with no token."""

    def __init__(self) -> None:
        self.token: bytes | None = None
        self.held: _Held | None = None


class RedisLock:
    """A Redis lock that cannot go stale, shows its owner, and is a context manager and a decorator.

    Nothing is read or connected until the first acquisition. One object holds the lock at most once at a
    time (per thread with ``thread_local``); the decorator form uses a fresh copy per call, so decorated
    functions may run in several threads.

    Parameters
    ----------
    name : str
        The lock name; the Redis key is ``<namespace>:lock:<name>`` unless ``lock_key`` is given.
    timeout : float or None
        Maximum hold time in seconds (redis-py's ``timeout``): the lock is released by Redis this long after
        acquisition (or the last ``extend``/``reacquire``) even if its holder still lives. None for none.
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
        Whether leaving the ``with`` block raises :class:`LockError` when the lock was lost or released
        (True, as redis-py) or only logs it.
    thread_local : bool
        Keep the token per thread, as redis-py does by default (True), or per object (False, the default
        here: a lock acquired in one thread may be released from another, e.g. a Dramatiq worker thread).
    lock_key : str or None
        The key holding the token; None for ``<namespace>:lock:<name>``.

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
        thread_local: bool = False,
        lock_key: str | None = None,
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
        self.thread_local = bool(thread_local)
        #: redis-py's ``.local``: ``.local.token`` is the token (bytes) stored in the lock key, or None.
        self.local: Any = _ThreadLocal() if self.thread_local else SimpleNamespace(token=None, held=None)
        self._client = client
        self._namespace = namespace
        self._lock_key = lock_key
        self._settings: _redis.LockSettings | None = None
        self._fence: int | None = None

    # -- configuration -------------------------------------------------------------------------------

    @property
    def settings(self) -> _redis.LockSettings:
        """LockSettings: the resolved client, keys and durations (the config is read on first access)."""
        if self._settings is None:
            self._settings = _redis.bind(
                self.name, self._client, self._namespace, self.lease_s, self.timeout, self._lock_key
            )
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
        """str: the Redis key holding the holder's token, ``<namespace>:lock:<name>`` by default."""
        return self.settings.keys.lock

    @property
    def owner_key(self) -> str:
        """str: the Redis key of the owner record, ``<namespace>:lock-owner:<name>`` (same PX as :attr:`key`)."""
        return self.settings.keys.owner

    @property
    def fencing_token(self) -> int | None:
        """int or None: the fencing token of the current (or most recent) acquisition; it only grows."""
        return self._fence

    @property
    def held(self) -> bool:
        """bool: whether this object believes it holds the lock (see :meth:`owned` to ask Redis)."""
        state = self._state()
        return state is not None and not state.lost

    def _state(self) -> _Held | None:
        """The calling thread's acquisition, or None; a ``.local.token`` set by hand counts as held."""
        token = self.local.token
        if token is None:
            return None
        state = self.local.held
        if state is None or state.token != token:
            state = self.local.held = _Held(self.name, token, 0, None)
        return state

    # -- acquire / release ---------------------------------------------------------------------------

    def acquire(
        self,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | bytes | None = None,
    ) -> bool:
        """Acquire the lock (redis-py's signature).

        Parameters
        ----------
        sleep : float or None
            Ignored: waiters are woken by the release, not by polling.
        blocking : bool or None
            Wait for the lock (True) or try once (False); None for the object's default.
        blocking_timeout : float or None
            Bound in seconds on the wait; None for the object's default (None there waits for as long as
            it takes, woken by each release and checking again whenever the holder's lease could lapse).
        token : str or bytes or None
            The value to store in the lock key (encoded with the client's encoder, as redis-py does);
            None for a random one. It ends up in ``.local.token``.

        Returns
        -------
        bool
            True if the lock is now held by this object, False if it was taken and the bound ran out.

        Raises
        ------
        LockError
            This object (this thread, with ``thread_local``) already holds the lock, or a script returned an
            unknown code.
        RedisUnavailable
            Redis could not be reached.
        """
        if self.local.token is not None:
            raise LockError(self.name, f"Lock {self.name!r} is already held by this object")
        s = self.settings
        if blocking is None:
            blocking = self.blocking
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        deadline = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        value = uuid.uuid4().hex.encode() if token is None else s.client.get_encoder().encode(token)
        tail = f',"token_hex":"{value.hex()}"{s.record_settings}"acquired_at":{time.time():.3f},{owner_json()}}}'
        started = time.monotonic()
        try:
            fence = _scripts.TRY_ACQUIRE.run(s.client, s.try_keys, [value, tail, s.first_ttl_ms])
        except ReplicaTimeout:
            self._give_back(value)
            raise
        if fence >= 1:
            self._on_acquired(value, fence, started)
            return True
        if fence not in (TRY_HELD, TRY_WAITERS):
            raise _redis.unknown_code("try_acquire.lua", fence, self.name)
        if fence == TRY_HELD and not blocking:
            return False
        try:
            got = wait_in_queue(s, self.name, value, tail, blocking, deadline)
        except ReplicaTimeout:
            self._give_back(value)
            raise
        if got is None:
            return False
        self._on_acquired(value, *got)
        return True

    def _give_back(self, token: bytes) -> None:
        """Release a grant no replica confirmed (the caller is told it failed), if Redis still answers."""
        s = self.settings
        try:
            _scripts.RELEASE.run(s.client, s.release_keys, [token, s.keys.signal_prefix, s.signal_ttl_ms])
        except Exception:
            logger.warning("Could not give back the unconfirmed grant of lock %r", self.name, exc_info=True)

    def _on_acquired(self, token: bytes, fence: int, started: float) -> None:
        s = self.settings
        state = _Held(self.name, token, fence, started + s.max_hold_ms / 1000 if s.max_hold_ms else None)
        self.local.held = state
        self.local.token = token
        self._fence = fence
        self._track(state)
        logger.debug("Acquired lock %r (fencing token %d)", self.name, fence)

    def _track(self, state: _Held) -> None:
        """Renew the lease in the background unless it already runs to the maximum hold time."""
        s = self.settings
        if state.hold_deadline is not None and state.hold_deadline - time.monotonic() <= s.lease_s:
            return  # the lease already ends at the maximum hold time: nothing to renew
        if state.entry is not None:
            state.entry.hold_deadline = state.hold_deadline
            return
        keys = [s.keys.lock, s.keys.owner]
        state.entry = Entry(state, s.client, self.name, keys, state.token, s.lease_ms, state.hold_deadline)
        get_renewer().register(state.entry)

    def release(self) -> None:
        """Release the lock, if it is still ours, and wake the first waiter.

        As in redis-py, ``.local.token`` is cleared only once the release has reached Redis (it went,
        or the lock was no longer ours), and only if it is still the token released: a release that
        failed to reach Redis can be retried.

        Raises
        ------
        LockError
            This object (this thread, with ``thread_local``) does not hold the lock.
        LockNotOwned
            The lock expired or was taken over before this release; nothing was deleted.
        RedisUnavailable
            Redis could not be reached; renewal has stopped, so the lock lapses within one lease.
        """
        expected_token = self.local.token
        if expected_token is None:
            raise LockError(self.name, "Cannot release a lock that's not owned or is already unlocked.")
        try:
            self.do_release(expected_token)
        except redis.exceptions.LockNotOwnedError:  # ours (LockNotOwned) or redis-py's
            self._forget(expected_token)
            raise
        self._forget(expected_token)

    def do_release(self, expected_token: bytes) -> None:
        """Release, in Redis, the acquisition holding ``expected_token`` (redis-py's ``do_release``).

        Raises
        ------
        LockNotOwned
            The lock key no longer holds ``expected_token``; nothing was deleted.
        RedisUnavailable
            Redis could not be reached.
        """
        state = self.local.held
        if state is None or state.token != expected_token:
            state = _Held(self.name, expected_token, 0, None)
        if state.entry is not None:
            get_renewer().unregister(state.entry)
        s = self.settings
        code = _scripts.RELEASE.run(s.client, s.release_keys, [expected_token, s.keys.signal_prefix, s.signal_ttl_ms])
        if code == RELEASED or code == RELEASED_WOKE:
            return
        if code == NOT_OWNED:
            raise LockNotOwned(
                self.name,
                f"Lock {self.name!r} expired or was taken over before release (fencing token {state.fence}); "
                "nothing was deleted",
            )
        raise _redis.unknown_code("release.lua", code, self.name)

    def abandon(self) -> None:
        """Stop renewing the held lock and forget it here, without a Redis call: it lapses within one lease.

        For clean-up when Redis does not answer and each :meth:`release` would wait a socket timeout.
        """
        state = self.local.held
        if state is not None and state.entry is not None:
            get_renewer().unregister(state.entry)
            state.entry = None
        if self.local.token is not None:
            self._forget(self.local.token)

    def _forget(self, token: bytes) -> None:
        """Clear this thread's acquisition, if it is still the one holding ``token``."""
        if self.local.token == token:
            self.local.token = None
            self.local.held = None

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

    def _held_with_timeout(self, verb: str) -> _Held:
        state = self._state()
        if state is None:
            raise LockError(self.name, f"Cannot {verb} an unlocked lock")
        if self.timeout is None:
            raise LockError(self.name, f"Cannot {verb} a lock with no timeout")
        return state

    def _set_hold_deadline(self, state: _Held, hold_deadline: float, verb: str) -> Literal[True]:
        s = self.settings
        state.hold_deadline = hold_deadline
        self._track(state)  # before the script, so a concurrent renewal already uses the new deadline
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
        """Release; a lost or released lock raises :class:`LockError` unless ``raise_on_release_error`` is False."""
        try:
            self.release()
        except LockError:
            if self.raise_on_release_error:
                raise
            logger.warning("Lock %r was unlocked or no longer owned when exiting its with block", self.name)

    def copy(self) -> RedisLock:
        """Return an unheld lock with the same name and settings.

        Returns
        -------
        RedisLock
            A new object (sharing the resolved settings, if any).
        """
        clone = RedisLock(self.name, timeout=self.timeout, lease_s=self.lease_s, blocking=self.blocking,
                          blocking_timeout=self.blocking_timeout, client=self._client, namespace=self._namespace,
                          raise_on_release_error=self.raise_on_release_error, thread_local=self.thread_local,
                          lock_key=self._lock_key)
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
        state = self.local.held
        text = "held" if self.held else ("lost" if state is not None and state.lost else "unheld")
        return f"<{type(self).__name__} {self.name!r} {text} fencing_token={self._fence}>"


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
