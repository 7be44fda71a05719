"""The JWST pipeline functions, run in this process on synthetic NIRCam data with no CRDS server.

The CRDS environment (serverless URL, offline stub ``server_config`` in a temporary
cache) is set by a module fixture before anything imports jwst; every reference file is
given as an ``override_*`` step argument from :mod:`jwql_dramatiq.synthetic`. Tests marked
``slow`` run real jwst steps (one to three seconds each).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jwql_dramatiq import synthetic
from jwql_dramatiq.errors import BadInput, CrdsError, PipelineError
from jwql_dramatiq.pipeline import crds_env, files, guard, steps
from jwql_dramatiq.pipeline.detector1 import calwebb_detector1_save_jump, run_calwebb_detector1

SHORT = "jw09999001001_01101_00001_nrca1"
UNCAL_NAME = f"{SHORT}_uncal.fits"
SLOPE_DN_PER_GROUP = 50.0
NIRCAM_ALL = ["dq_init", "saturation", "superbias", "refpix", "linearity", "persistence", "dark_current",
              "charge_migration", "jump", "picture_frame", "clean_flicker_noise", "rate", "gain_scale"]
# "all" makes a product for each step that runs: jwst 3.0 skips persistence, charge_migration,
# picture_frame and clean_flicker_noise by default.
NIRCAM_PRODUCTS = ["dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump", "rate",
                   "gain_scale"]
ENV_KEYS = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_CONTEXT", "STPIPE_DISABLE_CRDS_STEPPARS", "MPLCONFIGDIR")
JUMP_DET = 4


def _snapshot_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ENV_KEYS}


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _clear_crds_caches() -> None:
    if "crds" in sys.modules:
        from crds.core import utils

        utils.clear_function_caches()


@pytest.fixture(scope="module", autouse=True)
def crds_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An offline CRDS cache with the stub, set in the environment before jwst is imported."""
    saved = _snapshot_env()
    root = tmp_path_factory.mktemp("crds_cache")
    crds_env.apply_crds_environment(root, offline_stub=True, mpl_config_dir=root.parent / "mpl")
    _clear_crds_caches()  # in case another module imported crds with other settings
    yield root
    _restore_env(saved)
    _clear_crds_caches()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One synthetic uncal, its reference files, and step overrides for both paths."""
    root = tmp_path_factory.mktemp("synthetic")
    uncal = synthetic.make_uncal(root / "in" / UNCAL_NAME, slope_dn_per_group=SLOPE_DN_PER_GROUP)
    refs = synthetic.make_reference_files(root / "refs")
    return {"uncal": uncal, "refs": refs, "root": root}


def cal_args(data: dict[str, Any], **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return steps.merge_step_args(synthetic.offline_step_overrides(data["refs"], "cal"), extra)


def jump_args(data: dict[str, Any], **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return steps.merge_step_args(synthetic.offline_step_overrides(data["refs"], "jump"), extra)


def leftovers(work_dir: Path) -> list[str]:
    return sorted(p.name for p in work_dir.glob(f"{SHORT}*")) if work_dir.exists() else []


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(scope="module")
def cal_all(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The cal path with "all" plus rateints, run once for the module."""
    root = tmp_path_factory.mktemp("cal_all")
    result = run_calwebb_detector1(data["uncal"], SHORT, ["all", "rateints"], "NIRCam", root / "work",
                                   root / "out", step_args=cal_args(data), max_cores="none")
    return {"result": result, "root": root}


@pytest.fixture(scope="module")
def jump_all(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The save-jump path with its defaults (including max_cores="all"), run once for the module."""
    root = tmp_path_factory.mktemp("jump_all")
    result = calwebb_detector1_save_jump(data["uncal"], "nircam", root / "work", root / "out",
                                         step_args=jump_args(data))
    return {"result": result, "root": root}


# --- pure checks (no jwst) -------------------------------------------------------------------


def test_validate_instrument_normalises_and_refuses() -> None:
    assert steps.validate_instrument("NIRCam") == "nircam"
    with pytest.raises(BadInput, match="unknown instrument 'wfc3'"):
        steps.validate_instrument("wfc3")


def test_validate_outputs_expands_all_per_instrument() -> None:
    assert steps.validate_outputs("nircam", "all") == NIRCAM_ALL
    assert "persistence" not in steps.validate_outputs("nirspec", "all")
    assert steps.validate_outputs("miri", ["rate", "all"])[-1] == "gain_scale"
    assert steps.validate_outputs("nircam", ["refpix", "refpix"]) == ["refpix"]
    assert steps.validate_outputs("nircam", "all", pipeline="jump") == list(steps.JUMP_OUTPUTS)
    with pytest.raises(BadInput, match="unknown output extension 'rscd' for nircam"):
        steps.validate_outputs("nircam", ["rate", "rscd"])


def test_validate_step_args_names_step_and_key() -> None:
    assert steps.validate_step_args({"dark_current": {"skip": True}}) == {"dark_current": {"skip": True}}
    with pytest.raises(BadInput, match=r"step_args\['dark_current'\]\['skip'\] must be a bool"):
        steps.validate_step_args({"dark_current": {"skip": "True"}})
    with pytest.raises(BadInput, match="unknown step 'ramp_fit'.*'rate'"):
        steps.validate_step_args({"ramp_fit": {}}, pipeline="cal")
    with pytest.raises(BadInput, match="unknown step 'rate'.*'ramp_fit'"):
        steps.validate_step_args({"rate": {}}, pipeline="jump")
    with pytest.raises(BadInput, match=r"step_args\['jump'\] must be a dict"):
        steps.validate_step_args({"jump": ["skip"]})
    with pytest.raises(BadInput, match=r"\['jump'\]\['x'\] has type set"):
        steps.validate_step_args({"jump": {"x": {1}}})
    with pytest.raises(BadInput, match="override_dark"):
        steps.validate_step_args({"dark_current": {"override_dark": 3}})
    with pytest.raises(BadInput, match="step_args must be a dict"):
        steps.validate_step_args("dark_current")


def test_merge_step_args_merges_per_step_without_mutating() -> None:
    base = {"jump": {"rejection_threshold": 15.0, "save_results": True}, "ipc": {"skip": True}}
    extra = {"jump": {"override_gain": "g.fits"}, "refpix": {"odd_even_rows": False}}
    merged = steps.merge_step_args(base, extra)
    assert merged == {"jump": {"rejection_threshold": 15.0, "save_results": True, "override_gain": "g.fits"},
                      "ipc": {"skip": True}, "refpix": {"odd_even_rows": False}}
    assert base["jump"] == {"rejection_threshold": 15.0, "save_results": True}
    merged["ipc"]["skip"] = False
    assert base["ipc"] == {"skip": True}


def test_resume_skips_up_to_last_completed_step() -> None:
    header = {"S_DQINIT": "COMPLETE", "S_DARK": "COMPLETE", "S_JUMP": "SKIPPED"}
    assert steps.completed_steps(header) == {"dq_init", "dark_current"}
    assert steps.steps_to_run("nircam", steps.completed_steps(header)) == [
        "charge_migration", "jump", "picture_frame", "clean_flicker_noise", "rate", "gain_scale"]
    assert steps.steps_to_run("nircam", set()) == NIRCAM_ALL


def test_max_cores_back_off_sequence() -> None:
    assert guard.validate_max_cores(4) == "4"
    with pytest.raises(BadInput, match="invalid max_cores 'most'"):
        guard.validate_max_cores("most")
    sequence = ["all"]
    while (nxt := guard.next_max_cores(sequence[-1])) is not None:
        sequence.append(nxt)
    assert sequence == ["all", "half", "none"]


def test_jwst_call_converts_system_exit_and_keeps_oom_cause() -> None:
    with pytest.raises(CrdsError, match="SystemExit -1") as info:
        with guard.jwst_call("step x"):
            sys.exit(-1)
    assert isinstance(info.value.__cause__, SystemExit)
    with pytest.raises(PipelineError, match="out of memory") as info2:
        with guard.jwst_call("step y"):
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
    assert guard.is_out_of_memory(info2.value)
    with pytest.raises(PipelineError, match="step z failed: ValueError: boom"):
        with guard.jwst_call("step z"):
            raise ValueError("boom")


def test_back_off_gives_up_after_none() -> None:
    tried: list[str] = []

    def run(cores: str) -> None:
        tried.append(cores)
        raise PipelineError("x") from MemoryError()

    with pytest.raises(PipelineError, match="out of memory even with maximum_cores='none'"):
        guard.run_with_core_backoff(run, "all", "job")
    assert tried == ["all", "half", "none"]


def test_crds_environment_is_idempotent_and_stub_optional(tmp_path: Path) -> None:
    saved = _snapshot_env()
    try:
        first = crds_env.apply_crds_environment(tmp_path / "online")
        assert first["CRDS_SERVER_URL"] == crds_env.SERVERLESS_URL
        assert first["STPIPE_DISABLE_CRDS_STEPPARS"] == "true"
        assert not crds_env.server_config_path(tmp_path / "online").exists()
        stub = crds_env.server_config_path(tmp_path / "offline")
        a = crds_env.apply_crds_environment(tmp_path / "offline", offline_stub=True)
        text = stub.read_text()
        b = crds_env.apply_crds_environment(tmp_path / "offline", offline_stub=True)
        assert a == b and stub.read_text() == text and "jwst_offline.pmap" in text
        assert os.environ["CRDS_CONTEXT"] == "jwst_offline.pmap"
        assert os.environ["CRDS_PATH"] == str((tmp_path / "offline").resolve())
        stub.write_text("{'observatory': 'jwst', 'custom': True}\n")
        crds_env.apply_crds_environment(tmp_path / "offline", offline_stub=True)
        assert "custom" in stub.read_text()  # an existing server_config is never replaced
    finally:
        _restore_env(saved)


def test_publish_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for content in (b"first", b"second"):
        src = tmp_path / "src.fits"
        src.write_bytes(content)
        target = files.publish(src, out, "x_rate.fits")
    assert target.read_bytes() == b"second"
    assert listing(out) == ["x_rate.fits"]


def test_short_name_from_path() -> None:
    assert files.short_name_from_path(f"/a/{UNCAL_NAME}") == SHORT
    with pytest.raises(BadInput, match="not a JWST exposure name"):
        files.short_name_from_path("/a/image.fits")


# --- the cal path ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_all_writes_every_product(cal_all: dict[str, Any]) -> None:
    result, root = cal_all["result"], cal_all["root"]
    assert list(result) == [*NIRCAM_PRODUCTS, "rateints"]
    for ext, path in result.items():
        assert path == str(root / "out" / f"{SHORT}_{ext}.fits")
        assert Path(path).is_file()
    assert listing(root / "out") == sorted(f"{SHORT}_{ext}.fits" for ext in result)
    assert leftovers(root / "work") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_rate_matches_injected_slope(cal_all: dict[str, Any]) -> None:
    import numpy as np
    from astropy.io import fits

    with fits.open(cal_all["result"]["rate"]) as hdul:
        assert hdul["SCI"].data.shape == (64, 64)
        median_dn_per_s = float(np.nanmedian(hdul["SCI"].data))  # DO_NOT_USE pixels are NaN
        assert hdul[0].header["S_RAMP"] == "COMPLETE"
    assert median_dn_per_s == pytest.approx(SLOPE_DN_PER_GROUP / synthetic.GROUP_TIME_S, rel=0.01)
    with fits.open(cal_all["result"]["rateints"]) as hdul:
        assert hdul["SCI"].data.shape == (2, 64, 64)
    with fits.open(cal_all["result"]["jump"]) as hdul:
        assert hdul["GROUPDQ"].data[0, 3, 30, 30] & JUMP_DET


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_stops_at_last_requested_product(data: dict[str, Any], tmp_path: Path) -> None:
    from astropy.io import fits

    result = run_calwebb_detector1(data["uncal"], SHORT, "refpix", "nircam", tmp_path / "work", tmp_path / "out",
                                   step_args=cal_args(data), max_cores="none")
    assert result == {"refpix": str(tmp_path / "out" / f"{SHORT}_refpix.fits")}
    assert listing(tmp_path / "out") == [f"{SHORT}_refpix.fits"]
    header = fits.getheader(result["refpix"])
    assert header["S_REFPIX"] == "COMPLETE" and "S_LINEAR" not in header


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_skip_true_skips_the_step(data: dict[str, Any], tmp_path: Path) -> None:
    from astropy.io import fits

    args = cal_args(data, dark_current={"skip": True})
    result = run_calwebb_detector1(data["uncal"], SHORT, ["jump"], "nircam", tmp_path / "work", tmp_path / "out",
                                   step_args=args, max_cores="none")
    header = fits.getheader(result["jump"])
    assert header["S_JUMP"] == "COMPLETE" and header["S_LINEAR"] == "COMPLETE"
    assert header.get("S_DARK") != "COMPLETE"
    with pytest.raises(BadInput, match="'dark_current' cannot be produced.*skipped by step_args"):
        run_calwebb_detector1(data["uncal"], SHORT, ["dark_current"], "nircam", tmp_path / "work",
                              tmp_path / "out", step_args=args)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_resumes_from_header_keywords(cal_all: dict[str, Any], data: dict[str, Any], tmp_path: Path) -> None:
    dark = tmp_path / "in" / f"{SHORT}_dark.fits"
    dark.parent.mkdir()
    dark.write_bytes(Path(cal_all["result"]["dark_current"]).read_bytes())
    result = run_calwebb_detector1(dark, SHORT, "all", "nircam", tmp_path / "work", tmp_path / "out",
                                   step_args=cal_args(data), max_cores="none")
    assert list(result) == ["jump", "rate", "gain_scale"]
    with pytest.raises(BadInput, match="'refpix' cannot be produced.*already done"):
        run_calwebb_detector1(dark, SHORT, "refpix", "nircam", tmp_path / "work", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_redelivery_replaces_products(data: dict[str, Any], tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"step_args": cal_args(data), "max_cores": "none"}
    first = run_calwebb_detector1(data["uncal"], SHORT, "dq_init", "nircam", tmp_path / "w", tmp_path / "o", **kwargs)
    second = run_calwebb_detector1(data["uncal"], SHORT, "dq_init", "nircam", tmp_path / "w", tmp_path / "o", **kwargs)
    assert first == second
    assert listing(tmp_path / "o") == [f"{SHORT}_dq_init.fits"]  # no temporary names left
    assert listing(tmp_path / "w") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_failure_mid_run_cleans_up(data: dict[str, Any], tmp_path: Path) -> None:
    args = cal_args(data, linearity={"override_linearity": data["refs"]["gain"]})  # wrong kind of file
    with pytest.raises(PipelineError, match="step linearity .*failed"):
        run_calwebb_detector1(data["uncal"], SHORT, "all", "nircam", tmp_path / "work", tmp_path / "out",
                              step_args=args, max_cores="none")
    assert leftovers(tmp_path / "work") == []
    assert listing(tmp_path / "out") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cal_backs_off_cores_on_enomem(data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jwst.jump import JumpStep

    real_call = JumpStep.call.__func__
    seen: list[str] = []

    def flaky_call(cls: type, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["maximum_cores"])
        if kwargs["maximum_cores"] != "none":
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real_call(cls, *args, **kwargs)

    monkeypatch.setattr(JumpStep, "call", classmethod(flaky_call))
    result = run_calwebb_detector1(data["uncal"], SHORT, "jump", "nircam", tmp_path / "work", tmp_path / "out",
                                   step_args=cal_args(data), max_cores="all")
    assert seen == ["all", "half", "none"]
    assert Path(result["jump"]).is_file()


# --- the save-jump path ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_jump_path_products_and_cosmic_ray(jump_all: dict[str, Any]) -> None:
    import numpy as np
    from astropy.io import fits

    result, root = jump_all["result"], jump_all["root"]
    assert set(result) == set(steps.JUMP_OUTPUTS)
    for ext, path in result.items():
        assert path == str(root / "out" / f"{SHORT}_{ext}.fits") and Path(path).is_file()
    assert leftovers(root / "work") == []
    with fits.open(result["jump"]) as hdul:
        groupdq = hdul["GROUPDQ"].data
        assert groupdq[0, 3, 30, 30] & JUMP_DET
        assert not (groupdq[1, :, 30, 30] & JUMP_DET).any()  # the second integration has no cosmic ray
        assert np.count_nonzero(groupdq & JUMP_DET) < 0.01 * groupdq.size  # and noise is not flagged
        assert hdul["PIXELDQ"].data[0, 0] & 1  # DO_NOT_USE from the synthetic mask
    with fits.open(result["0_ramp_fit"]) as hdul:
        assert float(np.nanmedian(hdul["SCI"].data)) == pytest.approx(SLOPE_DN_PER_GROUP, rel=0.01)
        assert np.isnan(hdul["SCI"].data[0, 0]) and hdul["DQ"].data[0, 0] & 1  # DO_NOT_USE from the mask
    with fits.open(result["1_ramp_fit"]) as hdul:
        assert hdul["SCI"].data.shape == (2, 64, 64)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jump_ramp_fit_false_gives_only_jump(data: dict[str, Any], tmp_path: Path) -> None:
    result = calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                         ramp_fit=False, step_args=jump_args(data), max_cores="none")
    assert result == {"jump": str(tmp_path / "out" / f"{SHORT}_jump.fits"), "0_ramp_fit": None,
                      "1_ramp_fit": None, "fitopt": None}
    assert listing(tmp_path / "out") == [f"{SHORT}_jump.fits"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jump_save_fitopt_false(data: dict[str, Any], tmp_path: Path) -> None:
    result = calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                         save_fitopt=False, step_args=jump_args(data), max_cores="none")
    assert result["fitopt"] is None
    assert listing(tmp_path / "out") == sorted(f"{SHORT}_{e}.fits" for e in ("jump", "0_ramp_fit", "1_ramp_fit"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jump_missing_product_is_reported(data: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from jwql_dramatiq.pipeline import detector1

    def only_jump(local: Path, job_dir: Path, params: dict[str, Any], what: str) -> None:
        (job_dir / f"{SHORT}_jump.fits").write_bytes(b"x")

    monkeypatch.setattr(detector1, "_run_detector1", only_jump)
    with pytest.raises(PipelineError, match="did not produce 0_ramp_fit, 1_ramp_fit, fitopt"):
        calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                    step_args=jump_args(data), max_cores="none")
    assert leftovers(tmp_path / "work") == [] and listing(tmp_path / "out") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jump_backs_off_cores_on_memory_error(data: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from jwst.pipeline.calwebb_detector1 import Detector1Pipeline

    real_call = Detector1Pipeline.call.__func__
    seen: list[tuple[str, str]] = []

    def flaky_call(cls: type, *args: Any, **kwargs: Any) -> Any:
        cores = (kwargs["steps"]["jump"]["maximum_cores"], kwargs["steps"]["ramp_fit"]["maximum_cores"])
        seen.append(cores)
        if cores[0] != "none":
            raise MemoryError()
        return real_call(cls, *args, **kwargs)

    monkeypatch.setattr(Detector1Pipeline, "call", classmethod(flaky_call))
    result = calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                         step_args=jump_args(data))
    assert seen == [("all", "all"), ("half", "half"), ("none", "none")]
    assert all(Path(p).is_file() for p in result.values() if p)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jump_step_args_that_drop_a_product_are_refused(data: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"step_args\['jump'\]\['skip'\]=True would prevent"):
        calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "w", tmp_path / "o",
                                    step_args=jump_args(data, jump={"skip": True}))


# --- CRDS failures -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_missing_override_with_stub_is_crds_error(data: dict[str, Any], tmp_path: Path) -> None:
    args = jump_args(data)
    del args["dark_current"]
    with pytest.raises(CrdsError, match="CrdsDownloadError") as info:
        calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                    step_args=args, max_cores="none")
    assert "override_" in str(info.value)
    assert leftovers(tmp_path / "work") == [] and listing(tmp_path / "out") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_no_stub_system_exit_is_crds_error(data: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import crds  # noqa: F401  (so the caches below exist)

    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "empty_cache"))
    _clear_crds_caches()
    try:
        for run in (
            lambda: run_calwebb_detector1(data["uncal"], SHORT, "all", "nircam", tmp_path / "work",
                                          tmp_path / "out", step_args=cal_args(data), max_cores="none"),
            lambda: calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "work", tmp_path / "out",
                                                step_args=jump_args(data), max_cores="none"),
        ):
            with pytest.raises(CrdsError, match=r"CRDS failed fatally \(SystemExit -1\)") as info:
                run()
            assert isinstance(info.value.__cause__, SystemExit)
            assert leftovers(tmp_path / "work") == []
    finally:
        monkeypatch.undo()
        _clear_crds_caches()


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(data: dict[str, Any]) -> dict[str, Path]:
    root = data["root"] / "bad"
    root.mkdir()
    return {
        "truncated": synthetic.write_truncated_fits(data["uncal"], root / f"{SHORT}_uncal.fits"),
        "garbage": synthetic.write_garbage_file(root / "jw09999001001_01101_00002_nrca1_uncal.fits"),
        "image": synthetic.write_image_fits(root / "jw09999001001_01101_00003_nrca1_uncal.fits"),
    }


BAD_CASES = [
    ("missing file", {"input_path": "MISSING"}, "does not exist"),
    ("truncated fits", {"input_path": "truncated"}, "is truncated"),
    ("corrupt fits", {"input_path": "garbage"}, "not a readable FITS file"),
    ("not a ramp", {"input_path": "image"}, r"not a ramp: SCI data are 2-D"),
    ("unknown instrument", {"instrument": "wfc3"}, "unknown instrument 'wfc3'"),
    ("wrong instrument", {"instrument": "miri"}, "instrument 'miri' does not match INSTRUME 'NIRCAM'"),
    ("unknown step", {"step_args": {"bogus_step": {}}}, "unknown step 'bogus_step'"),
    ("skip as string", {"step_args": {"dark_current": {"skip": "False"}}}, r"\['skip'\] must be a bool"),
    ("wrong value type", {"step_args": {"jump": {"rejection_threshold": "15"}}},
     r"step_args\['jump'\]\['rejection_threshold'\] must be a number"),
    ("unknown parameter", {"step_args": {"jump": {"rejection_treshold": 15.0}}},
     "unknown parameter 'rejection_treshold' for step 'jump'"),
    ("bad option", {"step_args": {"RAMP": {"algorithm": "OLS"}}}, "must be one of"),
    ("bad max_cores", {"max_cores": "lots"}, "invalid max_cores 'lots'"),
]


def _resolve_case(kwargs: dict[str, Any], data: dict[str, Any], bad_files: dict[str, Path], tmp_path: Path,
                  ramp_step: str) -> dict[str, Any]:
    resolved = {"input_path": data["uncal"], "instrument": "nircam", "work_dir": tmp_path / "work",
                "output_dir": tmp_path / "out", "max_cores": "none"}
    for key, value in kwargs.items():
        if key == "input_path":
            value = tmp_path / UNCAL_NAME if value == "MISSING" else bad_files[value]
        if key == "step_args":
            value = {ramp_step if k == "RAMP" else k: v for k, v in value.items()}
        resolved[key] = value
    return resolved


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "kwargs", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_cal_bad_input(case: str, kwargs: dict[str, Any], message: str, data: dict[str, Any],
                       bad_files: dict[str, Path], tmp_path: Path) -> None:
    args = _resolve_case(kwargs, data, bad_files, tmp_path, "rate")
    with pytest.raises(BadInput, match=message):
        run_calwebb_detector1(short_name=SHORT, ext_or_exts="all", **args)
    assert leftovers(tmp_path / "work") == [] and listing(tmp_path / "out") == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "kwargs", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_jump_bad_input(case: str, kwargs: dict[str, Any], message: str, data: dict[str, Any],
                        bad_files: dict[str, Path], tmp_path: Path) -> None:
    args = _resolve_case(kwargs, data, bad_files, tmp_path, "ramp_fit")
    with pytest.raises(BadInput, match=message):
        calwebb_detector1_save_jump(**args)
    assert leftovers(tmp_path / "work") == [] and listing(tmp_path / "out") == []


@pytest.mark.timeout(60)
def test_cal_unknown_output_extension(data: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown output extension 'ramp'"):
        run_calwebb_detector1(data["uncal"], SHORT, ["rate", "ramp"], "nircam", tmp_path / "w", tmp_path / "o")


@pytest.mark.timeout(60)
def test_jump_flags_must_be_bools(data: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="argument ramp_fit must be a bool"):
        calwebb_detector1_save_jump(data["uncal"], "nircam", tmp_path / "w", tmp_path / "o", ramp_fit="True")


# --- warm-up ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_warm_up_runs_and_leaves_nothing(tmp_path: Path) -> None:
    from jwql_dramatiq.pipeline import warm_up

    seconds = warm_up(tmp_path)
    assert 0 < seconds < 120
    assert listing(tmp_path) == []


@pytest.mark.timeout(30)
def test_auto_max_cores_is_none_for_subarrays_and_all_for_full_frames(tmp_path):
    import numpy as np
    from astropy.io import fits

    from jwql_dramatiq.pipeline.guard import resolve_max_cores

    small = tmp_path / "small.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((1, 1, 64, 64), np.uint16), name="SCI")]).writeto(small)
    large = tmp_path / "large.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2048, 2048), np.uint8), name="SCI")]).writeto(large)
    assert resolve_max_cores("auto", small) == "none"
    assert resolve_max_cores("auto", large) == "all"
    assert resolve_max_cores("half", small) == "half"
    assert resolve_max_cores("auto", tmp_path / "missing.fits") == "none"
