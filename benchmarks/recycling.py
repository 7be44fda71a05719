"""A fresh process per task: this worker against Celery's --max-tasks-per-child=1, in one run.

    .venv/bin/python benchmarks/recycling.py [--tasks 200] [--celery-tasks 6]

Against one private redis-server, measures:
  1. Celery 5 with the original's flags (-c1 -Ofair --max-tasks-per-child=1 --prefetch-multiplier 1),
     a no-op task whose module imports jwst;
  2. this worker, a fresh child per task, jwst preloaded in the fork server;
  3. this worker with recycling off (max_tasks_per_child=0);
  4. the floor: fork + exit + wait of a process that has imported jwst.pipeline.
Reports drain throughput, send->result p50/p90 and per-task recycle overhead, as ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import celery_worker, jwql_worker, measure_latency, print_table, summarize_ms, write_config  # noqa: E402
from jwql_dramatiq.embedded import RedisServer  # noqa: E402


def drain(send, wait, count):
    """Send ``count`` messages at once and time until every result is in."""
    started = time.perf_counter()
    handles = [send() for _ in range(count)]
    for handle in handles:
        wait(handle)
    elapsed = time.perf_counter() - started
    return count / elapsed


def fork_floor(samples=30):
    """Median seconds of fork + _exit + waitpid of this (jwst-loaded, frozen) process."""
    gc.collect()
    gc.freeze()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_celery(url, root, tasks, latency_samples):
    with celery_worker(url, root / "celery.log"):
        os.environ["BENCH_REDIS_URL"] = url
        os.environ["BENCH_CELERY_IMPORT_JWST"] = "0"  # the client side need not import jwst
        from benchmarks.celery_app import noop

        noop.delay().get(timeout=60)
        latency = summarize_ms(measure_latency(lambda: noop.delay().get(timeout=60), latency_samples))
        rate = drain(noop.delay, lambda r: r.get(timeout=120), tasks)
        return rate, latency


def bench_jwql(url, root, name, tasks, **overrides):
    from jwql_dramatiq.actors import ping
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config

    config = write_config(root / f"{name}.json", url, root, **overrides)
    broker = setup_broker(load_config(config))
    try:
        with jwql_worker(config, root / f"{name}.log"):
            return _measure_pings(ping, tasks)
    finally:
        broker.close()


def _measure_pings(ping, tasks):
    """Warm up, then 50 send->result samples and a drain of ``tasks`` pings."""
    wait = lambda m: m.get_result(block=True, timeout=60_000)  # noqa: E731
    measure_latency(lambda: wait(ping.send()), 5)
    latency = summarize_ms(measure_latency(lambda: wait(ping.send()), 50))
    rate = drain(ping.send, wait, tasks)
    return rate, latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks drained per jwql_dramatiq variant")
    parser.add_argument("--celery-tasks", type=int, default=6, help="tasks drained by Celery (about 4 s each)")
    parser.add_argument("--celery-latency", type=int, default=4, help="send->result samples for Celery")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-recycling-") as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as server:
            celery_rate, celery_lat = bench_celery(server.url(1), root, args.celery_tasks, args.celery_latency)
            fresh_rate, fresh_lat = bench_jwql(server.url(2), root, "fresh", args.tasks, preload=["jwst.pipeline"])
            inproc_rate, inproc_lat = bench_jwql(server.url(3), root, "inproc", args.tasks, max_tasks_per_child=0,
                                                 preload=["jwst.pipeline"])
    import jwst.pipeline  # noqa: F401

    floor_s = fork_floor()
    overhead_ms = 1000 * (1 / fresh_rate - 1 / inproc_rate)
    rows = [
        ["1. Celery, original flags, jwst imported", f"{celery_rate:.2f}", "1x", celery_lat["p50_ms"], celery_lat["p90_ms"]],
        ["2. jwql_dramatiq, fresh child per task, jwst preloaded", f"{fresh_rate:.1f}",
         f"{fresh_rate / celery_rate:.0f}x", fresh_lat["p50_ms"], fresh_lat["p90_ms"]],
        ["3. jwql_dramatiq, recycling off", f"{inproc_rate:.1f}", f"{inproc_rate / celery_rate:.0f}x",
         inproc_lat["p50_ms"], inproc_lat["p90_ms"]],
    ]
    print_table("Drain throughput and send->result latency",
                ["variant", "tasks/s", "vs Celery", "send->result p50 ms", "p90 ms"], rows)
    print_table("Per-task recycle overhead", ["what", "ms", "vs fork floor"], [
        ["4. fork+exit+wait of a jwst-loaded process (floor)", 1000 * floor_s, "1.00x"],
        ["2 minus 3: per-task cost of a fresh child", overhead_ms, f"{overhead_ms / (1000 * floor_s):.2f}x"],
    ])
    print(f"\ncommand: .venv/bin/python benchmarks/recycling.py --tasks {args.tasks} --celery-tasks {args.celery_tasks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
