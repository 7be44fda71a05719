"""Round trips to Redis per task, to send and in a worker: run by ``benchmarks/scale.py`` in a subprocess.

    .venv/bin/python -m benchmarks.scale_probe {jwql,stock} REDIS_URL [CONFIG] [--tasks 300]

Counts every request redis-py writes to a socket (``send_packed_command``: one per command, or one
per pipeline), so a count is a number of round trips. It sends ``--tasks`` no-op tasks from this
process (the monitor's round trips), then drains them with an in-process ``dramatiq.Worker`` of one
thread, counting only the worker's threads (its consumer, worker and heartbeat threads), from its
start until the last result is in. Prints one JSON line: ``{"send_rt": ..., "worker_rt": ...}``.
``jwql`` is our broker (``build_broker``; the config should say ``max_tasks_per_child: 0``),
``stock`` is Dramatiq's RedisBroker with Results (``benchmarks/plain_dramatiq_app.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dramatiq  # noqa: E402
from redis.connection import AbstractConnection  # noqa: E402

_counts = {"main": 0, "other": 0}
_main = threading.main_thread()
_original = AbstractConnection.send_packed_command


def _counting(self, command, check_health=True):
    _counts["main" if threading.current_thread() is _main else "other"] += 1
    return _original(self, command, check_health)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["jwql", "stock"])
    parser.add_argument("url")
    parser.add_argument("config", nargs="?")
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()

    if args.variant == "stock":
        os.environ["BENCH_REDIS_URL"] = args.url
        from benchmarks import plain_dramatiq_app as app

        broker, actor = app.broker, app.plain_ping
    else:
        from jwql_dramatiq.actors import ping
        from jwql_dramatiq.broker import setup_broker
        from jwql_dramatiq.config import load_config

        broker, actor = setup_broker(load_config(args.config)), ping
    broker.client.ping()  # connect before counting
    AbstractConnection.send_packed_command = _counting

    # Send (this thread only)
    messages = [actor.send() for _ in range(args.tasks)]
    send_rt = _counts["main"] / args.tasks

    # Work: the worker's threads only, until the last result is in (read by this thread, not counted)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        for message in messages:
            message.get_result(block=True, timeout=60_000)
        worker_rt = _counts["other"] / args.tasks
    finally:
        AbstractConnection.send_packed_command = _original
        worker.stop()
    broker.close()
    print(json.dumps({"variant": args.variant, "tasks": args.tasks, "send_rt": send_rt, "worker_rt": worker_rt}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
