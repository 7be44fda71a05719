"""Measure what jwql_dramatiq.pipeline.asdf_cache saves on a warmed fork-server job.

Usage: ``python scripts/measure_asdf_cache.py {cache,nocache} [N]``

Like a worker's fork server: this process sets the offline CRDS environment, imports jwst,
(optionally) applies the schema cache, runs one "cal" job on the 64x64 synthetic NIRCam ramp as
the warm-up, then forks N children one after the other, each running the same job, and prints
each child's wall time (fork to reap) as one JSON line. Run each mode in its own process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the measurement; return the exit code."""
    mode = argv[0] if argv else "cache"
    n = int(argv[1]) if len(argv) > 1 else 5
    if mode not in ("cache", "nocache"):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="asdf-cache-measure."))
    try:
        from jwql_dramatiq.pipeline import crds_env

        crds_env.apply_crds_environment(root / "crds", offline_stub=True, mpl_config_dir=root / "mpl")
        from jwql_dramatiq import synthetic
        from jwql_dramatiq.pipeline.asdf_cache import cache_asdf_schemas
        from jwql_dramatiq.pipeline.detector1 import run_calwebb_detector1

        import jwst  # noqa: F401
        applied = cache_asdf_schemas() if mode == "cache" else False
        short = "jw09999001001_01101_00001_nrca1"
        uncal = synthetic.make_uncal(root / "in" / f"{short}_uncal.fits")
        refs = synthetic.make_reference_files(root / "refs")
        args = synthetic.offline_step_overrides(refs, "cal")

        def job(i: int) -> None:
            run_calwebb_detector1(uncal, short, "rate", "nircam", root / f"work{i}", root / f"out{i}",
                                  step_args=args, max_cores="none")

        t0 = time.monotonic()
        job(0)  # the warm-up, in the "fork server"
        warm_s = time.monotonic() - t0
        times = []
        for i in range(1, n + 1):
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:  # the task child
                code = 0
                try:
                    job(i)
                except BaseException:  # noqa: BLE001 - report through the exit code
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            times.append(time.monotonic() - t0)
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"child {i} failed", file=sys.stderr)
                return 1
        import asdf

        print(json.dumps({"mode": mode, "applied": applied, "asdf": asdf.__version__, "warm_up_s": round(warm_s, 2),
                          "task_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3)}))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
