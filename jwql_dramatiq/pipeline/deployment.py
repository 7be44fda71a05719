"""Deployment-level step arguments: per-step defaults a worker's config supplies to every call.

An offline host (no CRDS server) needs ``override_<reftype>`` paths for every step, and a
site may pin parameters for all its monitors. The config key ``step_args`` carries them:

    {"*":             {"jump": {"rejection_threshold": 15.0}},
     "nircam":        {"linearity": {"override_linearity": "/refs/nircam_linearity.fits"}, ...},
     "nircam/SUB64P": {"dark_current": {"override_dark": "/refs/nircam_sub64p_dark.fits"}}}

``"*"`` applies to every instrument, then the instrument's own entry, then the entry for the
input's subarray (its ``SUBARRAY`` keyword), as CRDS would choose a subarray's own DARK or
RESET (jwst cuts most full-frame references to a subarray itself, but not those two). The
message's own ``step_args`` are merged over all of them, parameter by parameter. Step names
may be jwql's (``rate``) or Detector1's (``ramp_fit``); each call path gets the names it
knows. Pure data, no jwst.
"""

from __future__ import annotations

import os
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


def split_key(key: str) -> tuple[str, str | None]:
    """Split a ``step_args`` config key into ``(instrument or "*", subarray or None)``.

    Raises
    ------
    BadInput
        An unknown instrument, or an empty subarray name.
    """
    instrument, _, subarray = key.partition("/")
    if instrument != "*":
        instrument = validate_instrument(instrument)
    if "/" in key and (instrument == "*" or not subarray.strip()):
        raise BadInput(f"key {key!r} must be '*', '<instrument>' or '<instrument>/<SUBARRAY>'")
    return instrument, (subarray.strip().upper() if "/" in key else None)


def deployment_step_args(config_step_args: Mapping[str, Any], instrument: str, pipeline: str,
                         subarray: str | None = None) -> dict[str, dict[str, Any]]:
    """The deployment's step arguments for one call: ``"*"``, the instrument's, then its subarray's.

    Parameters
    ----------
    config_step_args : dict
        The config's ``step_args`` (already checked at load).
    instrument : str
        Instrument name, any case.
    pipeline : {"cal", "jump"}
    subarray : str or None
        The input's ``SUBARRAY`` keyword, any case.

    Returns
    -------
    dict
        ``{step: {parameter: value}}`` in the path's step names.
    """
    inst = validate_instrument(instrument)
    layers = {("*", None): 0, (inst, None): 1, (inst, (subarray or "").strip().upper() or None): 2}
    chosen = sorted(((layers[split_key(key)], steps) for key, steps in config_step_args.items()
                     if split_key(key) in layers), key=lambda ranked: ranked[0])
    merged: dict[str, dict[str, Any]] = {}
    for _rank, steps in chosen:
        merged = merge_step_args(merged, deployment_path_args(steps, pipeline))
    return merged


def input_subarray(input_path: str | os.PathLike[str]) -> str | None:
    """The ``SUBARRAY`` keyword of an input's primary header, or None if it cannot be read.

    An unreadable file is not refused here: the pipeline's own input checks name the problem.
    """
    from astropy.io import fits

    try:
        value = fits.getval(os.fspath(input_path), "SUBARRAY", ext=0)
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return str(value).strip().upper() or None


def with_deployment_defaults(config_step_args: Mapping[str, Any], instrument: str, pipeline: str,
                             call_step_args: object, subarray: str | None = None) -> dict[str, dict[str, Any]]:
    """Merge a call's own ``step_args`` over the deployment's, the call winning per parameter.

    Parameters
    ----------
    config_step_args : dict
        The config's ``step_args``.
    instrument : str
    pipeline : {"cal", "jump"}
    call_step_args : dict or None
        The message's ``step_args``.
    subarray : str or None
        The input's ``SUBARRAY`` keyword.

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
    return merge_step_args(deployment_step_args(config_step_args, instrument, pipeline, subarray), own)
