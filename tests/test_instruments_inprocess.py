"""calwebb_detector1 on synthetic exposures of all five instruments, in this process, with no CRDS server.

Each instrument's small subarray exposure (:mod:`jwql_dramatiq.synthetic`) has a known
rate (50 DN/s) and one cosmic ray; its neutral references keep the calibrated rate equal
to the injected one, so the checks are on values: the median rate of the light-sensitive
pixels within 1 %, the cosmic ray flagged JUMP_DET. The CRDS environment comes from the
``crds_path`` fixture of ``test_pipeline_inprocess``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jwql_dramatiq import synthetic
from jwql_dramatiq.errors import BadInput
from jwql_dramatiq.pipeline import steps
from jwql_dramatiq.pipeline.detector1 import (
    DARK_INPUT_SKIPS_MIRI,
    DARK_INPUT_SKIPS_NEAR_IR,
    calwebb_detector1_save_jump,
    run_calwebb_detector1,
)
from tests.test_pipeline_inprocess import crds_path  # noqa: F401  (module-scoped autouse: offline CRDS)

JUMP_DET = 4
RATE = synthetic.DEFAULT_RATE_DN_PER_S
NEAR_IR_PRODUCTS = ["dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump", "rate",
                    "gain_scale"]
#: Products of "all" per instrument: the jwql step list minus the steps jwst 3.0 skips by default.
PRODUCTS: dict[str, list[str]] = {
    "nircam": NEAR_IR_PRODUCTS, "niriss": NEAR_IR_PRODUCTS, "fgs": NEAR_IR_PRODUCTS,
    "nirspec": ["group_scale", *NEAR_IR_PRODUCTS],
    "miri": ["group_scale", "dq_init", "saturation", "lastframe", "reset", "linearity", "rscd", "dark_current",
             "refpix", "jump", "rate", "gain_scale"],
}
#: The last step before dark subtraction: its product stands in for a ``*_dark.fits`` input.
PRE_DARK_STEP = {"nircam": "linearity", "niriss": "linearity", "fgs": "linearity", "nirspec": "linearity",
                 "miri": "rscd"}
INSTRUMENTS = list(PRODUCTS)
ALIAS_TO_KEYWORD = {step: key for key, step in steps.PIPE_KEYWORDS.items()}


def short_of(instrument: str) -> str:
    return synthetic.exposure_file_name(instrument).rsplit("_", 1)[0]


def light_pixels(instrument: str) -> Any:
    det = synthetic.detector_for(instrument)
    return ~synthetic.reference_pixel_mask(det, det.small)


def median_rate(path: str, instrument: str) -> float:
    import numpy as np
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = hdul["SCI"].data
        return float(np.nanmedian(data[..., light_pixels(instrument)]))


@pytest.fixture(scope="module", params=INSTRUMENTS)
def inst(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One instrument's synthetic exposure and neutral references, made once per module."""
    name: str = request.param
    root = tmp_path_factory.mktemp(f"synthetic_{name}")
    nints = synthetic.DEFAULT_SHAPE[name][0]
    uncal = synthetic.make_exposure(name, root / "in" / synthetic.exposure_file_name(name))
    refs = synthetic.make_instrument_references(name, root / "refs", nints=nints)
    return {"name": name, "uncal": uncal, "refs": refs, "short": short_of(name), "nints": nints}


@pytest.fixture(scope="module")
def cal(inst: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The cal path with "all" plus rateints."""
    root = tmp_path_factory.mktemp(f"cal_{inst['name']}")
    return run_calwebb_detector1(inst["uncal"], inst["short"], ["all", "rateints"], inst["name"], root / "w",
                                 root / "o", step_args=synthetic.instrument_step_overrides(inst["name"], inst["refs"]),
                                 max_cores="none")


@pytest.fixture(scope="module")
def jump(inst: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """The save-jump path with ramp_fit and fitopt."""
    root = tmp_path_factory.mktemp(f"jump_{inst['name']}")
    return calwebb_detector1_save_jump(inst["uncal"], inst["name"], root / "w", root / "o",
                                       step_args=synthetic.instrument_step_overrides(inst["name"], inst["refs"], "jump"),
                                       max_cores="none")


def cosmic_ray_flagged(path: str, instrument: str) -> bool:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return bool(hdul["GROUPDQ"].data[synthetic.DEFAULT_COSMIC_RAY[instrument]] & JUMP_DET)


# --- the cal path -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cal_all_products_rate_and_cosmic_ray(inst: dict[str, Any], cal: dict[str, str]) -> None:
    import numpy as np
    from astropy.io import fits

    name = inst["name"]
    assert list(cal) == [*PRODUCTS[name], "rateints"]
    assert all(Path(p).is_file() for p in cal.values())
    assert median_rate(cal["rate"], name) == pytest.approx(RATE, rel=0.01)
    assert median_rate(cal["gain_scale"], name) == pytest.approx(RATE, rel=0.01)
    assert fits.getheader(cal["gain_scale"])["S_GANSCL"] == "SKIPPED"  # the synthetic GAIN has no GAINFACT
    assert cosmic_ray_flagged(cal["jump"], name)
    det = synthetic.detector_for(name)
    with fits.open(cal["rateints"]) as hdul:
        assert hdul["SCI"].data.shape == (inst["nints"], det.small.ysize, det.small.xsize)
        for integration in range(inst["nints"]):
            rate = float(np.nanmedian(hdul["SCI"].data[integration][light_pixels(name)]))
            assert rate == pytest.approx(RATE, rel=0.01), f"integration {integration}"
        integ, _group, row, col = synthetic.DEFAULT_COSMIC_RAY[name]
        assert hdul["DQ"].data[integ, row, col] & JUMP_DET


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cal_headers_record_every_step(inst: dict[str, Any], cal: dict[str, str]) -> None:
    from astropy.io import fits

    header = fits.getheader(cal["rate"])
    for step in PRODUCTS[inst["name"]]:
        if step == "gain_scale":
            continue  # after ramp fitting; its own product is checked above
        assert header[ALIAS_TO_KEYWORD[step]] in ("COMPLETE", "SKIPPED"), step
    if inst["name"] == "nirspec":  # FRMDIVSR != NFRAMES: group_scale really rescaled the ramp
        assert header["S_GRPSCL"] == "COMPLETE"
        assert fits.getheader(cal["group_scale"])["S_GRPSCL"] == "COMPLETE"
    if inst["name"] == "miri":
        for key in ("S_LASTFR", "S_RESET", "S_RSCD", "S_DARK"):
            assert header[key] == "COMPLETE", key


# --- the save-jump path -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_jump_path_products_rate_and_cosmic_ray(inst: dict[str, Any], jump: dict[str, str | None]) -> None:
    from astropy.io import fits

    name = inst["name"]
    assert set(jump) == set(steps.JUMP_OUTPUTS) and all(p and Path(p).is_file() for p in jump.values())
    assert median_rate(str(jump["0_ramp_fit"]), name) == pytest.approx(RATE, rel=0.01)
    assert median_rate(str(jump["1_ramp_fit"]), name) == pytest.approx(RATE, rel=0.01)
    assert cosmic_ray_flagged(str(jump["jump"]), name)
    det = synthetic.detector_for(name)
    assert fits.getdata(str(jump["1_ramp_fit"]), "SCI").shape == (inst["nints"], det.small.ysize, det.small.xsize)
    if name == "nirspec":
        assert fits.getheader(str(jump["jump"]))["S_GRPSCL"] == "COMPLETE"


# --- resuming, and the *_dark.fits skip list -------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cal_resumes_after_dark(inst: dict[str, Any], cal: dict[str, str], tmp_path: Path) -> None:
    name, short = inst["name"], inst["short"]
    dark = tmp_path / "in" / f"{short}_dark.fits"
    dark.parent.mkdir()
    dark.write_bytes(Path(cal["dark_current"]).read_bytes())
    result = run_calwebb_detector1(dark, short, "all", name, tmp_path / "w", tmp_path / "o",
                                   step_args=synthetic.instrument_step_overrides(name, inst["refs"]), max_cores="none")
    after = PRODUCTS[name][PRODUCTS[name].index("dark_current") + 1:]
    assert list(result) == after
    assert median_rate(result["rate"], name) == pytest.approx(RATE, rel=0.01)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_jump_path_dark_input_skips_pre_dark_steps(inst: dict[str, Any], tmp_path: Path) -> None:
    from astropy.io import fits

    name, short = inst["name"], inst["short"]
    pre = run_calwebb_detector1(inst["uncal"], short, PRE_DARK_STEP[name], name, tmp_path / "w", tmp_path / "pre",
                                step_args=synthetic.instrument_step_overrides(name, inst["refs"]), max_cores="none")
    dark = tmp_path / "in" / f"{short}_dark.fits"
    dark.parent.mkdir()
    dark.write_bytes(Path(pre[PRE_DARK_STEP[name]]).read_bytes())
    result = calwebb_detector1_save_jump(dark, name, tmp_path / "w", tmp_path / "o",
                                         step_args=synthetic.instrument_step_overrides(name, inst["refs"], "jump"),
                                         max_cores="none")
    header = fits.getheader(str(result["jump"]))
    skips = DARK_INPUT_SKIPS_MIRI if name == "miri" else DARK_INPUT_SKIPS_NEAR_IR
    for step in skips:
        assert header[ALIAS_TO_KEYWORD[step]] == "SKIPPED", step
    assert header["S_DARK"] == "COMPLETE" and header["S_JUMP"] == "COMPLETE"
    assert median_rate(str(result["0_ramp_fit"]), name) == pytest.approx(RATE, rel=0.01)
    assert cosmic_ray_flagged(str(result["jump"]), name)


# --- steps jwst skips by default -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_new_step_keywords_resume() -> None:
    header = {"S_MIREMI": "COMPLETE", "S_CHGMIG": "COMPLETE", "S_PCTFRM": "SKIPPED", "S_CLNFNS": "COMPLETE"}
    assert steps.completed_steps(header) == {"emicorr", "charge_migration", "clean_flicker_noise"}
    assert steps.steps_to_run("nirspec", {"charge_migration"}) == ["jump", "picture_frame", "clean_flicker_noise",
                                                                    "rate", "gain_scale"]
    assert steps.steps_to_run("miri", {"emicorr"})[0] == "saturation"
    assert steps.steps_to_run("miri", {"clean_flicker_noise"}) == ["rate", "gain_scale"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_default_skipped_step_needs_skip_false(tmp_path: Path) -> None:
    from astropy.io import fits

    name = "nircam"
    uncal = synthetic.make_exposure(name, tmp_path / "in" / synthetic.exposure_file_name(name))
    refs = synthetic.make_instrument_references(name, tmp_path / "refs")
    args = synthetic.instrument_step_overrides(name, refs)
    with pytest.raises(BadInput, match="'persistence' cannot be produced.*skipped by jwst's default"):
        run_calwebb_detector1(uncal, short_of(name), "persistence", name, tmp_path / "w", tmp_path / "o",
                              step_args=args, max_cores="none")
    args = steps.merge_step_args(args, {"persistence": {"skip": False, "persistence_time": 600}})
    result = run_calwebb_detector1(uncal, short_of(name), "persistence", name, tmp_path / "w", tmp_path / "o",
                                   step_args=args, max_cores="none")
    assert fits.getheader(result["persistence"])["S_PERSIS"] == "COMPLETE"


# --- full frames and deployment references ---------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["nircam", "miri"])
def test_full_frame_exposure_is_fast(name: str, tmp_path: Path) -> None:
    from astropy.io import fits

    t0 = time.monotonic()
    path = synthetic.make_exposure(name, tmp_path / synthetic.exposure_file_name(name), "full", nints=2, ngroups=5)
    elapsed_s = time.monotonic() - t0
    det = synthetic.detector_for(name)
    header = fits.getheader(path, "SCI")
    assert (header["NAXIS1"], header["NAXIS2"]) == (det.full_nx, det.full_ny)
    primary = fits.getheader(path)
    assert primary["SUBARRAY"] == "FULL" and primary["SUBSIZE1"] == det.full_nx and primary["SUBSIZE2"] == det.full_ny
    assert elapsed_s < 30


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deployment_step_args_cover_every_instrument_and_are_cached(tmp_path: Path) -> None:
    from astropy.io import fits

    from jwql_dramatiq.pipeline.specs import check_step_args_against_specs

    first = synthetic.deployment_step_args(tmp_path / "refs")
    assert set(first) == set(INSTRUMENTS)
    for name, args in first.items():
        checked = steps.validate_step_args(args, "cal")
        check_step_args_against_specs(checked, "cal")
        det = synthetic.detector_for(name)
        dark = fits.getheader(args["dark_current"]["override_dark"], "SCI")
        assert (dark["NAXIS1"], dark["NAXIS2"]) == (det.full_nx, det.full_ny)
        assert fits.getheader(args["dq_init"]["override_mask"])["INSTRUME"] == det.instrument
    t0 = time.monotonic()
    assert synthetic.deployment_step_args(tmp_path / "refs") == first
    assert time.monotonic() - t0 < 2.0
