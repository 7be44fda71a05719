"""The original NIRCam-only interface (NRCA1 corner subarrays of any supported size), kept for callers.

:func:`make_uncal`, :func:`make_reference_files` and :func:`offline_step_overrides` are thin
wrappers over the instrument-general functions, with the signatures the demo, the
benchmarks, the warm-up and the tests use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jwql_dramatiq.synthetic.detectors import Subarray
from jwql_dramatiq.synthetic.exposure import make_exposure
from jwql_dramatiq.synthetic.overrides import instrument_step_overrides
from jwql_dramatiq.synthetic.refs import NEAR_IR_REFTYPES, make_instrument_references

#: File name the recipe used; pass any name to :func:`make_uncal`.
DEFAULT_UNCAL_NAME = "jw09999001001_01101_00001_nrca1_uncal.fits"

#: NIRCam subarray names (all corner-based here) for the supported sizes, pixels.
SUBARRAY_NAMES: dict[int, str] = {32: "SUB32TATS", 64: "SUB64P", 160: "SUB160P", 320: "SUB320",
                                  400: "SUB400P", 640: "SUB640", 2048: "FULL"}

#: Reference types :func:`make_reference_files` writes.
REFERENCE_TYPES: tuple[str, ...] = NEAR_IR_REFTYPES


def _corner(size: int) -> Subarray:
    if size not in SUBARRAY_NAMES:
        raise ValueError(f"unsupported synthetic size {size}; choose one of {sorted(SUBARRAY_NAMES)}")
    return Subarray(SUBARRAY_NAMES[size], 1, 1, size, size)


def make_uncal(
    path: str | os.PathLike[str],
    size: int = 64,
    nints: int = 2,
    ngroups: int = 5,
    slope_dn_per_group: float = 50.0,
    cosmic_ray: tuple[int, int, int, int] | None = (0, 3, 30, 30),
    seed: int = 1,
) -> Path:
    """Write a synthetic NIRCam NRCA1 level-1b ("uncal") ramp on a corner subarray.

    The group time is 1 s, so ``slope_dn_per_group`` is also the rate in DN/s; the
    reference pixels (the full frame's 4-pixel border) see only the bias.

    Parameters
    ----------
    path : path
        Output file, named like ``jw..._..._..._nrca1_uncal.fits``.
    size : int
        Subarray side in pixels; one of :data:`SUBARRAY_NAMES` (2048 is the full frame).
    nints, ngroups : int
        Integrations and groups per integration.
    slope_dn_per_group : float
        Signal added per group, DN.
    cosmic_ray : (int, int, int, int) or None
        ``(integration, first_group, row, column)`` of a jump; None for none.
    seed : int
        Seed of the read-noise generator.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For an unsupported size or a cosmic ray outside the ramp.
    """
    return make_exposure("nircam", path, _corner(size), nints, ngroups, slope_dn_per_group, cosmic_ray, seed)


def make_reference_files(directory: str | os.PathLike[str], size: int = 64, ngroups: int = 5) -> dict[str, str]:
    """Write neutral NIRCam reference files matching :func:`make_uncal`.

    Parameters
    ----------
    directory : path
        Created if missing.
    size : int
        Subarray side, as for :func:`make_uncal`.
    ngroups : int
        Science groups the DARK covers.

    Returns
    -------
    dict
        Reference type (:data:`REFERENCE_TYPES`) -> absolute file path.
    """
    return make_instrument_references("nircam", directory, _corner(size), ngroups=ngroups)


def offline_step_overrides(refs: dict[str, str], pipeline: str = "jump") -> dict[str, dict[str, Any]]:
    """Return step arguments that give every NIRCam reference file as an override.

    Parameters
    ----------
    refs : dict
        From :func:`make_reference_files`.
    pipeline : {"jump", "cal"}
        ``"jump"``: keys are Detector1 aliases (``ramp_fit``); ``"cal"``: jwql step names (``rate``).

    Returns
    -------
    dict
        ``{step: {"override_<reftype>": path or "N/A", ...}}``; a new dict on each call.

    Raises
    ------
    ValueError
        For an unknown ``pipeline`` or a missing reference type.
    """
    return instrument_step_overrides("nircam", refs, pipeline)
