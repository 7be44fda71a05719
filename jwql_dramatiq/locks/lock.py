"""The lock, :class:`RedisLock` (a renewed lease, an owner record, a fencing token, fair waiters), and :func:`lock`.

Here: the lock's arguments and resolved settings, ``acquire``/``release`` and the record of the current
acquisition. The rest is one concern per module: the Redis round trips that take and release the lock in
:mod:`~jwql_dramatiq.locks._protocol` (and :mod:`~jwql_dramatiq.locks._queue`), the per-object or per-thread
acquisition state that the renewal thread acts on in :mod:`~jwql_dramatiq.locks._held`, and two base classes:
the ``with`` and decorator forms (:mod:`~jwql_dramatiq.locks._forms`) and redis-py's ``extend``,
``reacquire``, ``locked`` and ``owned`` (:mod:`~jwql_dramatiq.locks._redis_py_api`).

The lock key holds the token, as redis-py's ``Lock`` does; ``acquire(token=...)`` and ``.local.token`` behave
as redis-py's.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis

from jwql_dramatiq.errors import LockError
from jwql_dramatiq.locks import _redis
from jwql_dramatiq.locks._forms import LockFormsMixin
from jwql_dramatiq.locks._held import Held, new_local
from jwql_dramatiq.locks._protocol import release_token, run_release, take
from jwql_dramatiq.locks._redis_py_api import RedisPyLockMixin
from jwql_dramatiq.locks.owner import owner_json
from jwql_dramatiq.locks.renewal import get_renewer
from jwql_dramatiq.sentinel import ReplicaTimeout

logger = logging.getLogger(__name__)


class RedisLock(LockFormsMixin, RedisPyLockMixin):
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
        self.local: Any = new_local(self.thread_local)
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

    def _state(self) -> Held | None:
        """The calling thread's acquisition, or None; a ``.local.token`` set by hand counts as held."""
        token = self.local.token
        if token is None:
            return None
        state = self.local.held
        if state is None or state.token != token:
            state = self.local.held = Held(self.name, token, 0, None)
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
        try:
            got = take(s, self.name, value, tail, blocking, deadline)
        except ReplicaTimeout:
            self._give_back(value)
            raise
        if got is None:
            return False
        self._on_acquired(value, *got)
        return True

    def _give_back(self, token: bytes) -> None:
        """Release a grant no replica confirmed (the caller is told it failed), if Redis still answers."""
        try:
            run_release(self.settings, token)
        except Exception:
            logger.warning("Could not give back the unconfirmed grant of lock %r", self.name, exc_info=True)

    def _on_acquired(self, token: bytes, fence: int, started: float) -> None:
        s = self.settings
        state = Held(self.name, token, fence, started + s.max_hold_ms / 1000 if s.max_hold_ms else None)
        self.local.held = state
        self.local.token = token
        self._fence = fence
        state.track(s)
        logger.debug("Acquired lock %r (fencing token %d)", self.name, fence)

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
            state = Held(self.name, expected_token, 0, None)
        if state.entry is not None:
            get_renewer().unregister(state.entry)
        release_token(self.settings, self.name, expected_token, state.fence)

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

    # -- copy (each decorated call runs under one) and repr ------------------------------------------

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
