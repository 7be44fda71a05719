"""Neutral synthetic reference files for every instrument, at any subarray or full frame.

"Neutral" means the calibrated rate equals the injected rate: zero dark and reset,
identity linearity, superbias equal to the bias, an RSCD table that flags no group, and
a GAIN file without a gain factor (``GAINFACT``), so ``gain_scale`` marks itself SKIPPED
and changes nothing. (With a factor, jwst 3.0's Detector1 crashes when ``ramp_fit`` is
skipped: it then runs ``gain_scale`` on the ramp, which has no ``err`` array.) The MASK
flags the reference pixels REFERENCE_PIXEL (so ``refpix`` finds them in subarrays) and
full-frame pixel (0, 0) DO_NOT_USE. numpy and stdatamodels are imported inside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jwql_dramatiq.synthetic.detectors import Detector, Subarray, detector_for, reference_pixel_mask, resolve_subarray
from jwql_dramatiq.synthetic.exposure import BIAS_DN, DEFAULT_SHAPE, READ_NOISE_DN, set_subarray_meta

#: Saturation level of the SATURATION references, DN.
SATURATION_DN = 60000.0
#: Pixel gain of the GAIN references, e-/DN.
GAIN_E_PER_DN = 2.0
#: DQ value jwst uses for reference pixels.
REFERENCE_PIXEL_DQ = 2**31

#: Reference types written for near-IR detectors and for MIRI.
NEAR_IR_REFTYPES: tuple[str, ...] = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise",
                                     "ipc")
MIRI_REFTYPES: tuple[str, ...] = ("mask", "saturation", "linearity", "dark", "gain", "readnoise", "reset", "rscd",
                                  "ipc")


def _dq_def() -> Any:
    import numpy as np

    return np.array(
        [(0, 1, "DO_NOT_USE", "Bad pixel, do not use"), (1, 2, "SATURATED", "Saturated"),
         (2, 4, "JUMP_DET", "Jump"), (3, 8, "DROPOUT", "Dropout"),
         (31, REFERENCE_PIXEL_DQ, "REFERENCE_PIXEL", "Reference pixel")],
        dtype=[("BIT", "<i4"), ("VALUE", "<u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")],
    )


def dark_groups_needed(instrument: str, ngroups: int) -> int:
    """Return the DARK groups (NFRAMES=1, GROUPGAP=0) that cover ``ngroups`` science groups.

    Parameters
    ----------
    instrument : str
    ngroups : int
        Science groups per integration.

    Returns
    -------
    int
        ``ngroups * NFRAMES + (ngroups - 1) * GROUPGAP`` of the instrument's exposures.
    """
    det = detector_for(instrument)
    return ngroups * det.nframes + (ngroups - 1) * det.groupgap


def _common(model: Any, reftype: str, det: Detector, sub: Subarray | None) -> Any:
    meta = model.meta
    meta.reftype, meta.author, meta.pedigree = reftype.upper(), "jwql_dramatiq.synthetic", "DUMMY"
    meta.description = f"synthetic neutral {reftype} for offline runs"
    meta.useafter, meta.telescope = "2000-01-01T00:00:00", "JWST"
    meta.instrument.name, meta.instrument.detector = det.instrument, det.detector
    try:
        meta.exposure.type = det.exp_type
    except AttributeError:
        pass  # IPCModel has no exposure
    if sub is not None:
        set_subarray_meta(model, det, sub)
    return model


def _models(det: Detector, sub: Subarray, dark_groups: int, dark_ints: int) -> dict[str, Any]:
    import numpy as np
    from stdatamodels.jwst import datamodels

    shape = (sub.ysize, sub.xsize)
    dq_def = _dq_def()
    mask_dq = np.where(reference_pixel_mask(det, sub), np.uint32(REFERENCE_PIXEL_DQ), np.uint32(0)).astype(np.uint32)
    if sub.xstart == 1 and sub.ystart == 1:
        mask_dq[0, 0] |= 1  # full-frame pixel (0, 0): DO_NOT_USE
    coeffs = np.zeros((2, *shape), np.float32)
    coeffs[1] = 1.0
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = 1.0
    gain = datamodels.GainModel(data=np.full(shape, GAIN_E_PER_DN, np.float32))
    models: dict[str, Any] = {
        "mask": datamodels.MaskModel(dq=mask_dq, dq_def=dq_def),
        "saturation": datamodels.SaturationModel(data=np.full(shape, SATURATION_DN, np.float32),
                                                 dq=np.zeros(shape, np.uint32), dq_def=dq_def),
        "linearity": datamodels.LinearityModel(coeffs=coeffs, dq=np.zeros(shape, np.uint32), dq_def=dq_def),
        "gain": gain,
        "readnoise": datamodels.ReadnoiseModel(data=np.full(shape, READ_NOISE_DN, np.float32)),
        "ipc": datamodels.IPCModel(data=kernel),
    }
    if det.is_miri:
        dshape = (dark_ints, dark_groups, *shape)
        models["dark"] = datamodels.DarkMIRIModel(data=np.zeros(dshape, np.float32),
                                                  dq=np.zeros(dshape, np.uint32), dq_def=dq_def)
        reset = datamodels.ResetModel(data=np.zeros((1, 1, *shape), np.float32), dq=np.zeros(shape, np.uint32),
                                      dq_def=dq_def)
        reset.meta.exposure.nints, reset.meta.exposure.ngroups = 1, 1
        models["reset"] = reset
        models["rscd"] = _rscd_model()
    else:
        dark_cls = datamodels.DarkNirspecModel if det.instrument == "NIRSPEC" else datamodels.DarkModel
        models["dark"] = dark_cls(data=np.zeros((dark_groups, *shape), np.float32), dq=np.zeros(shape, np.uint32),
                                  dq_def=dq_def)
        models["superbias"] = datamodels.SuperBiasModel(data=np.full(shape, BIAS_DN, np.float32),
                                                        dq=np.zeros(shape, np.uint32), dq_def=dq_def)
    e = models["dark"].meta.exposure
    e.nframes, e.groupgap, e.ngroups, e.nints, e.readpatt = 1, 0, dark_groups, dark_ints, det.readpatt
    return models


def _rscd_model() -> Any:
    import numpy as np
    from stdatamodels.jwst import datamodels

    names = ("FULL", "SUB64", "SUB128", "SUB256", "BRIGHTSKY", "MASK1065", "MASK1140", "MASK1550", "MASKLYOT",
             "SLITLESSPRISM")
    rows = [(name, patt, 0, 0) for name in names for patt in ("FAST", "FASTR1", "SLOW", "SLOWR1")]
    table = np.array(rows, dtype=[("subarray", "S17"), ("readpatt", "S12"), ("group_skip1", "<i4"),
                                  ("group_skip", "<i4")])
    return datamodels.RSCDModel(rscd_group_skip_table=table)


def make_instrument_references(
    instrument: str,
    directory: str | os.PathLike[str],
    subarray: str | Subarray = "small",
    ngroups: int | None = None,
    nints: int | None = None,
) -> dict[str, str]:
    """Write neutral reference files for one instrument and region.

    jwst's dark, reset and gain-scale code does not cut a subarray out of a full-frame
    reference, so the files are written at the science region's size (``subarray``).

    Parameters
    ----------
    instrument : str
        jwql instrument name, any case.
    directory : path
        Created if missing; files are ``synthetic_<instrument>_<region>_<reftype>.fits``.
    subarray : {"small", "full"} or Subarray
        Region of the exposures these references serve.
    ngroups : int or None
        Science groups the DARK covers without extrapolation (None: the instrument's
        default exposure). jwst extrapolates a shorter dark, so a small value is fine.
    nints : int or None
        Integrations of the MIRI DARK (MIRI darks are per integration; jwst uses the last
        one for later integrations). None: 1.

    Returns
    -------
    dict
        Reference type (:data:`NEAR_IR_REFTYPES` or :data:`MIRI_REFTYPES`) -> absolute path.
    """
    key = instrument.strip().lower()
    det = detector_for(key)
    sub = resolve_subarray(det, subarray)
    groups = dark_groups_needed(key, ngroups or DEFAULT_SHAPE[key][1])
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for reftype, model in _models(det, sub, groups, nints or 1).items():
        _common(model, reftype, det, None if reftype in ("ipc", "rscd") else sub)
        target = out / f"synthetic_{key}_{sub.name.lower()}_{reftype}.fits"
        model.save(str(target))
        model.close()
        paths[reftype] = str(target)
    return paths
