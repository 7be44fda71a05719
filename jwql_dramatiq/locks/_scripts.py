"""The Lua scripts (package data next to this module) and how they are run.

Each script's header documents its KEYS, ARGV and return codes. Each code maps to exactly one outcome in
Python (success, or one exception: LockNotAcquired, LockNotOwned); a code not listed raises
:class:`~jwql_dramatiq.errors.LockError` via :func:`~jwql_dramatiq.locks._redis.unknown_code`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from jwql_dramatiq import lua
from jwql_dramatiq.connection import client_address, is_auth_error, is_outage
from jwql_dramatiq.locks._redis import unavailable
from jwql_dramatiq.sentinel import run_durably, wait_settings


class LuaScript(lua.LuaScript):
    """One of the lock scripts next to this module, run through the package's one Lua loader
    (:class:`jwql_dramatiq.lua.LuaScript`), with connection errors raised as
    :class:`~jwql_dramatiq.errors.RedisUnavailable`.

    Parameters
    ----------
    filename : str
        The ``.lua`` file next to this module.
    """

    def __init__(self, filename: str, durable: Callable[[Any], bool] | None = None) -> None:
        super().__init__(__package__, filename)
        #: For an acquisition: given the reply, whether it took the lock (and INCRemented the fencing
        #: counter); such a reply is only returned once a replica has it (``WAIT``, when the client
        #: waits for replicas), so neither the grant nor its fencing token can vanish in a failover.
        self.durable = durable

    def run(self, client: redis.Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script and return its reply (a code, or ``[code, value]``, as its header documents).

        Raises
        ------
        RedisUnavailable
            Redis could not be reached, or refused the write for want of replicas (``NOREPLICAS``).
        """
        try:
            if self.durable is not None and wait_settings(client)[0] > 0:
                return run_durably(client, self, keys, args, "lock acquisition",
                                   client_address(client), self.durable)
            return super().run(client, keys, args)
        except redis.exceptions.RedisError as exc:  # an outage (is_outage: NOREPLICAS too) or a refused login
            if not (is_outage(exc) or is_auth_error(exc)):
                raise
            raise unavailable(client, exc) from exc


#: try_acquire.lua: fence >= 1 ACQUIRED, 0 HELD, -1 WAITERS.
TRY_ACQUIRE = LuaScript("try_acquire.lua", durable=lambda fence: isinstance(fence, int) and fence >= 1)
#: acquire.lua: {1, fence} ACQUIRED, {2, wait_ms} HELD, {3, wait_ms} QUEUED.
ACQUIRE = LuaScript("acquire.lua", durable=lambda reply: isinstance(reply, list) and reply[0] == 1)
#: release.lua: 1 RELEASED, 2 RELEASED_WOKE, 0 NOT_OWNED.
RELEASE = LuaScript("release.lua")
#: extend.lua: 1 RENEWED, 0 NOT_OWNED.
EXTEND = LuaScript("extend.lua")
#: leave.lua: 1 LEFT, 2 LEFT_WOKE.
LEAVE = LuaScript("leave.lua")


# Return codes, as documented in each script's header.
#: try_acquire.lua: a value >= 1 is ACQUIRED (with that fencing token); HELD, WAITERS -> LockNotAcquired.
TRY_HELD, TRY_WAITERS = 0, -1
#: acquire.lua ({code, value}): ACQUIRED (value = fence); HELD, QUEUED (value = wait_ms) -> LockNotAcquired.
ACQUIRED, HELD, QUEUED = 1, 2, 3
#: release.lua: RELEASED, RELEASED_WOKE; NOT_OWNED -> LockNotOwned.
RELEASED, RELEASED_WOKE, NOT_OWNED = 1, 2, 0
#: extend.lua: RENEWED; EXTEND_NOT_OWNED -> LockNotOwned (reported by the renewal thread).
RENEWED, EXTEND_NOT_OWNED = 1, 0
#: leave.lua: LEFT, LEFT_WOKE.
LEFT, LEFT_WOKE = 1, 2
