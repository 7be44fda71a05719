"""Broken inputs for tests: a truncated FITS file, a file that is not FITS, a FITS image that is not a ramp."""

from __future__ import annotations

import os
from pathlib import Path


def write_truncated_fits(source: str | os.PathLike[str], path: str | os.PathLike[str],
                         keep_fraction: float = 0.5) -> Path:
    """Write the first part of a valid FITS file, as an interrupted copy would leave it.

    Parameters
    ----------
    source : path
        A complete FITS file, e.g. from :func:`~jwql_dramatiq.synthetic.make_uncal`.
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
    model.meta.instrument.name, model.meta.instrument.detector = "NIRCAM", "NRCA1"
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    model.close()
    return out
