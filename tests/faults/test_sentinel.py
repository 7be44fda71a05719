"""Losing the Redis host under Sentinel: nothing acknowledged is lost, no product is duplicated, no
lock is granted twice, and fencing tokens never repeat.

Real processes on loopback: a master, one replica and three sentinels (``redis-server
--sentinel``, quorum 2, ``down-after-milliseconds`` 2000), two workers (``dramatiq``) and a
monitor process sending 200 tasks. Each task takes one of four locks, publishes one product by
hard link and appends its grant (fencing token, start, end) to a file. Sends, results, lock
acquisitions and fencing increments wait for the replica (``WAIT 1 1000``). The killed master
is started again as a replica of the new one (the deployment guide's unit), since with one
replica a master has nobody to WAIT for until then.

The partition scenario runs the same cluster on seven hosts in network namespaces made by the
test (:mod:`tests.faults.netns`): the master and one worker share host ``r0``, whose switch port
is taken down mid-run; the replica, the sentinels, the other worker and the monitor stay
connected. The isolated master keeps taking its worker's writes, but none is durable: every
send, result, lock grant and fencing increment waits for a replica, which it no longer has. It
runs twice: with ``WAIT`` alone, and with the deployment guide's ``min-replicas-to-write 1`` (lag
2 s), under which the isolated master refuses its worker's writes (``NOREPLICAS``) during the cut
and the new master refuses every write until the old one is back as its replica: a refusal is an
outage, ridden through, and strands no result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from jwql_dramatiq.embedded import poll_until
from tests.conftest import REPO, base_config, wait_for
from tests.faults.conftest import products_in
from tests.faults.diagnose import explain, snapshot_aof
from tests.faults.netns import Lab, remove_stale_namespaces, unavailable_reason
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


#: Hosts of the partition scenario: r0 (master + worker 1, the one cut off), r1 (replica), s0-s2
#: (sentinels), w2 (worker 2), mon (monitor).
PARTITION_HOSTS = ["r0", "r1", "s0", "s1", "s2", "w2", "mon"]
#: Extra config of the data nodes in the partition scenario, one run each: WAIT alone, and the deployment
#: guide's ``min-replicas-to-write 1`` with a lag short enough (2 s) that the isolated master refuses its
#: worker's writes (NOREPLICAS) during the cut, as the new master does until its replica is back.
PARTITION_DATA_CONFS = {"wait": [], "min-replicas-to-write": ["min-replicas-to-write 1", "min-replicas-max-lag 2"]}
#: How long the cut lasts after the sentinels agree on the new master (seconds).
HOLD_AFTER_PROMOTION_S = 1.0


@pytest.fixture(params=list(PARTITION_DATA_CONFS))
def partitioned(request, tmp_path):
    """Hosts in network namespaces and the cluster on them (master on r0, data nodes configured with
    ``PARTITION_DATA_CONFS[param]``); all reaped at teardown."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot make test hosts: {reason}")
    remove_stale_namespaces()
    lab = Lab()
    cluster = None
    try:
        lab.up(PARTITION_HOSTS)
        where = {"redis0": "r0", "redis1": "r1", "sentinel0": "s0", "sentinel1": "s1", "sentinel2": "s2"}
        cluster = Cluster(tmp_path / "cluster", down_after_ms=2000,
                          hosts={node: (lab.hosts[h].address, lab.hosts[h].prefix()) for node, h in where.items()},
                          data_conf=PARTITION_DATA_CONFS[request.param])
        yield lab, cluster.start()
    finally:
        if cluster is not None:
            cluster.close()
        lab.close()


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


@pytest.mark.timeout(180)
def test_partition_isolates_the_master_with_one_worker(tmp_path, partitioned, start_agent, record_figures):
    lab, cluster = partitioned
    # Given: the cluster in sync on its hosts, worker 1 on the master's host r0, worker 2 on w2, the monitor
    # on mon, 200 tasks being sent
    wait_for(lambda: cluster.in_sync(cluster.nodes["redis0"]), 20, "the replica to sync", interval_s=0.1)
    config = _config(tmp_path, cluster)
    env = {"JWQL_DRAMATIQ_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    logs = {host: tmp_path / f"worker-{host}.log" for host in ("r0", "w2")}
    for host, log in logs.items():  # -v: Dramatiq logs each message id it receives, acks and nacks
        lab.spawn(host, [dramatiq, "jwql_dramatiq.actors", "-p1", "-t1", "-v", "--path", str(REPO)], log, env=env,
                  cwd=REPO)
    wait_for(lambda: all("ready for action" in log.read_text(errors="replace") for log in logs.values()), 90,
             "the two workers to boot", interval_s=0.2)
    monitor = start_agent(config, prefix=lab.hosts["mon"].prefix())
    out = tmp_path / "products"
    out.mkdir()
    events: list[dict] = []
    aofs = {name: node.directory / "appendonlydir" for name, node in cluster.nodes.items() if not node.sentinel}
    try:
        arg_lists = [[str(out), f"task{i:03d}", f"lk{i % LOCKS}", TASK_S] for i in range(TASKS)]
        monitor.call("watch", interval_s=0.05)
        monitor.call("send_batch", actor="fenced_product", arg_lists=arg_lists, pace_s=0.03, retry_s=60)

        # When: r0 (the master and worker 1) is cut off mid-run; the sentinels promote the replica
        wait_for(lambda: len(monitor.call("batch")["acked"]) >= 40, 60, "40 sends to be acknowledged",
                 interval_s=0.05)
        batch = monitor.call("batch")
        pending = [mid for mid in batch["acked"] if mid not in batch["seen"]][-20:]
        monitor.call("wait_bg", name="partition", message_ids=pending, bound_s=MONITOR_BOUND_S)
        old = cluster.nodes["redis0"]
        assert cluster.master_by_sentinels() == old.address
        lab.cut("r0")
        cut_at = time.time()
        events.append({"cut_at": cut_at, "old": old.address})
        offset_at_cut = old.replication()["master_repl_offset"]
        new_address = wait_for(lambda: (a := cluster.master_by_sentinels()) and a != old.address and a, 30,
                               "the sentinels to promote the replica", interval_s=0.05)
        promoted_s = time.time() - cut_at
        new = cluster.node_at(new_address)
        events[0].update(new=new.address, promoted_s=round(promoted_s, 2))
        # ... the cut lasts a little longer; the isolated master meanwhile has its own worker and no replica
        time.sleep(HOLD_AFTER_PROMOTION_S)
        isolated = old.replication()
        isolated_errors = old.command("INFO", "errorstats")
        refused = sum(int(line.split("count=")[1]) for line in isolated_errors.splitlines()
                      if line.startswith("errorstat_NOREPLICAS"))
        # Its writes during the cut, kept for the diagnosis: the resync after the heal throws them away.
        aofs["redis0 (isolated, before heal)"] = snapshot_aof(old.directory, tmp_path / "isolated-aof")
        # Then the link heals, and the old master is made a replica of the new one at once (as the restart
        # unit does for a killed one; Sentinel alone would demote it about 8 s after it reappears)
        lab.heal("r0")
        healed_at = time.time()
        cluster.make_replica(old, new)
        events[0]["healed_at"] = healed_at
        wait_for(lambda: cluster.in_sync(new), 30, "the old master to sync as a replica", interval_s=0.05)
        events[0].update(partition_s=round(healed_at - cut_at, 2), replica_back_s=round(time.time() - cut_at, 2),
                         waited_on=len(pending))
        isolated_role = isolated["role"]

        figures = _check(monitor, out, events, record_figures, workers=2, down_after_ms=cluster.down_after_ms,
                         results_wait_s=45,
                         fault="Sentinel: partition isolating the master with one worker (netns, link down), "
                               "then healed",
                         data_node_conf=cluster.data_conf, isolated_master_role_during_cut=isolated_role,
                         isolated_master_bytes_written_during_cut=isolated["master_repl_offset"] - offset_at_cut,
                         isolated_master_writes_refused_noreplicas=refused,
                         late_figures=lambda: _isolated_side(out, logs, cut_at, cut_at + promoted_s, healed_at))
        assert isolated_role == "master"
        # Nothing the isolated side did was granted without a replica: no grant began on r0 during the cut
        # that the promoted master had not seen.
        assert figures["grants_begun_on_cut_host_during_cut"] == 0, figures
    except BaseException as e:  # an assertion, a wait that timed out, or the test's timeout: explain it
        print(explain(tmp_path, monitor, events, {**logs, "monitor": monitor.log_path}, aofs, out, e))
        raise


#: Longest a grant the replica confirmed before the cut may be stamped after it, in seconds (the worker's
#: thread between ``acquire()`` returning and ``time.time()``, on 2 busy cores).
STAMP_SLACK_S = 0.5


def _isolated_side(out: Path, logs: dict[str, Path], cut_at: float, promoted_at: float, healed_at: float) -> dict:
    """What the cut-off worker did: grants it began during the cut without a replica, and its writes that failed.

    A grant's start is stamped when ``acquire()`` has returned, so a grant the replica confirmed just
    before the cut can be stamped just after it (one was, 1 ms after, with 2 cores busy). Such a grant is
    told apart by two things together: it is stamped within ``STAMP_SLACK_S`` of the cut, and its fencing
    token is below every token granted after the promotion (the promoted master's counter holds every
    grant the replica saw). A broken ``WAIT`` would show as grants all through the cut, not only there.
    """
    grants = [json.loads(line) for line in (out / "grants.jsonl").read_text().splitlines()]
    log = logs["r0"].read_text(errors="replace")
    during_cut = [g for g in grants if g.get("host") == "r0" and cut_at < g["start"] < healed_at]
    first_token_after_promotion = min((g["token"] for g in grants if g["start"] > promoted_at), default=0)
    confirmed_before = [g for g in during_cut
                        if g["start"] < cut_at + STAMP_SLACK_S and g["token"] < first_token_after_promotion]
    return {"grants_begun_on_cut_host_during_cut": len(during_cut) - len(confirmed_before),
            "grants_stamped_on_cut_host_during_cut_but_confirmed_before": len(confirmed_before),
            "grants_by_host": {h: sum(1 for g in grants if g.get("host") == h) for h in ("r0", "w2")},
            "cut_worker_replica_timeouts_logged": log.count("replica(s) acknowledged it"),
            "cut_worker_noreplicas_logged": log.count("NOREPLICAS")}


def _run(tmp_path, cluster, start_worker, start_agent, record_figures, failovers: int, fault: str) -> None:
    # Given: the cluster in sync, two workers, a monitor watching results, 200 tasks being sent
    wait_for(lambda: cluster.in_sync(cluster.nodes["redis0"]), 10, "the replica to sync")
    config = _config(tmp_path, cluster)
    workers = [start_worker(config), start_worker(config)]
    monitor = start_agent(config)
    out = tmp_path / "products"
    out.mkdir()
    events: list[dict] = []
    try:
        arg_lists = [[str(out), f"task{i:03d}", f"lk{i % LOCKS}", TASK_S] for i in range(TASKS)]
        monitor.call("watch", interval_s=0.05)
        monitor.call("send_batch", actor="fenced_product", arg_lists=arg_lists, pace_s=0.03, retry_s=60)

        # When: the master is killed with -9 mid-run (and, for two failovers, the new master once it has a replica)
        for index in range(failovers):
            wait_for(lambda: len(monitor.call("batch")["acked"]) >= 40 + 60 * index, 60,
                     f"{40 + 60 * index} sends to be acknowledged", interval_s=0.05)
            batch = monitor.call("batch")
            pending = [mid for mid in batch["acked"] if mid not in batch["seen"]][-20:]
            monitor.call("wait_bg", name=f"failover{index}", message_ids=pending, bound_s=MONITOR_BOUND_S)
            old = cluster.node_at(cluster.master_by_sentinels())
            killed_at = time.time()
            old.kill()
            events.append({"killed_at": killed_at, "old": old.address})
            new_address = wait_for(lambda: (a := cluster.master_by_sentinels()) and a != old.address and a, 30,
                                   "the sentinels to promote the replica", interval_s=0.05)
            promoted_s = time.time() - killed_at
            new = cluster.node_at(new_address)
            events[-1].update(new=new.address, promoted_s=round(promoted_s, 2))
            cluster.restart_as_replica(old, new)
            wait_for(lambda: cluster.in_sync(new), 30, "the old master to sync as a replica", interval_s=0.05)
            events[-1].update(replica_back_s=round(time.time() - killed_at, 2), waited_on=len(pending))

        _check(monitor, out, events, record_figures, fault=fault, workers=len(workers),
               down_after_ms=cluster.down_after_ms)
    except BaseException as e:  # an assertion, a wait that timed out, or the test's timeout: explain it
        logs = {f"worker{i}": w.log_path for i, w in enumerate(workers)}
        aofs = {n.name: n.directory / "appendonlydir" for n in cluster.data_nodes()}
        print(explain(tmp_path, monitor, events, {**logs, "monitor": monitor.log_path}, aofs, out, e))
        raise


def _check(monitor, out: Path, events: list[dict], record_figures, fault: str, workers: int, down_after_ms: int,
           late_figures=dict, results_wait_s: float = 90, **extra) -> dict:
    """Then: every acknowledged send has its result, the monitor's waits ended within their bound, one
    product per task, no fencing token repeated, no lock held twice at once, and the first task after
    each fault (``events[i]["killed_at"]`` or ``["cut_at"]``) completed within the target.
    ``late_figures()`` gives more figures once every result is in; ``extra`` are figures as they are."""
    failovers = len(events)
    wait_for(lambda: monitor.call("batch")["sends"]["done"], 90, "every send to be made", interval_s=0.2)
    # Bounded, and not fatal by itself: a lost send is then counted in the figures and asserted below.
    poll_until(lambda: (b := monitor.call("batch")) and len(b["seen"]) >= len(b["acked"]), results_wait_s, 0.2)
    wait_for(lambda: len(monitor.call("batch")["waits"]) == failovers, MONITOR_BOUND_S + 5,
             "the monitor's waits through the failovers to end", interval_s=0.2)
    batch = monitor.call("batch")
    acked, seen, sends = batch["acked"], batch["seen"], batch["sends"]
    lost = [mid for mid in acked if mid not in seen]
    failed = {mid: v["value"] for mid, v in seen.items() if isinstance(v["value"], dict) and "error" in v["value"]}
    for event in events:
        at = event.get("killed_at", event.get("cut_at"))
        after = [v["t"] for v in seen.values() if isinstance(v["value"], dict) and v["value"].get("end", 0) > at]
        event["first_completion_s"] = round(min(after) - at, 2) if after else None
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
        fault=fault, tasks=TASKS, workers=workers, acknowledged_sends=len(acked),
        send_attempts=sends["attempts"], failed_send_attempts=sends["errors"], sends_given_up=len(sends["given_up"]),
        failed_send_kinds=sends.get("error_types", {}),
        lost=len(lost), lost_where=monitor.call("find", message_ids=lost[:10]) if lost else {},
        failed_tasks=len(failed), products=len(products), duplicated_products=0,
        executions=len(grants), grants=len(grants), lock_granted_twice=len(overlaps),
        fencing_tokens_repeated=repeated_tokens, fencing_token_range=[min(tokens), max(tokens)],
        fencing_tokens_around_failovers=[{"last_3_before_kill": sorted(g["token"] for g in grants
                                                                        if g["start"] < _at(e))[-3:],
                                          "first_3_after_kill": sorted(g["token"] for g in grants
                                                                       if g["start"] > _at(e))[:3]}
                                         for e in events],
        failovers=events, monitor_waits=waits, down_after_ms=down_after_ms, **extra, **late_figures())
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
    return figures


def _at(event: dict) -> float:
    return event.get("killed_at", event.get("cut_at"))
