"""Synthetic NIRCam data and reference files that run calwebb_detector1 with no CRDS.

Adapted from the checked offline recipe (``jwst-offline.md``): a NIRCam NRCA1 level-1b
ramp on a corner subarray with a linear signal, Gaussian read noise and one cosmic ray,
plus matching MASK, SATURATION, SUPERBIAS, LINEARITY, DARK, GAIN, READNOISE and IPC
reference files. With :func:`offline_step_overrides` as step arguments, and the CRDS stub
from :mod:`jwql_dramatiq.pipeline.crds_env`, Detector1 runs offline; the rate is the
injected slope divided by the group time (1 s), so 50 DN/group gives 50 DN/s.

Also writes broken inputs for tests: a truncated FITS file, a file that is not FITS at
all, and a valid FITS image that is not a ramp. numpy and stdatamodels are imported
inside the functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: File name the recipe used; pass any name to :func:`make_uncal`.
DEFAULT_UNCAL_NAME = "jw09999001001_01101_00001_nrca1_uncal.fits"

#: Frame and group time of the synthetic exposure, seconds.
GROUP_TIME_S = 1.0
#: Bias level of the synthetic ramps (and the superbias), DN.
BIAS_DN = 12000.0
#: Read noise of the ramps (and the READNOISE reference), DN.
READ_NOISE_DN = 5.0
#: Height of the injected cosmic-ray jump, DN.
COSMIC_RAY_DN = 2000.0

#: NIRCam subarray names (all corner-based here) for the supported sizes, pixels.
SUBARRAY_NAMES: dict[int, str] = {32: "SUB32TATS", 64: "SUB64P", 160: "SUB160P", 320: "SUB320",
                                  400: "SUB400P", 640: "SUB640", 2048: "FULL"}

#: Reference type -> file name written by :func:`make_reference_files`.
REFERENCE_TYPES: tuple[str, ...] = ("mask", "saturation", "superbias", "linearity", "dark", "gain",
                                    "readnoise", "ipc")

_INSTRUMENT = {"name": "NIRCAM", "detector": "NRCA1", "channel": "SHORT", "module": "A",
               "filter": "F200W", "pupil": "CLEAR"}


def _dq_def() -> Any:
    import numpy as np

    return np.array(
        [(0, 1, "DO_NOT_USE", "Bad pixel, do not use"), (1, 2, "SATURATED", "Saturated"),
         (2, 4, "JUMP_DET", "Jump"), (3, 8, "DROPOUT", "Dropout")],
        dtype=[("BIT", "<i4"), ("VALUE", "<u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")],
    )


def _set_subarray(model: Any, size: int) -> None:
    if size not in SUBARRAY_NAMES:
        raise ValueError(f"unsupported synthetic size {size}; choose one of {sorted(SUBARRAY_NAMES)}")
    sub = model.meta.subarray
    sub.name = SUBARRAY_NAMES[size]
    sub.xstart, sub.ystart, sub.xsize, sub.ysize = 1, 1, size, size
    sub.fastaxis, sub.slowaxis = -1, 2  # NRCA1 orientation, used by refpix


def make_uncal(
    path: str | os.PathLike[str],
    size: int = 64,
    nints: int = 2,
    ngroups: int = 5,
    slope_dn_per_group: float = 50.0,
    cosmic_ray: tuple[int, int, int, int] | None = (0, 3, 30, 30),
    seed: int = 1,
) -> Path:
    """Write a synthetic NIRCam NRCA1 level-1b ("uncal") ramp.

    Parameters
    ----------
    path : path
        Output file; the name should look like ``jw..._..._..._nrca1_uncal.fits`` because
        the pipeline tasks derive the short name from it. Parent directories are created.
    size : int
        Subarray side in pixels; one of :data:`SUBARRAY_NAMES`.
    nints, ngroups : int
        Integrations and groups per integration.
    slope_dn_per_group : float
        Signal added per group, DN (= DN/s, since the group time is 1 s).
    cosmic_ray : (int, int, int, int) or None
        ``(integration, first_group, row, column)`` of a jump of :data:`COSMIC_RAY_DN`
        that stays for the rest of the integration; None for no cosmic ray.
    seed : int
        Seed of the read-noise generator.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For an unsupported size or a cosmic ray outside the ramp.
    """
    import numpy as np
    from stdatamodels.jwst import datamodels

    out = Path(path)
    rng = np.random.default_rng(seed)
    groups = np.arange(ngroups, dtype=np.float64)[None, :, None, None]
    ramp = BIAS_DN + slope_dn_per_group * groups + rng.normal(0.0, READ_NOISE_DN, (nints, ngroups, size, size))
    if cosmic_ray is not None:
        integ, group, row, col = cosmic_ray
        if not (0 <= integ < nints and 0 <= group < ngroups and 0 <= row < size and 0 <= col < size):
            raise ValueError(f"cosmic_ray {cosmic_ray} lies outside a {nints}x{ngroups}x{size}x{size} ramp")
        ramp[integ, group:, row, col] += COSMIC_RAY_DN
    model = datamodels.Level1bModel(data=np.clip(ramp, 0, 65535).astype(np.uint16))
    meta = model.meta
    meta.filename = out.name
    meta.telescope = "JWST"
    for key, value in _INSTRUMENT.items():
        setattr(meta.instrument, key, value)
    meta.observation.date, meta.observation.time = "2024-01-01", "00:00:00"
    meta.date = "2024-01-01T00:00:00"
    exp = meta.exposure
    exp.type, exp.readpatt = "NRC_IMAGE", "RAPID"
    exp.nints, exp.ngroups, exp.nframes, exp.groupgap, exp.frame_divisor = nints, ngroups, 1, 0, 1
    exp.nresets_at_start = exp.nresets_between_ints = 1
    exp.frame_time = exp.group_time = GROUP_TIME_S
    exp.integration_time = GROUP_TIME_S * ngroups
    exp.exposure_time = exp.effective_exposure_time = exp.duration = GROUP_TIME_S * ngroups * nints
    exp.start_time, exp.mid_time, exp.end_time = 60310.0, 60310.0001, 60310.0002
    exp.zero_frame = False
    exp.sca_num = 481
    _set_subarray(model, size)
    meta.visit.tsovisit = False
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    model.close()
    logger.debug("Wrote synthetic uncal %s (%dx%dx%dx%d)", out, nints, ngroups, size, size)
    return out


def _ref_common(model: Any, reftype: str, size: int) -> Any:
    meta = model.meta
    meta.reftype, meta.author, meta.pedigree = reftype, "jwql_dramatiq.synthetic", "DUMMY"
    meta.description = f"synthetic {reftype} for offline runs"
    meta.useafter, meta.telescope = "2000-01-01T00:00:00", "JWST"
    meta.instrument.name, meta.instrument.detector = "NIRCAM", _INSTRUMENT["detector"]
    try:
        meta.exposure.type = "NRC_IMAGE"
    except AttributeError:
        pass  # IPCModel has no exposure
    try:
        _set_subarray(model, size)
    except AttributeError:
        pass  # nor a subarray
    return model


def make_reference_files(directory: str | os.PathLike[str], size: int = 64, ngroups: int = 5) -> dict[str, str]:
    """Write synthetic NIRCam reference files matching :func:`make_uncal`.

    MASK flags pixel (0, 0) DO_NOT_USE; SATURATION is 60000 DN; SUPERBIAS equals the
    bias; LINEARITY is the identity; DARK is zero with ``ngroups`` planes; GAIN is 2;
    READNOISE is 5 DN; IPC is a 3x3 delta kernel.

    Parameters
    ----------
    directory : path
        Created if missing; files are named ``synthetic_nircam_<reftype>.fits``.
    size : int
        Subarray side, as for :func:`make_uncal`.
    ngroups : int
        Groups of the science ramps the DARK must cover.

    Returns
    -------
    dict
        Reference type (:data:`REFERENCE_TYPES`) -> absolute file path.
    """
    import numpy as np
    from stdatamodels.jwst import datamodels

    shape = (size, size)
    dq_def = _dq_def()

    def zeros_dq() -> Any:
        return np.zeros(shape, np.uint32)

    mask = datamodels.MaskModel(dq=zeros_dq(), dq_def=dq_def)
    mask.dq[0, 0] = 1
    coeffs = np.zeros((5, *shape), np.float32)
    coeffs[1] = 1.0
    dark = datamodels.DarkModel(data=np.zeros((ngroups, *shape), np.float32),
                                err=np.zeros((ngroups, *shape), np.float32), dq=zeros_dq(), dq_def=dq_def)
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = 1.0
    models = {
        "mask": mask,
        "saturation": datamodels.SaturationModel(data=np.full(shape, 60000.0, np.float32), dq=zeros_dq(),
                                                 dq_def=dq_def),
        "superbias": datamodels.SuperBiasModel(data=np.full(shape, BIAS_DN, np.float32),
                                               err=np.zeros(shape, np.float32), dq=zeros_dq(), dq_def=dq_def),
        "linearity": datamodels.LinearityModel(coeffs=coeffs, dq=zeros_dq(), dq_def=dq_def),
        "dark": dark,
        "gain": datamodels.GainModel(data=np.full(shape, 2.0, np.float32)),
        "readnoise": datamodels.ReadnoiseModel(data=np.full(shape, READ_NOISE_DN, np.float32)),
        "ipc": datamodels.IPCModel(data=kernel),
    }
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for reftype, model in models.items():
        _ref_common(model, reftype.upper(), size)
        if reftype == "dark":
            e = model.meta.exposure
            e.nframes, e.groupgap, e.ngroups, e.readpatt = 1, 0, ngroups, "RAPID"
        target = out / f"synthetic_nircam_{reftype}.fits"
        model.save(str(target))
        model.close()
        paths[reftype] = str(target)
    return paths


def offline_step_overrides(refs: dict[str, str], pipeline: str = "jump") -> dict[str, dict[str, Any]]:
    """Return step arguments that give every NIRCam reference file as an override.

    Parameters
    ----------
    refs : dict
        From :func:`make_reference_files`.
    pipeline : {"jump", "cal"}
        ``"jump"``: keys are Detector1 aliases (``ramp_fit``; the MIRI-only ``rscd`` and
        ``reset`` are skipped so the pipeline's prefetch does not ask CRDS for them).
        ``"cal"``: keys are jwql step names (``rate``), for the step-by-step path.

    Returns
    -------
    dict
        ``{step: {"override_<reftype>": path, ...}}``; a new dict on each call.

    Raises
    ------
    ValueError
        For an unknown ``pipeline`` or a missing reference type.
    """
    missing = [r for r in REFERENCE_TYPES if r not in refs]
    if missing:
        raise ValueError(f"refs lacks reference types: {', '.join(missing)}")
    gain_rn = {"override_gain": refs["gain"], "override_readnoise": refs["readnoise"]}
    common: dict[str, dict[str, Any]] = {
        "dq_init": {"override_mask": refs["mask"]},
        "saturation": {"override_saturation": refs["saturation"], "override_superbias": refs["superbias"]},
        "ipc": {"override_ipc": refs["ipc"]},
        "superbias": {"override_superbias": refs["superbias"]},
        # IRS2 is NIRSpec only; the SIRS kernel is only read for full frames.
        "refpix": {"override_refpix": "N/A", "override_sirskernel": "N/A"},
        "linearity": {"override_linearity": refs["linearity"]},
        "dark_current": {"override_dark": refs["dark"]},
        "jump": dict(gain_rn),
        "gain_scale": {"override_gain": refs["gain"]},
    }
    if pipeline == "jump":
        return {**common, "rscd": {"skip": True}, "reset": {"skip": True}, "ramp_fit": dict(gain_rn)}
    if pipeline == "cal":
        return {**common, "rate": dict(gain_rn)}
    raise ValueError(f"unknown pipeline {pipeline!r}; expected 'jump' or 'cal'")


def write_truncated_fits(source: str | os.PathLike[str], path: str | os.PathLike[str],
                         keep_fraction: float = 0.5) -> Path:
    """Write the first part of a valid FITS file, as an interrupted copy would leave it.

    Parameters
    ----------
    source : path
        A complete FITS file, e.g. from :func:`make_uncal`.
    path : path
        Where to write the truncated copy.
    keep_fraction : float
        Fraction of the bytes to keep, 0 < keep_fraction < 1.

    Returns
    -------
    Path
    """
    data = Path(source).read_bytes()
    out = Path(path)
    out.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return out


def write_garbage_file(path: str | os.PathLike[str]) -> Path:
    """Write a file with a ``.fits`` name that is not FITS at all.

    Parameters
    ----------
    path : path
        Where to write it.

    Returns
    -------
    Path
    """
    out = Path(path)
    out.write_bytes(b"this is not a FITS file\n" * 200)
    return out


def write_image_fits(path: str | os.PathLike[str], size: int = 64) -> Path:
    """Write a valid NIRCam FITS file whose SCI data are a 2-D image, not a ramp.

    Parameters
    ----------
    path : path
        Where to write it.
    size : int
        Image side, pixels.

    Returns
    -------
    Path
    """
    import numpy as np
    from stdatamodels.jwst import datamodels

    out = Path(path)
    model = datamodels.ImageModel(data=np.zeros((size, size), np.float32))
    model.meta.telescope = "JWST"
    model.meta.instrument.name, model.meta.instrument.detector = "NIRCAM", _INSTRUMENT["detector"]
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    model.close()
    return out
