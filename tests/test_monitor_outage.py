"""A monitor rides through a Redis outage within its bound, and a repeated name is calibrated once.

Real Detector1 jobs through a real worker, on a private redis-server with append-only
persistence that each test stops (SIGKILL) and starts again on the same port.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jwql_dramatiq import synthetic
from jwql_dramatiq.broker.admin import queue_lengths
from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.broker.control import list_workers
from jwql_dramatiq.embedded import RedisServer
from jwql_dramatiq.errors import RedisUnavailable
from jwql_dramatiq.locks import list_locks
from jwql_dramatiq.shared_tasks import run_parallel_pipeline, run_pipeline
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow]

#: How long Redis stays down, seconds (the issue's figure).
OUTAGE_S = 5.0
#: The lease of the monitors' file locks in these tests, seconds.
LEASE_S = 3.0
SLOPE_DN_S = 50.0


def uncal_name(i: int) -> str:
    return f"jw09999001001_01101_{i:05d}_nrca1_uncal.fits"


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, str]:
    return synthetic.make_reference_files(tmp_path_factory.mktemp("refs"))


@pytest.fixture
def aof_redis(tmp_path):
    server = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def outage_setup(aof_redis, make_config, start_worker, tmp_path):
    config_path = make_config(redis_url=aof_redis.url(0), crds_path=str(tmp_path / "crds"), crds_offline_stub=True,
                              preload=["jwst.pipeline"], warm_up=True, lock_lease_s=LEASE_S, heartbeat_timeout_s=10)
    broker = setup_broker(load_config(config_path))
    start_worker(config_path)
    yield broker
    broker.close()


def stop_redis(server: RedisServer) -> None:
    server.proc.kill()
    server.proc.wait()


def transfer_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "transfer").rglob("*") if p.is_file()]


def median_rate(path: str) -> float:
    with fits.open(path) as hdul:
        return float(np.nanmedian(hdul["SCI"].data))


def worker_idle(broker) -> bool:
    config = broker.jwql_config
    workers = list_workers(broker.client, config.namespace, config.heartbeat_timeout_s)
    queues = queue_lengths(broker)
    return all(not w.current_message for w in workers if w.alive) and all(q.ready == 0 for q in queues)


@pytest.mark.timeout(240)
def test_monitor_that_starts_during_an_outage_finishes_within_its_bound(outage_setup, aof_redis, refs, tmp_path):
    # Given: Redis is down when the monitor makes its first call, and comes back after 5 s
    uncal = synthetic.make_uncal(tmp_path / "data" / uncal_name(1))
    stop_redis(aof_redis)
    restarter = threading.Timer(OUTAGE_S, aof_redis.start)
    restarter.start()
    # When
    started = time.monotonic()
    try:
        rate = run_pipeline(str(uncal), "uncal", "rate", "nircam", step_args=synthetic.offline_step_overrides(refs, "cal"),
                            timeout=120)
    finally:
        restarter.join()
    elapsed_s = time.monotonic() - started
    # Then: it waited the outage out and got its product, leaving nothing behind
    assert OUTAGE_S * 0.9 <= elapsed_s < 120
    assert abs(median_rate(rate) - SLOPE_DN_S) <= 0.01 * SLOPE_DN_S
    assert list_locks() == [] and transfer_files(tmp_path) == []


@pytest.mark.timeout(300)
def test_outage_in_the_middle_of_a_ten_file_batch_loses_nothing(outage_setup, aof_redis, refs, tmp_path):
    # Given: a batch of 10 files in flight
    data = tmp_path / "data"
    files = [str(synthetic.make_uncal(data / uncal_name(i))) for i in range(1, 11)]
    outcome: dict = {}

    def batch() -> None:
        try:
            outcome["outputs"] = run_parallel_pipeline(files, "uncal", "rate", "nircam", timeout=240,
                                                       step_args=synthetic.offline_step_overrides(refs, "cal"))
        except BaseException as e:  # reported by the assertions below
            outcome["error"] = e

    runner = threading.Thread(target=batch)
    runner.start()
    try:
        wait_for(lambda: len(list(data.glob("*_rate.fits"))) >= 2, 120, "the first two products")
        # When: Redis is killed for 5 s in the middle of it
        stop_redis(aof_redis)
        done_at_kill = len(list(data.glob("*_rate.fits")))
        time.sleep(OUTAGE_S)  # the outage itself, not a wait for a result
        aof_redis.start()
    finally:
        runner.join(240)
    # Then: every file has its product, and nothing is left behind
    assert "error" not in outcome, outcome.get("error")
    outputs = outcome["outputs"]
    assert done_at_kill < len(files)
    assert sorted(outputs) == sorted(files) and outputs.failures == {}
    assert all(abs(median_rate(outputs[f]) - SLOPE_DN_S) <= 0.01 * SLOPE_DN_S for f in files)
    assert list_locks() == [] and transfer_files(tmp_path) == []


@pytest.mark.timeout(240)
def test_bound_shorter_than_the_outage_ends_at_the_bound_and_leaves_nothing(outage_setup, aof_redis, refs, tmp_path):
    # Given: a batch with an 8 s bound; Redis dies after the first product and stays down past the bound
    bound_s = 8.0
    data = tmp_path / "data"
    files = [str(synthetic.make_uncal(data / uncal_name(i))) for i in range(1, 11)]
    outcome: dict = {}

    def batch() -> None:
        started = time.monotonic()
        try:
            run_parallel_pipeline(files, "uncal", "rate", "nircam", timeout=bound_s,
                                  step_args=synthetic.offline_step_overrides(refs, "cal"))
        except BaseException as e:
            outcome["error"] = e
        outcome["elapsed_s"] = time.monotonic() - started

    runner = threading.Thread(target=batch)
    runner.start()
    try:
        wait_for(lambda: list(data.glob("*_rate.fits")), 60, "the first product")
        stop_redis(aof_redis)
        runner.join(bound_s + 10)
    finally:
        if not runner.is_alive():
            aof_redis.start()
    # Then: the call ended at its bound with an error naming Redis and how long it tried
    assert not runner.is_alive()
    error = outcome.get("error")
    assert isinstance(error, RedisUnavailable), repr(error)
    assert f"127.0.0.1:{aof_redis.port}" in str(error) and "no answer" in str(error)
    assert outcome["elapsed_s"] <= bound_s + 1.5
    # ... and once Redis is back, no lock outlives its lease and the worker publishes nothing more
    wait_for(lambda: list_locks() == [], LEASE_S + 5, "the monitor's locks to lapse")
    wait_for(lambda: worker_idle(outage_setup), 120, "the worker to finish what was in flight")
    assert transfer_files(tmp_path) == []


@pytest.mark.timeout(240)
def test_repeated_name_in_one_chunk_is_calibrated_once_and_every_entry_gets_it(broker, make_config, start_worker,
                                                                             refs, tmp_path):
    # Given: a cosmic-ray-monitor-like chunk that lists one file twice, and a copy of it in another directory
    start_worker(make_config(crds_path=str(tmp_path / "crds"), crds_offline_stub=True, preload=["jwst.pipeline"],
                             warm_up=True))
    data = tmp_path / "data"
    first = str(synthetic.make_uncal(data / uncal_name(1)))
    second = str(synthetic.make_uncal(data / uncal_name(2)))
    elsewhere = str(synthetic.make_uncal(tmp_path / "other" / uncal_name(2)))
    chunk = [first, second, first, elsewhere]
    # When
    started = time.monotonic()
    outputs = run_parallel_pipeline(chunk, "uncal", "all", "nircam", jump_pipe=True, timeout=200,
                                    step_args=synthetic.offline_step_overrides(refs, "jump"))
    elapsed_s = time.monotonic() - started
    # Then: no wait on its own lock; every entry has all four products, next to its own input
    assert elapsed_s < 100
    assert outputs.failures == {} and sorted(outputs) == sorted(set(chunk))
    for entry in chunk:
        paths = outputs[entry]
        assert sorted(Path(p).name.split("_nrca1_")[1] for p in paths) == [
            "0_ramp_fit.fits", "1_ramp_fit.fits", "fitopt.fits", "jump.fits"]
        assert all(Path(p).is_file() and Path(p).parent == Path(entry).parent for p in paths)
    assert list_locks() == [] and transfer_files(tmp_path) == []
