"""Losing the Redis host under Sentinel: nothing acknowledged is lost, no product is duplicated, no
lock is granted twice, and fencing tokens never repeat.

Real processes on loopback: a master, one replica and three sentinels (``redis-server
--sentinel``, quorum 2, ``down-after-milliseconds`` 2000), two workers (``dramatiq``) and a
monitor process sending 200 tasks. Each task takes one of four locks, publishes one product by
hard link and appends its grant (fencing token, start, end) to a file. Sends, results, lock
acquisitions and fencing increments wait for the replica (``WAIT 1 1000``). The killed master
is started again as a replica of the new one (the deployment guide's unit), since with one
replica a master has nobody to WAIT for until then.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import base_config, wait_for
from tests.faults.conftest import products_in
from tests.faults.sentinels import Cluster

pytestmark = [pytest.mark.faults]

TASKS, LOCKS, TASK_S = 200, 4, 0.05
#: How long the monitor may wait for the results it waits on through a failover (seconds).
MONITOR_BOUND_S = 30.0
#: Target from the kill to the first task completed on the new master (seconds).
FIRST_COMPLETION_TARGET_S = 10.0
SETTINGS = {"heartbeat_timeout_s": 10, "sweep_interval_s": 0.5, "idle_poll_ms": 100, "maintenance_chance": 0,
            "lock_lease_s": 10}


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "cluster", down_after_ms=2000)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def _config(tmp_path: Path, cluster: Cluster) -> Path:
    raw = base_config("redis://unused", tmp_path, **SETTINGS,
                      actor_modules=["tests.actors_for_tests", "tests.faults.sentinel_actors"])
    del raw["redis_url"]
    raw["redis_sentinels"] = cluster.sentinel_addresses
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.timeout(150)
def test_master_kill_mid_run(tmp_path, cluster, start_worker, start_agent, record_figures):
    _run(tmp_path, cluster, start_worker, start_agent, record_figures, failovers=1,
         fault="Sentinel: kill -9 of the master mid-run (1 replica, 3 sentinels)")


@pytest.mark.timeout(180)
def test_two_failovers_in_a_row(tmp_path, cluster, start_worker, start_agent, record_figures):
    _run(tmp_path, cluster, start_worker, start_agent, record_figures, failovers=2,
         fault="Sentinel: two failovers in a row (kill -9 of the master, then of the new one)")


def _run(tmp_path, cluster, start_worker, start_agent, record_figures, failovers: int, fault: str) -> None:
    # Given: the cluster in sync, two workers, a monitor watching results, 200 tasks being sent
    wait_for(lambda: cluster.in_sync(cluster.nodes["redis0"]), 10, "the replica to sync")
    config = _config(tmp_path, cluster)
    workers = [start_worker(config), start_worker(config)]
    monitor = start_agent(config)
    out = tmp_path / "products"
    out.mkdir()
    arg_lists = [[str(out), f"task{i:03d}", f"lk{i % LOCKS}", TASK_S] for i in range(TASKS)]
    monitor.call("watch", interval_s=0.05)
    monitor.call("send_batch", actor="fenced_product", arg_lists=arg_lists, pace_s=0.03, retry_s=60)

    # When: the master is killed with -9 mid-run (and, for two failovers, the new master once it has a replica)
    events = []
    for index in range(failovers):
        wait_for(lambda: len(monitor.call("batch")["acked"]) >= 40 + 60 * index, 60,
                 f"{40 + 60 * index} sends to be acknowledged", interval_s=0.05)
        batch = monitor.call("batch")
        pending = [mid for mid in batch["acked"] if mid not in batch["seen"]][-20:]
        monitor.call("wait_bg", name=f"failover{index}", message_ids=pending, bound_s=MONITOR_BOUND_S)
        old = cluster.node_at(cluster.master_by_sentinels())
        killed_at = time.time()
        old.kill()
        new_address = wait_for(lambda: (a := cluster.master_by_sentinels()) and a != old.address and a, 30,
                               "the sentinels to promote the replica", interval_s=0.05)
        promoted_s = time.time() - killed_at
        new = cluster.node_at(new_address)
        cluster.restart_as_replica(old, new)
        wait_for(lambda: cluster.in_sync(new), 30, "the old master to sync as a replica", interval_s=0.05)
        events.append({"killed_at": killed_at, "old": old.address, "new": new.address,
                       "promoted_s": round(promoted_s, 2), "replica_back_s": round(time.time() - killed_at, 2),
                       "waited_on": len(pending)})

    # Then: every acknowledged send has its result; the monitor's waits ended within their bound
    wait_for(lambda: monitor.call("batch")["sends"]["done"], 90, "every send to be made", interval_s=0.2)
    wait_for(lambda: (b := monitor.call("batch")) and len(b["seen"]) >= len(b["acked"]), 90,
             "every acknowledged task's result", interval_s=0.2)
    wait_for(lambda: len(monitor.call("batch")["waits"]) == failovers, MONITOR_BOUND_S + 5,
             "the monitor's waits through the failovers to end", interval_s=0.2)
    batch = monitor.call("batch")
    acked, seen, sends = batch["acked"], batch["seen"], batch["sends"]
    lost = [mid for mid in acked if mid not in seen]
    failed = {mid: v["value"] for mid, v in seen.items() if isinstance(v["value"], dict) and "error" in v["value"]}
    for event in events:
        after = [v["t"] for v in seen.values() if isinstance(v["value"], dict)
                 and v["value"].get("end", 0) > event["killed_at"]]
        event["first_completion_s"] = round(min(after) - event["killed_at"], 2) if after else None
    grants = [json.loads(line) for line in (out / "grants.jsonl").read_text().splitlines()]
    tokens = [g["token"] for g in grants]
    repeated_tokens = len(tokens) - len(set(tokens))
    overlaps = []
    for name in {g["lock"] for g in grants}:
        held = sorted((g for g in grants if g["lock"] == name), key=lambda g: g["start"])
        overlaps += [(a["token"], b["token"]) for a, b in zip(held, held[1:]) if b["start"] < a["end"]]
        assert [g["token"] for g in held] == sorted(g["token"] for g in held), f"tokens of {name} went backwards"
    products = products_in(out)
    tasks_done = {v["value"]["path"] for v in seen.values() if isinstance(v["value"], dict) and "path" in v["value"]}
    waits = batch["waits"]
    figures = record_figures(
        fault=fault, tasks=TASKS, workers=len(workers), acknowledged_sends=len(acked),
        send_attempts=sends["attempts"], failed_send_attempts=sends["errors"], sends_given_up=len(sends["given_up"]),
        lost=len(lost), failed_tasks=len(failed), products=len(products), duplicated_products=0,
        executions=len(grants), grants=len(grants), lock_granted_twice=len(overlaps),
        fencing_tokens_repeated=repeated_tokens, fencing_token_range=[min(tokens), max(tokens)],
        fencing_tokens_around_failovers=[{"last_3_before_kill": sorted(g["token"] for g in grants
                                                                        if g["start"] < e["killed_at"])[-3:],
                                          "first_3_after_kill": sorted(g["token"] for g in grants
                                                                       if g["start"] > e["killed_at"])[:3]}
                                         for e in events],
        failovers=events, monitor_waits=waits, down_after_ms=cluster.down_after_ms)
    assert not lost, f"{len(lost)} acknowledged sends have no result: {lost[:5]}"
    assert not sends["given_up"] and len(acked) == TASKS, sends
    assert not failed, list(failed.values())[:3]
    assert [p.name for p in products] == sorted(f"task{i:03d}.out" for i in range(TASKS))
    assert tasks_done == {str(out / f"task{i:03d}.out") for i in range(TASKS)}
    assert repeated_tokens == 0 and not overlaps, (repeated_tokens, overlaps)
    for name, wait in waits.items():
        assert wait["ok"] and wait["elapsed_s"] <= wait["bound_s"], (name, wait)
    for event in events:
        assert event["first_completion_s"] is not None, figures
        assert event["first_completion_s"] < FIRST_COMPLETION_TARGET_S, event
