"""The two JWQL calwebb_detector1 tasks, run in-process with explicit directories.

:func:`run_calwebb_detector1` is jwql's "cal" path (``run_pipe``): one jwst step after
another, each product saved as ``<short_name>_<step>.fits``. :func:`calwebb_detector1_save_jump`
is the "jump" path (``run_save_jump``): one ``Detector1Pipeline`` run that saves the jump
and ramp-fit products. Both

* check every input first and raise :class:`~jwql_dramatiq.errors.BadInput` naming it;
* work in a private ``<work_dir>/<short_name>.<random>/`` that is removed on success and
  on failure;
* retry with ``maximum_cores`` ``all`` -> ``half`` -> ``none`` when a run runs out of memory;
* turn crds' ``SystemExit`` into :class:`~jwql_dramatiq.errors.CrdsError`;
* publish products to ``output_dir`` atomically and return their paths.

jwst is imported inside the functions; set the CRDS environment first
(:func:`jwql_dramatiq.pipeline.crds_env.apply_crds_environment`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jwql_dramatiq.errors import BadInput, PipelineError
from jwql_dramatiq.pipeline import files
from jwql_dramatiq.pipeline.guard import jwst_call, run_with_core_backoff, validate_max_cores
from jwql_dramatiq.pipeline.specs import check_step_args_against_specs, skipped_by_default, step_class
from jwql_dramatiq.pipeline.steps import (
    JUMP_OUTPUTS,
    RATEINTS,
    is_skipped,
    merge_step_args,
    pipeline_steps,
    steps_to_run,
    validate_instrument,
    validate_outputs,
    validate_step_args,
)

logger = logging.getLogger(__name__)

#: Cosmic-ray rejection threshold of the save-jump path, sigma (jwst's default, 4, is too low for jwql).
JUMP_REJECTION_THRESHOLD_SIGMA = 15.0

#: Steps already done in a ``*_dark.fits`` input, skipped by the save-jump path (Detector1 aliases):
#: every step Detector1 runs before ``dark_current`` (jwst 3.0 order; for MIRI ``refpix``
#: comes after the dark, and for every instrument the steps from ``charge_migration`` on do too).
DARK_INPUT_SKIPS_MIRI: tuple[str, ...] = ("group_scale", "dq_init", "emicorr", "saturation", "ipc", "firstframe",
                                          "lastframe", "reset", "linearity", "rscd")
DARK_INPUT_SKIPS_NEAR_IR: tuple[str, ...] = ("group_scale", "dq_init", "saturation", "ipc", "superbias",
                                             "refpix", "linearity")

def run_calwebb_detector1(
    input_path: str | os.PathLike[str],
    short_name: str,
    ext_or_exts: str | list[str] | tuple[str, ...],
    instrument: str,
    work_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    step_args: Mapping[str, Mapping[str, Any]] | None = None,
    max_cores: str | int = "all",
) -> dict[str, str]:
    """Run calwebb_detector1 step by step (jwql's "cal" path) and publish the requested products.

    Steps run in the instrument's order (:func:`~jwql_dramatiq.pipeline.steps.pipeline_steps`).
    Steps the input's ``S_*`` header keywords mark complete are not run again (every step up
    to the last complete one is left out). A step whose ``step_args`` has ``"skip": true`` is
    not run. ``jump`` and ``rate`` get ``maximum_cores``. After each step its product is saved
    as ``<short_name>_<step>.fits``; ``rate`` saves the exposure image as ``_rate`` and, if
    requested, the per-integration cube as ``_rateints``. The run stops once every requested
    product exists.

    Parameters
    ----------
    input_path : path
        A FITS ramp (``*_uncal.fits``, ``*_dark.fits``, ...); it is copied, never modified.
    short_name : str
        Prefix of the product names, e.g. ``jw09999001001_01101_00001_nrca1``.
    ext_or_exts : str or sequence of str
        Products wanted: jwql step names, ``"rateints"``, or ``"all"`` (every step that
        will run for this input).
    instrument : str
        ``nircam``, ``niriss``, ``fgs``, ``nirspec`` or ``miri`` (any case); must match
        the file's ``INSTRUME``.
    work_dir : path
        Worker-local scratch directory.
    output_dir : path
        Where products are published.
    step_args : dict or None
        ``{jwql_step: {parameter: value}}`` with JSON types, e.g.
        ``{"dark_current": {"skip": True}}`` or reference overrides
        (:func:`jwql_dramatiq.synthetic.offline_step_overrides` with ``pipeline="cal"``).
    max_cores : str or int
        Starting ``maximum_cores`` for ``jump`` and ``rate``.

    Returns
    -------
    dict
        Extension -> absolute path of ``<output_dir>/<short_name>_<ext>.fits``, in request
        order (``"all"`` expanded in run order). Every value exists.

    Raises
    ------
    BadInput
        Missing, corrupt, truncated or non-ramp input; unknown instrument, step, extension
        or parameter; a wrongly typed step argument; a product that cannot be made because
        its step is skipped or already done.
    CrdsError
        CRDS failed (including its ``SystemExit``).
    PipelineError
        A step failed, ran out of memory at ``maximum_cores="none"``, or files could not be moved.
    """
    inst = validate_instrument(instrument)
    _check_short_name(short_name)
    requested = validate_outputs(inst, ext_or_exts, "cal")
    args = validate_step_args(step_args, "cal")
    cores = validate_max_cores(max_cores)
    info = files.inspect_input(input_path)
    _check_instrument_matches(info, inst)
    plan = [s for s in steps_to_run(inst, info.completed) if _will_run(s, args)]
    outputs = _producible_outputs(ext_or_exts, requested, plan, inst, info, args)
    last_needed = max(plan.index(_step_of(ext)) for ext in outputs)
    plan = plan[: last_needed + 1]
    check_step_args_against_specs(args, "cal")
    what = f"calwebb_detector1 (cal) on {info.path.name}"
    logger.info("%s: steps %s, outputs %s, max_cores %s", what, plan, outputs, cores)
    job_dir: Path | None = None
    t0 = time.monotonic()
    try:
        job_dir = files.make_job_dir(work_dir, short_name)
        local = files.copy_input(info.path, job_dir)
        produced = run_with_core_backoff(
            lambda c: _run_cal_steps(local, short_name, job_dir, plan, outputs, args, c), cores, what)
        missing = [ext for ext in outputs if ext not in produced]
        if missing:
            raise PipelineError(f"{what} did not produce {', '.join(missing)}")
        result = {ext: str(files.publish(produced[ext], output_dir, f"{short_name}_{ext}.fits")) for ext in outputs}
    finally:
        files.remove_job_files(work_dir, job_dir)
    logger.info("%s finished in %.2f s", what, time.monotonic() - t0)
    return result


def save_jump_step_params(instrument: str, input_name: str, ramp_fit: bool, save_fitopt: bool,
                          max_cores: str) -> dict[str, dict[str, Any]]:
    """Return the save-jump path's built-in Detector1 step parameters (before ``step_args``).

    Parameters
    ----------
    instrument : str
        jwql instrument name (lower case).
    input_name : str
        Input file name; a ``*_dark.fits`` input skips the steps before dark subtraction.
    ramp_fit : bool
        Run ramp fitting and save its two products; if False, ``ramp_fit`` is skipped.
    save_fitopt : bool
        Save the optional fit product (``save_opt``), when ``ramp_fit`` is True.
    max_cores : str
        ``maximum_cores`` for ``jump`` and ``ramp_fit``.

    Returns
    -------
    dict
        ``{alias: {parameter: value}}``.
    """
    params: dict[str, dict[str, Any]] = {
        "jump": {"rejection_threshold": JUMP_REJECTION_THRESHOLD_SIGMA, "save_results": True,
                 "maximum_cores": max_cores},
        "ramp_fit": ({"save_results": True, "save_opt": bool(save_fitopt), "maximum_cores": max_cores}
                     if ramp_fit else {"skip": True}),
        "ipc": {"skip": True},
    }
    if instrument == "nircam":
        params["refpix"] = {"odd_even_rows": False}
    if input_name.endswith("_dark.fits"):
        for step in DARK_INPUT_SKIPS_MIRI if instrument == "miri" else DARK_INPUT_SKIPS_NEAR_IR:
            params.setdefault(step, {})["skip"] = True
    return params


def calwebb_detector1_save_jump(
    input_path: str | os.PathLike[str],
    instrument: str,
    work_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    ramp_fit: bool = True,
    save_fitopt: bool = True,
    step_args: Mapping[str, Mapping[str, Any]] | None = None,
    max_cores: str | int = "all",
) -> dict[str, str | None]:
    """Run ``Detector1Pipeline`` saving the jump and ramp-fit products (jwql's "jump" path).

    Built-in parameters (:func:`save_jump_step_params`): ``refpix.odd_even_rows=False`` for
    NIRCam, ``jump.rejection_threshold=15`` with ``save_results``, ``ramp_fit`` with
    ``save_results`` and ``save_opt=save_fitopt`` (or skipped if ``ramp_fit`` is False),
    ``ipc`` skipped, and the pre-dark steps skipped for ``*_dark.fits`` input. ``step_args``
    (Detector1 aliases) are merged over them per parameter.

    Parameters
    ----------
    input_path : path
        A FITS ramp; its name gives the short name (first four ``_`` fields).
    instrument : str
        Instrument name (any case); must match the file's ``INSTRUME``.
    work_dir : path
        Worker-local scratch directory.
    output_dir : path
        Where products are published.
    ramp_fit : bool
        Also fit ramps and publish ``0_ramp_fit`` (rate) and ``1_ramp_fit`` (rateints).
    save_fitopt : bool
        Also publish ``fitopt`` (only with ``ramp_fit``).
    step_args : dict or None
        ``{alias: {parameter: value}}``, e.g. reference overrides from
        :func:`jwql_dramatiq.synthetic.offline_step_overrides` (``pipeline="jump"``).
    max_cores : str or int
        Starting ``maximum_cores`` for ``jump`` and ``ramp_fit``.

    Returns
    -------
    dict
        Keys ``"jump"``, ``"0_ramp_fit"``, ``"1_ramp_fit"``, ``"fitopt"`` -> absolute path of
        ``<output_dir>/<short_name>_<key>.fits``, or None for a product not requested
        (``ramp_fit``/``save_fitopt`` False). A requested product that is missing raises.

    Raises
    ------
    BadInput
        Bad file, instrument, flag, step or parameter.
    CrdsError
        CRDS failed (including its ``SystemExit``).
    PipelineError
        The pipeline failed or ran out of memory at ``"none"``, a requested product was not
        made (listed in the message), or files could not be moved.
    """
    inst = validate_instrument(instrument)
    for flag_name, flag in (("ramp_fit", ramp_fit), ("save_fitopt", save_fitopt)):
        if not isinstance(flag, bool):
            raise BadInput(f"argument {flag_name} must be a bool, not {flag!r}")
    args = validate_step_args(step_args, "jump")
    cores = validate_max_cores(max_cores)
    info = files.inspect_input(input_path)
    _check_instrument_matches(info, inst)
    short_name = files.short_name_from_path(info.path)
    check_step_args_against_specs(args, "jump")
    _check_jump_args_keep_products(args, ramp_fit, save_fitopt)
    expected = ["jump", *(["0_ramp_fit", "1_ramp_fit"] if ramp_fit else []),
                *(["fitopt"] if ramp_fit and save_fitopt else [])]
    what = f"calwebb_detector1 (save jump) on {info.path.name}"
    job_dir: Path | None = None
    t0 = time.monotonic()
    try:
        job_dir = files.make_job_dir(work_dir, short_name)
        local = files.copy_input(info.path, job_dir)

        def attempt(cores_now: str) -> dict[str, Path]:
            params = merge_step_args(save_jump_step_params(inst, local.name, ramp_fit, save_fitopt, cores_now), args)
            logger.info("%s: max_cores %s, step parameters %s", what, cores_now, sorted(params))
            _run_detector1(local, job_dir, params, what)
            return _find_jump_products(job_dir, local)

        found = run_with_core_backoff(attempt, cores, what)
        missing = [ext for ext in expected if ext not in found]
        if missing:
            raise PipelineError(f"{what} did not produce {', '.join(missing)} (ramp_fit={ramp_fit}, "
                                f"save_fitopt={save_fitopt}); did step_args turn off save_results or save_opt?")
        result: dict[str, str | None] = dict.fromkeys(JUMP_OUTPUTS)
        for ext in expected:
            result[ext] = str(files.publish(found[ext], output_dir, f"{short_name}_{ext}.fits"))
    finally:
        files.remove_job_files(work_dir, job_dir)
    logger.info("%s finished in %.2f s", what, time.monotonic() - t0)
    return result


def _check_jump_args_keep_products(args: Mapping[str, Mapping[str, Any]], ramp_fit: bool, save_fitopt: bool) -> None:
    """Refuse step arguments that would stop a requested product from being written."""
    conflicts = [("jump", "skip", True, True), ("jump", "save_results", False, True),
                 ("ramp_fit", "skip", True, ramp_fit), ("ramp_fit", "save_results", False, ramp_fit),
                 ("ramp_fit", "save_opt", False, ramp_fit and save_fitopt)]
    for step, key, bad, product_wanted in conflicts:
        if product_wanted and args.get(step, {}).get(key, not bad) is bad:
            raise BadInput(f"step_args[{step!r}][{key!r}]={bad} would prevent a requested product "
                           f"(ramp_fit={ramp_fit}, save_fitopt={save_fitopt})")


def _run_detector1(local: Path, job_dir: Path, params: dict[str, dict[str, Any]], what: str) -> None:
    with jwst_call(what):
        from jwst.pipeline.calwebb_detector1 import Detector1Pipeline

        model = Detector1Pipeline.call(str(local), steps=params, output_dir=str(job_dir), configure_log=False)
        if hasattr(model, "close"):
            model.close()


def _find_jump_products(job_dir: Path, local: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for ext in JUMP_OUTPUTS:
        matches = sorted(p for p in job_dir.glob(f"*_{ext}.fits") if p != local)
        if len(matches) > 1:
            logger.warning("Several %s products in %s: %s; using %s", ext, job_dir, matches, matches[0])
        if matches:
            found[ext] = matches[0]
    return found


def _run_cal_steps(local: Path, short_name: str, job_dir: Path, plan: list[str], outputs: list[str],
                   args: Mapping[str, Mapping[str, Any]], cores: str) -> dict[str, Path]:
    produced: dict[str, Path] = {}
    model: Any = str(local)
    try:
        for step in plan:
            kwargs = {k: v for k, v in args.get(step, {}).items() if k != "skip"}
            if step in ("jump", "rate"):
                kwargs["maximum_cores"] = cores
            cls = step_class(step, "cal")
            what = f"step {step} ({cls.__name__}) on {local.name}"
            t0 = time.monotonic()
            with jwst_call(what):
                result = cls.call(model, output_dir=str(job_dir), configure_log=False, **kwargs)
                if step == "rate":
                    image, ints = result if isinstance(result, tuple) else (result, None)
                    if image is None:
                        raise PipelineError(f"{what} returned no rate image")
                    if "rate" in outputs:
                        produced["rate"] = _save(image, job_dir / f"{short_name}_rate.fits")
                    if ints is not None:
                        if RATEINTS in outputs:
                            produced[RATEINTS] = _save(ints, job_dir / f"{short_name}_{RATEINTS}.fits")
                        ints.close()
                    result = image
                elif step in outputs:  # intermediate products nobody asked for are not written
                    produced[step] = _save(result, job_dir / f"{short_name}_{step}.fits")
            if result is not model and hasattr(model, "close"):
                model.close()
            model = result
            logger.info("%s took %.2f s", what, time.monotonic() - t0)
            if all(ext in produced for ext in outputs):
                break
    finally:
        if hasattr(model, "close"):
            model.close()
    return produced


def _save(model: Any, path: Path) -> Path:
    try:  # pre-jwst-1.2.1 files carry the dither count as a string, which crashes the save
        points = model.meta.dither.dither_points
        if isinstance(points, str):
            model.meta.dither.dither_points = int(points)
    except (AttributeError, TypeError, ValueError):
        pass
    model.save(str(path))
    return path


def _will_run(step: str, args: Mapping[str, Mapping[str, Any]]) -> bool:
    """A step runs unless step_args skip it, or jwst skips it by default and step_args do not say skip=False."""
    if is_skipped(args, step):
        return False
    return args.get(step, {}).get("skip") is False or not skipped_by_default(step, "cal")


def _step_of(ext: str) -> str:
    return "rate" if ext == RATEINTS else ext


def _producible_outputs(ext_or_exts: object, requested: list[str], plan: list[str], inst: str,
                        info: files.InputInfo, args: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keep requested products the plan makes; "all" drops the others, explicit names raise."""
    asked = [ext_or_exts] if isinstance(ext_or_exts, str) else list(ext_or_exts)  # type: ignore[call-overload]
    explicit = {e for e in asked if e != "all"}
    outputs: list[str] = []
    for ext in requested:
        step = _step_of(ext)
        if step in plan:
            outputs.append(ext)
            continue
        if is_skipped(args, step):
            reason = f"step {step!r} is skipped by step_args"
        elif step in steps_to_run(inst, info.completed) and not _will_run(step, args):
            reason = (f"step {step!r} is skipped by jwst's default (its spec says skip=True); "
                      f"pass step_args {{{step!r}: {{'skip': false}}}} to run it")
        elif step not in pipeline_steps(inst):
            reason = f"step {step!r} is not run for {inst}"
        else:
            reason = f"step {step!r} is already done in the input (S_* keywords: {sorted(info.completed)})"
        if ext in explicit:
            raise BadInput(f"output extension {ext!r} cannot be produced for {info.path.name}: {reason}")
        logger.info("'all' for %s leaves out %r: %s", info.path.name, ext, reason)
    if not outputs:
        raise BadInput(f"nothing to produce for {info.path.name}: every requested step is skipped or already done")
    return outputs


def _check_short_name(short_name: object) -> None:
    if not isinstance(short_name, str) or not short_name or short_name.startswith(".") \
            or "/" in short_name or os.sep in short_name:
        raise BadInput(f"invalid short_name {short_name!r}: must be a non-empty file-name prefix without '/'")


def _check_instrument_matches(info: files.InputInfo, inst: str) -> None:
    if info.instrument is not None and info.instrument != inst:
        raise BadInput(f"instrument {inst!r} does not match INSTRUME {info.instrument.upper()!r} "
                       f"of input file {info.path.name!r}")
