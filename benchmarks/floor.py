"""The floor of a Detector1 job: the same jwql_dramatiq.pipeline call in a warm process, with no server.

    python -m benchmarks.floor CRDS_PATH WORK_DIR     (then one job as JSON per line on stdin)

Run by ``benchmarks/fullframe.py``, which keeps it alive next to the workers so that every
variant runs in the same rounds. The process sets the CRDS environment, then does what the
worker's fork server does before forking (:func:`jwql_dramatiq.executor.forkserver.preload`:
import jwst, one tiny warm-up job of each path, ``gc.freeze()``), so neither the import nor the
first-run costs are timed. It prints ``{"ready": true, ...}``, then runs each job read from stdin
(keys ``path``, ``instrument``, ``input``, ``short_name``, ``max_cores``, ``step_args``,
``work_dir``, ``output_dir``; ``fork``: true to run it in a child forked for it, as the worker
does) in this process and prints one JSON line for it: ``{"elapsed_s",
"max_cores", "memory_peak_mib", "memory_method"}``; products are deleted after each run.

Memory: each run gets its own memory cgroup (:mod:`jwql_dramatiq.executor.cgroup`, the same
kernel accounting the worker uses for a task child), this process moves into it for the run and
back out after, and the cgroup's peak is read. As in the worker's task children, pages this
process already had (jwst, the warm-up) are charged elsewhere; everything the run allocates,
stcal's pool processes included (they start inside the cgroup), and the page cache it writes, is
charged to it. Without a usable cgroup the method is ``none`` and the peak 0.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _cgroup_root() -> Any:
    from jwql_dramatiq.executor.cgroup import create_root

    root, _reason = create_root(f"bench-floor.{os.getpid()}")
    return root


def run_job(job: dict[str, Any], max_cores: str) -> None:
    """Run one job of the spec (``path`` ``cal`` or ``jump``) with a resolved ``max_cores``."""
    from jwql_dramatiq.pipeline import calwebb_detector1_save_jump, run_calwebb_detector1

    if job["path"] == "jump":
        calwebb_detector1_save_jump(job["input"], job["instrument"], job["work_dir"], job["output_dir"],
                                    step_args=job["step_args"], max_cores=max_cores)
    else:
        run_calwebb_detector1(job["input"], job["short_name"], "rate", job["instrument"], job["work_dir"],
                              job["output_dir"], step_args=job["step_args"], max_cores=max_cores)


def measured_run(job: dict[str, Any], root: Any) -> dict[str, Any]:
    """Run ``job`` once in its own cgroup (when ``root`` is one); return its time and peak memory."""
    from jwql_dramatiq.executor.cgroup import Cgroup
    from jwql_dramatiq.pipeline.guard import resolve_max_cores

    cores = resolve_max_cores(job["max_cores"], job["input"])
    group = root.child(f"run.{time.monotonic_ns()}") if root is not None else None
    if group is not None:
        group.add(os.getpid())
        group.reset_peak()
    try:
        started = time.perf_counter()
        run_job(job, cores)
        elapsed_s = time.perf_counter() - started
        peak_mib = (group.peak_mib() or 0.0) if group is not None else 0.0
    finally:
        if group is not None:
            Cgroup(root.version, root.path.parent).add(os.getpid())
            for _ in range(100):
                if group.remove():
                    break
                time.sleep(0.05)
    for name in os.listdir(job["output_dir"]):
        os.unlink(os.path.join(job["output_dir"], name))
    return {"elapsed_s": elapsed_s, "max_cores": cores, "memory_peak_mib": round(peak_mib, 1),
            "memory_method": group.method if group is not None else "none"}


def forked_run(job: dict[str, Any], root: Any) -> dict[str, Any]:
    """Run ``job`` as :func:`measured_run` does, but in a child forked for it (as the worker runs each task).

    The time is from just before the fork until the child's reply (its exit is not waited for).
    """
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run, reply on one line, exit without cleanup handlers
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, (json.dumps(measured_run(job, root)) + "\n").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as reply:
        line = reply.readline()
    elapsed_s = time.perf_counter() - started
    os.waitpid(pid, 0)
    if not line:
        raise RuntimeError(f"the forked floor child {pid} died without replying")
    return {**json.loads(line), "elapsed_s": elapsed_s}


def main() -> int:
    """Serve the jobs read from stdin (see the module docstring)."""
    crds_path, work_dir = sys.argv[1:3]
    from jwql_dramatiq.pipeline.crds_env import apply_crds_environment

    apply_crds_environment(crds_path, offline_stub=True)
    from jwql_dramatiq.executor.forkserver import preload

    warm_up_s = preload(["jwst.pipeline"], True, tempfile.mkdtemp(prefix="floor-warm-", dir=work_dir))
    root = _cgroup_root()
    print(json.dumps({"ready": True, "warm_up_s": warm_up_s}), flush=True)
    try:
        for line in sys.stdin:
            job = json.loads(line)
            Path(job["output_dir"]).mkdir(parents=True, exist_ok=True)
            print(json.dumps(forked_run(job, root) if job.get("fork") else measured_run(job, root)), flush=True)
    finally:
        if root is not None:
            root.remove()
    return 0


if __name__ == "__main__":  # stcal's 'spawn' pools re-import the main module
    sys.exit(main())
