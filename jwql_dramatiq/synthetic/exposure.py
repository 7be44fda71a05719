"""Synthetic level-1b ("uncal") ramps for every JWST instrument.

Each ramp is ``bias + rate * t`` on the light-sensitive pixels (reference pixels see only
the bias), plus Gaussian read noise and optionally one cosmic ray, stored as the on-board
electronics would: NFRAMES frames summed and divided by FRMDIVSR. After the pipeline's
``group_scale`` step (or directly, when FRMDIVSR == NFRAMES) the slope is ``rate`` DN/s.
numpy and stdatamodels are imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from jwql_dramatiq.synthetic.detectors import Detector, Subarray, detector_for, reference_pixel_mask, resolve_subarray

logger = logging.getLogger(__name__)

#: Group time of every synthetic exposure, seconds (frame time is this / (NFRAMES + GROUPGAP)).
GROUP_TIME_S = 1.0
#: Bias level of the synthetic ramps (and the superbias), DN.
BIAS_DN = 12000.0
#: Read noise of the ramps (and the READNOISE reference), DN.
READ_NOISE_DN = 5.0
#: Height of the injected cosmic-ray jump, DN.
COSMIC_RAY_DN = 2000.0
#: Injected count rate of :func:`make_exposure` unless told otherwise, DN/s.
DEFAULT_RATE_DN_PER_S = 50.0

#: Default (nints, ngroups) per instrument: MIRI has several integrations and more groups
#: because ``lastframe`` flags its last group.
DEFAULT_SHAPE: dict[str, tuple[int, int]] = {"nircam": (2, 5), "niriss": (2, 5), "fgs": (2, 5),
                                             "nirspec": (2, 5), "miri": (3, 8)}
#: Default cosmic ray per instrument: (integration, first group, row, column) in the subarray.
DEFAULT_COSMIC_RAY: dict[str, tuple[int, int, int, int]] = {
    "nircam": (0, 3, 30, 30), "niriss": (0, 3, 30, 30), "fgs": (0, 3, 30, 30), "nirspec": (0, 3, 20, 20),
    "miri": (1, 4, 30, 30)}


def exposure_file_name(instrument: str, exposure: int = 1) -> str:
    """Return a JWST-style uncal file name for the instrument's synthetic detector.

    Parameters
    ----------
    instrument : str
        jwql instrument name.
    exposure : int
        Exposure number (the third name field).

    Returns
    -------
    str
        e.g. ``jw09999001001_01101_00001_nrs1_uncal.fits``.
    """
    det = detector_for(instrument)
    return f"jw09999001001_01101_{exposure:05d}_{det.detector.lower()}_uncal.fits"


def make_exposure(
    instrument: str,
    path: str | os.PathLike[str],
    subarray: str | Subarray = "small",
    nints: int | None = None,
    ngroups: int | None = None,
    rate_dn_per_s: float = DEFAULT_RATE_DN_PER_S,
    cosmic_ray: tuple[int, int, int, int] | None | str = "default",
    seed: int = 1,
) -> Path:
    """Write a synthetic level-1b ramp for one instrument.

    Parameters
    ----------
    instrument : str
        ``nircam``, ``niriss``, ``fgs``, ``nirspec`` or ``miri`` (any case).
    path : path
        Output file; name it like :func:`exposure_file_name` (the tasks derive the short
        name from it). Parent directories are created.
    subarray : {"small", "full"} or Subarray
        ``"small"``: the instrument's test subarray (:data:`~.detectors.DETECTORS`);
        ``"full"``: the full frame (2048x2048 near-IR, 1024 rows x 1032 columns MIRI).
    nints, ngroups : int or None
        Integrations and groups; None takes :data:`DEFAULT_SHAPE`.
    rate_dn_per_s : float
        Injected count rate on light-sensitive pixels, DN/s.
    cosmic_ray : (int, int, int, int), None or "default"
        ``(integration, first_group, row, column)`` of a jump of :data:`COSMIC_RAY_DN` (before
        the on-board frame scaling) that stays for the rest of the integration; None for
        none; ``"default"`` for :data:`DEFAULT_COSMIC_RAY`.
    seed : int
        Seed of the read-noise generator.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For an unknown instrument, a region off the detector, or a cosmic ray outside the
        ramp or on a reference pixel.
    """
    import numpy as np
    from stdatamodels.jwst import datamodels

    key = instrument.strip().lower()
    det = detector_for(key)
    sub = resolve_subarray(det, subarray)
    d_ints, d_groups = DEFAULT_SHAPE[key]
    nints, ngroups = nints or d_ints, ngroups or d_groups
    if cosmic_ray == "default":
        cosmic_ray = DEFAULT_COSMIC_RAY[key]
    out = Path(path)
    refpix = reference_pixel_mask(det, sub)
    rng = np.random.default_rng(seed)
    shape = (nints, ngroups, sub.ysize, sub.xsize)
    ramp = rng.standard_normal(shape, dtype=np.float32)
    ramp *= np.float32(READ_NOISE_DN / det.nframes**0.5)  # NFRAMES frames averaged per group
    ramp += np.float32(BIAS_DN)
    light = (~refpix).astype(np.float32)
    for g in range(ngroups):
        ramp[:, g] += np.float32(rate_dn_per_s * GROUP_TIME_S * g) * light
    if cosmic_ray is not None:
        integ, group, row, col = cosmic_ray  # type: ignore[misc]
        if not (0 <= integ < nints and 0 <= group < ngroups and 0 <= row < sub.ysize and 0 <= col < sub.xsize):
            raise ValueError(f"cosmic_ray {cosmic_ray} lies outside a {shape} ramp")
        if refpix[row, col]:
            raise ValueError(f"cosmic_ray {cosmic_ray} falls on a reference pixel")
        ramp[integ, group:, row, col] += np.float32(COSMIC_RAY_DN)
    if det.nframes != det.frame_divisor:
        ramp *= np.float32(det.nframes / det.frame_divisor)
    np.clip(ramp, 0, 65535, out=ramp)
    model = datamodels.Level1bModel(data=np.rint(ramp).astype(np.uint16))
    del ramp
    set_exposure_meta(model, det, sub, nints, ngroups, out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    model.close()
    logger.debug("Wrote synthetic %s uncal %s %s", det.instrument, out, shape)
    return out


def set_exposure_meta(model: Any, det: Detector, sub: Subarray, nints: int, ngroups: int, filename: str) -> None:
    """Fill the header keywords the Detector1 steps read.

    Parameters
    ----------
    model : DataModel
        A Level1bModel (or RampModel).
    det : Detector
    sub : Subarray
    nints, ngroups : int
    filename : str
        ``FILENAME``.
    """
    meta = model.meta
    meta.filename = filename
    meta.telescope = "JWST"
    meta.instrument.name, meta.instrument.detector = det.instrument, det.detector
    for attr, value in det.extra:
        setattr(meta.instrument, attr, value)
    meta.observation.date, meta.observation.time = "2024-01-01", "00:00:00"
    meta.date = "2024-01-01T00:00:00"
    exp = meta.exposure
    exp.type, exp.readpatt = det.exp_type, det.readpatt
    exp.nints, exp.ngroups = nints, ngroups
    exp.nframes, exp.groupgap, exp.frame_divisor = det.nframes, det.groupgap, det.frame_divisor
    exp.nresets_at_start = exp.nresets_between_ints = 1
    exp.group_time = GROUP_TIME_S
    exp.frame_time = GROUP_TIME_S / (det.nframes + det.groupgap)
    exp.integration_time = GROUP_TIME_S * ngroups
    exp.exposure_time = exp.effective_exposure_time = exp.duration = GROUP_TIME_S * ngroups * nints
    exp.start_time, exp.mid_time, exp.end_time = 60310.0, 60310.0001, 60310.0002
    exp.zero_frame = False
    exp.sca_num = det.sca_num
    set_subarray_meta(model, det, sub)
    meta.visit.tsovisit = False


def set_subarray_meta(model: Any, det: Detector, sub: Subarray) -> None:
    """Set ``SUBARRAY``, ``SUBSTRT1/2``, ``SUBSIZE1/2``, ``FASTAXIS`` and ``SLOWAXIS``.

    Parameters
    ----------
    model : DataModel
    det : Detector
    sub : Subarray
    """
    m = model.meta.subarray
    m.name, m.xstart, m.ystart, m.xsize, m.ysize = sub.name, sub.xstart, sub.ystart, sub.xsize, sub.ysize
    m.fastaxis, m.slowaxis = det.fastaxis, det.slowaxis
