"""Step arguments that make Detector1 run offline on the synthetic references.

:func:`instrument_step_overrides` gives every reference type of every step that can run
for an instrument, as a file or ``"N/A"`` (for types CRDS has no file for, and for the
steps jwst skips by default whose references are not synthesised: emicorr, picture_frame,
clean_flicker_noise). :func:`deployment_step_args` writes full-frame references for all
five instruments once and returns the worker-side ``step_args`` config value.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from jwql_dramatiq.synthetic.detectors import DETECTORS, detector_for
from jwql_dramatiq.synthetic.refs import MIRI_REFTYPES, NEAR_IR_REFTYPES, make_instrument_references

logger = logging.getLogger(__name__)

#: Name of the manifest :func:`deployment_step_args` writes last; its presence means "complete".
DEPLOYMENT_MANIFEST = "synthetic_deployment_refs.json"
#: Bump when the deployment references change, so cached ones are rewritten.
DEPLOYMENT_VERSION = 1
#: Integrations of the full-frame MIRI DARK (jwst reuses the last one for later integrations).
DEPLOYMENT_MIRI_DARK_NINTS = 2


def instrument_step_overrides(instrument: str, refs: dict[str, str], pipeline: str = "cal") -> dict[str, dict[str, Any]]:
    """Return ``override_<reftype>`` step arguments for one instrument.

    Parameters
    ----------
    instrument : str
        jwql instrument name, any case.
    refs : dict
        From :func:`~jwql_dramatiq.synthetic.refs.make_instrument_references` for that instrument.
    pipeline : {"cal", "jump"}
        ``"cal"``: keys are jwql step names (``rate``); ``"jump"``: Detector1 aliases (``ramp_fit``).

    Returns
    -------
    dict
        ``{step: {"override_<reftype>": path or "N/A"}}``; a new dict on each call. No
        ``skip`` is set: every step keeps jwst's own default.

    Raises
    ------
    ValueError
        For an unknown pipeline or instrument, or a reference type missing from ``refs``.
    """
    det = detector_for(instrument)
    needed = MIRI_REFTYPES if det.is_miri else NEAR_IR_REFTYPES
    missing = [r for r in needed if r not in refs]
    if missing:
        raise ValueError(f"refs lacks {det.instrument} reference types: {', '.join(missing)}")
    superbias = "N/A" if det.is_miri else refs["superbias"]
    gain_rn = {"override_gain": refs["gain"], "override_readnoise": refs["readnoise"]}
    args: dict[str, dict[str, Any]] = {
        "dq_init": {"override_mask": refs["mask"]},
        "emicorr": {"override_emicorr": "N/A"},
        "saturation": {"override_saturation": refs["saturation"], "override_superbias": superbias},
        "ipc": {"override_ipc": refs["ipc"]},
        "superbias": {"override_superbias": superbias},
        # IRS2 is NIRSpec only; the SIRS kernel is only read for near-IR full frames (N/A: running median).
        "refpix": {"override_refpix": "N/A", "override_sirskernel": "N/A"},
        "reset": {"override_reset": refs["reset"] if det.is_miri else "N/A"},
        "rscd": {"override_rscd": refs["rscd"] if det.is_miri else "N/A"},
        "linearity": {"override_linearity": refs["linearity"]},
        "dark_current": {"override_dark": refs["dark"]},
        "jump": dict(gain_rn),
        "picture_frame": {"override_pictureframe": "N/A"},
        "clean_flicker_noise": {"override_flat": "N/A", "override_pastasoss": "N/A"},
        "gain_scale": {"override_gain": refs["gain"]},
    }
    if pipeline == "cal":
        return {**args, "rate": dict(gain_rn)}
    if pipeline == "jump":
        return {**args, "ramp_fit": dict(gain_rn)}
    raise ValueError(f"unknown pipeline {pipeline!r}; expected 'cal' or 'jump'")


def deployment_step_args(directory: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Write full-frame synthetic references for all five instruments (once) and return step arguments.

    The result is the shape of the worker config key ``step_args``:
    ``{instrument: {jwql_step: {"override_<reftype>": path or "N/A"}}}`` with jwql "cal"
    step names (``rate`` for ramp fitting). The references serve full-frame exposures
    (2048x2048 near-IR, 1024x1032 MIRI): jwst cuts subarrays out of full-frame MASK,
    SATURATION, SUPERBIAS, LINEARITY, GAIN and READNOISE files, but not out of DARK and
    RESET files, so subarray exposures need :func:`make_instrument_references` instead.
    Darks cover the instruments' default exposures without extrapolation
    (:data:`~jwql_dramatiq.synthetic.exposure.DEFAULT_SHAPE`); longer ramps are extrapolated by jwst.

    Files go to ``<directory>/<instrument>/``; a manifest written last marks them complete,
    and a later call with the same directory reuses them (a few ms) instead of rewriting.

    Parameters
    ----------
    directory : path
        Where the references are kept; created if missing.

    Returns
    -------
    dict
        A new dict on each call.
    """
    root = Path(directory).resolve()
    manifest = root / DEPLOYMENT_MANIFEST
    paths = _read_manifest(manifest)
    if paths is None:
        paths = {}
        for inst in DETECTORS:
            nints = DEPLOYMENT_MIRI_DARK_NINTS if inst == "miri" else None
            paths[inst] = make_instrument_references(inst, root / inst, "full", nints=nints)
            logger.info("Wrote full-frame synthetic %s references to %s", inst, root / inst)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": DEPLOYMENT_VERSION, "paths": paths}, indent=1))
        os.replace(tmp, manifest)
    return {inst: instrument_step_overrides(inst, refs, "cal") for inst, refs in paths.items()}


def _read_manifest(manifest: Path) -> dict[str, dict[str, str]] | None:
    try:
        content = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    paths = content.get("paths") if isinstance(content, dict) else None
    if content.get("version") != DEPLOYMENT_VERSION or not isinstance(paths, dict) or set(paths) != set(DETECTORS):
        return None
    if not all(Path(p).is_file() for refs in paths.values() for p in refs.values()):
        return None
    return paths


def subarray_step_args(directory: str | os.PathLike[str],
                       instruments: tuple[str, ...] = tuple(DETECTORS)) -> dict[str, dict[str, dict[str, Any]]]:
    """Write each instrument's small-subarray references and return them as ``step_args`` config entries.

    The keys are ``"<instrument>/<SUBARRAY>"`` (e.g. ``"nircam/SUB64P"``), which a worker picks for
    inputs of that subarray, as CRDS picks a subarray's own DARK and RESET. Merged with
    :func:`deployment_step_args`, a site serves both full frames and the test subarrays.

    Parameters
    ----------
    directory : path
        Files go to ``<directory>/<instrument>/``.
    instruments : tuple of str
        jwql instrument names.

    Returns
    -------
    dict
        ``{"<instrument>/<SUBARRAY>": {jwql_step: {"override_<reftype>": path or "N/A"}}}``.
    """
    from jwql_dramatiq.synthetic.exposure import DEFAULT_SHAPE

    root = Path(directory).resolve()
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for inst in instruments:
        det = detector_for(inst)
        refs = make_instrument_references(inst, root / inst, "small", nints=DEFAULT_SHAPE[inst][0])
        entries[f"{inst}/{det.small.name}"] = instrument_step_overrides(inst, refs, "cal")
    return entries
