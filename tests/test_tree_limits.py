"""Limits that hold for a task's whole process tree: kills reach the pool, memory counts it, an
out-of-memory kill backs off ``all -> half -> none``, and a kill leaves no directory behind.

Each test runs with the cgroup this machine allows (``auto``) and with polling (``poll``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.broker import states
from jwql_dramatiq.broker.control import list_workers, request_shutdown
from jwql_dramatiq.broker.revoke import revoke
from jwql_dramatiq.executor.memory import tree_pids
from tests import actors_for_tests as t
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)

METHODS = ["auto", "poll"]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _cgroup_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def task_processes(child_pid: int) -> list[int]:
    """Every process, read from /proc, in the child's process group or in its cgroup ``child.<pid>``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is None:
            continue
        if int(stat[2]) == child_pid or f"/child.{child_pid}\n" in _cgroup_of(int(entry)):
            found.append(int(entry))
    return found


#: ``pid`` and its descendants (the executor's own /proc walk).
descendants = tree_pids


def pss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def _pids(pid_dir: Path, kind: str) -> list[int]:
    return [int(p.name.split(".")[1]) for p in pid_dir.glob(f"{kind}.*")]


def _state(message) -> states.TaskState:
    return states.get_task_state(message.message_id) or states.TaskState("", "")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kill", ["revoke", "time_limit", "shutdown_now"])
def test_every_kill_reaches_the_pool_within_1_s(broker, make_config, start_worker, redis_client, tmp_path, method,
                                                kill):
    # Given a task whose spawn pool (as stcal starts) is running
    start_worker(make_config(memory_method=method, actor_time_limits_s={"pool_hold": 4 if kill == "time_limit" else 60}))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    message = t.pool_hold.send(2, 20, str(pid_dir), 60)
    wait_for(lambda: len(_pids(pid_dir, "pool")) == 2, 30, "the pool's two processes")
    (child,) = _pids(pid_dir, "child")
    pool = _pids(pid_dir, "pool")
    assert all(int(_stat(p)[2]) == child for p in pool), "the pool is in the child's process group"
    if method == "auto":
        assert all(f"/child.{child}\n" in _cgroup_of(p) for p in pool), "the pool is in the child's cgroup"
    assert set(pool) | {child} <= set(task_processes(child))

    # When the task is killed
    if kill == "revoke":
        started = time.monotonic()
        assert revoke(message.message_id, terminate=True).outcome == "terminating"
    elif kill == "shutdown_now":
        (worker,) = list_workers(redis_client, broker.namespace, 10)
        started = time.monotonic()
        request_shutdown(redis_client, broker.namespace, [worker.worker_id], now=True)
    else:
        wait_for(lambda: _state(message).state != states.RUNNING or not _stat(child), 10, "the time limit")
        started = time.monotonic()

    # Then no process of it is left within 1 s, by process group and by cgroup
    wait_for(lambda: not task_processes(child), 5, "every process of the task to be gone")
    assert time.monotonic() - started < 1.0
    assert not any(_stat(p) for p in pool)
    if kill != "shutdown_now":
        with pytest.raises(ResultFailure) as info:
            message.get_result(block=True, timeout=10_000)
        assert info.value.orig_exc_type == ("TaskRevoked" if kill == "revoke" else "TimeLimitExceeded")


@pytest.mark.parametrize("method", METHODS)
def test_the_memory_figure_counts_the_pool(broker, make_config, start_worker, tmp_path, method):
    worker = start_worker(make_config(memory_method=method))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    message = t.pool_hold.send(2, 150, str(pid_dir), 2.5, "fork")
    wait_for(lambda: len(_pids(pid_dir, "pool")) == 2, 30, "the pool's two processes")
    (child,) = _pids(pid_dir, "child")
    time.sleep(0.3)  # let the worker sample the tree while the pool holds its memory
    from_proc = sum(pss_mib(p) for p in descendants(child))
    assert message.get_result(block=True, timeout=20_000) == [150, 150]

    state = wait_for(lambda: _state(message).state == states.SUCCEEDED and _state(message), 10, "success")
    peak = float(state.details["memory_peak_mib"])
    expected_method = state.details["memory_method"]
    assert expected_method == "poll-pss" if method == "poll" else expected_method in ("cgroup-v1", "cgroup-v2")
    assert from_proc >= 300
    assert 0.85 * from_proc <= peak <= from_proc + 100, (peak, from_proc)
    wait_for(lambda: f"for its process tree ({expected_method})" in worker.log(), 5, "the peak in the log")


@pytest.mark.parametrize("method", METHODS)
def test_out_of_memory_backs_off_all_half_none_and_returns_the_product(broker, make_config, start_worker, method):
    worker = start_worker(make_config(memory_method=method, memory_limit_mib=400))
    message = t.cores_hungry.send(600, 100)
    result = message.get_result(block=True, timeout=60_000)
    assert result == {"cores": "none", "mib": 100, "attempt": 3}

    state = wait_for(lambda: _state(message).state == states.SUCCEEDED and _state(message), 10, "success")
    attempts = json.loads(state.details["attempts"])
    assert [a["max_cores"] for a in attempts] == ["all", "half", "none"]
    assert all(a["memory_peak_mib"] >= 0.9 * 400 for a in attempts[:2]), attempts
    assert attempts[2]["memory_peak_mib"] < 400 and attempts[2]["outcome"] == "ok"
    assert state.details["attempt"] == "3" and state.details["max_cores"] == "none"
    log = worker.log()
    assert "with maximum_cores=half" in log and "with maximum_cores=none" in log


def test_out_of_memory_with_none_too_fails_naming_the_limit_and_each_attempt(broker, make_config, start_worker):
    start_worker(make_config(memory_limit_mib=300))
    with pytest.raises(ResultFailure) as info:
        t.cores_hungry.send(600, 600).get_result(block=True, timeout=60_000)
    error = info.value
    assert error.orig_exc_type == "MemoryLimitExceeded"
    assert "memory limit of 300 MiB" in error.orig_exc_msg
    assert "nothing smaller than maximum_cores=none is left" in error.orig_exc_msg
    for n, cores in enumerate(["all", "half", "none"], 1):
        assert f"attempt {n} (maximum_cores={cores}): peak " in error.orig_exc_msg


def test_a_kill_that_is_not_for_memory_is_not_retried(broker, make_config, start_worker):
    start_worker(make_config(memory_limit_mib=300))
    with pytest.raises(ResultFailure) as info:
        t.die.send("sigkill").get_result(block=True, timeout=20_000)
    assert info.value.orig_exc_type == "ChildDied" and "killed by SIGKILL" in info.value.orig_exc_msg


@pytest.mark.parametrize("where", ["run", "publish"])
def test_sigkill_leaves_no_staging_scratch_or_transfer_file(broker, make_config, start_worker, tmp_path, where):
    from jwql_dramatiq.transfer import remove_transfer_files

    start_worker(make_config(actor_time_limits_s={"staged_then_die": 30}))
    transfer = tmp_path / "transfer"
    with pytest.raises(ResultFailure) as info:
        t.staged_then_die.send(str(transfer), "jw01", where).get_result(block=True, timeout=20_000)
    assert info.value.orig_exc_type == "ChildDied"
    outgoing, scratch = transfer / "outgoing", tmp_path / "working" / "calibrated_data"
    assert not list(outgoing.glob(".staging.*")), "the worker removed the staging directory"
    assert not list(scratch.glob("task.*")), "the worker removed the scratch directory"
    if where == "publish":
        assert [p.name for p in outgoing.iterdir()] == ["jw01_a.fits"]  # one product was renamed
    remove_transfer_files(transfer, "jw01")  # what the caller does with a failure
    assert not list(outgoing.iterdir()) and not list((transfer / "incoming").iterdir())


@pytest.mark.parametrize("method", METHODS)
def test_status_and_the_log_say_which_memory_method_is_in_use(broker, make_config, start_worker, capsys, method):
    from jwql_dramatiq.cli import main

    config = make_config(memory_method=method, memory_limit_mib=500)
    worker = start_worker(config)
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    if method == "poll":
        assert "poll-pss, limit 500 MiB" in out
        assert "Task memory is measured by polling" in worker.log()  # and why
        assert "polling was asked for" in worker.log()
    else:
        assert "cgroup-v1, limit 500 MiB" in out or "cgroup-v2, limit 500 MiB" in out, out
