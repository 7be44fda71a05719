"""JWQL's view of calwebb_detector1: step names, step order, outputs, and step-argument checks.

Pure data and pure functions; nothing here imports jwst. The tables mirror
``jwql/instrument_monitors/pipeline_tools.py`` and ``jwql/shared_tasks/shared_tasks.py``
(see ``original-jwql-task-server.md`` sections 1.6 and 6), with these deliberate changes:

* ``"all"`` means the instrument's own step list (the original used the NIRCam list for
  NIRSpec, which asks for a ``persistence`` product NIRSpec never makes).
* ``merge_step_args`` merges per-step dicts (the original set them to ``None``).
* step arguments must carry real JSON types: ``skip`` is a bool, never the string ``"True"``.

Two pipelines take step arguments, with different step names:

``"cal"``
    jwql's step-by-step path; keys are jwql step names (``rate`` for ramp fitting).
``"jump"``
    the save-jump path through ``Detector1Pipeline``; keys are Detector1 step aliases
    (``ramp_fit`` for ramp fitting).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from jwql_dramatiq.errors import BadInput

logger = logging.getLogger(__name__)

#: jwql step name -> jwst step class name (importable from ``jwst.<module>``); see :data:`STEP_MODULES`.
PIPELINE_STEP_MAPPING: dict[str, str] = {
    "charge_migration": "ChargeMigrationStep",
    "clean_flicker_noise": "CleanFlickerNoiseStep",
    "dq_init": "DQInitStep",
    "dark_current": "DarkCurrentStep",
    "emicorr": "EmiCorrStep",
    "firstframe": "FirstFrameStep",
    "gain_scale": "GainScaleStep",
    "group_scale": "GroupScaleStep",
    "ipc": "IPCStep",
    "jump": "JumpStep",
    "lastframe": "LastFrameStep",
    "linearity": "LinearityStep",
    "persistence": "PersistenceStep",
    "picture_frame": "PictureFrameStep",
    "rate": "RampFitStep",
    "refpix": "RefPixStep",
    "reset": "ResetStep",
    "rscd": "RscdStep",
    "saturation": "SaturationStep",
    "superbias": "SuperBiasStep",
}

#: jwql step name -> the jwst subpackage that exports its step class.
STEP_MODULES: dict[str, str] = {
    "charge_migration": "jwst.charge_migration",
    "clean_flicker_noise": "jwst.clean_flicker_noise",
    "dq_init": "jwst.dq_init",
    "dark_current": "jwst.dark_current",
    "emicorr": "jwst.emicorr",
    "firstframe": "jwst.firstframe",
    "gain_scale": "jwst.gain_scale",
    "group_scale": "jwst.group_scale",
    "ipc": "jwst.ipc",
    "jump": "jwst.jump",
    "lastframe": "jwst.lastframe",
    "linearity": "jwst.linearity",
    "persistence": "jwst.persistence",
    "picture_frame": "jwst.picture_frame",
    "rate": "jwst.ramp_fitting",
    "refpix": "jwst.refpix",
    "reset": "jwst.reset",
    "rscd": "jwst.rscd",
    "saturation": "jwst.saturation",
    "superbias": "jwst.superbias",
}

#: Step aliases of jwst 3.0 ``Detector1Pipeline.step_defs`` (keys of the save-jump path's step arguments).
DETECTOR1_STEP_ALIASES: tuple[str, ...] = (
    "group_scale", "dq_init", "emicorr", "saturation", "ipc", "superbias", "refpix", "rscd",
    "firstframe", "lastframe", "linearity", "dark_current", "reset", "persistence",
    "charge_migration", "jump", "picture_frame", "clean_flicker_noise", "ramp_fit", "gain_scale",
)

#: jwql step name -> Detector1 alias, where they differ.
JWQL_TO_DETECTOR1_ALIAS: dict[str, str] = {"rate": "ramp_fit"}

#: Instrument names, lower case, as jwql passes them.
INSTRUMENTS: tuple[str, ...] = ("fgs", "miri", "nircam", "niriss", "nirspec")

#: Per-instrument order of the "cal" path (jwql 2.0.3 ``get_pipeline_steps``; ``ipc`` is never run).
#: Steps jwst skips by default (``skip = boolean(default=True)`` in their spec: emicorr,
#: firstframe, persistence, charge_migration, picture_frame, clean_flicker_noise in jwst 3.0)
#: are listed but only run when ``step_args`` set ``"skip": false``.
MIRI_STEPS: tuple[str, ...] = (
    "group_scale", "dq_init", "emicorr", "saturation", "firstframe", "lastframe", "reset", "linearity",
    "rscd", "dark_current", "refpix", "jump", "clean_flicker_noise", "rate", "gain_scale",
)
NIRSPEC_STEPS: tuple[str, ...] = (
    "group_scale", "dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current",
    "charge_migration", "jump", "picture_frame", "clean_flicker_noise", "rate", "gain_scale",
)
NEAR_IR_STEPS: tuple[str, ...] = (
    "dq_init", "saturation", "superbias", "refpix", "linearity", "persistence", "dark_current",
    "charge_migration", "jump", "picture_frame", "clean_flicker_noise", "rate", "gain_scale",
)

#: Header keyword -> jwql step name; a value of ``"COMPLETE"`` means the step was done.
PIPE_KEYWORDS: dict[str, str] = {
    "S_GRPSCL": "group_scale",
    "S_DQINIT": "dq_init",
    "S_SATURA": "saturation",
    "S_IPC": "ipc",
    "S_REFPIX": "refpix",
    "S_SUPERB": "superbias",
    "S_RESET": "reset",
    "S_PERSIS": "persistence",
    "S_DARK": "dark_current",
    "S_LINEAR": "linearity",
    "S_FRSTFR": "firstframe",
    "S_LASTFR": "lastframe",
    "S_RSCD": "rscd",
    "S_JUMP": "jump",
    "S_RAMP": "rate",
    "S_GANSCL": "gain_scale",
    "S_MIREMI": "emicorr",
    "S_CHGMIG": "charge_migration",
    "S_PCTFRM": "picture_frame",
    "S_CLNFNS": "clean_flicker_noise",
}

#: Products of the save-jump path, in the order the original returned them.
JUMP_OUTPUTS: tuple[str, ...] = ("jump", "0_ramp_fit", "1_ramp_fit", "fitopt")

#: Extra "cal" product, written from the second model ``RampFitStep`` returns.
RATEINTS = "rateints"

_JSON_SCALARS = (bool, int, float, str, type(None))


def validate_instrument(name: object) -> str:
    """Check an instrument name and return it in jwql's lower-case form.

    Parameters
    ----------
    name : str
        Instrument name, any case (``"NIRCam"``, ``"miri"``).

    Returns
    -------
    str
        One of :data:`INSTRUMENTS`.

    Raises
    ------
    BadInput
        If ``name`` is not a string or not a JWST instrument.
    """
    if not isinstance(name, str) or name.strip().lower() not in INSTRUMENTS:
        raise BadInput(f"unknown instrument {name!r}; expected one of {', '.join(INSTRUMENTS)}")
    return name.strip().lower()


def pipeline_steps(instrument: str) -> tuple[str, ...]:
    """Return the "cal" path's step order for an instrument.

    Parameters
    ----------
    instrument : str
        Instrument name, any case.

    Returns
    -------
    tuple of str
        jwql step names in run order.

    Raises
    ------
    BadInput
        If the instrument is unknown.
    """
    inst = validate_instrument(instrument)
    if inst == "miri":
        return MIRI_STEPS
    if inst == "nirspec":
        return NIRSPEC_STEPS
    return NEAR_IR_STEPS


def validate_outputs(instrument: str, ext_or_exts: object, pipeline: str = "cal") -> list[str]:
    """Normalise and check the requested output extensions.

    Parameters
    ----------
    instrument : str
        Instrument name, any case.
    ext_or_exts : str or sequence of str
        One extension (``"refpix"``), several, or ``"all"``. For ``"cal"`` the valid
        extensions are the instrument's step names plus ``"rateints"``; ``"all"`` is the
        step list. For ``"jump"`` they are :data:`JUMP_OUTPUTS`; ``"all"`` is all four.
    pipeline : {"cal", "jump"}
        Which path the outputs are for.

    Returns
    -------
    list of str
        Extensions in request order, duplicates removed, ``"all"`` expanded.

    Raises
    ------
    BadInput
        If the instrument, the pipeline, the container type or any extension is invalid.
    """
    allowed = _allowed_outputs(instrument, pipeline)
    expanded_all = list(pipeline_steps(instrument)) if pipeline == "cal" else list(JUMP_OUTPUTS)
    if isinstance(ext_or_exts, str):
        requested: list[object] = [ext_or_exts]
    elif isinstance(ext_or_exts, list | tuple):
        requested = list(ext_or_exts)
    else:
        raise BadInput(f"output extensions must be a string or a list of strings, not {type(ext_or_exts).__name__}")
    if not requested:
        raise BadInput("no output extension requested")
    result: list[str] = []
    for ext in requested:
        if not isinstance(ext, str):
            raise BadInput(f"output extension {ext!r} is not a string")
        names = expanded_all if ext == "all" else [ext]
        for name in names:
            if name not in allowed:
                raise BadInput(
                    f"unknown output extension {name!r} for {validate_instrument(instrument)} "
                    f"({pipeline} pipeline); expected one of {', '.join(allowed)} or 'all'"
                )
            if name not in result:
                result.append(name)
    return result


def _allowed_outputs(instrument: str, pipeline: str) -> list[str]:
    _check_pipeline(pipeline)
    if pipeline == "jump":
        validate_instrument(instrument)
        return list(JUMP_OUTPUTS)
    return [*pipeline_steps(instrument), RATEINTS]


def _check_pipeline(pipeline: str) -> None:
    if pipeline not in ("cal", "jump"):
        raise BadInput(f"unknown pipeline {pipeline!r}; expected 'cal' or 'jump'")


def known_step_names(pipeline: str = "cal") -> tuple[str, ...]:
    """Return the step names that ``step_args`` may use for a pipeline.

    Parameters
    ----------
    pipeline : {"cal", "jump"}
        ``"cal"``: jwql names (:data:`PIPELINE_STEP_MAPPING`); ``"jump"``: Detector1 aliases.

    Returns
    -------
    tuple of str

    Raises
    ------
    BadInput
        If ``pipeline`` is neither.
    """
    _check_pipeline(pipeline)
    return tuple(PIPELINE_STEP_MAPPING) if pipeline == "cal" else DETECTOR1_STEP_ALIASES


def validate_step_args(step_args: object, pipeline: str = "cal") -> dict[str, dict[str, Any]]:
    """Check the structure and JSON types of per-step arguments.

    The checks here need no jwst: step names are known for the pipeline, each value is a
    dict with string keys and JSON values (bool, int, float, str, None, lists and dicts of
    them), ``skip`` is a real bool, and ``override_*`` values are strings (file paths or
    ``"N/A"``). Parameter names and types are checked against the jwst step specs by
    :func:`jwql_dramatiq.pipeline.specs.check_step_args_against_specs`.

    Parameters
    ----------
    step_args : dict or None
        ``{step_name: {parameter: value}}``.
    pipeline : {"cal", "jump"}
        Selects the step names (see :func:`known_step_names`).

    Returns
    -------
    dict
        A deep copy of ``step_args`` (``{}`` for ``None``).

    Raises
    ------
    BadInput
        Naming the step and key of the first problem found.
    """
    if step_args is None:
        return {}
    if not isinstance(step_args, Mapping):
        raise BadInput(f"step_args must be a dict of step name -> dict, not {type(step_args).__name__}")
    known = known_step_names(pipeline)
    checked: dict[str, dict[str, Any]] = {}
    for step, params in step_args.items():
        if step not in known:
            hint = _alias_hint(step, pipeline)
            raise BadInput(f"unknown step {step!r} in step_args for the {pipeline} pipeline{hint}")
        if not isinstance(params, Mapping):
            raise BadInput(f"step_args[{step!r}] must be a dict of parameters, not {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(key, str):
                raise BadInput(f"step_args[{step!r}] has a non-string key {key!r}")
            _check_json(value, f"step_args[{step!r}][{key!r}]")
            if key == "skip" and not isinstance(value, bool):
                raise BadInput(f"step_args[{step!r}]['skip'] must be a bool (true/false), not {value!r}")
            if key.startswith("override_") and not isinstance(value, str):
                raise BadInput(f"step_args[{step!r}][{key!r}] must be a file path string or 'N/A', not {value!r}")
            if key == "maximum_cores":
                raise BadInput(f"step_args[{step!r}]['maximum_cores'] is not allowed; pass max_cores to the task")
        checked[step] = copy.deepcopy(dict(params))
    return checked


def _alias_hint(step: object, pipeline: str) -> str:
    if pipeline == "cal" and step == "ramp_fit":
        return " (the cal pipeline calls ramp fitting 'rate')"
    if pipeline == "jump" and step == "rate":
        return " (the jump pipeline calls ramp fitting 'ramp_fit')"
    return f"; expected one of {', '.join(known_step_names(pipeline))}"


def _check_json(value: object, where: str) -> None:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        raise BadInput(f"{where} is NaN, which JSON cannot carry")
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise BadInput(f"{where} has a non-string key {k!r}")
            _check_json(item, f"{where}[{k!r}]")
        return
    raise BadInput(f"{where} has type {type(value).__name__}, which is not a JSON type")


def merge_step_args(base: Mapping[str, Mapping[str, Any]] | None,
                    extra: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Merge two ``{step: {param: value}}`` dicts; ``extra`` wins per parameter.

    Neither input is modified. A step present in both keeps the parameters of ``base``
    that ``extra`` does not set (the original's ``params[x] = params[x].update(...)``
    replaced them with ``None``).

    Parameters
    ----------
    base : dict or None
        Defaults, e.g. the save-jump path's built-in parameters.
    extra : dict or None
        Caller's step arguments.

    Returns
    -------
    dict
        A new dict of new per-step dicts.
    """
    merged: dict[str, dict[str, Any]] = {step: copy.deepcopy(dict(p)) for step, p in (base or {}).items()}
    for step, params in (extra or {}).items():
        merged.setdefault(step, {}).update(copy.deepcopy(dict(params)))
    return merged


def is_skipped(step_args: Mapping[str, Mapping[str, Any]], step: str) -> bool:
    """Return True when ``step_args[step]["skip"]`` is True.

    Parameters
    ----------
    step_args : dict
        Validated step arguments.
    step : str
        Step name.

    Returns
    -------
    bool
    """
    return step_args.get(step, {}).get("skip") is True


def completed_steps(header: Mapping[str, Any]) -> set[str]:
    """Return the jwql step names a header marks ``COMPLETE`` (``S_*`` keywords).

    Parameters
    ----------
    header : mapping
        A FITS primary header, or any mapping of keyword -> value.

    Returns
    -------
    set of str
    """
    return {step for key, step in PIPE_KEYWORDS.items() if str(header.get(key, "")).strip() == "COMPLETE"}


def steps_to_run(instrument: str, done: Iterable[str] = ()) -> list[str]:
    """Return the instrument's steps after the last one already done.

    Like jwql, every step up to and including the last completed one (in run order)
    is skipped, even if an earlier one is not marked complete.

    Parameters
    ----------
    instrument : str
        Instrument name, any case.
    done : iterable of str
        Completed jwql step names, e.g. from :func:`completed_steps`.

    Returns
    -------
    list of str
    """
    order = pipeline_steps(instrument)
    done_set = set(done)
    last = max((i for i, step in enumerate(order) if step in done_set), default=-1)
    return list(order[last + 1:])
