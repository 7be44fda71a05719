"""Send->result latency of ``ping``: Dramatiq's defaults against jwql_dramatiq's, in one run.

    .venv/bin/python benchmarks/latency.py [--count 50] [--idle-count 15]

Starts one private redis-server; then, one at a time, a worker of each variant. Each is
measured back to back (the next send right after the previous result) and after 2 s idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BIN, measure_latency, print_table, running, summarize_ms, write_config  # noqa: E402
from jwql_dramatiq.embedded import RedisServer  # noqa: E402


def run_variant(argv, env, log, send_and_wait, count, idle_count):
    with running(argv, log, env, "ready for action", 300):
        measure_latency(send_and_wait, 5)  # warm the connections and the first child
        hot = summarize_ms(measure_latency(send_and_wait, count))
        idle = summarize_ms(measure_latency(send_and_wait, idle_count, idle_s=2.0))
        return hot, idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="back-to-back samples per variant")
    parser.add_argument("--idle-count", type=int, default=15, help="samples after 2 s idle per variant")
    parser.add_argument("--skip-jwst", action="store_true", help="leave out the variant that preloads jwst")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as server:
            rows = []
            # 1. Dramatiq's defaults: poll back-off, prefetch 2, in-process.
            os.environ["BENCH_REDIS_URL"] = server.url(1)
            from benchmarks import plain_dramatiq_app as plain

            hot, idle = run_variant(
                [str(BIN / "dramatiq"), "benchmarks.plain_dramatiq_app", "-p1", "-t1"],
                {"BENCH_REDIS_URL": server.url(1)}, root / "plain.log",
                lambda: plain.plain_ping.send().get_result(block=True, timeout=10_000), args.count, args.idle_count)
            rows.append(["Dramatiq defaults (in-process)", hot, idle])

            from jwql_dramatiq.actors import ping
            from jwql_dramatiq.broker import setup_broker
            from jwql_dramatiq.config import load_config

            variants = [("jwql_dramatiq, fresh child per task", {}),
                        ("jwql_dramatiq, in-process (max_tasks_per_child=0)", {"max_tasks_per_child": 0})]
            if not args.skip_jwst:
                variants.append(("jwql_dramatiq, fresh child per task, jwst preloaded",
                                 {"preload": ["jwst.pipeline"]}))
            for i, (name, overrides) in enumerate(variants):
                config = write_config(root / f"config{i}.json", server.url(2 + i), root, **overrides)
                broker = setup_broker(load_config(config))
                hot, idle = run_variant(
                    [str(BIN / "dramatiq"), "jwql_dramatiq.actors", "-p1", "-t1"],
                    {"JWQL_DRAMATIQ_CONFIG": str(config)}, root / f"jwql{i}.log",
                    lambda: ping.send().get_result(block=True, timeout=10_000), args.count, args.idle_count)
                broker.close()
                rows.append([name, hot, idle])

    base_hot, base_idle = rows[0][1]["p50_ms"], rows[0][2]["p50_ms"]
    print_table(
        "ping send->result latency (ms)",
        ["variant", "back-to-back p50", "p90", "after 2 s idle p50", "p90", "idle p50 speed-up vs defaults"],
        [[name, hot["p50_ms"], hot["p90_ms"], idle["p50_ms"], idle["p90_ms"], f"{base_idle / idle['p50_ms']:.1f}x"]
         for name, hot, idle in rows])
    print(f"\n(back-to-back p50 of Dramatiq defaults: {base_hot:.1f} ms; "
          f"command: .venv/bin/python benchmarks/latency.py --count {args.count} --idle-count {args.idle_count})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
