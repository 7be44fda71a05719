"""One Detector1 ("cal" path, rate product) in a fresh interpreter, as JWQL's run_pipeline.py ran.

    python -m benchmarks.fresh_pipeline INPUT WORK_DIR OUTPUT_DIR CRDS_PATH STEP_ARGS_JSON MAX_CORES
"""

import json
import sys


def main() -> None:
    """Run the job named on the command line."""
    from jwql_dramatiq.pipeline.crds_env import apply_crds_environment

    input_path, work_dir, output_dir, crds_path, step_args, max_cores = sys.argv[1:7]
    apply_crds_environment(crds_path, offline_stub=True)

    from jwql_dramatiq.pipeline import run_calwebb_detector1
    from jwql_dramatiq.pipeline.guard import resolve_max_cores

    run_calwebb_detector1(input_path, "jw09999001001_01101_00001_nrca1", "rate", "nircam", work_dir, output_dir,
                          step_args=json.loads(step_args), max_cores=resolve_max_cores(max_cores, input_path))


if __name__ == "__main__":  # jump and ramp_fit start 'spawn' pools, which re-import this module
    main()
