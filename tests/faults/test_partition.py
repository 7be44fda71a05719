"""A network partition across hosts, in network namespaces made by the test.

Five hosts on a private bridge (10.231.0.0/24, inside the namespaces only): ``redis`` (an ACL
user is required), three worker hosts ``w1``-``w3`` (each ``dramatiq jwql_dramatiq.actors -p1
-t1`` with jwst preloaded, under its own host name) and ``mon`` (monitor code in a subprocess).
A real calwebb_detector1 job starts; its worker host's switch port is taken down for longer than
the heartbeat timeout. The job must complete elsewhere, and once the port comes back up the
cut-off worker's late completion must neither overwrite nor duplicate products (the job lock's
fencing token), and its lock must not be taken for a live one once its lease lapsed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest

from jwql_dramatiq import synthetic
from tests.conftest import REPO, wait_for
from tests.faults.netns import Lab, remove_stale_namespaces, unavailable_reason
from tests.faults.servers import SecureRedis, new_password

pytestmark = [pytest.mark.faults]

SHORT = "jw09999001001_01101_00001_nrca1"
INPUT = f"{SHORT}_uncal.fits"
#: Settings of this test (seconds): a cut lasts longer than HEARTBEAT_S, and LEASE_S < HEARTBEAT_S.
HEARTBEAT_S, SWEEP_S, LEASE_S = 4, 1, 3
WORKERS = ("w1", "w2", "w3")


@pytest.fixture
def lab():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot make test hosts: {reason}")
    remove_stale_namespaces()
    lab = Lab()
    try:
        yield lab.up(["redis", *WORKERS, "mon"])
    finally:
        lab.close()


def _fingerprint(directory: Path) -> dict[str, tuple[int, int, str]]:
    """name -> (inode, mtime_ns, sha256) of every entry (hidden ones too) in ``directory``."""
    out = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            stat = path.stat()
            out[path.name] = (stat.st_ino, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[path.name] = (path.stat().st_ino, 0, "directory")
    return out


@pytest.mark.timeout(300)
def test_partitioned_worker_job_completes_elsewhere_and_its_late_run_publishes_nothing(
        lab, tmp_path, start_agent, record_figures):
    # Given: Redis with an ACL user on host "redis", three jwst workers and a monitor
    password = new_password()
    redis_host = lab.hosts["redis"]
    server = SecureRedis(tmp_path / "redis", redis_host.address, 6379, "jwql", password, prefix=redis_host.prefix())
    lab.processes.append(server.start().proc)
    transfer = tmp_path / "transfer"
    (transfer / "incoming").mkdir(parents=True)
    (transfer / "outgoing").mkdir()
    refs = synthetic.make_reference_files(tmp_path / "refs")
    synthetic.make_uncal(transfer / "incoming" / INPUT)
    from jwql_dramatiq.pipeline import write_stub_server_config

    write_stub_server_config(tmp_path / "crds")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "redis_host": redis_host.address, "redis_port": 6379, "redis_username": "jwql",
        "transfer_dir": str(transfer), "crds_path": str(tmp_path / "crds"), "crds_offline_stub": True,
        "preload": ["jwst.pipeline"], "warm_up": True, "heartbeat_timeout_s": HEARTBEAT_S,
        "sweep_interval_s": SWEEP_S, "lock_lease_s": LEASE_S, "idle_poll_ms": 200, "maintenance_chance": 0,
    }))
    env = {"JWQL_DRAMATIQ_CONFIG": str(config), "JWQL_DRAMATIQ_REDIS_PASSWORD": password, "PYTHONUNBUFFERED": "1"}
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    logs = {name: tmp_path / f"worker-{name}.log" for name in WORKERS}
    for name in WORKERS:
        lab.spawn(name, [dramatiq, "jwql_dramatiq.actors", "-p1", "-t1", "--path", str(REPO)], logs[name],
                  env={**env, "JWQL_DRAMATIQ_WORKING": str(tmp_path / f"working-{name}"),
                       "JWQL_DRAMATIQ_HOSTNAME": f"{name}"}, cwd=REPO)
    monitor = start_agent(config, prefix=lab.hosts["mon"].prefix(), env=env)
    wait_for(lambda: all("ready for action" in logs[n].read_text(errors="replace") for n in WORKERS), 180,
             "the three workers to boot", interval_s=0.2)
    locks_log = tmp_path / "locks.jsonl"
    monitor.call("lock_loop", path=str(locks_log), interval_s=0.25)

    # When: the job starts, and its worker host's link is cut at once
    message_id = monitor.call("send", actor="run_calwebb_detector1",
                              args=[INPUT, SHORT, "all", "nircam", synthetic.offline_step_overrides(refs, "cal")])
    first = monitor.call("wait_running", 70, message_id=message_id, wait_s=60)
    held = monitor.call("wait_lock", 40, name=f"job:{SHORT}", wait_s=30)  # the run holds its job lock ...
    wait_for(lambda: list((transfer / "outgoing").glob(".staging.*")), 30, "the run to create its staging directory",
             interval_s=0.005)  # ... and runs the pipeline into its staging directory
    cut_host = first["host"]
    assert cut_host in WORKERS and held["host"] == cut_host and held["message_id"] == message_id
    lab.cut(cut_host)
    cut_at = time.time()
    # Then: it runs again on another host and completes there, while the link is still down
    second = monitor.call("wait_running", 60, message_id=message_id, not_workers=[first["worker"]], wait_s=50)
    redelivered_s = time.time() - cut_at
    result = monitor.call("result", 60, message_id=message_id, timeout_ms=50_000)
    completed_s = time.time() - cut_at
    assert second["host"] != cut_host
    outgoing = transfer / "outgoing"
    products = sorted(Path(p).name for p in result.values())
    published = _fingerprint(outgoing)
    # The products, and the cut-off run's staging directory (it still runs, unable to reach Redis).
    assert sorted(n for n in published if not n.startswith(".staging.")) == products
    published = {n: v for n, v in published.items() if not n.startswith(".staging.")}
    marker = json.loads(monitor.call("get", key=f"jwql_dramatiq:job-published:{message_id}"))
    assert marker["host"] == second["host"]
    # The link stays down past the heartbeat timeout, then heals.
    time.sleep(max(0.0, cut_at + HEARTBEAT_S + 1 - time.time()))
    lab.heal(cut_host)
    healed_at = time.time()

    # Then: the cut-off worker finishes late, sees a newer fencing token and publishes nothing
    late = wait_for(lambda: "already published by a run with fencing token" in
                    logs[cut_host].read_text(errors="replace"), 60, "the cut-off worker's late run to end",
                    interval_s=0.2)
    late_s = time.time() - healed_at
    time.sleep(0.5)
    assert late
    assert _fingerprint(outgoing) == published, "the late run changed outgoing/"
    assert marker["fence"] > held["fencing_token"] == _first_fence(logs[cut_host])
    # Its lock was never shown alive once its lease could have lapsed (cut + lease + one renewal step).
    monitor.call("stop_loop")
    samples = [json.loads(line) for line in locks_log.read_text().splitlines()]
    lapse_at = cut_at + LEASE_S + 0.5
    stale_alive = [s for s in samples if s["t"] > lapse_at
                   for lock in s.get("locks", []) if lock["host"] == cut_host and lock["alive"]]
    assert not stale_alive, stale_alive[:3]
    winner_seen = any(lock["host"] == second["host"] for s in samples for lock in s.get("locks", []))
    # The cut-off worker is alive and heartbeating again.
    wait_for(lambda: first["worker"] in monitor.call("heartbeats"), 30, "the cut-off worker's heartbeat")
    assert all(lab_proc.poll() is None for lab_proc in lab.processes)
    assert not any(password in log.read_text(errors="replace") for log in logs.values())
    record_figures(fault="network partition of the running worker's host (netns, link down)",
                   heartbeat_timeout_s=HEARTBEAT_S, sweep_interval_s=SWEEP_S, lock_lease_s=LEASE_S,
                   redelivered_after_s=round(redelivered_s, 2), completed_elsewhere_after_s=round(completed_s, 2),
                   partition_s=round(healed_at - cut_at, 2), late_run_ended_after_heal_s=round(late_s, 2),
                   products=len(products), products_overwritten=0, products_duplicated=0,
                   winner_fencing_token=marker["fence"], cut_off_fencing_token=held["fencing_token"],
                   winner_lock_seen_in_list_locks=winner_seen, stale_lock_shown_alive=len(stale_alive), lost=0)


def _first_fence(log: Path) -> int:
    """The fencing token the cut-off worker's run acquired (from its log)."""
    text = log.read_text(errors="replace")
    marker = "Job lock 'job:" + SHORT + "' acquired (fencing token "
    return int(text.split(marker, 1)[1].split(")", 1)[0])
