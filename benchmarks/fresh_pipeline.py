"""One Detector1 job in a fresh interpreter, as JWQL's run_pipeline.py ran.

    python -m benchmarks.fresh_pipeline INPUT WORK_DIR OUTPUT_DIR CRDS_PATH STEP_ARGS_JSON MAX_CORES \
        [INSTRUMENT SHORT_NAME PATH]

``PATH`` is ``cal`` (jwql's step-by-step path to ``rate``; the default) or ``jump`` (the
save-jump path). ``INSTRUMENT`` and ``SHORT_NAME`` default to the 64x64 NIRCam exposure's.
"""

import json
import sys


def main() -> None:
    """Run the job named on the command line."""
    from jwql_dramatiq.pipeline.crds_env import apply_crds_environment

    input_path, work_dir, output_dir, crds_path, step_args, max_cores = sys.argv[1:7]
    instrument, short_name, path = (sys.argv[7:10] + ["nircam", "jw09999001001_01101_00001_nrca1", "cal"][
        len(sys.argv[7:10]):])
    apply_crds_environment(crds_path, offline_stub=True)

    from jwql_dramatiq.pipeline import calwebb_detector1_save_jump, run_calwebb_detector1
    from jwql_dramatiq.pipeline.guard import resolve_max_cores

    cores = resolve_max_cores(max_cores, input_path)
    if path == "jump":
        calwebb_detector1_save_jump(input_path, instrument, work_dir, output_dir, step_args=json.loads(step_args),
                                    max_cores=cores)
    else:
        run_calwebb_detector1(input_path, short_name, "rate", instrument, work_dir, output_dir,
                              step_args=json.loads(step_args), max_cores=cores)


if __name__ == "__main__":  # jump and ramp_fit start 'spawn' pools, which re-import this module
    main()
