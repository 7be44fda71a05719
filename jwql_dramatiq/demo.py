"""``./dev demo``: the main job on an embedded default.

Starts a private ``redis-server`` on a free port, writes a config for it in a temporary
directory, starts one real worker (``dramatiq jwql_dramatiq.actors -p1 -t1``), sends a demo
job, prints the result, and stops the worker and Redis, leaving no process behind.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def run_demo(root: Path) -> int:
    """Run the demo under ``root``; return the exit code."""
    from .broker import setup_broker
    from .config import load_config
    from .embedded import RedisServer, WorkerProcess

    with RedisServer(root / "redis") as server:
        config_path = root / "config.json"
        config_path.write_text(json.dumps({
            "redis_url": server.url(0),
            "transfer_dir": str(root / "transfer"),
            "working": str(root / "working"),
            "preload": [],
            "warm_up": False,
        }, indent=2))
        print(f"demo: private Redis on {server.host}:{server.port}; config {config_path}")
        worker = WorkerProcess(config_path, root / "worker.log", cwd=root)
        try:
            if not worker.wait_booted():
                print(f"demo: the worker did not start:\n{worker.log()}", file=sys.stderr)
                return 1
            broker = setup_broker(load_config(config_path))
            from .actors import ping

            started = time.perf_counter()
            result = ping.send().get_result(block=True, timeout=30_000)
            print(f"demo: ping -> {result} in {1000 * (time.perf_counter() - started):.1f} ms")
            broker.close()
        finally:
            code = worker.stop()
            print(f"demo: worker stopped (exit code {code}); Redis stopping")
    return 0


def main() -> int:
    """Entry point of ``python -m jwql_dramatiq.demo``."""
    with tempfile.TemporaryDirectory(prefix="jwql_dramatiq-demo-") as tmp:
        return run_demo(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
