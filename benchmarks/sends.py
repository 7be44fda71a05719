"""Sends from one monitor process: jwql_dramatiq's ``send()`` against stock Dramatiq's, alternated.

    .venv/bin/python benchmarks/sends.py [--rounds 12] [--sends 500]

``benchmarks/scale.py`` times each variant's sends once, on its own redis-server, minutes apart,
and on this VM that figure moves by ±30 % from run to run. Here both send to one private
redis-server (stock to database 2, jwql_dramatiq to database 0) in alternating rounds, so both
see the same server and the same moment. Reported: the median µs per send (wall) and this
process's CPU µs per send (the client's share; the rest is the round trip and Redis), and the
ratio of sends/s.
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

from benchmarks.common import print_table, write_config  # noqa: E402
from jwql_dramatiq.embedded import RedisServer  # noqa: E402

WARM_UP_SENDS = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--sends", type=int, default=500, help="sends per round and variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sends-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        os.environ["BENCH_REDIS_URL"] = server.url(2)
        from benchmarks import plain_dramatiq_app as plain
        from jwql_dramatiq.actors import ping
        from jwql_dramatiq.broker import setup_broker
        from jwql_dramatiq.config import load_config

        setup_broker(load_config(write_config(Path(tmp) / "config.json", server.url(0), Path(tmp))))
        variants = {"stock Dramatiq": plain.plain_ping.send, "jwql_dramatiq": ping.send}
        for send in variants.values():
            for _ in range(WARM_UP_SENDS):
                send()
        wall_us: dict[str, list[float]] = {name: [] for name in variants}
        cpu_us: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, send in variants.items():
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(args.sends):
                    send()
                wall_us[name].append((time.perf_counter() - wall0) / args.sends * 1e6)
                cpu_us[name].append((time.process_time() - cpu0) / args.sends * 1e6)
    wall = {name: statistics.median(values) for name, values in wall_us.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_us.items()}
    stock, ours = "stock Dramatiq", "jwql_dramatiq"
    print_table(f"Sends from one process, {args.rounds} alternating rounds of {args.sends} (medians)",
                ["variant", "µs per send", "client CPU µs per send", "sends/s", "sends/s vs stock"],
                [[name, wall[name], cpu[name], 1e6 / wall[name], f"{wall[stock] / wall[name]:.2f}x"]
                 for name in (stock, ours)])
    print(f"\n(command: .venv/bin/python benchmarks/sends.py --rounds {args.rounds} --sends {args.sends})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
