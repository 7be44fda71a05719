"""Lua scripts, one per ``.lua`` file, each with a header documenting its KEYS, ARGV and returns.

Each is a :class:`~jwql_dramatiq.lua.LuaScript` (the package's one loader); nothing is read
until a script is first run.
"""

from __future__ import annotations

from ..lua import LuaScript

#: store_result.lua: store a result unless the task is revoked or already has one (see its header).
STORE_RESULT = LuaScript(__name__, "store_result.lua")
#: sweep.lua: requeue dead workers' unacked messages and expire dead letters (see its header).
SWEEP = LuaScript(__name__, "sweep.lua")
#: task_state.lua: record a task's state and index it, in one round trip (see its header).
TASK_STATE = LuaScript(__name__, "task_state.lua")


def lua_source(name: str) -> str:
    """Return the source of ``<name>.lua`` shipped in this package."""
    return LuaScript(__name__, f"{name}.lua").source
