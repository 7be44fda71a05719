"""A Redis restart in the middle of a run, with append-only persistence (``appendfsync always``).

Redis is killed with SIGKILL (a crash: nothing is flushed at exit) while two workers drain a
queue and a monitor process sends pings in a loop, and started again on the same port a second
later. Nothing may be lost: every task completes and publishes its product once; the workers,
their control and sweeper threads, and the monitor carry on without being restarted.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from dramatiq.results import ResultMissing

from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.broker.control import send_command
from jwql_dramatiq.embedded import RedisServer
from jwql_dramatiq.errors import RedisUnavailable
from tests import actors_for_tests as t
from tests.conftest import wait_for
from tests.faults.conftest import products_in, queue_leftovers

pytestmark = [pytest.mark.faults]

NS = "jwql_dramatiq"
#: How long Redis stays down, seconds.
DOWN_S = 1.0


@pytest.mark.timeout(180)
def test_redis_crash_restart_loses_nothing_and_everyone_reconnects(tmp_path, make_config, start_worker, start_agent,
                                                                    record_figures):
    # Given: a private Redis with AOF, two workers, a monitor pinging every 0.1 s, 60 queued tasks
    server = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    try:
        _run(server, tmp_path, make_config, start_worker, start_agent, record_figures)
    finally:
        server.stop()


def _run(server, tmp_path, make_config, start_worker, start_agent, record_figures):
    config = make_config(redis_url=server.url(0), heartbeat_timeout_s=10, sweep_interval_s=0.5, idle_poll_ms=100)
    client = redis.Redis(host=server.host, port=server.port, db=0)
    broker = setup_broker(load_config(config))
    workers = [start_worker(config), start_worker(config)]
    worker_ids = wait_for(lambda: (ids := [i.decode() for i in client.smembers(f"{NS}:workers")]) and len(ids) == 2
                          and ids, 10, "both workers to register")
    monitor = start_agent(config)
    pings = tmp_path / "pings.jsonl"
    monitor.call("ping_loop", path=str(pings), interval_s=0.1)
    tasks = 60
    out = tmp_path / "products"
    out.mkdir()
    counter = f"faults:executions:{uuid.uuid4().hex}"
    messages = {f"task{i:02d}": t.write_product.send(str(out), counter, f"task{i:02d}", 0.25) for i in range(tasks)}
    wait_for(lambda: client.hlen(counter) >= 10, 30, "the first tasks to run")

    # When: Redis is killed mid-run and started again on the same port a second later
    server.proc.kill()
    server.proc.wait()
    down_at = time.time()
    time.sleep(DOWN_S)
    server.start()
    up_at = time.time()
    up_ms = int(up_at * 1000)

    # Then: each worker's heartbeat, each worker's control thread and the monitor come back within 5 s
    back: dict[str, float] = {}
    deadline = time.monotonic() + 15
    while len(back) < len(worker_ids) and time.monotonic() < deadline:
        for worker_id in worker_ids:
            try:
                score = client.zscore(f"{NS}:__heartbeats__", worker_id)
            except redis.ConnectionError:
                continue
            if worker_id not in back and score is not None and score > up_ms:
                back[worker_id] = score / 1000 - up_at
        time.sleep(0.02)
    results = _collect(messages, deadline_s=60)
    monitor.call("stop_loop")
    ping_outcome = monitor.call("ping_results", 60, wait_s=30)
    ping_log = [json.loads(line) for line in pings.read_text().splitlines()]
    monitor_back = next((p["t"] + p["rtt_s"] for p in ping_log if p["ok"] and p["t"] >= up_at), None)
    failed_pings = [p for p in ping_log if not p["ok"]]

    executions = {k.decode(): int(v) for k, v in client.hgetall(counter).items()}
    products = products_in(out)
    assert len(back) == len(worker_ids), f"workers whose heartbeat never came back: {set(worker_ids) - set(back)}"
    assert max(back.values()) < 5.0, back
    assert monitor_back is not None and monitor_back - up_at < 5.0
    assert ping_outcome["missing"] == 0 and ping_outcome["sent"] > 0, ping_outcome
    assert len(results) == tasks and all(results[k] == str(out / f"{k}.out") for k in messages)
    assert set(executions) == set(messages) and min(executions.values()) >= 1
    assert [p.name for p in products] == sorted(f"{k}.out" for k in messages)
    wait_for(lambda: queue_leftovers(client, NS) == {"queued": 0, "payloads": 0, "unacked": 0}, 10,
             "every message to be acked")
    # The sweeper saw the outage and carried on; the control threads still take commands.
    for worker in workers:
        assert "Sweeper: Redis unreachable" in worker.log() and "Sweeper: Redis answers again" in worker.log()
    for worker_id in worker_ids:
        send_command(client, NS, worker_id, {"cmd": "shutdown", "now": False})
    codes = [worker.proc.wait(30) for worker in workers]
    assert codes == [0, 0], [w.log()[-2000:] for w in workers]
    broker.close()
    record_figures(fault="Redis SIGKILL + restart (AOF, appendfsync always) mid-run", tasks=tasks, down_s=DOWN_S,
                   worker_heartbeat_back_s=sorted(round(v, 2) for v in back.values()),
                   monitor_back_s=round(monitor_back - up_at, 2), monitor_failed_sends=len(failed_pings),
                   monitor_pings_sent=ping_outcome["sent"], monitor_pings_answered=ping_outcome["results"],
                   completed=len(results), executions=sum(executions.values()),
                   duplicates=sum(n - 1 for n in executions.values()), products=len(products),
                   lost=tasks - len(results), outage_s=round(up_at - down_at, 2), control_threads_alive=True)


def _collect(messages: dict, deadline_s: float) -> dict[str, str]:
    results: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    while len(results) < len(messages) and time.monotonic() < deadline:
        for key, message in messages.items():
            if key in results:
                continue
            try:
                results[key] = message.get_result(block=False)
            except (ResultMissing, RedisUnavailable, redis.ConnectionError):
                continue
        time.sleep(0.1)
    missing = sorted(set(messages) - set(results))
    assert not missing, f"{len(missing)} results never arrived: {missing[:10]}"
    return results
