"""A real full-frame jump step with ``max_cores=all``: ``revoke --terminate`` leaves no process of
its stcal pool behind, checked through /proc by process group and by cgroup."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq import synthetic
from jwql_dramatiq.broker import states
from jwql_dramatiq.actors import calwebb_detector1_save_jump
from jwql_dramatiq.broker.revoke import revoke
from tests.conftest import wait_for
from tests.test_tree_limits import _stat, descendants, task_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

UNCAL = "jw09999001001_01101_00001_nrca1_uncal.fits"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _pool_parent(worker_pid: int) -> tuple[int, list[int]] | None:
    """The task child whose stcal pool is running: (child, pool pids), or None yet."""
    by_parent: dict[int, list[int]] = {}
    for pid in descendants(worker_pid):
        stat = _stat(pid)
        if stat and "spawn_main" in _cmdline(pid):
            by_parent.setdefault(int(stat[1]), []).append(pid)
    return next(((parent, pool) for parent, pool in by_parent.items() if len(pool) >= 2), None)


def test_revoke_terminate_of_a_full_frame_jump_with_all_cores_leaves_no_process(broker, make_config, start_worker,
                                                                                 tmp_path):
    refs = synthetic.make_reference_files(tmp_path / "refs", size=2048, ngroups=5)
    uncal = synthetic.make_uncal(tmp_path / "data" / UNCAL, size=2048, nints=1, ngroups=5)
    config = make_config(crds_path=str(tmp_path / "crds"), crds_offline_stub=True, preload=["jwst.pipeline"],
                         warm_up=False, max_cores="all")
    worker = start_worker(config)
    (tmp_path / "transfer" / "incoming").mkdir(parents=True, exist_ok=True)
    shutil.copy(uncal, tmp_path / "transfer" / "incoming" / UNCAL)
    message = calwebb_detector1_save_jump.send(UNCAL, "nircam", ramp_fit=True, save_fitopt=False,
                                               step_args=synthetic.offline_step_overrides(refs, "jump"))
    child, pool = wait_for(lambda: _pool_parent(worker.pid), 180, "stcal's pool to start", interval_s=0.1)
    assert all(int(_stat(p)[2]) == child for p in pool), "the pool is in the task's process group"

    started = time.monotonic()
    assert revoke(message.message_id, terminate=True).outcome == "terminating"
    wait_for(lambda: not task_processes(child), 5, "every process of the task to be gone")
    assert time.monotonic() - started < 1.0
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=10_000)
    assert info.value.orig_exc_type == "TaskRevoked"
    # The revoke answers the caller at once; the worker removes the task's directories only after
    # it has reaped the whole tree, so they go a moment later.
    wait_for(lambda: not list((tmp_path / "transfer" / "outgoing").glob(".staging.*")), 10,
             "the task's staging directory to be removed")
    wait_for(lambda: not list((tmp_path / "working" / "calibrated_data").glob("task.*")), 10,
             "the task's scratch directory to be removed")


def test_a_full_frame_job_over_its_limit_with_all_cores_backs_off_and_returns_its_products(broker, make_config,
                                                                                           start_worker, tmp_path):
    # Measured here (2 cores), 1x15 groups of 2048x2048: the tree's PSS peaks near 1750 MiB with
    # max_cores=all and 1370 MiB with none. (A cgroup's peak also counts the page cache of the
    # products, which the kernel reclaims before it kills, so the polled PSS gives the margin.)
    # On 2 cores "half" is one core, so stcal runs without a pool: half fits as none does.
    refs = synthetic.make_reference_files(tmp_path / "refs", size=2048, ngroups=15)
    uncal = synthetic.make_uncal(tmp_path / "data" / UNCAL, size=2048, nints=1, ngroups=15)
    config = make_config(crds_path=str(tmp_path / "crds"), crds_offline_stub=True, preload=["jwst.pipeline"],
                         warm_up=False, max_cores="all", memory_limit_mib=1560, memory_method="poll")
    worker = start_worker(config)
    (tmp_path / "transfer" / "incoming").mkdir(parents=True, exist_ok=True)
    shutil.copy(uncal, tmp_path / "transfer" / "incoming" / UNCAL)
    message = calwebb_detector1_save_jump.send(UNCAL, "nircam", ramp_fit=True, save_fitopt=False,
                                               step_args=synthetic.offline_step_overrides(refs, "jump"))
    products = message.get_result(block=True, timeout=240_000)
    assert Path(products["jump"]).is_file()
    state = wait_for(lambda: (s := states.get_task_state(message.message_id)) and s.state == "succeeded" and s, 10,
                     "success")
    attempts = json.loads(state.details["attempts"])
    assert attempts[0]["max_cores"] == "all" and attempts[0]["outcome"].startswith("killed by")
    assert attempts[-1]["outcome"] == "ok" and attempts[-1]["max_cores"] in ("half", "none")
    assert "running it again in a fresh child with maximum_cores=half" in worker.log()
