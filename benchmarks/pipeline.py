"""A synthetic Detector1 job, send->result: this server against the original design (and the floor).

    .venv/bin/python benchmarks/pipeline.py [--jobs 5] [--celery-jobs 3]            # 64x64 NIRCam
    .venv/bin/python benchmarks/pipeline.py --size 2048 [--rounds 3] [--path cal]   # full frames

``--size 2048`` runs NIRCam 2048x2048 and MIRI 1024x1032 full frames against the floor (the
same call in a warm process, no server) and the original design, and NIRCam with
``max_cores`` auto, all and none (see :mod:`benchmarks.fullframe`).

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
    peaks = [(float(m), method) for m, method in re.findall(r"peak ([\d.]+) MiB for its process tree \(([^)]+)\)",
                                                           log.read_text(errors="replace"))]
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
    parser.add_argument("--max-cores", nargs="+", default=None,
                        help="maximum_cores for jump and ramp fit, one pair of runs each ('none' is jwst's default); "
                             "default auto all (64), auto all none (2048)")
    parser.add_argument("--size", type=int, choices=[64, 2048], default=64,
                        help="64: the 64x64 NIRCam job; 2048: full frames (NIRCam 2048x2048, MIRI 1024x1032)")
    parser.add_argument("--rounds", type=int, default=3, help="full frames: rounds of every variant (medians)")
    parser.add_argument("--instruments", nargs="+", default=["nircam", "miri"], help="full frames: instruments")
    parser.add_argument("--path", choices=["cal", "jump"], default="cal",
                        help="full frames: jwql's cal path to rate, or the save-jump path")
    args = parser.parse_args()
    if args.size == 2048:
        return main_full_frame(args)
    args.max_cores = args.max_cores or ["auto", "all"]
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
        values = [p for p, _ in peaks]
        print(f"\ntask tree peak memory per job: median {statistics.median(values):.0f} MiB, max {max(values):.0f} MiB "
              f"({', '.join(sorted({m for _, m in peaks}))}: the task child's whole tree, as the worker logs it)")
    print(f"command: .venv/bin/python benchmarks/pipeline.py --jobs {args.jobs} --celery-jobs {args.celery_jobs} "
          f"--max-cores {' '.join(args.max_cores)}")
    return 0


def main_full_frame(args: argparse.Namespace) -> int:
    """The full-frame run (``--size 2048``): every variant in each round, then the tables."""
    import subprocess

    from benchmarks.fullframe import make_exposures, plan_variants, report, run_all

    cores = args.max_cores or ["auto", "all", "none"]
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-fullframe-") as tmp:
        root = Path(tmp)
        exposures = make_exposures(root, args.instruments, args.path)
        variants = plan_variants(args.instruments, args.instruments[0], cores, "all")
        with RedisServer(root / "redis") as server:
            run_all(root, server, exposures, variants, args.rounds, args.path)
    report(variants, args.instruments[0], cores, args.path)
    print("\nfloor: the same jwql_dramatiq.pipeline call in a process that imported jwst and ran the fork server's "
          "warm-up (gc frozen); its memory is its own cgroup's peak per run. server: memory_peak_mib of the task's "
          "recorded state (its child's whole tree). Both cgroup-v1 peaks count the page cache of the files the job "
          "writes (the cal path saves every step's product). floor-fork: the same call in a child the warm floor "
          "process forks per job. original: Celery -c1 -Ofair --max-tasks-per-child=1 "
          "--prefetch-multiplier 1, pipeline in a fresh subprocess with maximum_cores=all; ru_maxrss of its largest "
          "process.")
    print(f"load before: {load_before}")
    print(f"load after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"total {time.monotonic() - started:.0f} s")
    print(f"command: .venv/bin/python benchmarks/pipeline.py --size 2048 --rounds {args.rounds} --path {args.path} "
          f"--instruments {' '.join(args.instruments)} --max-cores {' '.join(cores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
