"""Who holds a lock: the owner record written at acquisition, and whether that owner is still alive.

The record names the host, the pid and the process start time (field 22 of ``/proc/<pid>/stat``, in clock
ticks since boot), so a reused pid is told apart from the original holder. Inside a Dramatiq task it also
names the message id and the actor.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

_static: tuple[int, str] | None = None
_get_current_message: Callable[[], Any] | None = None
#: JSON-encode a short string, cached (thread names and actor names repeat).
_json_str = functools.lru_cache(maxsize=1024)(json.dumps)


def process_start_ticks(pid: int) -> int | None:
    """Return a process's start time in clock ticks since boot, from ``/proc/<pid>/stat``.

    Parameters
    ----------
    pid : int
        The process id.

    Returns
    -------
    int or None
        Field 22 (``starttime``), or None when the process does not exist or ``/proc`` is unavailable.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def hostname() -> str:
    """Return this host's name as written in owner records.

    Returns
    -------
    str
        ``socket.gethostname()``.
    """
    return socket.gethostname()


def _static_json() -> str:
    global _static
    pid = os.getpid()
    if _static is None or _static[0] != pid:  # first use, or we are a forked child
        start = process_start_ticks(pid)
        _static = (pid, f'"host":{json.dumps(hostname())},"pid":{pid},"pid_start":{json.dumps(start)}')
    return _static[1]


def _current_message() -> Any:
    global _get_current_message
    if _get_current_message is None:
        try:
            from dramatiq.middleware import CurrentMessage
        except ImportError:  # pragma: no cover - dramatiq is a dependency
            _get_current_message = lambda: None  # noqa: E731
        else:
            _get_current_message = CurrentMessage.get_current_message
    return _get_current_message()


def owner_json() -> str:
    """Return the calling thread's identity as the members of a JSON object (no braces).

    Returns
    -------
    str
        ``"host":...,"pid":...,"pid_start":...,"thread":...``, plus ``"message_id"`` and ``"actor"`` when
        called inside a Dramatiq task (``CurrentMessage.get_current_message()`` returns a message).
    """
    text = f"{_static_json()},\"thread\":{_json_str(threading.current_thread().name)}"
    message = _current_message()
    if message is not None:
        text += f',"message_id":{json.dumps(str(message.message_id))},"actor":{_json_str(str(message.actor_name))}'
    return text


def is_process_alive(host: str, pid: int, start_ticks: int | None) -> bool | None:
    """Tell whether a lock owner's process still exists, when that can be known from here.

    Parameters
    ----------
    host : str
        The owner's host name.
    pid : int
        The owner's pid.
    start_ticks : int or None
        The owner's process start time, or None when it was not recorded.

    Returns
    -------
    bool or None
        None when the owner is on another host (only its lease can tell); otherwise whether a process
        with that pid exists and, when both start times are known, started at the same time.
    """
    if host != hostname():
        return None
    current = process_start_ticks(pid)
    if current is not None:
        return start_ticks is None or current == start_ticks
    if os.path.isdir("/proc/self"):
        return False  # /proc works here, and the pid has no entry
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
