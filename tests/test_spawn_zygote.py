"""stcal's spawn pools started from a zygote (jwql_dramatiq.executor.spawn_zygote).

- In a plain process: pool processes are forks of a warm copy (they see the parent's state,
  which a fresh interpreter cannot), ``terminate()`` ends them at once, and nothing is left.
- The launcher runs any other ``-c`` code as the real interpreter would.
- Through real workers: a jump and ramp-fit job with ``max_cores=all`` gives the very same
  products with ``pool_start: zygote`` as with stcal's own spawn, and the right rate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jwql_dramatiq import synthetic
from jwql_dramatiq.actors import calwebb_detector1_save_jump
from jwql_dramatiq.executor.spawn_zygote import fast_pool_starts, spawn_main_arguments
from tests.conftest import REPO

UNCAL = "jw09999001001_01101_00001_nrca1_uncal.fits"


@pytest.mark.timeout(120)
def test_pools_fork_from_the_zygote_terminate_at_once_and_leave_nothing():
    done = subprocess.run([sys.executable, str(REPO / "tests" / "zygote_probe.py")], capture_output=True, text=True,
                          timeout=100, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["on"] is True
    for name in ("plain", "zygote", "after"):
        assert [x for x, _state, _ppid in report[name]] == [2, 4, 6]
    # stcal's own spawn: fresh interpreters, children of the process that made the pool.
    assert {state for _x, state, _ppid in report["plain"] + report["after"]} == {"fresh interpreter"}
    probe_pid = {ppid for _x, _state, ppid in report["plain"]}
    # Through the zygote: forks of a copy of that process (its state), children of the zygote.
    assert {state for _x, state, _ppid in report["zygote"]} == {"warm parent"}
    assert {ppid for _x, _state, ppid in report["zygote"]}.isdisjoint(probe_pid)
    assert report["terminate_s"] < 2.0
    assert report["children_left"] == [] and report["dirs_left"] == []


@pytest.mark.timeout(60)
def test_the_launcher_runs_other_code_as_python_and_only_spawn_main_goes_to_the_zygote():
    assert spawn_main_arguments("from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, "
                                "pipe_handle=7)") == {"tracker_fd": 5, "pipe_handle": 7}
    assert spawn_main_arguments("from multiprocessing.resource_tracker import main;main(4)") is None
    assert spawn_main_arguments("import os; os.system('x')") is None
    with fast_pool_starts() as on:
        assert on
        import multiprocessing.spawn

        launcher = os.fsdecode(multiprocessing.spawn.get_executable())
        assert launcher != sys.executable
        done = subprocess.run([launcher, "-c", "import sys; print(6 * 7, sys.prefix)"], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["42", sys.prefix]
    assert not Path(launcher).exists()
    assert os.fsdecode(multiprocessing.spawn.get_executable()) == sys.executable


def _products(message) -> dict[str, np.ndarray]:
    paths = message.get_result(block=True, timeout=240_000)
    arrays = {}
    for ext in ("jump", "0_ramp_fit"):
        with fits.open(paths[ext]) as hdul:
            arrays[ext] = {name: np.array(hdul[name].data) for name in ("SCI", "PIXELDQ", "GROUPDQ", "DQ", "ERR")
                           if name in hdul}
    return arrays


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_all_cores_job_gives_the_same_products_with_zygote_pools_as_with_stcal_spawn(broker, make_config,
                                                                                         start_worker, tmp_path):
    refs = synthetic.make_reference_files(tmp_path / "refs")
    uncal = synthetic.make_uncal(tmp_path / "data" / UNCAL)
    incoming = tmp_path / "transfer" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    for pool_start in ("zygote", "spawn"):
        config = make_config(crds_path=str(tmp_path / "crds"), crds_offline_stub=True, preload=["jwst.pipeline"],
                             warm_up=False, max_cores="all", pool_start=pool_start)
        worker = start_worker(config)
        shutil.copy(uncal, incoming / UNCAL)
        message = calwebb_detector1_save_jump.send(UNCAL, "nircam", ramp_fit=True, save_fitopt=False,
                                                   step_args=synthetic.offline_step_overrides(refs, "jump"))
        outcomes[pool_start] = _products(message)
        log = worker.log()
        worker.stop()
        assert "Creating 2 processes for jump detection" in log
        assert ("stcal's process pools start from a zygote" in log) == (pool_start == "zygote")

    for ext, arrays in outcomes["zygote"].items():
        for name, data in arrays.items():
            np.testing.assert_array_equal(data, outcomes["spawn"][ext][name], err_msg=f"{ext} {name}")
    det = synthetic.detector_for("nircam")
    light = ~synthetic.reference_pixel_mask(det, det.small)
    rate = outcomes["zygote"]["0_ramp_fit"]["SCI"][light]
    assert abs(np.nanmedian(rate) / synthetic.DEFAULT_RATE_DN_PER_S - 1) < 0.01
    groupdq = outcomes["zygote"]["jump"]["GROUPDQ"]
    assert groupdq[synthetic.DEFAULT_COSMIC_RAY["nircam"]] & 4, "the injected cosmic ray is flagged JUMP_DET"
