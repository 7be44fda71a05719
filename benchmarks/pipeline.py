"""One synthetic 64x64 Detector1 job, send->result: this server against the original design.

    .venv/bin/python benchmarks/pipeline.py [--jobs 5] [--celery-jobs 3]

The original design is Celery with the original's flags (-c1 -Ofair --max-tasks-per-child=1
--prefetch-multiplier 1) and a task that runs the pipeline in a fresh Python subprocess.
Both run the same jwql_dramatiq.pipeline code on the same synthetic data and references,
against one private Redis, in one run. Also reports the task child's peak RSS per job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import celery_worker, jwql_worker, print_table, summarize_ms, write_config  # noqa: E402
from jwql_dramatiq import synthetic  # noqa: E402
from jwql_dramatiq.embedded import RedisServer  # noqa: E402

UNCAL = "jw09999001001_01101_00001_nrca1_uncal.fits"


def bench_jwql(url, root, uncal, refs, jobs, max_cores):
    from jwql_dramatiq.actors import run_calwebb_detector1
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config

    config = write_config(root / f"jwql-{max_cores}.json", url, root, preload=["jwst.pipeline"], warm_up=True,
                          crds_path=str(root / "crds"), crds_offline_stub=True, max_cores=max_cores)
    broker = setup_broker(load_config(config))
    incoming = root / "transfer" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    shutil.copy(uncal, incoming / UNCAL)
    log = root / f"jwql-{max_cores}.log"
    step_args = synthetic.offline_step_overrides(refs, "cal")
    samples = []
    try:
        with jwql_worker(config, log):
            for _ in range(jobs):
                started = time.perf_counter()
                run_calwebb_detector1.send(UNCAL, "jw09999001001_01101_00001_nrca1", "rate", "nircam",
                                           step_args).get_result(block=True, timeout=120_000)
                samples.append(time.perf_counter() - started)
    finally:
        broker.close()
    peaks = [float(m) for m in re.findall(r"peak RSS ([\d.]+) MiB", log.read_text(errors="replace"))]
    return samples, peaks[-jobs:]


def bench_celery(url, root, uncal, refs, jobs, max_cores):
    with celery_worker(url, root / "celery.log"):
        os.environ["BENCH_REDIS_URL"] = url
        os.environ["BENCH_CELERY_IMPORT_JWST"] = "0"
        from benchmarks.celery_app import run_pipeline_subprocess

        step_args = json.dumps(synthetic.offline_step_overrides(refs, "cal"))
        samples = []
        for i in range(jobs):
            out = root / f"celery-out-{max_cores}{i}"
            started = time.perf_counter()
            run_pipeline_subprocess.delay(str(uncal), str(root / f"celery-work{i}"), str(out), str(root / "crds"),
                                          step_args, max_cores).get(timeout=300)
            samples.append(time.perf_counter() - started)
        return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5, help="jobs through this server")
    parser.add_argument("--celery-jobs", type=int, default=3, help="jobs through Celery (about 10 s each)")
    parser.add_argument("--max-cores", nargs="+", default=["auto", "all"],
                        help="maximum_cores for jump and ramp fit, one pair of runs each ('none' is jwst's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        uncal = synthetic.make_uncal(root / "data" / UNCAL)
        refs = synthetic.make_reference_files(root / "refs")
        with RedisServer(root / "redis") as server:
            rows, peaks = [], []
            for i, max_cores in enumerate(args.max_cores):
                celery = summarize_ms(bench_celery(server.url(1), root, uncal, refs, args.celery_jobs, max_cores))
                samples, job_peaks = bench_jwql(server.url(2 + 2 * i), root, uncal, refs, args.jobs, max_cores)
                ours = summarize_ms(samples)
                peaks += job_peaks
                rows += [[f"Celery, original flags, fresh subprocess (max_cores={max_cores})", celery["n"],
                          celery["p50_ms"] / 1000, celery["p90_ms"] / 1000, "1x"],
                         [f"jwql_dramatiq, forked warmed-up child (max_cores={max_cores})", ours["n"],
                          ours["p50_ms"] / 1000, ours["p90_ms"] / 1000, f"{celery['p50_ms'] / ours['p50_ms']:.1f}x"]]
    print_table("One 64x64 Detector1 job (cal path, rate), send->result", ["design", "jobs", "p50 s", "p90 s",
                                                                         "speed-up (p50)"], rows)
    if peaks:
        print(f"\ntask child peak RSS per job: median {statistics.median(peaks):.0f} MiB, max {max(peaks):.0f} MiB "
              "(VmHWM, pages shared with the preloaded parent included)")
    print(f"command: .venv/bin/python benchmarks/pipeline.py --jobs {args.jobs} --celery-jobs {args.celery_jobs} "
          f"--max-cores {' '.join(args.max_cores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
