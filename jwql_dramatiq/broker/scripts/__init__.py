"""Lua scripts, one per ``.lua`` file, each with a header documenting its KEYS, ARGV and returns.

Each is a :class:`~jwql_dramatiq.lua.LuaScript` (the package's one loader); nothing is read
until a script is first run.
"""

from __future__ import annotations

from ...lua import LuaScript

#: The task-state write enqueue.lua, task_state.lua, finish.lua and purge.lua share (a library, never run alone).
STATE_LIBRARY = "task_state_lib.lua"
#: store_result.lua's body as a function, shared with finish.lua and purge.lua (a library).
STORE_RESULT_LIBRARY = "store_result_lib.lua"
#: settle.lua's body as a function, shared with finish.lua (a library).
SETTLE_LIBRARY = "settle_lib.lua"
#: enqueue.lua: put a message on a queue, wake an idle consumer and, but for a first send to a ready
#: queue, record the task's state (see its header).
ENQUEUE = LuaScript(__name__, "enqueue.lua", includes=(STATE_LIBRARY,))
#: fetch.lua: record a worker's heartbeat and take messages, holding them on its lease (see its header).
FETCH = LuaScript(__name__, "fetch.lua")
#: settle.lua: ack, nack (dead-letter) or requeue messages a worker holds (see its header).
SETTLE = LuaScript(__name__, "settle.lua", includes=(SETTLE_LIBRARY,))
#: store_result.lua: store a result unless the task is revoked or already has one (see its header).
STORE_RESULT = LuaScript(__name__, "store_result.lua", includes=(STORE_RESULT_LIBRARY,))
#: purge.lua: fail a chunk of taken messages as purged, waking their waiters (see its header).
PURGE = LuaScript(__name__, "purge.lua", includes=(STATE_LIBRARY, STORE_RESULT_LIBRARY))
#: purge_take.lua: take a queue's waiting lists into holding lists that purge.lua empties (see its header).
PURGE_TAKE = LuaScript(__name__, "purge_take.lua")
#: sweep.lua: requeue dead workers' unacked messages and expire dead letters (see its header).
SWEEP = LuaScript(__name__, "sweep.lua")
#: task_state.lua: record a task's state and index it, in one round trip (see its header).
TASK_STATE = LuaScript(__name__, "task_state.lua", includes=(STATE_LIBRARY,))
#: finish.lua: a message's deferred writes (final state, result) and its ack or nack, in one script.
FINISH = LuaScript(__name__, "finish.lua", includes=(STATE_LIBRARY, STORE_RESULT_LIBRARY, SETTLE_LIBRARY))

#: The scripts finish.lua can run as its parts, by the part's name in its ARGV.
FINISH_PARTS = {TASK_STATE: "task_state", STORE_RESULT: "store_result", SETTLE: "settle"}


#: Every script, for loading them all before a pipeline that runs several (see :func:`load_all`).
ALL_SCRIPTS = (ENQUEUE, FETCH, FINISH, PURGE, PURGE_TAKE, SETTLE, STORE_RESULT, SWEEP, TASK_STATE)


def finish_call(parts) -> tuple[list, list]:
    """finish.lua's KEYS and ARGV for ``parts``, a sequence of ``(script, keys, args)`` whose
    scripts are in :data:`FINISH_PARTS`, run in order.

    Raises
    ------
    ValueError
        For a script finish.lua cannot run as a part.
    """
    all_keys: list = []
    all_args: list = [len(parts)]
    for script, keys, args in parts:
        if script not in FINISH_PARTS:
            raise ValueError(f"finish.lua cannot run {script!r} as a part; it runs {sorted(FINISH_PARTS.values())}")
        all_keys += keys
        all_args += [FINISH_PARTS[script], len(keys), len(args), *args]
    return all_keys, all_args


def load_all(client) -> None:
    """``SCRIPT LOAD`` every script into ``client``'s server (after a NOSCRIPT reply from a pipeline)."""
    for script in ALL_SCRIPTS:
        script.load(client)

