"""What one lock object knows about its current acquisition, kept per object or per thread.

:class:`Held` is one acquisition (token, fencing token, renewal entry, maximum-hold deadline); the lock's
``.local`` (:func:`new_local`) points at it. It is separate from :mod:`jwql_dramatiq.locks.lock` because the
renewal thread, not only the lock, acts on it: the thread holds a weak reference to it and marks it lost.
"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from jwql_dramatiq.locks.renewal import Entry, get_renewer

if TYPE_CHECKING:
    from jwql_dramatiq.locks._redis import LockSettings

# lock.py's logger, as before this module was split from it, so that logging set up for it still gets the loss
logger = logging.getLogger("jwql_dramatiq.locks.lock")


class Held:
    """One acquisition: its token, fencing token, renewal entry and maximum-hold deadline.

    The renewal thread holds a weak reference to it (it lives as long as the lock object's ``.local``).

    Parameters
    ----------
    name : str
        The lock name, for log messages.
    token : bytes
        The token stored in the lock key.
    fence : int
        The fencing token of this acquisition (0 when unknown, e.g. a ``.local.token`` set by hand).
    hold_deadline : float or None
        ``time.monotonic()`` value of the maximum hold time, None for none.
    """

    __slots__ = ("name", "token", "fence", "entry", "hold_deadline", "lost", "__weakref__")

    def __init__(self, name: str, token: bytes, fence: int, hold_deadline: float | None) -> None:
        self.name = name
        self.token = token
        self.fence = fence
        self.entry: Entry | None = None
        self.hold_deadline = hold_deadline
        self.lost = False

    def track(self, s: LockSettings) -> None:
        """Renew the lease in the background unless it already runs to the maximum hold time.

        Parameters
        ----------
        s : LockSettings
            The lock's resolved settings (client, keys, lease).
        """
        if self.hold_deadline is not None and self.hold_deadline - time.monotonic() <= s.lease_s:
            return  # the lease already ends at the maximum hold time: nothing to renew
        if self.entry is not None:
            self.entry.hold_deadline = self.hold_deadline
            return
        keys = [s.keys.lock, s.keys.owner]
        self.entry = Entry(self, s.client, self.name, keys, self.token, s.lease_ms, self.hold_deadline)
        get_renewer().register(self.entry)

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


class ThreadLocal(threading.local):
    """Per-thread ``.local`` (redis-py's ``thread_local=True``): every thread starts with no token."""

    def __init__(self) -> None:
        self.token: bytes | None = None
        self.held: Held | None = None


def new_local(thread_local: bool) -> Any:
    """Return a lock's ``.local``: per thread (as redis-py's default) or one for the whole object.

    Parameters
    ----------
    thread_local : bool
        Whether each thread gets its own token and :class:`Held`.

    Returns
    -------
    ThreadLocal or types.SimpleNamespace
        An object with ``token`` and ``held`` attributes, both None.
    """
    return ThreadLocal() if thread_local else SimpleNamespace(token=None, held=None)
