"""Warm up jwst in a preloaded worker parent so that forked task children start fast.

Importing ``jwst.pipeline`` costs 3-4 s and the first pipeline run in a process loads
the asdf extensions and datamodel schemas (about 2 s more). Run :func:`warm_up` once in
the parent, then ``gc.collect(); gc.freeze()``, then fork: a 64x64 Detector1 task in a
child then takes about 1 s instead of about 4 s (``jwst-offline.md``).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from jwql_dramatiq.pipeline.steps import STEP_MODULES

logger = logging.getLogger(__name__)

#: Shape of the warm-up exposure: integrations, groups, side in pixels.
WARM_UP_NINTS, WARM_UP_NGROUPS, WARM_UP_SIZE = 1, 3, 32
#: Groups of the MIRI warm-up exposure (its last group is flagged by ``lastframe``).
WARM_UP_MIRI_NGROUPS = 5


def import_jwst() -> float:
    """Import ``jwst.pipeline`` and every step class the tasks use.

    Returns
    -------
    float
        Seconds it took (near 0 when already imported).
    """
    t0 = time.monotonic()
    importlib.import_module("jwst.pipeline.calwebb_detector1")
    for module in sorted(set(STEP_MODULES.values())):
        importlib.import_module(module)
    return time.monotonic() - t0


def warm_up(tmp_dir: str | os.PathLike[str]) -> float:
    """Import jwst and run one tiny offline Detector1 job on synthetic data.

    Runs the save-jump path (``Detector1Pipeline``) and the step-by-step cal path, with every
    reference given as an override and ``maximum_cores="none"``, on a 1x3x32x32 NIRCam ramp (and
    the cal path on a small MIRI ramp, whose steps use models of their own), so no CRDS reference
    is fetched; crds still reads ``server_config`` from the cache, so call
    :func:`~jwql_dramatiq.pipeline.crds_env.apply_crds_environment` first (a synced cache
    or ``offline_stub=True``). Everything it writes is removed.

    Parameters
    ----------
    tmp_dir : path
        A writable directory; a private subdirectory is made and removed inside it.

    Returns
    -------
    float
        Seconds the whole warm-up took (import included).

    Raises
    ------
    CrdsError
        If CRDS is not usable (no ``server_config`` in the cache).
    PipelineError
        If the warm-up run fails otherwise.
    """
    from jwql_dramatiq import synthetic
    from jwql_dramatiq.pipeline.detector1 import calwebb_detector1_save_jump, run_calwebb_detector1

    from jwql_dramatiq.pipeline.asdf_cache import cache_asdf_schemas

    t0 = time.monotonic()
    import_s = import_jwst()
    cache_asdf_schemas()
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="jwql-warm-up.", dir=tmp_dir))
    try:
        uncal = synthetic.make_uncal(scratch / "in" / "jw09999001001_01101_00001_nrca1_uncal.fits",
                                     size=WARM_UP_SIZE, nints=WARM_UP_NINTS, ngroups=WARM_UP_NGROUPS,
                                     cosmic_ray=None)
        refs = synthetic.make_reference_files(scratch / "refs", size=WARM_UP_SIZE, ngroups=WARM_UP_NGROUPS)
        calwebb_detector1_save_jump(uncal, "nircam", scratch / "work", scratch / "out",
                                    step_args=synthetic.offline_step_overrides(refs, "jump"), max_cores="none")
        # The step-by-step "cal" path builds each step on its own: warm those classes too.
        run_calwebb_detector1(uncal, "jw09999001001_01101_00001_nrca1", "rate", "nircam", scratch / "work",
                              scratch / "out", step_args=synthetic.offline_step_overrides(refs, "cal"), max_cores="none")
        # MIRI's steps read models of their own (RESET, RSCD, per-integration DARK): load their schemas
        # here too, or every MIRI task child pays for them (measured: MIRI full frame 1.09x the floor).
        miri = synthetic.make_exposure("miri", scratch / "in" / synthetic.exposure_file_name("miri"), nints=1,
                                       ngroups=WARM_UP_MIRI_NGROUPS, cosmic_ray=None)
        miri_refs = synthetic.make_instrument_references("miri", scratch / "miri-refs", ngroups=WARM_UP_MIRI_NGROUPS)
        run_calwebb_detector1(miri, miri.name.rsplit("_", 1)[0], "rate", "miri", scratch / "work", scratch / "out",
                              step_args=synthetic.instrument_step_overrides("miri", miri_refs), max_cores="none")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total_s = time.monotonic() - t0
    logger.info("jwst warm-up took %.2f s (import %.2f s)", total_s, import_s)
    return total_s
