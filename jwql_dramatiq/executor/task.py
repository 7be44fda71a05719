"""What a task running in a child may tell its worker, and what the worker tells it per attempt.

The worker runs a task again, in a fresh child with fewer cores, when the first run was killed
for memory (``all -> half -> none``). The pipeline actors read the attempt's cores with
:func:`attempt_max_cores` and say what they used with :func:`announce_max_cores`; a task that
never announces its cores is not retried.

Directories a task creates (staging, scratch) are announced with :func:`track_dir` *before*
they are created: the worker removes them once the task has ended, however it ended, so a
SIGKILLed child leaves nothing behind.

Outside a child (in-process workers, tests calling actors directly) every function here is
harmless: no override, announcements go nowhere.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from . import protocol

#: Key of the per-attempt settings in the task context the worker sends.
ATTEMPT_KEY = "jwql_attempt"

_state: dict[str, Any] = {"sock": None, "lock": None, "attempt": {}}


def bind(sock: socket.socket | None, lock: threading.RLock | None, context: dict[str, Any]) -> None:
    """Set the current task's socket and attempt settings (called by the child before each task)."""
    _state.update(sock=sock, lock=lock, attempt=dict(context.get(ATTEMPT_KEY) or {}))


def in_child() -> bool:
    """Whether this process is a task child (a fork server's), running a task."""
    return _state["sock"] is not None


def detach_forked() -> None:
    """In a process forked from a task child (the pool zygote): close the task's socket, which only the child speaks on."""
    sock = _state["sock"]
    if sock is not None:
        sock.close()  # this process's copy only
    _state.update(sock=None, lock=None)


def attempt_max_cores() -> str | None:
    """The ``maximum_cores`` this attempt must use (after an out-of-memory kill), or None for the config's."""
    value = _state["attempt"].get("max_cores")
    return None if value is None else str(value)


def attempt_number() -> int:
    """1 for a task's first run, 2 and 3 for runs after out-of-memory kills."""
    return int(_state["attempt"].get("attempt", 1))


def _send(kind: str, value: Any) -> None:
    sock, lock = _state["sock"], _state["lock"]
    if sock is None:
        return
    with lock:
        protocol.send_frame(sock, (kind, value))


def announce_max_cores(max_cores: str) -> None:
    """Tell the worker the ``maximum_cores`` this attempt uses, so a memory kill can back off from it."""
    _send("note", {"max_cores": str(max_cores)})


def track_dir(path: str | os.PathLike[str]) -> Path:
    """Tell the worker to remove ``path`` (recursively) once this task ends; returns it as a Path.

    Call it before creating the directory, so no instant exists where it is on disk unannounced.
    """
    path = Path(path).absolute()
    _send("track", str(path))
    return path
