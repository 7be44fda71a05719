"""Deployment-level step arguments: per-step defaults a worker's config supplies to every call.

An offline host (no CRDS server) needs ``override_<reftype>`` paths for every step, and a
site may pin parameters for all its monitors. The config key ``step_args`` carries them:

    {"*":      {"jump": {"rejection_threshold": 15.0}},
     "nircam": {"dark_current": {"override_dark": "/refs/nircam_dark.fits"}, "rate": {...}}}

``"*"`` applies to every instrument, then the instrument's own entry; the message's own
``step_args`` are merged over both, parameter by parameter. Step names may be jwql's
(``rate``) or Detector1's (``ramp_fit``); each call path gets the names it knows. Pure data,
no jwst.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jwql_dramatiq.errors import BadInput
from jwql_dramatiq.pipeline.steps import (
    JWQL_TO_DETECTOR1_ALIAS,
    known_step_names,
    merge_step_args,
    validate_instrument,
    validate_step_args,
)

#: Detector1 alias -> jwql step name, where they differ.
_DETECTOR1_TO_JWQL = {alias: name for name, alias in JWQL_TO_DETECTOR1_ALIAS.items()}


def deployment_path_args(steps: object, pipeline: str) -> dict[str, dict[str, Any]]:
    """Translate one instrument's deployment step arguments to a pipeline path's step names.

    Parameters
    ----------
    steps : dict
        ``{step: {parameter: value}}`` with jwql names or Detector1 aliases.
    pipeline : {"cal", "jump"}
        The path to translate for; steps only the other path knows are left out.

    Returns
    -------
    dict
        Validated ``{step: {parameter: value}}`` in the path's names.

    Raises
    ------
    BadInput
        A step known to neither path, or a badly typed parameter.
    """
    if not isinstance(steps, Mapping):
        raise BadInput(f"must map step names to parameter dicts, not {type(steps).__name__}")
    rename = JWQL_TO_DETECTOR1_ALIAS if pipeline == "jump" else _DETECTOR1_TO_JWQL
    known_here = set(known_step_names(pipeline))
    known_anywhere = known_here | set(known_step_names("jump" if pipeline == "cal" else "cal"))
    translated: dict[str, Any] = {}
    for step, params in steps.items():
        if step not in known_anywhere:
            raise BadInput(f"unknown step {step!r}; expected a jwql step or Detector1 alias "
                           f"({', '.join(sorted(known_anywhere))})")
        name = rename.get(step, step)
        if name in known_here:
            translated[name] = params
    return validate_step_args(translated, pipeline)


def deployment_step_args(config_step_args: Mapping[str, Any], instrument: str,
                         pipeline: str) -> dict[str, dict[str, Any]]:
    """The deployment's step arguments for one call: ``"*"``, then the instrument's own entry.

    Parameters
    ----------
    config_step_args : dict
        The config's ``step_args`` (already checked at load).
    instrument : str
        Instrument name, any case.
    pipeline : {"cal", "jump"}

    Returns
    -------
    dict
        ``{step: {parameter: value}}`` in the path's step names.
    """
    inst = validate_instrument(instrument)
    merged = merge_step_args(deployment_path_args(config_step_args.get("*", {}), pipeline),
                             deployment_path_args(config_step_args.get(inst, {}), pipeline))
    return merged


def with_deployment_defaults(config_step_args: Mapping[str, Any], instrument: str, pipeline: str,
                             call_step_args: object) -> dict[str, dict[str, Any]]:
    """Merge a call's own ``step_args`` over the deployment's, the call winning per parameter.

    Parameters
    ----------
    config_step_args : dict
        The config's ``step_args``.
    instrument : str
    pipeline : {"cal", "jump"}
    call_step_args : dict or None
        The message's ``step_args``.

    Returns
    -------
    dict

    Raises
    ------
    BadInput
        The call's step arguments or instrument are invalid (named).
    """
    own = validate_step_args(call_step_args, pipeline)
    if not config_step_args:
        return own
    return merge_step_args(deployment_step_args(config_step_args, instrument, pipeline), own)
