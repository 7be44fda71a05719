"""Several locks taken together, in one canonical (sorted) order, all or nothing, within one bound.

Every caller takes the same names in the same order, so two callers wanting {A, B} cannot each hold one
and wait for the other: the runbook's deadlock cannot happen between users of :func:`locks`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import redis

from jwql_dramatiq.errors import LockNotAcquired, LockNotOwned
from jwql_dramatiq.locks.lock import RedisLock

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class MultiLock:
    """Locks taken in sorted name order, all or nothing; a context manager and a decorator.

    Parameters
    ----------
    names : iterable of str
        The lock names (duplicates are ignored).
    timeout : float or None
        Maximum hold time in seconds of each lock, None for none.
    lease_s : float or None
        The renewed lease in seconds; None for the configured ``lock_lease_s``.
    blocking : bool
        Default for :meth:`acquire`: wait (True) or try each lock once (False).
    blocking_timeout : float or None
        Default bound in seconds on the whole wait (shared by all the locks); None for no bound.
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Raises
    ------
    ValueError
        No names, an empty name, or a duration that is not positive.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        timeout: float | None = None,
        lease_s: float | None = None,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        client: redis.Redis | None = None,
        namespace: str | None = None,
    ) -> None:
        if isinstance(names, str):
            raise ValueError(f"locks() takes a collection of names, not the single name {names!r}")
        ordered = sorted(set(names))
        if not ordered:
            raise ValueError("locks() needs at least one name")
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.locks = [
            RedisLock(n, timeout=timeout, lease_s=lease_s, client=client, namespace=namespace) for n in ordered
        ]

    @property
    def names(self) -> list[str]:
        """list of str: the lock names, in acquisition order."""
        return [lk.name for lk in self.locks]

    @property
    def fencing_tokens(self) -> dict[str, int | None]:
        """dict: lock name -> fencing token of its current (or most recent) acquisition."""
        return {lk.name: lk.fencing_token for lk in self.locks}

    def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None) -> bool:
        """Acquire every lock in sorted order, or none of them.

        Parameters
        ----------
        blocking : bool or None
            Wait (True) or try each lock once (False); None for the object's default.
        blocking_timeout : float or None
            Bound in seconds on the whole wait; None for the object's default.

        Returns
        -------
        bool
            True if all the locks are held; False if one could not be acquired in time, in which case the
            ones already taken have been released.

        Raises
        ------
        LockError
            A lock is already held by this object, or a script returned an unknown code.
        RedisUnavailable
            Redis could not be reached (locks already taken are released first, if possible).
        """
        if blocking is None:
            blocking = self.blocking
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        deadline = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        taken: list[RedisLock] = []
        try:
            for lk in self.locks:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not lk.acquire(blocking=blocking, blocking_timeout=remaining):
                    self._release_all(taken, quiet=True)
                    return False
                taken.append(lk)
        except BaseException:
            self._release_all(taken, quiet=True)
            raise
        return True

    @staticmethod
    def _release_all(taken: list[RedisLock], quiet: bool) -> None:
        first: BaseException | None = None
        for lk in reversed(taken):
            try:
                lk.release()
            except Exception as exc:  # noqa: BLE001 - release the others first
                if quiet:
                    logger.warning("Could not release lock %r: %s", lk.name, exc)
                elif first is None:
                    first = exc
        if first is not None:
            raise first

    def release(self) -> None:
        """Release every held lock, in reverse order.

        Raises
        ------
        LockNotOwned
            None of the locks was held, or one was lost before release (raised after releasing the rest).
        RedisUnavailable
            Redis could not be reached.
        """
        held = [lk for lk in self.locks if lk.local.token is not None]
        if not held:
            raise LockNotOwned(",".join(self.names), f"Locks {self.names} are not held by this object")
        self._release_all(held, quiet=False)

    def __enter__(self) -> MultiLock:
        """Acquire all with the object's defaults; raise :class:`LockNotAcquired` if they cannot all be had."""
        if self.acquire():
            return self
        raise LockNotAcquired(
            ",".join(self.names),
            f"Locks {self.names} were not all acquired within {self.blocking_timeout if self.blocking else 0} s",
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Release all the locks."""
        self.release()

    def __call__(self, function: F) -> F:
        """Decorate a function so that each call runs under (fresh copies of) these locks.

        Parameters
        ----------
        function : callable
            The function to protect.

        Returns
        -------
        callable
            The wrapper; it raises :class:`LockNotAcquired` when the locks cannot all be acquired.
        """

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            copy = MultiLock.__new__(MultiLock)
            copy.blocking, copy.blocking_timeout = self.blocking, self.blocking_timeout
            copy.locks = [lk.copy() for lk in self.locks]
            with copy:
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<MultiLock {self.names}>"


def locks(
    names: Iterable[str],
    *,
    timeout: float | None = None,
    lease_s: float | None = None,
    blocking: bool = True,
    blocking_timeout: float | None = None,
    client: redis.Redis | None = None,
    namespace: str | None = None,
) -> MultiLock:
    """Create a group of locks acquired in sorted order, all or nothing (``with locks(["a", "b"]):``).

    Parameters
    ----------
    names : iterable of str
        The lock names, in any order.
    timeout : float or None
        Maximum hold time in seconds of each lock, None for none.
    lease_s : float or None
        The renewed lease in seconds; None for the configured one.
    blocking : bool
        Wait (True) or try each lock once (False).
    blocking_timeout : float or None
        Bound in seconds on the whole wait; None for no bound.
    client : redis.Redis or None
        The client; None for ``get_redis()``.
    namespace : str or None
        The key prefix; None for the configured one.

    Returns
    -------
    MultiLock
        The (unheld) group.

    Raises
    ------
    ValueError
        No names, an empty name, or a duration that is not positive.
    """
    return MultiLock(
        names,
        timeout=timeout,
        lease_s=lease_s,
        blocking=blocking,
        blocking_timeout=blocking_timeout,
        client=client,
        namespace=namespace,
    )
