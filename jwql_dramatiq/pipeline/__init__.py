"""JWST calwebb_detector1 for jwql_dramatiq: the two JWQL tasks as in-process functions.

Importing this package does not import jwst, numpy or astropy; they are imported when a
function needs them. Order of use in a worker:

1. :func:`apply_crds_environment` before anything imports jwst or crds;
2. :func:`warm_up` in the preloaded parent (then ``gc.freeze()``);
3. :func:`run_calwebb_detector1` / :func:`calwebb_detector1_save_jump` per task.
"""

from __future__ import annotations

from jwql_dramatiq.pipeline.crds_env import apply_crds_environment, write_stub_server_config
from jwql_dramatiq.pipeline.detector1 import (
    calwebb_detector1_save_jump,
    run_calwebb_detector1,
    save_jump_step_params,
)
from jwql_dramatiq.pipeline.files import short_name_from_path
from jwql_dramatiq.pipeline.steps import (
    merge_step_args,
    validate_instrument,
    validate_outputs,
    validate_step_args,
)
from jwql_dramatiq.pipeline.warmup import import_jwst, warm_up

__all__ = [
    "apply_crds_environment",
    "calwebb_detector1_save_jump",
    "import_jwst",
    "merge_step_args",
    "run_calwebb_detector1",
    "save_jump_step_params",
    "short_name_from_path",
    "validate_instrument",
    "validate_outputs",
    "validate_step_args",
    "warm_up",
    "write_stub_server_config",
]
