"""Benchmark what ``WAIT`` costs under Sentinel: send and lock-acquire latency with and without it, in one run.

Starts a master, one replica and three sentinels on free loopback ports (stopped at the end), and
two brokers built from configs that differ only in ``redis_min_replicas`` (1: every send and
every lock acquisition, with its fencing increment, waits for the replica; 0: none waits). The
two are interleaved in rounds, so machine drift hits both alike. Reports p50, p90 and mean in
milliseconds, and the with/without ratios.

Run it from the repository root as::

    .venv/bin/python -m benchmarks.sentinel [--count 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, summarize_ms


def _broker(root: Path, sentinels: list[str], replicas: int) -> Any:
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.config import load_config

    path = root / f"config-{replicas}.json"
    path.write_text(json.dumps({"redis_sentinels": sentinels, "redis_min_replicas": replicas,
                                "transfer_dir": str(root / "transfer"), "namespace": f"bench{replicas}",
                                "preload": [], "warm_up": False}))
    return build_broker(load_config(path), declare_actors=False)


def _time_sends(broker: Any, count: int) -> list[float]:
    from dramatiq.message import Message

    samples = []
    for _ in range(count):
        message = Message(queue_name="jwql", actor_name="ping", args=(), kwargs={}, options={})
        started = time.perf_counter()
        broker.enqueue(message)
        samples.append(time.perf_counter() - started)
    broker.flush("jwql")
    return samples


def _time_locks(broker: Any, count: int) -> list[float]:
    from jwql_dramatiq.locks import RedisLock

    lock = RedisLock("bench", client=broker.client, namespace=broker.namespace, lease_s=30)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        lock.acquire(blocking=False)
        samples.append(time.perf_counter() - started)
        lock.release()
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (Markdown) and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="operations per kind, per setting, per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from tests.faults.sentinels import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cluster = Cluster(root / "cluster").start()
        try:
            deadline = time.monotonic() + 10
            while not cluster.in_sync(cluster.nodes["redis0"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            brokers = {1: _broker(root, cluster.sentinel_addresses, 1), 0: _broker(root, cluster.sentinel_addresses, 0)}
            samples: dict[tuple[str, int], list[float]] = {(k, r): [] for k in ("send", "lock") for r in brokers}
            for _ in range(args.rounds):
                for replicas, broker in brokers.items():
                    samples[("send", replicas)] += _time_sends(broker, args.count)
                    samples[("lock", replicas)] += _time_locks(broker, args.count)
            for broker in brokers.values():
                broker.close()
        finally:
            cluster.close()
    summary = {f"{kind}_{'wait' if r else 'nowait'}": summarize_ms(s) for (kind, r), s in samples.items()}
    rows = []
    for kind, label in (("send", "send (enqueue)"), ("lock", "lock acquire (+ fencing INCR)")):
        with_wait, without = summary[f"{kind}_wait"], summary[f"{kind}_nowait"]
        ratio = with_wait["p50_ms"] / without["p50_ms"]
        summary[f"{kind}_p50_ratio"] = ratio
        rows.append([label, with_wait["p50_ms"], without["p50_ms"], f"{ratio:.2f}", with_wait["p90_ms"],
                     without["p90_ms"], with_wait["mean_ms"], without["mean_ms"]])
    print_table(f"WAIT 1 1000 vs no WAIT, master + 1 replica + 3 sentinels on loopback "
                f"({args.rounds} x {args.count} each)",
                ["operation", "p50 WAIT (ms)", "p50 no WAIT (ms)", "p50 ratio", "p90 WAIT", "p90 no WAIT",
                 "mean WAIT", "mean no WAIT"], [[r[0], *(f"{c:.3f}" if isinstance(c, float) else c for c in r[1:])]
                                                for r in rows])
    print("\nBENCH " + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
