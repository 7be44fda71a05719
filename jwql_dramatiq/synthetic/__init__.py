"""Synthetic JWST exposures and neutral reference files that run calwebb_detector1 with no CRDS.

Adapted from the checked offline recipe (``jwst-offline.md``) and extended to the five
instruments (:mod:`.detectors`): :func:`make_exposure` writes a level-1b ramp with a
known rate and one cosmic ray, :func:`make_instrument_references` the matching neutral
references, :func:`instrument_step_overrides` the step arguments that name them, and
:func:`deployment_step_args` full-frame references plus a worker-side ``step_args``
value for all instruments. The NIRCam-only functions of the first version
(:func:`make_uncal`, :func:`make_reference_files`, :func:`offline_step_overrides`) and
the broken-file writers remain. Nothing heavy is imported here.
"""

from __future__ import annotations

from jwql_dramatiq.synthetic.badfiles import write_garbage_file, write_image_fits, write_truncated_fits
from jwql_dramatiq.synthetic.detectors import DETECTORS, Detector, Subarray, detector_for, reference_pixel_mask
from jwql_dramatiq.synthetic.exposure import (
    BIAS_DN,
    COSMIC_RAY_DN,
    DEFAULT_COSMIC_RAY,
    DEFAULT_RATE_DN_PER_S,
    DEFAULT_SHAPE,
    GROUP_TIME_S,
    READ_NOISE_DN,
    exposure_file_name,
    make_exposure,
)
from jwql_dramatiq.synthetic.nircam import (
    DEFAULT_UNCAL_NAME,
    REFERENCE_TYPES,
    SUBARRAY_NAMES,
    make_reference_files,
    make_uncal,
    offline_step_overrides,
)
from jwql_dramatiq.synthetic.overrides import deployment_step_args, instrument_step_overrides, subarray_step_args
from jwql_dramatiq.synthetic.refs import make_instrument_references

__all__ = [
    "BIAS_DN", "COSMIC_RAY_DN", "DEFAULT_COSMIC_RAY", "DEFAULT_RATE_DN_PER_S", "DEFAULT_SHAPE", "DEFAULT_UNCAL_NAME",
    "DETECTORS", "Detector", "GROUP_TIME_S", "READ_NOISE_DN", "REFERENCE_TYPES", "SUBARRAY_NAMES", "Subarray",
    "deployment_step_args", "detector_for", "exposure_file_name", "instrument_step_overrides", "make_exposure",
    "make_instrument_references", "make_reference_files", "make_uncal", "offline_step_overrides",
    "reference_pixel_mask", "subarray_step_args", "write_garbage_file", "write_image_fits", "write_truncated_fits",
]
