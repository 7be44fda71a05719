"""Detector and subarray geometry of the synthetic exposures, one entry per JWST instrument.

Pure data (no numpy). Subarray corners are 1-based detector-frame (science orientation)
pixels as in the ``SUBSTRT1/2`` keywords. The subarray positions are plausible, not
taken from the SIAF; what matters to the pipeline is that they lie on the detector and
that the reference-pixel border is where jwst expects it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Width of the near-IR reference-pixel border on every side of the full frame, pixels.
NEAR_IR_REFPIX_BORDER_PX = 4
#: MIRI reference columns at the left and right of the full frame (each side), pixels.
MIRI_REFPIX_COLUMNS_PX = 4


@dataclass(frozen=True)
class Subarray:
    """A subarray: name and 1-based corner plus size in pixels (``xsize`` columns, ``ysize`` rows)."""

    name: str
    xstart: int
    ystart: int
    xsize: int
    ysize: int


@dataclass(frozen=True)
class Detector:
    """What the synthetic exposure writer needs to know about one instrument's detector.

    Attributes
    ----------
    instrument : str
        ``INSTRUME`` value (upper case).
    detector : str
        ``DETECTOR`` value.
    exp_type : str
        ``EXP_TYPE`` of the synthetic exposures.
    readpatt : str
        ``READPATT``.
    nframes, frame_divisor, groupgap : int
        ``NFRAMES``, ``FRMDIVSR`` and ``GROUPGAP`` of the default exposure.
    fastaxis, slowaxis : int
        Detector readout orientation (``FASTAXIS``/``SLOWAXIS``).
    full_ny, full_nx : int
        Full-frame rows and columns.
    small : Subarray
        The small subarray the tests use.
    full_name : str
        Subarray name of a full frame.
    extra : dict
        Other ``meta.instrument`` attributes (filter, channel, ...).
    sca_num : int
        ``SCA_NUM``.
    """

    instrument: str
    detector: str
    exp_type: str
    readpatt: str
    nframes: int
    frame_divisor: int
    groupgap: int
    fastaxis: int
    slowaxis: int
    full_ny: int
    full_nx: int
    small: Subarray
    full_name: str
    extra: tuple[tuple[str, str], ...]
    sca_num: int

    @property
    def is_miri(self) -> bool:
        """True for MIRI, whose steps and reference-pixel layout differ."""
        return self.instrument == "MIRI"

    def full_frame(self) -> Subarray:
        """Return the full-frame geometry."""
        return Subarray(self.full_name, 1, 1, self.full_nx, self.full_ny)


#: lower-case jwql instrument name -> its synthetic detector.
DETECTORS: dict[str, Detector] = {
    "nircam": Detector("NIRCAM", "NRCA1", "NRC_IMAGE", "RAPID", 1, 1, 0, -1, 2, 2048, 2048,
                       Subarray("SUB64P", 1, 1, 64, 64), "FULL",
                       (("channel", "SHORT"), ("module", "A"), ("filter", "F200W"), ("pupil", "CLEAR")), 481),
    "niriss": Detector("NIRISS", "NIS", "NIS_IMAGE", "NISRAPID", 1, 1, 0, -2, -1, 2048, 2048,
                       Subarray("SUB64", 1, 1985, 64, 64), "FULL", (("filter", "F150W"), ("pupil", "CLEARP")), 496),
    "fgs": Detector("FGS", "GUIDER1", "FGS_IMAGE", "FGSRAPID", 1, 1, 0, -2, -1, 2048, 2048,
                    Subarray("SUB128LL", 1, 1, 128, 128), "FULL", (), 497),
    # NRS with FRMDIVSR != NFRAMES: the group_scale step rescales by FRMDIVSR / NFRAMES.
    "nirspec": Detector("NIRSPEC", "NRS1", "NRS_FIXEDSLIT", "NRS", 4, 2, 1, 2, 1, 2048, 2048,
                        Subarray("SUB2048", 1, 1, 2048, 32), "FULL",
                        (("filter", "F170LP"), ("grating", "G235M"), ("fixed_slit", "S200A1")), 491),
    "miri": Detector("MIRI", "MIRIMAGE", "MIR_IMAGE", "FASTR1", 1, 1, 0, 1, 2, 1024, 1032,
                     Subarray("SUB64", 1, 779, 72, 64), "FULL", (("filter", "F770W"), ("band", "N/A")), 493),
}


def detector_for(instrument: str) -> Detector:
    """Return the synthetic detector of an instrument.

    Parameters
    ----------
    instrument : str
        jwql instrument name, any case.

    Returns
    -------
    Detector

    Raises
    ------
    ValueError
        For an unknown instrument.
    """
    key = instrument.strip().lower()
    if key not in DETECTORS:
        raise ValueError(f"no synthetic detector for {instrument!r}; expected one of {', '.join(DETECTORS)}")
    return DETECTORS[key]


def resolve_subarray(det: Detector, subarray: str | Subarray) -> Subarray:
    """Return the geometry for ``"small"``, ``"full"`` or an explicit :class:`Subarray`.

    Parameters
    ----------
    det : Detector
        The detector.
    subarray : {"small", "full"} or Subarray
        Which region.

    Returns
    -------
    Subarray

    Raises
    ------
    ValueError
        If the region does not lie on the detector.
    """
    sub = det.small if subarray == "small" else det.full_frame() if subarray == "full" else subarray
    if not isinstance(sub, Subarray):
        raise ValueError(f"subarray must be 'small', 'full' or a Subarray, not {subarray!r}")
    if sub.xstart < 1 or sub.ystart < 1 or sub.xstart - 1 + sub.xsize > det.full_nx \
            or sub.ystart - 1 + sub.ysize > det.full_ny:
        raise ValueError(f"subarray {sub} does not fit the {det.full_nx}x{det.full_ny} {det.detector} detector")
    return sub


def reference_pixel_mask(det: Detector, sub: Subarray) -> object:
    """Return a boolean (ysize, xsize) array, True on the detector's reference pixels.

    Near-IR detectors have a 4-pixel border on all sides; MIRI has 4 reference columns at
    the left and right edges of the full frame.

    Parameters
    ----------
    det : Detector
    sub : Subarray

    Returns
    -------
    numpy.ndarray
    """
    import numpy as np

    rows = np.arange(sub.ystart - 1, sub.ystart - 1 + sub.ysize)[:, None]
    cols = np.arange(sub.xstart - 1, sub.xstart - 1 + sub.xsize)[None, :]
    if det.is_miri:
        n = MIRI_REFPIX_COLUMNS_PX
        return np.broadcast_to((cols < n) | (cols >= det.full_nx - n), (sub.ysize, sub.xsize)).copy()
    n = NEAR_IR_REFPIX_BORDER_PX
    return (rows < n) | (rows >= det.full_ny - n) | (cols < n) | (cols >= det.full_nx - n)
