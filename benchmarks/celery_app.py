"""The original's Celery set-up, for comparison: same Redis for broker and results, late acks,
one process, and a task module that imports jwst, as ``jwql/shared_tasks/shared_tasks.py`` does.

Worker: ``celery -A benchmarks.celery_app worker -c1 -Ofair --max-tasks-per-child=1 --prefetch-multiplier 1``
with ``$BENCH_REDIS_URL`` set.
"""

import os
import socket

from celery import Celery

if os.environ.get("BENCH_CELERY_IMPORT_JWST", "1") == "1":
    import jwst.pipeline  # noqa: F401  (the original's task module imports the pipeline)

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("bench", broker=_url, backend=_url)
app.conf.update(worker_max_tasks_per_child=1, worker_prefetch_multiplier=1, task_acks_late=True,
                worker_concurrency=1, broker_transport_options={"visibility_timeout": 14400})


@app.task(name="bench.noop")
def noop():
    """Return the host and pid."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


@app.task(name="bench.run_pipeline_subprocess")
def run_pipeline_subprocess(input_path, work_dir, output_dir, crds_path, step_args_json, max_cores,
                            instrument="nircam", short_name="jw09999001001_01101_00001_nrca1", path="cal"):
    """The original's design: run the pipeline in a fresh Python subprocess (run_pipeline.py).

    Returns the product names and the subprocess tree's largest resident set in MiB
    (``ru_maxrss`` of the waited-for children: the largest single process, not a sum).
    """
    import resource
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "benchmarks.fresh_pipeline", input_path, work_dir, output_dir, crds_path,
                    step_args_json, max_cores, instrument, short_name, path], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"products": sorted(os.listdir(output_dir)),
            "maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
