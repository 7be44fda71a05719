"""One background thread per process that renews the leases of every lock the process holds.

Each held lock registers an :class:`Entry` holding only a weak reference to the lock object. Every
``lease / 3`` the thread re-sets the lease with extend.lua, never past the lock's maximum hold time (one
pipeline per client when several locks are due at once). When the lock object is garbage-collected, or the
process dies, renewal stops and the lock lapses within one lease. The thread starts on the first
acquisition, never at import, and sleeps until the earliest renewal is due, so uncontended acquire/release
cycles cost it nothing but a dict insert and pop.
A forked child starts with an empty registry: it does not renew its parent's locks.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from typing import Any

import redis

from jwql_dramatiq.errors import JwqlDramatiqError
from jwql_dramatiq.locks import _redis
from jwql_dramatiq.locks._scripts import EXTEND, EXTEND_NOT_OWNED, RENEWED

logger = logging.getLogger(__name__)

#: Fraction of the lease between renewals.
RENEW_FRACTION = 1 / 3
#: Longest delay (s) before retrying a renewal that failed because Redis was unreachable.
RETRY_AFTER_ERROR_S = 1.0


class Entry:
    """A held lock as the renewal thread sees it.

    Parameters
    ----------
    lock : object
        The lock object; only a weak reference is kept. It must have a ``_mark_lost(token)`` method.
    client : redis.Redis
        The client to renew with.
    name : str
        The lock name, for log messages.
    keys : list of str
        The lock key and the owner-record key (extend.lua's KEYS).
    token : bytes
        This acquisition's token.
    lease_ms : int
        The lease to set at each renewal.
    hold_deadline : float or None
        ``time.monotonic()`` value of the maximum hold time, None for none. The last renewal sets a lease
        that ends there. ``extend()`` and ``reacquire()`` move it.
    """

    __slots__ = ("lock_ref", "client", "name", "keys", "token", "lease_ms", "interval_s", "due", "hold_deadline")

    def __init__(
        self,
        lock: Any,
        client: redis.Redis,
        name: str,
        keys: list[str],
        token: bytes,
        lease_ms: int,
        hold_deadline: float | None,
    ) -> None:
        self.lock_ref = weakref.ref(lock)
        self.client = client
        self.name = name
        self.keys = keys
        self.token = token
        self.lease_ms = lease_ms
        self.hold_deadline = hold_deadline
        self.interval_s = lease_ms / 1000 * RENEW_FRACTION
        self.due = time.monotonic() + self.interval_s

    def next_ttl_ms(self) -> tuple[int, bool]:
        """Return the lease to set now, and whether it is the last one (it reaches the maximum hold time).

        Returns
        -------
        tuple of (int, bool)
            Milliseconds (< 1 when the maximum hold time has passed), and the "final" flag.
        """
        if self.hold_deadline is None:
            return self.lease_ms, False
        left_ms = int((self.hold_deadline - time.monotonic()) * 1000)
        return (left_ms, True) if left_ms <= self.lease_ms else (self.lease_ms, False)


class Renewer:
    """The registry of held locks and the daemon thread that renews them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._entries: dict[int, Entry] = {}
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf

    def register(self, entry: Entry) -> None:
        """Start renewing a lock; starts the thread on first use.

        Parameters
        ----------
        entry : Entry
            The held lock.
        """
        with self._cond:
            self._entries[id(entry)] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jwql-dramatiq-lock-renewal", daemon=True)
                self._thread.start()
            elif entry.due < self._wake_at:
                self._cond.notify()

    def unregister(self, entry: Entry | None) -> None:
        """Stop renewing a lock (a no-op if it is not registered).

        Parameters
        ----------
        entry : Entry or None
            The entry given to :meth:`register`.
        """
        if entry is not None:
            with self._cond:
                self._entries.pop(id(entry), None)

    def held_count(self) -> int:
        """Return how many locks are being renewed.

        Returns
        -------
        int
            The number of registered entries.
        """
        with self._cond:
            return len(self._entries)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [e for e in self._entries.values() if e.due <= now]
                if not due:
                    self._wake_at = min((e.due for e in self._entries.values()), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
                self._wake_at = -math.inf  # busy: registrations need not notify
            try:
                self._renew(due)
            except Exception:  # noqa: BLE001 - the thread must survive anything
                logger.exception("Lock renewal failed unexpectedly; retrying")
                for entry in due:
                    entry.due = time.monotonic() + min(RETRY_AFTER_ERROR_S, entry.interval_s)

    def _renew(self, due: list[Entry]) -> None:
        groups: dict[int, list[tuple[Entry, int, bool]]] = {}
        for entry in due:
            if entry.lock_ref() is None:
                logger.warning("Lock %r was garbage-collected while held; it lapses within one lease", entry.name)
                self.unregister(entry)
                continue
            ttl_ms, final = entry.next_ttl_ms()
            if ttl_ms < 1:  # the maximum hold time has passed: the lease already ends there
                self.unregister(entry)
                continue
            groups.setdefault(id(entry.client), []).append((entry, ttl_ms, final))
        for jobs in groups.values():
            client = jobs[0][0].client
            replies: list[Any]
            if len(jobs) == 1:
                replies = [self._call(*jobs[0][:2])]
            else:
                try:
                    pipe = client.pipeline(transaction=False)
                    for entry, ttl_ms, _final in jobs:
                        EXTEND.queue(pipe, entry.keys, [entry.token, ttl_ms])
                    replies = pipe.execute(raise_on_error=False)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    replies = [_redis.unavailable(client, exc)] * len(jobs)
                replies = [
                    self._call(job[0], job[1]) if isinstance(r, redis.exceptions.NoScriptError) else r
                    for job, r in zip(jobs, replies, strict=True)
                ]
            for (entry, _ttl_ms, final), reply in zip(jobs, replies, strict=True):
                self._handle(entry, final, reply)

    @staticmethod
    def _call(entry: Entry, ttl_ms: int) -> Any:
        try:
            return EXTEND.run(entry.client, entry.keys, [entry.token, ttl_ms])
        except (JwqlDramatiqError, redis.exceptions.RedisError) as exc:
            return exc

    def _handle(self, entry: Entry, final: bool, reply: Any) -> None:
        now = time.monotonic()
        if isinstance(reply, BaseException):
            entry.due = now + min(RETRY_AFTER_ERROR_S, entry.interval_s / 2)
            logger.warning("Could not renew lock %r: %s; retrying in %.1f s", entry.name, reply, entry.due - now)
            return
        code = reply
        if code == RENEWED and not final:
            entry.due = now + entry.interval_s
            return
        self.unregister(entry)
        if code == RENEWED:
            logger.debug("Lock %r reached its maximum hold time; renewal stops", entry.name)
        elif code == EXTEND_NOT_OWNED:
            lock = entry.lock_ref()
            if lock is not None:
                lock._mark_lost(entry.token)
        else:
            logger.error("%s", _redis.unknown_code("extend.lua", code, entry.name))


_renewer = Renewer()


def get_renewer() -> Renewer:
    """Return this process's renewer.

    Returns
    -------
    Renewer
        The shared instance (a fresh one in a forked child).
    """
    return _renewer


def _after_fork_in_child() -> None:
    global _renewer
    _renewer = Renewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
