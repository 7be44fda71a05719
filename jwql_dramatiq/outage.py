"""Riding through a Redis outage on the monitor side, within the call's own bound.

A worker already waits Redis out; a monitor that is given a bound (``timeout``) should too,
rather than fail at once while Redis restarts. :func:`ride_through` retries one Redis-touching
step with exponential back-off until the call's deadline, then raises
:class:`~jwql_dramatiq.errors.RedisUnavailable` naming the address and how long it tried.
A wrong password is not an outage: it is raised at once, as
:class:`~jwql_dramatiq.errors.RedisAuthFailed`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from .connection import is_auth_error, is_outage, redis_unavailable  # is_outage: the one classification
from .errors import RedisUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: First pause after a failed attempt, in seconds; doubles up to :data:`RETRY_MAX_S`.
RETRY_FIRST_S = 0.1
#: Longest pause between two attempts, in seconds.
RETRY_MAX_S = 2.0

def ride_through(call: Callable[[], T], deadline: float, address: str, what: str) -> T:
    """Run ``call``, retrying while Redis is unreachable, until ``deadline`` (``time.monotonic()``).

    Parameters
    ----------
    call : callable
        One step that talks to Redis; it must be safe to run again after a connection error.
    deadline : float
        ``time.monotonic()`` value after which no attempt starts.
    address : str
        ``host:port`` of Redis, for the error.
    what : str
        What the step does, for the log and the error ("sending jw..._uncal.fits").

    Returns
    -------
    The value of ``call``.

    Raises
    ------
    RedisUnavailable
        Redis stayed unreachable until the deadline; the message names the address and how
        long the call tried.
    """
    started = time.monotonic()
    pause_s = RETRY_FIRST_S
    warned = False
    while True:
        try:
            return call()
        except Exception as e:
            if not is_outage(e):
                if is_auth_error(e):
                    raise redis_unavailable(e, address=address) from None
                raise
            now = time.monotonic()
            if now >= deadline:
                raise redis_unavailable(e, address=address, what=f"{what}: no answer after trying for "
                                        f"{now - started:.1f} s (the call's bound); last error") from None
            if not warned:
                logger.warning("Redis at %s is unreachable while %s (%s); retrying for up to %.1f s more",
                               address, what, _reason(e), deadline - now)
                warned = True
            time.sleep(min(pause_s, deadline - now))
            pause_s = min(pause_s * 2, RETRY_MAX_S)


def _reason(error: BaseException) -> str:
    return error.reason if isinstance(error, RedisUnavailable) else (str(error) or type(error).__name__)
