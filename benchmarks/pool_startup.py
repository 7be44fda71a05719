"""Start-up + first task of a process pool, started from inside a task child of the real fork server.

    .venv/bin/python benchmarks/pool_startup.py [--rounds 3]

stcal's jump and ramp_fit steps each create ``multiprocessing.get_context("spawn").Pool(n)``
when ``maximum_cores`` is not ``none`` (stcal/jump/jump.py, stcal/ramp_fitting/ols_fit.py). This
measures, in a task child of a real ``dramatiq jwql_dramatiq.actors`` worker (jwst preloaded,
warm-up run), two pools in a row as one job makes them (the first imports
``stcal.jump.twopoint_difference``, the second ``stcal.ramp_fitting.ols_fit``, as unpickling stcal's pool
functions does), for each start method:

- ``spawn``: what stcal does;
- ``fork``: the pool's workers are forks of the task child;
- ``zygote``: stcal's spawn, through this server's zygote (``pool_start: zygote``, the
  default: :mod:`jwql_dramatiq.executor.spawn_zygote`); the zygote's own fork is counted in the
  first pool's time;
- ``forkserver`` with ``set_forkserver_preload(["jwst.pipeline"])``: the first pool starts the
  task child's own forkserver (cold: a fresh interpreter importing jwst.pipeline), the second
  reuses it (warm).

Each time is ``Pool(n)`` + ``starmap`` of n first tasks + ``close()`` + ``join()``, n = the CPU
count (``maximum_cores="all"``). stcal picks ``spawn`` in its code, so ``fork`` and ``forkserver``
are reports only (adopting them would mean patching stcal); the zygote keeps stcal's spawn and
changes only the executable it runs. Each message runs in a fresh task child.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jwql_dramatiq.registry import actor  # noqa: E402

#: The modules the two pools of one job import in their workers (jump, then ramp_fit).
POOL_MODULES = ("stcal.jump.twopoint_difference", "stcal.ramp_fitting.ols_fit")
METHODS = ("spawn", "zygote", "fork", "forkserver")


@actor(actor_name="bench_pool_startup")
def bench_pool_startup(method: str) -> dict:
    """Start two pools with ``method`` in this task child; return each one's start-up + first-task seconds."""
    import contextlib
    import multiprocessing

    from benchmarks.pool_task import first_task
    from jwql_dramatiq.executor.spawn_zygote import fast_pool_starts

    ctx = multiprocessing.get_context("spawn" if method == "zygote" else method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["jwst.pipeline"])
    n = os.cpu_count() or 1
    times_s = []
    with contextlib.ExitStack() as stack:
        for module in POOL_MODULES:
            started = time.perf_counter()
            if method == "zygote" and not times_s:
                assert stack.enter_context(fast_pool_starts()), "no zygote in this task child"
            pool = ctx.Pool(processes=n)
            pool.starmap(first_task, [(module,)] * n)
            pool.close()
            pool.join()
            times_s.append(time.perf_counter() - started)
    return {"method": method, "pid": os.getpid(), "first_s": times_s[0], "second_s": times_s[1]}


def main() -> int:
    """Run every method ``--rounds`` times, interleaved, and print the table."""
    import subprocess

    import dramatiq

    from benchmarks.common import jwql_worker, print_table, write_config
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.config import load_config
    from jwql_dramatiq.embedded import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        root = Path(tmp)
        (root / "transfer" / "incoming").mkdir(parents=True)
        with RedisServer(root / "redis") as server:
            path = write_config(root / "jwql.json", server.url(1), root, preload=["jwst.pipeline"], warm_up=True,
                                crds_path=str(root / "crds"), crds_offline_stub=True,
                                actor_modules=["benchmarks.pool_startup"])
            config = load_config(path)
            broker = build_broker(config, declare_actors=False)
            try:
                with jwql_worker(path, root / "worker.log"):
                    for r in range(args.rounds):
                        for method in METHODS:
                            message = dramatiq.Message(queue_name=config.queue_name, actor_name="bench_pool_startup",
                                                       args=(method,), kwargs={}, options={})
                            broker.enqueue(message)
                            done = broker.results_backend.get_result(message, block=True, timeout=300_000)
                            results[method].append(done)
                            print(f"  round {r + 1}: {method:10} first {done['first_s']:.3f} s, "
                                  f"second {done['second_s']:.3f} s (task child {done['pid']})", flush=True)
            finally:
                broker.close()
    n = os.cpu_count()
    spawn_total = statistics.median(d["first_s"] + d["second_s"] for d in results["spawn"])
    rows = []
    for method in METHODS:
        first = statistics.median(d["first_s"] for d in results[method])
        second = statistics.median(d["second_s"] for d in results[method])
        total = statistics.median(d["first_s"] + d["second_s"] for d in results[method])
        rows.append([method + (" (preload jwst.pipeline)" if method == "forkserver" else ""), len(results[method]),
                     first, second, total, f"{spawn_total - total:+.2f}"])
    print_table(f"Pool({n}) start-up + first task + close/join inside a task child, median s (2 pools = one job)",
                ["start method", "rounds", "1st pool s", "2nd pool s", "both s", "saved per job vs spawn s"],
                [[r[0], r[1], f"{r[2]:.3f}", f"{r[3]:.3f}", f"{r[4]:.3f}", r[5]] for r in rows])
    print(f"load before: {load_before}")
    print(f"load after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"command: .venv/bin/python benchmarks/pool_startup.py --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
