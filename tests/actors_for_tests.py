"""Actors the tests send to real workers (loaded through the config's ``actor_modules``)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time

from jwql_dramatiq.registry import actor

logger = logging.getLogger(__name__)


@actor
def record_span(duration_s: float) -> dict:
    """Sleep ``duration_s`` and return when this ran, on which worker."""
    start = time.time()
    time.sleep(duration_s)
    return {"start": start, "end": time.time(), "pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname()}


@actor
def fail_with(type_name: str, text: str) -> None:
    """Raise the builtin exception ``type_name`` with ``text``."""
    import builtins

    raise getattr(builtins, type_name)(text)


@actor
def sleep_in_c(seconds: float) -> str:
    """Block in a C call that holds the GIL (libc sleep through PyDLL) for ``seconds``."""
    ctypes.PyDLL(None).usleep(ctypes.c_uint(int(seconds * 1_000_000)))
    return "slept"


@actor
def die(how: str, code: int = 0) -> None:
    """Die in one of several ways: sigkill, segfault, system_exit, os_exit."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "system_exit":
        raise SystemExit(code)
    elif how == "os_exit":
        os._exit(code)
    raise ValueError(f"unknown way to die: {how}")


@actor
def allocate_mib(total_mib: int, step_mib: int = 32) -> int:
    """Allocate and touch ``total_mib`` MiB in steps, holding on to all of it."""
    blocks = []
    for _ in range(total_mib // step_mib):
        blocks.append(bytearray(os.urandom(16)) * (step_mib * 65536))
        time.sleep(0.01)
    return len(blocks)


@actor
def log_lines(count: int) -> int:
    """Log ``count`` lines at INFO from inside the task."""
    for i in range(count):
        logger.info("task log line %d", i)
    return count


@actor
def big_result(size: int) -> str:
    """Return a string of ``size`` characters."""
    return "x" * size


@actor
def count_then_sleep_in_c(counter_key: str, seconds: float) -> int:
    """INCR ``counter_key`` in the worker's Redis, then hold the GIL in C for ``seconds``."""
    from jwql_dramatiq.connection import get_redis

    runs = get_redis().incr(counter_key)
    ctypes.PyDLL(None).usleep(ctypes.c_uint(int(seconds * 1_000_000)))
    return int(runs)
