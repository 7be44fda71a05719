"""Why is a full-frame job slower in a freshly forked child than in a warm process?

    .venv/bin/python scripts/fork_slowdown.py [--reps 5] [--instruments nircam miri] [--max-cores none]
        [--steps] [--variants warm fork ...]

Starts warm processes (the fork server's preload: jwst imported, the warm-up run, ``gc.freeze()``):

- ``warm``: one process that runs every job in-process (the benchmark's floor); ``warm-trim``:
  another one that calls ``malloc_trim(0)`` after each job;
- ``fork``: a pristine parent (it never runs a full-frame job, like the fork server) that forks
  one child per job, timed from before the fork;
- ``fork+<fix>``: the same, with a ``mallopt`` fix applied in the child right after the fork
  (``FIXES``); ``env-<name>``: a parent of its own started with extra environment (``ENV_PARENTS``);
- ``ahead``, ``ahead+<fix>``, ``ahead+<fix>+prefault<MiB>``: the child is forked (and, with
  ``prefault``, touches that much heap) before the timing starts, as the fork server forks its
  idle child ahead of the task.

Each repetition runs every variant once per instrument, in a shuffled order; the medians of
wall time and of the job's getrusage deltas (minor faults, user and system CPU, its waited-for
subprocesses included), the system-wide ``thp_fault_alloc`` delta and VmHWM are printed. The cal
path to ``rate`` runs with ``maximum_cores="none"`` unless ``--max-cores`` says otherwise. Not
used by the tests; kept for re-measuring the fork-server child's speed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -3, -4, -8
MIB = 1024 * 1024

#: Fixes applied in the forked child before the job: name -> list of (mallopt param, value).
FIXES: dict[str, list[tuple[int, int]]] = {
    "mmap32": [(M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 64 * MIB)],
    "mmap32-trim1g": [(M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 1024 * MIB)],
    "nommap": [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)],  # -1: never trim (man mallopt)
    "nommap-trim0": [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 0)],
    "mmap32-pad": [(M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 64 * MIB), (M_TOP_PAD, 64 * MIB)],
}
#: Parents started with extra environment: name -> environment.
ENV_PARENTS: dict[str, dict[str, str]] = {
    "env-hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "env-mmap32": {"MALLOC_MMAP_THRESHOLD_": str(32 * MIB), "MALLOC_TRIM_THRESHOLD_": str(64 * MIB)},
}


def _usage() -> dict[str, float]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"minflt": u.ru_minflt + c.ru_minflt, "majflt": u.ru_majflt + c.ru_majflt,
            "utime": u.ru_utime + c.ru_utime, "stime": u.ru_stime + c.ru_stime,
            "nivcsw": u.ru_nivcsw + c.ru_nivcsw}


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


#: /proc/vmstat counters reported per job (system-wide deltas: read them on a quiet machine).
VMSTAT_KEYS = ("thp_fault_alloc", "thp_fault_fallback", "pgfault", "pgalloc_normal", "compact_stall", "pgfree")


def _vmstat() -> dict[str, int]:
    with open("/proc/vmstat") as f:
        pairs = (line.split() for line in f)
        return {k: int(v) for k, v in pairs if k in VMSTAT_KEYS}


_steps: list[tuple[str, float, float, float, float]] = []


def _hook_steps() -> None:
    """Record wall, user, sys and minor faults of every step run (stpipe ``Step.run``)."""
    from stpipe import Step

    if getattr(Step.run, "_timed", False):
        return
    original = Step.run

    def run(self: Any, *a: Any, **k: Any) -> Any:
        u0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            _steps.append((type(self).__name__, time.perf_counter() - t0, u1.ru_utime - u0.ru_utime,
                           u1.ru_stime - u0.ru_stime, u1.ru_minflt - u0.ru_minflt))

    run._timed = True  # type: ignore[attr-defined]
    Step.run = run


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from jwql_dramatiq.pipeline import run_calwebb_detector1

    _hook_steps()
    _steps.clear()
    vm0 = _vmstat()
    before, started = _usage(), time.perf_counter()
    run_calwebb_detector1(job["input"], job["short_name"], "rate", job["instrument"], job["work_dir"],
                          job["output_dir"], step_args=job["step_args"], max_cores=job.get("max_cores", "none"))
    elapsed = time.perf_counter() - started
    after = _usage()
    for name in os.listdir(job["output_dir"]):
        os.unlink(os.path.join(job["output_dir"], name))
    vm1 = _vmstat()
    return {"pid": os.getpid(), "in_s": elapsed, "hwm_mib": _hwm_mib(), **{k: after[k] - before[k] for k in after}, "vm": {k: vm1[k] - vm0[k] for k in vm0},
            "steps": list(_steps)}


#: Fixes that also export themselves to the job's subprocesses (stcal's spawned pools) as GLIBC_TUNABLES.
ENV_FIXES: dict[str, str] = {"nommap-env": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615"}
FIXES["nommap-env"] = FIXES["nommap"]


def _apply_fix(name: str | None) -> None:
    if not name:
        return
    if name in ENV_FIXES:
        os.environ["GLIBC_TUNABLES"] = ENV_FIXES[name]
    libc = ctypes.CDLL(None)
    for param, value in FIXES[name]:
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"mallopt({param}, {value}) failed")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _prefault(mib: int) -> None:
    """Take ``mib`` MiB from the heap, touch it, free it: with no mmap and no trim it stays, resident."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(mib * MIB)
    ctypes.memset(block, 0, mib * MIB)
    libc.free(block)


def _run_ahead(job: dict[str, Any]) -> dict[str, Any]:
    """Fork first (as the fork server forks its idle child ahead), let the child prepare, then time the job."""
    job_r, job_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(job_w)
            os.close(rep_r)
            _apply_fix(job.get("fix"))
            if job.get("prefault_mib"):
                _prefault(job["prefault_mib"])
            os.write(rep_w, b"ready\n")
            with os.fdopen(job_r) as f:
                got = json.loads(f.readline())
            os.write(rep_w, (json.dumps(_run(got)) + "\n").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(job_r)
    os.close(rep_w)
    with os.fdopen(rep_r) as replies:
        assert replies.readline().strip() == "ready"
        time.sleep(3)  # the idle child waits for a task; memory freed meanwhile elsewhere is reported
        started = time.perf_counter()
        os.write(job_w, (json.dumps(job) + "\n").encode())
        got = replies.readline()
        wall = time.perf_counter() - started
    os.close(job_w)
    os.waitpid(pid, 0)
    return {**json.loads(got), "wall_s": wall}


def serve() -> int:
    """One warm process: jobs as JSON lines on stdin, one JSON reply each."""
    crds_path, work_dir = sys.argv[2:4]
    from jwql_dramatiq.pipeline.crds_env import apply_crds_environment

    apply_crds_environment(crds_path, offline_stub=True)
    from jwql_dramatiq.executor.forkserver import preload

    preload(["jwst.pipeline"], True, tempfile.mkdtemp(prefix="warm-", dir=work_dir))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        Path(job["output_dir"]).mkdir(parents=True, exist_ok=True)
        if not job.get("fork"):
            started = time.perf_counter()
            reply = _run(job)
            reply["wall_s"] = time.perf_counter() - started
            if job.get("trim_after"):  # give freed heap back, as a fresh process would start without it
                ctypes.CDLL(None).malloc_trim(0)
            reply["rss_after_mib"] = _rss_mib()
        elif job.get("ahead"):
            reply = _run_ahead(job)
        else:
            read_fd, write_fd = os.pipe()
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(read_fd)
                    _apply_fix(job.get("fix"))
                    os.write(write_fd, (json.dumps(_run(job)) + "\n").encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_fd)
            with os.fdopen(read_fd) as f:
                got = f.readline()
            wall = time.perf_counter() - started
            os.waitpid(pid, 0)
            reply = {**json.loads(got), "wall_s": wall}
        print(json.dumps(reply), flush=True)
    return 0


def _start(root: Path, name: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(root / "crds"), str(root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=open(root / f"{name}.log", "ab"), env={**os.environ, **env})
    return proc


def _read(proc: subprocess.Popen) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"a warm process ended (exit {proc.wait()})")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--instruments", nargs="+", default=["nircam", "miri"])
    parser.add_argument("--variants", nargs="+", default=["warm", "fork", "fork+mmap32"],
                        help=f"warm, fork, fork+<fix> (fixes: {', '.join(FIXES)}), or {', '.join(ENV_PARENTS)}")
    parser.add_argument("--max-cores", default="none")
    parser.add_argument("--steps", action="store_true", help="print every step's wall, CPU and faults")
    args = parser.parse_args()
    from benchmarks.fullframe import make_exposures
    from jwql_dramatiq.pipeline.crds_env import apply_crds_environment

    with tempfile.TemporaryDirectory(prefix="fork-slowdown-") as tmp:
        root = Path(tmp)
        apply_crds_environment(root / "crds", offline_stub=True)
        exposures = make_exposures(root, args.instruments, "cal")
        procs = {"warm": _start(root, "warm", {}), "fork": _start(root, "fork", {})}
        for v in args.variants:
            if v == "warm-trim":
                procs[v] = _start(root, v, {})
            if v in ENV_PARENTS:
                procs[v] = _start(root, v, ENV_PARENTS[v])
        try:
            for proc in procs.values():
                _read(proc)
            os.sync()
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for rep in range(args.reps):
                order = [(v, i) for v in args.variants for i in args.instruments]
                random.Random(rep).shuffle(order)
                for v, inst in order:
                    exp = exposures[inst]
                    job = {"instrument": inst, "input": str(exp.path), "short_name": exp.short_name,
                           "step_args": exp.step_args, "work_dir": str(root / "work"),
                           "output_dir": str(root / f"out-{v}"), "max_cores": args.max_cores}
                    if v in ("warm", "warm-trim"):
                        proc, job["trim_after"] = procs[v], v == "warm-trim"
                    elif v.startswith("ahead"):  # ahead, ahead+<fix>, ahead+<fix>+prefault<MiB>
                        proc, parts = procs["fork"], v.split("+")
                        job.update(fork=True, ahead=True, fix=parts[1] if len(parts) > 1 else None,
                                   prefault_mib=int(parts[2][len("prefault"):]) if len(parts) > 2 else 0)
                    elif v in ENV_PARENTS:
                        proc, job["fork"] = procs[v], True
                    else:
                        proc, job["fork"] = procs["fork"], True
                        job["fix"] = v.partition("+")[2] or None
                    assert proc.stdin is not None
                    proc.stdin.write(json.dumps(job) + "\n")
                    proc.stdin.flush()
                    r = _read(proc)
                    results.setdefault((v, inst), []).append(r)
                    print(f"rep {rep + 1} {v:16} {inst:6} pid {r['pid']} wall {r['wall_s']:6.2f} s  in {r['in_s']:6.2f} s  hwm {r['hwm_mib']:5.0f}  rss-after {r.get('rss_after_mib', 0):5.0f}  "
                          f"minflt {r['minflt']:8.0f}  user {r['utime']:6.2f}  sys {r['stime']:5.2f}  "
                          f"nivcsw {r['nivcsw']:6.0f}  vm {r['vm']}", flush=True)
                    if args.steps:
                        for name, wall, user, sys_, flt in r["steps"]:
                            print(f"    {name:28} {wall:6.2f} s user {user:6.2f} sys {sys_:5.2f} minflt {flt:7d}")
        finally:
            for proc in procs.values():
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=60)
    print("\nmedians (and min-max of wall); ratio to warm")
    for inst in args.instruments:
        base = statistics.median(r["wall_s"] for r in results[("warm", inst)])
        for v in args.variants:
            rs = results[(v, inst)]
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "minflt", "utime", "stime", "hwm_mib")}
            walls = [r["wall_s"] for r in rs]
            print(f"{inst:6} {v:16} n={len(rs)} wall {med['wall_s']:6.2f} ({min(walls):.2f}-{max(walls):.2f}) "
                  f"{med['wall_s'] / base:.3f}x  minflt {med['minflt']:8.0f}  user {med['utime']:6.2f}  "
                  f"sys {med['stime']:5.2f}  thp {statistics.median(r['vm']['thp_fault_alloc'] for r in rs):5.0f}  "
                  f"VmHWM {med['hwm_mib']:5.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
