"""Real Detector1 jobs through real workers: JWQL's test_redis_celery scenario with assertions,
run_parallel_pipeline with a corrupt file, and bad input that never kills a worker."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from dramatiq.results import ResultFailure

from jwql_dramatiq import synthetic
from jwql_dramatiq.actors import calwebb_detector1_save_jump, ping, run_calwebb_detector1
from jwql_dramatiq.locks import list_locks
from jwql_dramatiq.shared_tasks import run_parallel_pipeline, run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

UNCAL = "jw09999001001_01101_00001_nrca1_uncal.fits"
SLOPE_DN_S = 50.0
JUMP_DET = 4


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, str]:
    return synthetic.make_reference_files(tmp_path_factory.mktemp("refs"))


@pytest.fixture
def pipeline_config(make_config, tmp_path):
    return make_config(crds_path=str(tmp_path / "crds"), crds_offline_stub=True, preload=["jwst.pipeline"],
                       warm_up=True, wait_timeout_s=240)


def transfer_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "transfer").rglob("*") if p.is_file()]


def test_jwql_redis_celery_scenario(broker, pipeline_config, start_worker, refs, tmp_path):
    start_worker(pipeline_config)
    data = tmp_path / "data"
    uncal = synthetic.make_uncal(data / UNCAL)

    products = run_pipeline(str(uncal), "uncal", "all", "nircam", step_args=synthetic.offline_step_overrides(refs, "cal"))
    names = [Path(p).name for p in products]
    short = "jw09999001001_01101_00001_nrca1"
    assert names == [f"{short}_{s}.fits" for s in ("dq_init", "saturation", "superbias", "refpix", "linearity",
                                                    "dark_current", "jump", "rate", "gain_scale")]
    assert all(Path(p).is_file() and Path(p).parent == data for p in products)
    with fits.open(products[-2]) as rate:
        assert abs(np.nanmedian(rate["SCI"].data) - SLOPE_DN_S) <= 0.01 * SLOPE_DN_S

    jump_products = run_pipeline(str(uncal), "uncal", "all", "nircam", jump_pipe=True,
                                 step_args=synthetic.offline_step_overrides(refs, "jump"))
    assert sorted(Path(p).name for p in jump_products) == sorted(
        f"{short}_{s}.fits" for s in ("jump", "0_ramp_fit", "1_ramp_fit", "fitopt"))
    jump = next(p for p in jump_products if p.endswith("_jump.fits"))
    with fits.open(jump) as hdul:
        assert hdul["GROUPDQ"].data[0, 3, 30, 30] & JUMP_DET
    ramp = next(p for p in jump_products if p.endswith("_0_ramp_fit.fits"))
    with fits.open(ramp) as hdul:
        assert abs(np.nanmedian(hdul["SCI"].data) - SLOPE_DN_S) <= 0.01 * SLOPE_DN_S
    assert transfer_files(tmp_path) == []
    assert list_locks() == []


def test_run_parallel_pipeline_six_files_two_workers_one_corrupt(broker, pipeline_config, start_worker, refs, tmp_path):
    start_worker(pipeline_config)
    start_worker(pipeline_config)
    data = tmp_path / "data"
    files = [str(synthetic.make_uncal(data / f"jw09999001001_01101_0000{i}_nrca1_uncal.fits")) for i in range(1, 7)]
    corrupt = files[3]
    synthetic.write_truncated_fits(files[3], corrupt + ".tmp")
    os.replace(corrupt + ".tmp", corrupt)

    outputs = run_parallel_pipeline(files, "uncal", "rate", "nircam", step_args=synthetic.offline_step_overrides(refs, "cal"))
    assert sorted(outputs) == sorted(f for f in files if f != corrupt)
    for path in outputs.values():
        with fits.open(path) as rate:
            assert abs(np.nanmedian(rate["SCI"].data) - SLOPE_DN_S) <= 0.01 * SLOPE_DN_S
    assert list(outputs.failures) == [corrupt]
    assert "BadInput" in outputs.failures[corrupt] and "jw09999001001_01101_00004_nrca1_uncal.fits" in outputs.failures[corrupt]
    assert transfer_files(tmp_path) == []
    assert list_locks() == []


def test_bad_input_gets_a_clear_error_and_the_worker_keeps_running(broker, pipeline_config, start_worker, refs, tmp_path):
    start_worker(pipeline_config)
    incoming = tmp_path / "transfer" / "incoming"
    incoming.mkdir(parents=True)
    good = synthetic.make_uncal(incoming / UNCAL)
    synthetic.write_truncated_fits(good, incoming / "jw09999001001_01101_00002_nrca1_uncal.fits")
    synthetic.write_garbage_file(incoming / "jw09999001001_01101_00003_nrca1_uncal.fits")
    synthetic.write_image_fits(incoming / "jw09999001001_01101_00004_nrca1_uncal.fits")
    outside = tmp_path / "secret_uncal.fits"
    outside.write_bytes(good.read_bytes())
    (incoming / "link_uncal.fits").symlink_to(outside)
    cal = synthetic.offline_step_overrides(refs, "cal")
    short = "jw09999001001_01101_00001_nrca1"

    cases = [
        (run_calwebb_detector1.send("jw_missing_uncal.fits", "jw_missing", "rate", "nircam", cal), "jw_missing_uncal.fits"),
        (run_calwebb_detector1.send("../secret_uncal.fits", "x", "rate", "nircam", cal), "../secret_uncal.fits"),
        (run_calwebb_detector1.send(str(outside), "x", "rate", "nircam", cal), str(outside)),
        (run_calwebb_detector1.send("link_uncal.fits", "x", "rate", "nircam", cal), "link_uncal.fits"),
        (run_calwebb_detector1.send(UNCAL, short, "rate", "wfirst", cal), "wfirst"),
        (run_calwebb_detector1.send(UNCAL, short, "sparkle", "nircam", cal), "sparkle"),
        (run_calwebb_detector1.send(UNCAL, short, "rate", "nircam", {**cal, "flat_field_x": {"skip": True}}), "flat_field_x"),
        (run_calwebb_detector1.send(UNCAL, short, "rate", "nircam", {**cal, "dark_current": {"skip": "True"}}), "skip"),
        (calwebb_detector1_save_jump.send(UNCAL, "nircam", step_args={"jump": {"rejection_threshold": "high"}}),
         "rejection_threshold"),
        (run_calwebb_detector1.send("jw09999001001_01101_00002_nrca1_uncal.fits", "t2", "rate", "nircam", cal),
         "jw09999001001_01101_00002_nrca1_uncal.fits"),
        (run_calwebb_detector1.send("jw09999001001_01101_00003_nrca1_uncal.fits", "t3", "rate", "nircam", cal),
         "jw09999001001_01101_00003_nrca1_uncal.fits"),
        (run_calwebb_detector1.send("jw09999001001_01101_00004_nrca1_uncal.fits", "t4", "rate", "nircam", cal),
         "ramp"),
    ]
    for message, named in cases:
        with pytest.raises(ResultFailure) as info:
            message.get_result(block=True, timeout=120_000)
        assert info.value.orig_exc_type == "BadInput", (named, info.value)
        assert named in info.value.orig_exc_msg, (named, info.value.orig_exc_msg)
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
    assert sorted(p.name for p in incoming.iterdir()) == sorted([UNCAL, "link_uncal.fits"] + [
        f"jw09999001001_01101_0000{i}_nrca1_uncal.fits" for i in (2, 3, 4)])  # inputs untouched, nothing lost
    assert [p for p in (tmp_path / "transfer" / "outgoing").glob("*")] == []


MONITOR = """
import sys
from jwql_dramatiq import synthetic
from jwql_dramatiq.shared_tasks import run_parallel_pipeline
refs = synthetic.make_reference_files(sys.argv[1])
print("sending", flush=True)
run_parallel_pipeline(sys.argv[2:], "uncal", "rate", "nircam", step_args=synthetic.offline_step_overrides(refs, "cal"))
"""


def test_sigint_during_run_parallel_pipeline_leaves_nothing_behind(broker, pipeline_config, start_worker, tmp_path,
                                                                    redis_client):
    import signal
    import subprocess
    import sys

    from jwql_dramatiq.broker import states
    from tests.conftest import REPO, wait_for

    start_worker(pipeline_config)
    data = tmp_path / "data"
    files = [str(synthetic.make_uncal(data / f"jw09999001001_01101_0000{i}_nrca1_uncal.fits")) for i in range(1, 5)]
    monitor = subprocess.Popen([sys.executable, "-c", MONITOR, str(tmp_path / "monitor-refs"), *files], cwd=REPO,
                               env={**os.environ, "JWQL_DRAMATIQ_CONFIG": str(pipeline_config)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(states.list_tasks()) == 4 and any(t.state == states.RUNNING for t in states.list_tasks()),
                 60, "all four sent and one running")
        monitor.send_signal(signal.SIGINT)
        output, _ = monitor.communicate(timeout=60)
    finally:
        monitor.kill()
        monitor.wait()
    assert "KeyboardInterrupt" in output
    tasks = states.list_tasks()
    assert len(tasks) == 4 and {t.state for t in tasks} <= {states.REVOKED, states.SUCCEEDED}
    assert redis_client.llen(f"{broker.namespace}:{broker.jwql_config.queue_name}") == 0  # nothing left queued
    assert list_locks() == []
    # The running task's child is killed, so nothing it would have published appears later.
    wait_for(lambda: all(t.state in states.FINAL_STATES for t in states.list_tasks()), 10, "every task to end")
    assert transfer_files(tmp_path) == []
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0


def test_a_copy_back_failure_and_the_bound_fail_their_files_alone(broker, pipeline_config, start_worker, refs,
                                                                 tmp_path):
    import time

    from jwql_dramatiq.locks import lock
    from tests.conftest import wait_for

    start_worker(pipeline_config)
    data = tmp_path / "data"
    files = [str(synthetic.make_uncal(data / f"jw09999001001_01101_0000{i}_nrca1_uncal.fits")) for i in range(1, 5)]
    shorts = [Path(f).name.replace("_uncal.fits", "") for f in files]
    cal = synthetic.offline_step_overrides(refs, "cal")
    # Given: file 1's product cannot be copied back (a directory stands where it would go), "all"
    # is asked for among other names, and file 3's run is held up: its job lock is taken here
    (data / f"{shorts[0]}_rate.fits").mkdir()
    held = lock(f"job:{shorts[2]}", client=broker.client)
    assert held.acquire(blocking=False)
    bound_s = 45.0
    try:
        # When: the batch runs with a bound that file 3 (and file 4, queued behind it) cannot meet
        started = time.monotonic()
        outputs = run_parallel_pipeline(files, "uncal", ["rate", "all"], "nircam", step_args=cal, timeout=bound_s)
        elapsed_s = time.monotonic() - started
    finally:
        held.release()
    # Then: the call returns at its bound with file 2's products; the others failed alone, each saying why
    assert bound_s - 1 <= elapsed_s < bound_s + 10
    assert list(outputs) == [files[1]]
    assert sorted(Path(p).name.replace(f"{shorts[1]}_", "") for p in outputs[files[1]]) == sorted(
        f"{s}.fits" for s in ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump",
                              "rate", "gain_scale"))
    assert all(Path(p).is_file() and Path(p).parent == data for p in outputs[files[1]])
    assert sorted(outputs.failures) == sorted([files[0], files[2], files[3]])
    assert "could not be copied back" in outputs.failures[files[0]] and "rate.fits" in outputs.failures[files[0]]
    assert all(f"no result within the bound of {bound_s:g} s; revoked" in outputs.failures[f] for f in files[2:])
    # ... and once the revoked run is gone, nothing is left in the transfer directory or locked
    wait_for(lambda: transfer_files(tmp_path) == [] and list_locks() == [], 30, "the transfer files and locks to go")
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
