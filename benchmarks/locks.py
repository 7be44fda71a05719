"""Benchmark jwql_dramatiq's Redis lock against redis-py's Lock and python-redis-lock, in one run.

Measures, on a private redis-server started on a free TCP port (and stopped at the end):

- uncontended acquire+release cycles per second, one client, one lock object reused (median of the repeats,
  the implementations interleaved so machine drift hits them alike);
- hand-off latency: the holder releases while another *process* is blocked in acquire; latency is from the
  start of ``release()`` to the waiter's ``acquire()`` returning (both stamped with ``time.monotonic_ns``,
  a system-wide clock on Linux). p50 and p90 over the rounds.

Run it as::

    .venv/bin/python benchmarks/locks.py [--cycles 5000] [--repeats 5] [--rounds 60]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis_lock

from jwql_dramatiq.embedded import RedisServer
from jwql_dramatiq.locks import lock as jd_lock

NAMESPACE = "bench"
#: How long (s) the holder waits after telling the waiter to start, so the waiter is blocked in acquire:
#: at least the first value, plus a random part as long as redis-py's 0.1 s retry sleep, so a polling
#: lock's hand-off is sampled over its whole poll period rather than at one phase of it.
WAITER_SETTLE_S = (0.01, 0.1)


# -- the implementations ------------------------------------------------------------------------------------

#: name -> factory(client, lock name) returning an object with acquire(blocking=True) and release().
IMPLEMENTATIONS: dict[str, Callable[[redis.Redis, str], Any]] = {
    "jwql_dramatiq lock (lease 30 s, renewed)": lambda c, n: jd_lock(n, client=c, namespace=NAMESPACE, lease_s=30),
    "redis-py Lock (timeout 30 s)": lambda c, n: c.lock(f"{NAMESPACE}:rp:{n}", timeout=30),
    "python-redis-lock (expire 30)": lambda c, n: redis_lock.Lock(c, f"{NAMESPACE}:prl:{n}", expire=30),
    "python-redis-lock (expire 30, auto_renewal)": lambda c, n: redis_lock.Lock(
        c, f"{NAMESPACE}:prlr:{n}", expire=30, auto_renewal=True
    ),
}
BASELINE = "redis-py Lock (timeout 30 s)"


def cycles_per_s(lk: Any, cycles: int) -> float:
    """Time ``cycles`` uncontended acquire+release cycles of one lock object."""
    acquire, release = lk.acquire, lk.release
    t0 = time.perf_counter()
    for _ in range(cycles):
        acquire()
        release()
    return cycles / (time.perf_counter() - t0)


def measure_throughput(server: RedisServer, cycles: int, repeats: int) -> dict[str, float]:
    """Median uncontended cycles/s of each implementation, interleaving the repeats."""
    client = server.client()
    objects = {name: make(client, "uncontended") for name, make in IMPLEMENTATIONS.items()}
    for lk in objects.values():  # warm up: connections, script loading, renewal thread
        cycles_per_s(lk, 300)
    runs: dict[str, list[float]] = {name: [] for name in objects}
    for _ in range(repeats):
        for name, lk in objects.items():
            runs[name].append(cycles_per_s(lk, cycles))
    client.close()
    return {name: statistics.median(values) for name, values in runs.items()}


def _waiter(port: int, impl: str, name: str, conn: Any) -> None:
    """Child process: on each "go", block in acquire, stamp the time it returned, release."""
    client = redis.Redis(host="127.0.0.1", port=port)
    lk = IMPLEMENTATIONS[impl](client, name)
    while conn.recv() == "go":
        lk.acquire()
        acquired_ns = time.monotonic_ns()
        lk.release()
        conn.send(acquired_ns)
    os._exit(0)


def measure_handoff(server: RedisServer, impl: str, rounds: int) -> list[float]:
    """Hand-off latencies (ms) from the holder's release to a waiting process's acquire."""
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    client = server.client()
    name = f"handoff-{abs(hash(impl))}"
    proc = ctx.Process(target=_waiter, args=(server.port, impl, name, child_end), daemon=True)
    proc.start()
    try:
        holder = IMPLEMENTATIONS[impl](client, name)
        latencies = []
        for _ in range(rounds + 3):  # the first 3 rounds warm up
            holder.acquire()
            parent_end.send("go")
            time.sleep(WAITER_SETTLE_S[0] + random.random() * WAITER_SETTLE_S[1])
            released_ns = time.monotonic_ns()
            holder.release()
            if not parent_end.poll(30):
                raise RuntimeError(f"{impl}: the waiter did not acquire within 30 s")
            latencies.append((parent_end.recv() - released_ns) / 1e6)
        parent_end.send("stop")
        proc.join(10)
        return latencies[3:]
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        client.close()


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 if our lock meets both targets, else 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=5000, help="acquire+release cycles per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median)")
    parser.add_argument("--rounds", type=int, default=60, help="hand-off rounds per implementation")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="jd-lock-bench-") as tmp, RedisServer(Path(tmp)) as server:
        version = server.client().info("server")["redis_version"]
        throughput = measure_throughput(server, args.cycles, args.repeats)
        handoff = {impl: measure_handoff(server, impl, args.rounds) for impl in IMPLEMENTATIONS}

    base = throughput[BASELINE]
    print(f"Redis lock benchmark: redis-server {version} on 127.0.0.1 (TCP), Python {sys.version.split()[0]}, "
          f"redis-py {redis.__version__}, python-redis-lock {redis_lock.__version__}, {os.cpu_count()} CPUs")
    print(f"uncontended: {args.cycles} cycles x {args.repeats} runs (median); "
          f"hand-off: {args.rounds} rounds, waiter in another process\n")
    header = f"{'implementation':46s} {'cycles/s':>9s} {'vs redis-py':>11s} {'hand-off p50':>13s} {'p90':>9s}"
    print(header)
    print("-" * len(header))
    for impl in IMPLEMENTATIONS:
        lat = handoff[impl]
        print(f"{impl:46s} {throughput[impl]:9.0f} {throughput[impl] / base:10.2f}x "
              f"{percentile(lat, 0.5):10.2f} ms {percentile(lat, 0.9):6.2f} ms")
    ours = next(iter(IMPLEMENTATIONS))
    ratio, p50 = throughput[ours] / base, percentile(handoff[ours], 0.5)
    ok = ratio >= 1.0 and p50 <= 2.0
    print(f"\ntargets: cycles/s >= 1.0x redis-py: {ratio:.2f}x {'PASS' if ratio >= 1.0 else 'FAIL'}; "
          f"hand-off p50 <= 2 ms: {p50:.2f} ms {'PASS' if p50 <= 2.0 else 'FAIL'}")
    print(" ".join(["reproduce: .venv/bin/python benchmarks/locks.py", *(argv if argv is not None else sys.argv[1:])]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
