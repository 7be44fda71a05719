"""The ``with`` and decorator forms of :class:`~jwql_dramatiq.locks.lock.RedisLock`.

:class:`LockFormsMixin` is a base of ``RedisLock``. It holds what these forms add to acquire and release: a
taken lock raises :class:`~jwql_dramatiq.errors.LockNotAcquired` naming its holder (never a silent None), a
lock lost before the block ends raises or is logged, and each decorated call runs under its own copy. These
are policies on top of acquire and release, so they are kept apart from lock.py, which does those.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import redis

from jwql_dramatiq.errors import LockError, LockNotAcquired
from jwql_dramatiq.locks.admin import describe_holder

# lock.py's logger, as before this module was split from it, so that logging set up for it still applies
logger = logging.getLogger("jwql_dramatiq.locks.lock")

F = TypeVar("F", bound=Callable[..., Any])


class LockFormsMixin:
    """``__enter__``/``__exit__`` and ``__call__`` (decorator) on top of ``acquire``, ``release`` and ``copy``.

    The class using it provides ``name``, ``blocking``, ``blocking_timeout``, ``raise_on_release_error``,
    ``client``, ``namespace``, ``acquire()``, ``release()`` and ``copy()``, as
    :class:`~jwql_dramatiq.locks.lock.RedisLock` does.
    """

    name: str
    blocking: bool
    blocking_timeout: float | None
    raise_on_release_error: bool

    if TYPE_CHECKING:

        @property
        def client(self) -> redis.Redis: ...

        @property
        def namespace(self) -> str: ...

        def acquire(self) -> bool: ...

        def release(self) -> None: ...

        def copy(self) -> LockFormsMixin: ...

    def __enter__(self) -> Self:
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
