"""Benchmark the dashboard's tasks page over 100,000 stored task states.

Fills a private redis-server (a free TCP port, stopped at the end) with ``--states`` task states
in the real format (the ``<ns>:task:<id>`` hashes a worker writes, with their TTL, and the
``<ns>:tasks`` index), written through pipelines, then times full renders of pages through the
real Starlette app (Starlette's TestClient: routing, Redis reads, Jinja2; no network):

- ``/tasks`` (the newest 50), ``/tasks?fragment=1`` (what the page polls every 2 s);
- ``/tasks?state=failed`` (a filter: it walks the index until 50 rows match);
- ``/tasks?offset=90000`` (a page deep in the index);
- ``/`` (workers and queues) and ``/metrics`` after its first scrape.

The index holds every state here (the workers trim it to 10,000; this is the worst case).

Run it as::

    .venv/bin/python benchmarks/web.py [--states 100000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import summarize_ms  # noqa: E402
from jwql_dramatiq.embedded import RedisServer, free_port  # noqa: E402

NS = "jwql_dramatiq"
ACTORS = ("run_calwebb_detector1", "run_pipeline", "calwebb_detector1_save_jump", "record_span")
#: One failed task in this many (so the failed filter finds 50 within the first 2,500 entries).
FAIL_EVERY = 50


def fill(client, count: int, now: float) -> None:
    """Write ``count`` final task states like the TaskStates middleware does, 5,000 per pipeline."""
    ttl_ms = 86_400_000
    batch = 5_000
    for start in range(0, count, batch):
        with client.pipeline(transaction=False) as pipe:
            index = {}
            for i in range(start, min(start + batch, count)):
                message_id = str(uuid.uuid4())
                updated = now - (count - i) * 0.8
                failed = i % FAIL_EVERY == 0
                fields = {
                    "state": "failed" if failed else "succeeded", "actor": ACTORS[i % len(ACTORS)],
                    "queue": "jwql", "enqueued_at": updated - 70, "redis_id": str(uuid.uuid4()),
                    "started_at": updated - 60, "host": f"pljwql{i % 3 + 1}", "worker": uuid.uuid4().hex,
                    "pid": 4000 + i % 500, "finished_at": updated, "updated_at": updated,
                    "memory_peak_mib": round(500 + i % 900, 1), "memory_method": "cgroup-v2", "attempt": 1,
                    "max_cores": "none",
                }
                if failed:
                    fields["error"] = "ValueError: ramp fitting failed on jw01234001001_01101_00001_nrca1_uncal.fits"
                key = f"{NS}:task:{message_id}"
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, ttl_ms)
                index[message_id] = updated
            pipe.zadd(f"{NS}:tasks", index)
            pipe.execute()


def time_page(client_http, path: str, repeats: int) -> dict[str, float]:
    client_http.get(path)  # warm: templates compiled, connections open
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client_http.get(path)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return summarize_ms(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

    from jwql_dramatiq.config import load_config
    from jwql_dramatiq.web import create_app

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = RedisServer(root / "redis", port=free_port()).start()
        try:
            client = server.client(0)
            started = time.perf_counter()
            fill(client, args.states, time.time())
            fill_s = time.perf_counter() - started
            config_path = root / "config.json"
            config_path.write_text(json.dumps({"redis_url": server.url(0), "transfer_dir": str(root),
                                               "preload": [], "warm_up": False}))
            app = create_app(load_config(str(config_path)))
            results = {}
            with TestClient(app) as http:
                for path in ("/tasks", "/tasks?fragment=1", "/tasks?state=failed", "/tasks?offset=90000", "/"):
                    results[path] = time_page(http, path, args.repeats)
                http.get("/metrics")  # the first scrape counts every stored state
                results["/metrics (after the first scrape)"] = time_page(http, "/metrics", max(5, args.repeats // 3))
            stored = client.dbsize()
        finally:
            server.stop()
    print(f"{args.states} task states ({stored} keys) written in {fill_s:.1f} s; page render times over "
          f"{args.repeats} requests:")
    print(f"{'page':38} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
    for path, r in results.items():
        print(f"{path:38} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} {r['mean_ms']:8.1f}")
    worst = max(r["p90_ms"] for p, r in results.items() if p.startswith("/tasks"))
    print(f"slowest tasks page p90: {worst:.1f} ms (budget 300 ms): {'OK' if worst < 300 else 'OVER BUDGET'}")
    return 0 if worst < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
