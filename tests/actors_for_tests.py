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


@actor(max_retries=1, min_backoff=3000, max_backoff=3000)
def fail_first_run(counter_key: str) -> int:
    """INCR ``counter_key`` in the worker's Redis; raise on the first run (retried once, 3 s later)."""
    from jwql_dramatiq.connection import get_redis

    runs = int(get_redis().incr(counter_key))
    if runs == 1:
        raise ValueError("the first run fails")
    return runs


@actor
def fail_after(seconds: float, text: str) -> None:
    """Sleep ``seconds``, then raise ``ValueError(text)`` (a failure slow enough to be seen running)."""
    time.sleep(seconds)
    raise ValueError(text)


@actor
def write_product(directory: str, counter_key: str, task_id: str, duration_s: float) -> str:
    """Count this execution in the Redis hash ``counter_key``, sleep, then publish ``<directory>/<task_id>.out`` once.

    The product is written under a temporary name and hard-linked into place, so a second
    execution of the same task (at-least-once delivery) never creates or replaces a product.
    """
    import tempfile

    from jwql_dramatiq.connection import get_redis

    get_redis().hincrby(counter_key, task_id, 1)
    time.sleep(duration_s)
    final = os.path.join(directory, f"{task_id}.out")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{task_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{task_id} written by pid {os.getpid()} on {socket.gethostname()}\n")
        try:
            os.link(tmp, final)
        except FileExistsError:
            logger.warning("write_product: %s already exists; this execution is a duplicate", final)
    finally:
        os.unlink(tmp)
    return final


def _pool_worker_hold(mib: int, pid_dir: str, hold_s: float) -> int:
    """In a pool process: touch ``mib`` MiB, record this pid, then sleep ``hold_s``."""
    block = bytearray(os.urandom(16)) * (mib * 65536)
    open(os.path.join(pid_dir, f"pool.{os.getpid()}"), "w").close()
    time.sleep(hold_s)
    return len(block) // (1024 * 1024)


@actor
def pool_hold(workers: int, mib_each: int, pid_dir: str, hold_s: float, context: str = "spawn") -> list[int]:
    """Start a ``multiprocessing`` pool of ``workers`` (as stcal does); each holds ``mib_each`` MiB for ``hold_s``.

    The child writes ``<pid_dir>/child.<pid>`` and each pool process ``<pid_dir>/pool.<pid>``.
    """
    import multiprocessing

    open(os.path.join(pid_dir, f"child.{os.getpid()}"), "w").close()
    with multiprocessing.get_context(context).Pool(workers) as pool:
        return pool.starmap(_pool_worker_hold, [(mib_each, pid_dir, hold_s)] * workers)


@actor
def cores_hungry(total_mib: int, none_mib: int) -> dict:
    """Use memory that grows with cores, as the pipeline does: ``all`` and ``half`` spread ``total_mib``
    over a pool of 2 and 1 processes; ``none`` touches ``none_mib`` in the child itself.

    Reads and announces the attempt's cores like the pipeline actors.
    """
    import multiprocessing
    import tempfile

    from jwql_dramatiq.executor import task

    cores = task.attempt_max_cores() or "all"
    task.announce_max_cores(cores)
    if cores == "none":
        block = bytearray(os.urandom(16)) * (none_mib * 65536)
        return {"cores": cores, "mib": len(block) // (1024 * 1024), "attempt": task.attempt_number()}
    workers = 2 if cores == "all" else 1
    with tempfile.TemporaryDirectory() as pid_dir, multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.starmap(_pool_worker_hold, [(total_mib // workers, pid_dir, 30)] * workers)
    return {"cores": cores, "mib": total_mib, "attempt": task.attempt_number()}


@actor
def staged_then_die(transfer_dir: str, short_name: str, where: str) -> None:
    """Run the pipeline actors' fenced publish with a fake pipeline, SIGKILLing this child at ``where``.

    ``where`` is ``"run"`` (products staged, scratch in use) or ``"publish"`` (after the first of
    two products was renamed into ``outgoing/``).
    """
    from pathlib import Path

    from jwql_dramatiq.actors.fenced import run_fenced

    class DieWhenRenamed(os.PathLike):
        """A staged path that kills the process the second time it is used (the rename)."""

        def __init__(self, path: str) -> None:
            self.path, self.uses = path, 0

        def __fspath__(self) -> str:
            self.uses += 1
            if self.uses >= 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.path

    def run(input_path, work_dir, staging):
        first, second = Path(staging) / f"{short_name}_a.fits", Path(staging) / f"{short_name}_b.fits"
        for path in (first, second, Path(work_dir) / "scratch.tmp"):
            path.write_text("product")
        if where == "run":
            os.kill(os.getpid(), signal.SIGKILL)
        return {"a": str(first), "b": DieWhenRenamed(str(second))}

    Path(transfer_dir, "incoming").mkdir(parents=True, exist_ok=True)
    Path(transfer_dir, "incoming", f"{short_name}_uncal.fits").write_text("input")
    run_fenced("staged_then_die", f"{short_name}_uncal.fits", short_name, run)
