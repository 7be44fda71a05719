"""Run in a subprocess by tests/test_spawn_zygote.py: spawn pools with and without a zygote.

Prints one JSON line: what the pool processes saw, how terminate() went, and what was left.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

#: Set by the parent before it starts pools; a process spawned fresh sees the default.
STATE = "fresh interpreter"


def probe(x: int) -> tuple[int, str, int]:
    """x doubled, what this process's STATE is, and its parent pid."""
    return x * 2, STATE, os.getppid()


def sleep_s(seconds: float) -> None:
    time.sleep(seconds)


def pool_run() -> list:
    with multiprocessing.get_context("spawn").Pool(processes=2) as pool:
        return pool.starmap(probe, [(1,), (2,), (3,)])


def main() -> None:
    from jwql_dramatiq.executor.memory import tree_pids
    from jwql_dramatiq.executor.spawn_zygote import fast_pool_starts

    global STATE
    STATE = "warm parent"
    before = set(Path(tempfile.gettempdir()).glob("jwql-dramatiq-pools.*"))
    report: dict = {"plain": pool_run()}
    with fast_pool_starts() as on:
        report["on"] = on
        report["zygote"] = pool_run()
        pool = multiprocessing.get_context("spawn").Pool(processes=2)
        pool.map_async(sleep_s, [60, 60])
        time.sleep(0.5)
        started = time.monotonic()
        pool.terminate()
        pool.join()
        report["terminate_s"] = time.monotonic() - started
    report["after"] = pool_run()
    # Every descendant (zombies included), but multiprocessing's resource tracker, which outlives pools.
    report["children_left"] = [pid for pid in tree_pids(os.getpid()) if pid != os.getpid() and "resource_tracker"
                                not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    report["dirs_left"] = [str(p) for p in set(Path(tempfile.gettempdir()).glob("jwql-dramatiq-pools.*")) - before]
    print(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import tests.zygote_probe as me  # the pools pickle functions by this module's name

    me.main()
