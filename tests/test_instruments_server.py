"""Every instrument through a real worker, as JWQL's monitors call it, on an offline deployment.

One worker serves the module. Its config carries deployment-level ``step_args`` (full-frame
references per instrument, and each small subarray's own, as CRDS would choose them), so every
call below is a monitor's call character for character, with no override in it:

* JWQL's ``test_redis_celery`` scenario for each instrument: ``run_pipeline(f, "uncal", "all",
  instrument)`` and its ``jump_pipe=True`` twin, checked against the injected signal;
* each monitor's ``run_parallel_pipeline`` call for each instrument it serves (dark, bias,
  readnoise, bad pixel, cosmic ray with a repeated name in its chunk).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from jwql_dramatiq import synthetic
from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.embedded import WorkerProcess
from jwql_dramatiq.locks import list_locks
from jwql_dramatiq.shared_tasks import run_parallel_pipeline, run_pipeline
from tests.conftest import _DATABASES, REPO, base_config

pytestmark = [pytest.mark.slow]

INSTRUMENTS = ("nircam", "niriss", "fgs", "nirspec", "miri")
RATE = synthetic.DEFAULT_RATE_DN_PER_S
JUMP_DET = 4
#: Products of "all" on the cal path: the jwql step list less the steps jwst 3.0 skips by default.
NEAR_IR_ALL = ["dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump", "rate", "gain_scale"]
CAL_ALL = {"nircam": NEAR_IR_ALL, "niriss": NEAR_IR_ALL, "fgs": NEAR_IR_ALL, "nirspec": ["group_scale", *NEAR_IR_ALL],
           "miri": ["group_scale", "dq_init", "saturation", "lastframe", "reset", "linearity", "rscd", "dark_current",
                    "refpix", "jump", "rate", "gain_scale"]}
#: The last step before dark subtraction: its product stands in for a monitor's ``*_dark.fits`` input.
PRE_DARK_STEP = {"nircam": "linearity", "niriss": "linearity", "fgs": "linearity", "nirspec": "linearity",
                 "miri": "rscd"}
#: Instruments each monitor serves (jwql's monitors).
BIAS_INSTRUMENTS = ("nircam", "niriss", "nirspec")


def offline_deployment(directory: Path) -> dict[str, Any]:
    """The worker-side ``step_args`` of an offline site: full-frame references per instrument, plus
    each small test subarray's own (jwst does not cut DARK and RESET out of a full frame)."""
    return {**synthetic.deployment_step_args(directory / "full"), **synthetic.subarray_step_args(directory / "small")}


@pytest.fixture(scope="module")
def site(redis_server, tmp_path_factory):
    """One offline deployment: a flushed database, a config with deployment step_args, one real worker."""
    root = tmp_path_factory.mktemp("site")
    db = next(_DATABASES)
    client = redis_server.client(db)
    client.flushdb()
    config = base_config(redis_server.url(db), root, crds_path=str(root / "crds"), crds_offline_stub=True,
                         preload=["jwst.pipeline"], warm_up=True, wait_timeout_s=240,
                         step_args=offline_deployment(root / "refs"))
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    broker = setup_broker(load_config(config_path))
    worker = WorkerProcess(config_path, root / "worker.log", cwd=REPO)
    try:
        if not worker.wait_booted(120):
            pytest.fail(f"the worker did not boot:\n{worker.log()}")
        yield root
    finally:
        worker.stop()
        broker.close()
        client.flushdb()
        client.close()


def light(instrument: str) -> Any:
    det = synthetic.detector_for(instrument)
    return ~synthetic.reference_pixel_mask(det, det.small)


def median_rate(path: str, instrument: str) -> float:
    with fits.open(path) as hdul:
        return float(np.nanmedian(hdul["SCI"].data[..., light(instrument)]))


def cosmic_ray_flagged(jump_path: str, instrument: str) -> bool:
    with fits.open(jump_path) as hdul:
        return bool(hdul["GROUPDQ"].data[synthetic.DEFAULT_COSMIC_RAY[instrument]] & JUMP_DET)


def nothing_left(site: Path) -> None:
    assert list_locks() == []
    assert [p for p in (site / "transfer").rglob("*") if p.is_file() or p.name.startswith(".staging.")] == []


def exposure(site: Path, instrument: str, directory: str, number: int = 1, **kwargs: Any) -> str:
    name = synthetic.exposure_file_name(instrument, number)
    return str(synthetic.make_exposure(instrument, site / directory / instrument / name, **kwargs))


def by_suffix(paths: list[str]) -> dict[str, str]:
    return {Path(p).name.split("_", 4)[4][: -len(".fits")]: p for p in paths}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_jwql_test_script_scenario_offline_with_no_override_in_the_call(site, instrument):
    # Given: an uncal exposure; the worker's config, not the call, knows the references
    uncal = exposure(site, instrument, "scenario")
    # When: JWQL's test_redis_celery calls, unchanged
    cal = by_suffix(run_pipeline(uncal, "uncal", "all", instrument))
    jump = by_suffix(run_pipeline(uncal, "uncal", "all", instrument, jump_pipe=True))
    # Then: every product of both paths, checked against the injected rate and cosmic ray
    assert list(cal) == CAL_ALL[instrument]
    assert median_rate(cal["rate"], instrument) == pytest.approx(RATE, rel=0.01)
    assert cosmic_ray_flagged(cal["jump"], instrument)
    assert sorted(jump) == ["0_ramp_fit", "1_ramp_fit", "fitopt", "jump"]
    assert median_rate(jump["0_ramp_fit"], instrument) == pytest.approx(RATE, rel=0.01)
    assert median_rate(jump["1_ramp_fit"], instrument) == pytest.approx(RATE, rel=0.01)
    assert cosmic_ray_flagged(jump["jump"], instrument)
    assert all(Path(p).parent == Path(uncal).parent for p in [*cal.values(), *jump.values()])
    if instrument == "nirspec":  # FRMDIVSR != NFRAMES: group_scale really ran
        assert fits.getheader(cal["rate"])["S_GRPSCL"] == "COMPLETE"
    nothing_left(site)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_dark_monitor_call(site, instrument):
    # Given: a *_dark.fits input (calibrated up to dark subtraction), made through the server itself
    uncal = exposure(site, instrument, "dark")
    pre_dark = run_pipeline(uncal, "uncal", PRE_DARK_STEP[instrument], instrument)
    dark_input = pre_dark.replace(f"_{PRE_DARK_STEP[instrument]}.fits", "_dark.fits")
    os.replace(pre_dark, dark_input)
    suffix = "rateints" if instrument == "miri" else "rate"
    # When: dark_monitor.py's call
    outputs = run_parallel_pipeline([dark_input], "dark", [suffix], instrument,
                                    step_args={"dark_current": {"skip": True}})
    # Then: the product the monitor looks for on disk
    expected = dark_input.replace("_dark", f"_{suffix}")
    assert outputs == {dark_input: expected} and outputs.failures == {}
    assert median_rate(expected, instrument) == pytest.approx(RATE, rel=0.01)
    if instrument == "miri":
        assert fits.getdata(expected, "SCI").shape[0] == synthetic.DEFAULT_SHAPE["miri"][0]
    nothing_left(site)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", BIAS_INSTRUMENTS)
def test_bias_monitor_call(site, instrument):
    # Given: *_uncal_0thgroup.fits files holding the first group (extract_zeroth_group)
    files = []
    for number in (1, 2):
        full = exposure(site, instrument, "bias", number, ngroups=1, cosmic_ray=None)
        zeroth = full.replace("_uncal.fits", "_uncal_0thgroup.fits")
        os.replace(full, zeroth)
        files.append(zeroth)
    # When: bias_monitor.py's call
    outputs = run_parallel_pipeline(files, "uncal_0thgroup", "refpix", instrument)
    # Then: one refpix product per file, a single path each
    assert outputs.failures == {} and sorted(outputs) == sorted(files)
    for path in files:
        assert outputs[path] == path.replace("_uncal_0thgroup", "_refpix")
        assert refpix_reached(fits.getheader(outputs[path]), instrument)
        assert fits.getdata(outputs[path], "SCI").shape[1] == 1
    nothing_left(site)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_readnoise_monitor_call(site, instrument):
    files = [exposure(site, instrument, "readnoise", number) for number in (1, 2)]
    outputs = run_parallel_pipeline(files, "uncal", "refpix", instrument)
    assert outputs.failures == {} and sorted(outputs) == sorted(files)
    for path in files:
        assert outputs[path] == path.replace("_uncal", "_refpix")
        with fits.open(outputs[path]) as hdul:
            assert refpix_reached(hdul[0].header, instrument)
            assert hdul["SCI"].data.shape[:2] == synthetic.DEFAULT_SHAPE[instrument]
    nothing_left(site)


def refpix_reached(header: Any, instrument: str) -> bool:
    """The product went through refpix: jwst runs it, except on MIRI subarrays, where it marks it skipped
    after dark subtraction (the step before it) ran."""
    if instrument == "miri":
        return header["S_DARK"] == "COMPLETE" and header["S_REFPIX"] in ("COMPLETE", "SKIPPED")
    return header["S_REFPIX"] == "COMPLETE"


def ramp_exts(nints: int) -> defaultdict:
    """The flats' and cosmic ray monitor's lists: the jump and the rate, per integration when nints > 1."""
    return defaultdict(lambda: ["jump", "1_ramp_fit" if nints > 1 else "0_ramp_fit"])


def dark_exts(nints: int) -> defaultdict:
    """The bad pixel monitor's list for darks: ``1_ramp_fit`` too when nints > 1."""
    return defaultdict(lambda: ["jump", "fitopt", "0_ramp_fit", *(["1_ramp_fit"] if nints > 1 else [])])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_bad_pixel_monitor_calls(site, instrument):
    nints = synthetic.DEFAULT_SHAPE[instrument][0]
    flats = [exposure(site, instrument, "flats", number) for number in (1, 2)]
    darks = [exposure(site, instrument, "darks", number) for number in (1, 2)]
    # When: bad_pixel_monitor.py's two calls (flats, then darks)
    flat_out = run_parallel_pipeline(flats, "uncal", ramp_exts(nints), instrument, jump_pipe=True)
    dark_out = run_parallel_pipeline(darks, "uncal", dark_exts(nints), instrument, jump_pipe=True)
    # Then: the products in the order the monitor indexes them
    for path in flats:
        names = [Path(p).name for p in flat_out[path]]
        short = Path(path).name.replace("_uncal.fits", "")
        assert names == [f"{short}_{e}.fits" for e in ramp_exts(nints)[short]]
        assert median_rate(flat_out[path][1], instrument) == pytest.approx(RATE, rel=0.01)
    for path in darks:
        short = Path(path).name.replace("_uncal.fits", "")
        assert [Path(p).name for p in dark_out[path]] == [f"{short}_{e}.fits" for e in dark_exts(nints)[short]]
        assert median_rate(dark_out[path][2], instrument) == pytest.approx(RATE, rel=0.01)
    assert flat_out.failures == {} and dark_out.failures == {}
    nothing_left(site)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_cosmic_ray_monitor_chunk_with_a_repeated_name(site, instrument):
    nints = synthetic.DEFAULT_SHAPE[instrument][0]
    chunk = [exposure(site, instrument, "cosmic", number) for number in (1, 2, 3)]
    chunk.insert(2, chunk[0])  # a chunk of names can repeat one
    outputs = run_parallel_pipeline(chunk, "uncal", ramp_exts(nints), instrument, jump_pipe=True, timeout=200)
    assert outputs.failures == {} and sorted(outputs) == sorted(set(chunk))
    for path in chunk:
        jump, rate = outputs[path][0], outputs[path][1]
        assert cosmic_ray_flagged(jump, instrument)
        assert median_rate(rate, instrument) == pytest.approx(RATE, rel=0.01)
    nothing_left(site)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("instrument", ["nircam", "miri"])
def test_full_frame_job_per_detector_family(site, instrument):
    # Given: a full frame (2048x2048 near-IR; 1024 rows x 1032 columns MIRI) and the site's full-frame references
    det = synthetic.detector_for(instrument)
    uncal = str(synthetic.make_exposure(instrument, site / "full" / instrument / synthetic.exposure_file_name(instrument),
                                        subarray="full"))
    # When: a monitor's call
    products = by_suffix(run_pipeline(uncal, "uncal", ["jump", "rate"], instrument, timeout=540))
    # Then: the full-frame rate and the cosmic ray, as on the small subarrays
    full = det.full_frame()
    light_full = ~synthetic.reference_pixel_mask(det, full)
    with fits.open(products["rate"]) as hdul:
        assert hdul["SCI"].data.shape == (full.ysize, full.xsize)
        assert float(np.nanmedian(hdul["SCI"].data[light_full])) == pytest.approx(RATE, rel=0.01)
    assert cosmic_ray_flagged(products["jump"], instrument)
    nothing_left(site)
