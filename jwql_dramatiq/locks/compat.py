"""Drop-in replacements for JWQL's ``only_one`` decorator, ``REDIS_CLIENT.lock(...)`` and redis-py's ``Lock``.

JWQL code keeps working unchanged apart from the import line::

    from jwql_dramatiq.locks import REDIS_CLIENT, only_one

    @only_one(key="dark_monitor", timeout=3600)
    def run(self): ...

    my_lock = REDIS_CLIENT.lock(lock_name, timeout=value)
    have_lock = my_lock.acquire(blocking=True)
    if have_lock:
        try:
            ...
        finally:
            my_lock.release()

The locks are :class:`~jwql_dramatiq.locks.lock.RedisLock`: their keys are ``<namespace>:lock:<name>``
rather than the bare name, and a crashed holder's lock frees itself within one lease.

:class:`Lock` takes redis-py's ``Lock(redis, name, ...)`` arguments and keeps its token under the bare name,
so ``redis_client.lock(name, lock_class=Lock)`` works wherever redis-py's lock did (see docs/compatibility.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import redis

from jwql_dramatiq.errors import LockNotAcquired
from jwql_dramatiq.locks import _redis
from jwql_dramatiq.locks.admin import describe_holder
from jwql_dramatiq.locks.lock import RedisLock

logger = logging.getLogger(__name__)

#: What only_one does when the lock is taken: "skip", "raise", or seconds to wait before raising.
OnTaken = str | float


def _check_on_taken(on_taken: OnTaken) -> None:
    if on_taken in ("skip", "raise"):
        return
    if isinstance(on_taken, (int, float)) and not isinstance(on_taken, bool) and on_taken >= 0:
        return
    raise ValueError(f'on_taken must be "skip", "raise" or a number of seconds >= 0, got {on_taken!r}')


def only_one(
    function: Callable[..., Any] | None = None,
    key: str = "",
    timeout: float | None = None,
    *,
    on_taken: OnTaken = "skip",
    lease_s: float | None = None,
    client: redis.Redis | None = None,
    namespace: str | None = None,
) -> Any:
    """Let only one call of the decorated function run at a time, anywhere (JWQL's decorator).

    Usable as ``@only_one``, ``@only_one()`` or ``@only_one(key=..., timeout=...)``.

    Parameters
    ----------
    function : callable or None
        The function, when used bare as ``@only_one``.
    key : str
        The lock name. Empty (the default) uses the function's ``module.qualname``, which the runbook
        recommends anyway.
    timeout : float or None
        Maximum hold time in seconds, None for none. The lock no longer needs it to go away after a crash:
        it is a renewed lease (``lease_s``).
    on_taken : {"skip", "raise"} or float
        When the lock is taken: ``"skip"`` (JWQL's behaviour: log a warning naming the holder and return
        None without running the function), ``"raise"`` (raise :class:`LockNotAcquired`), or a number of
        seconds to wait for it before raising :class:`LockNotAcquired`.
    lease_s : float or None
        The renewed lease in seconds; None for the configured ``lock_lease_s``.
    client : redis.Redis or None
        The client; None for ``get_redis()`` (looked up at call time, not at decoration time).
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    callable
        The decorator, or the decorated function when ``function`` is given. The wrapper keeps the
        function's name and docstring (``functools.wraps``) and returns its result.

    Raises
    ------
    ValueError
        ``on_taken`` is not one of the choices.
    """
    _check_on_taken(on_taken)

    def decorate(run_func: Callable[..., Any]) -> Callable[..., Any]:
        name = key or f"{run_func.__module__}.{run_func.__qualname__}"

        @functools.wraps(run_func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wait_s = None if on_taken in ("skip", "raise") else float(on_taken)
            lk = RedisLock(
                name,
                timeout=timeout,
                lease_s=lease_s,
                blocking=wait_s is not None,
                blocking_timeout=wait_s,
                client=client,
                namespace=namespace,
            )
            if not lk.acquire():
                holder = describe_holder(name, lk.client, lk.namespace)
                if on_taken == "skip":
                    logger.warning(
                        "Lock %r is already in use by %s; %s was not run. A dead holder's lock frees itself "
                        "within one lease (%.0f s); see jwql_dramatiq.locks.list_locks()",
                        name,
                        holder,
                        run_func.__qualname__,
                        lk.settings.lease_s,
                    )
                    return None
                waited = f" within {wait_s} s" if wait_s else ""
                raise LockNotAcquired(name, f"Lock {name!r} is held by {holder}; not acquired{waited}")
            try:
                return run_func(*args, **kwargs)
            finally:
                lk.release()

        return wrapper

    return decorate(function) if function is not None else decorate


class LockingRedis:
    """A stand-in for JWQL's ``REDIS_CLIENT``: ``.lock()`` returns these locks; everything else is redis.

    Parameters
    ----------
    client : redis.Redis or None
        The client; None for ``get_redis()``, looked up at each use (never at import).
    namespace : str or None
        The lock key prefix; None for the configured one.
    lease_s : float or None
        The renewed lease in seconds; None for the configured ``lock_lease_s``.
    """

    def __init__(
        self, client: redis.Redis | None = None, *, namespace: str | None = None, lease_s: float | None = None
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._lease_s = lease_s

    @property
    def redis(self) -> redis.Redis:
        """redis.Redis: the underlying client."""
        return self._client if self._client is not None else _redis.default_client()

    def lock(
        self,
        name: str,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        lock_class: type | None = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
    ) -> RedisLock:
        """Return a lock, with redis-py's ``Redis.lock`` signature.

        Parameters
        ----------
        name : str
            The lock name; the key is ``<namespace>:lock:<name>``.
        timeout : float or None
            Maximum hold time in seconds, None for none (the lease, not this, frees a crashed holder's lock).
        sleep : float
            Ignored: waiters are woken by the release, not by polling.
        blocking : bool
            Default for ``acquire()``.
        blocking_timeout : float or None
            Default bound in seconds on the wait; None for none.
        lock_class : type or None
            None for :class:`RedisLock` (keys under the namespace); otherwise called as redis-py does,
            ``lock_class(client, name, timeout=..., sleep=..., ...)``.
        thread_local : bool
            Keep the token per thread (redis-py's default). Either way one thread's lock cannot be
            released by a holder in another process; with False another thread of this one may release it.
        raise_on_release_error : bool
            Whether leaving a ``with`` block raises when the lock was lost.

        Returns
        -------
        RedisLock
            The (unheld) lock, or what ``lock_class`` returned.
        """
        if lock_class is not None:
            return lock_class(self.redis, name, timeout=timeout, sleep=sleep, blocking=blocking,
                              blocking_timeout=blocking_timeout, thread_local=thread_local,
                              raise_on_release_error=raise_on_release_error)
        return RedisLock(
            name,
            timeout=timeout,
            lease_s=self._lease_s,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            client=self._client,
            namespace=self._namespace,
            raise_on_release_error=raise_on_release_error,
            thread_local=thread_local,
        )

    def __getattr__(self, attr: str) -> Any:
        """Forward everything but ``lock`` to the underlying ``redis.Redis`` (``REDIS_CLIENT.get(...)``)."""
        if attr.startswith("__") or attr in ("_client", "_namespace", "_lease_s"):
            raise AttributeError(attr)
        return getattr(self.redis, attr)

    def __repr__(self) -> str:
        return f"<LockingRedis client={self._client!r} namespace={self._namespace!r}>"


class Lock(RedisLock):
    """redis-py's ``Lock``, with a renewed lease, an owner record, a fencing token and fair waiters.

    Takes redis-py's arguments, so ``client.lock(name, lock_class=Lock)`` or ``Lock(client, name)`` replaces
    ``redis.lock.Lock``. The token is stored under the bare ``name``, as redis-py does; the owner record,
    the fencing counter and the waiters' keys are under the namespace. Deliberate differences are listed in
    docs/compatibility.md (section "redis-py's Lock").

    Parameters
    ----------
    redis : redis.Redis
        The client.
    name : str
        The lock name, which is also the key holding the token.
    timeout : float or None
        Maximum hold time in seconds, None for none.
    sleep : float
        Ignored: waiters are woken by the release, not by polling.
    blocking : bool
        Default for ``acquire()``.
    blocking_timeout : float or None
        Default bound in seconds on the wait; None for none.
    thread_local : bool
        Keep the token per thread (True, as redis-py) or per object.
    raise_on_release_error : bool
        Whether leaving a ``with`` block raises when the lock was lost or released.
    lease_s : float or None
        The renewed lease in seconds; None for the configured ``lock_lease_s``.
    namespace : str or None
        The prefix of the owner record and waiters' keys; None for the configured one.
    """

    def __init__(
        self,
        redis: redis.Redis,
        name: str,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
        *,
        lease_s: float | None = None,
        namespace: str | None = None,
    ) -> None:
        name = name.decode() if isinstance(name, bytes) else name
        super().__init__(name, timeout=timeout, lease_s=lease_s, blocking=blocking,
                         blocking_timeout=blocking_timeout, client=redis, namespace=namespace,
                         raise_on_release_error=raise_on_release_error, thread_local=thread_local, lock_key=name)
        self.redis = redis
        self.sleep = sleep


#: JWQL's ``REDIS_CLIENT``, built without connecting or reading the configuration.
REDIS_CLIENT = LockingRedis()
