"""Full-frame Detector1 jobs: this server against the floor (no server) and the original design.

Called by ``benchmarks/pipeline.py --size 2048``. One synthetic full-frame exposure per
instrument (NIRCam 2048x2048, MIRI 1024 rows x 1032 columns), sent and waited for through

- **server**: a real ``dramatiq jwql_dramatiq.actors -p1 -t1`` worker per ``max_cores`` value
  (``auto``, ``all``, ``none``), each with a preloaded, warmed-up fork server;
- **server-spawn**: the same worker (``max_cores`` ``auto``) with ``pool_start: spawn``, so stcal's
  pools start as stcal starts them (fresh interpreters) rather than from the task's zygote;
- **floor**: the same :mod:`jwql_dramatiq.pipeline` call, same inputs and references, in a
  process that imported jwst and ran the fork server's warm-up (:mod:`benchmarks.floor`);
- **floor-fork**: the same, in a child that warm process forks for the job (the cost of a fresh
  process per task, without any server);
- **original**: Celery with the original's flags, the pipeline in a fresh subprocess.

All of them are started first and stay up; then each round runs every variant once, in an
order shuffled per round (seeded), so a change in the machine's load hits every variant alike.
Medians over the rounds are reported.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from benchmarks.common import REPO, celery_worker, jwql_worker, print_table, write_config
from jwql_dramatiq import synthetic
from jwql_dramatiq.embedded import RedisServer

#: Longest one full-frame job may take, in seconds.
JOB_TIMEOUT_S = 600


@dataclass
class Variant:
    """One design x instrument x max_cores, and what its runs measured."""

    design: str  # "server", "server-spawn", "floor", "floor-fork" or "original"
    instrument: str
    max_cores: str
    elapsed_s: list[float] = field(default_factory=list)
    in_child_s: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    memory_method: str = ""
    resolved_cores: str = ""

    @property
    def median_s(self) -> float:
        """Median send->result (or call) time."""
        return statistics.median(self.elapsed_s)


@dataclass
class Exposure:
    """One instrument's full-frame input and the step arguments that name its references."""

    instrument: str
    path: Path
    short_name: str
    step_args: dict[str, Any]


def make_exposures(root: Path, instruments: list[str], pipeline: str) -> dict[str, Exposure]:
    """Write a full-frame exposure and matching references for each instrument under ``root``."""
    found = {}
    for inst in instruments:
        name = synthetic.exposure_file_name(inst)
        path = synthetic.make_exposure(inst, root / "data" / name, subarray="full")
        refs = synthetic.make_instrument_references(inst, root / "refs" / inst, subarray="full",
                                                    nints=synthetic.DEFAULT_SHAPE[inst][0])
        found[inst] = Exposure(inst, path, name.replace("_uncal.fits", ""),
                               synthetic.instrument_step_overrides(inst, refs, pipeline))
    return found


@contextmanager
def floor_process(root: Path) -> Iterator[subprocess.Popen]:
    """A :mod:`benchmarks.floor` process, warmed up; always reaped."""
    from benchmarks.common import stop_process

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.floor", str(root / "crds"), str(root)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(root / "floor.log", "ab"),
                            text=True, start_new_session=True)
    try:
        _read_json(proc)
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        stop_process(proc)


def _read_json(proc: subprocess.Popen) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"the floor process ended (exit {proc.wait()}); see floor.log")


def run_floor(proc: subprocess.Popen, root: Path, exp: Exposure, v: Variant, pipeline: str) -> None:
    """Run one job in the floor process and record it in ``v``."""
    job = {"path": pipeline, "instrument": exp.instrument, "input": str(exp.path), "short_name": exp.short_name,
           "max_cores": v.max_cores, "step_args": exp.step_args, "work_dir": str(root / "floor-work"),
           "output_dir": str(root / "floor-out"), "fork": v.design == "floor-fork"}
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    done = _read_json(proc)
    v.elapsed_s.append(done["elapsed_s"])
    v.peak_mib.append(done["memory_peak_mib"])
    v.memory_method, v.resolved_cores = done["memory_method"], done["max_cores"]


class ServerClient:
    """Sends jobs to one worker's broker and reads back the task's recorded memory peak."""

    def __init__(self, config: Path, log: Path) -> None:
        from jwql_dramatiq.broker import build_broker
        from jwql_dramatiq.config import load_config

        self.config = load_config(config)
        self.broker = build_broker(self.config, declare_actors=False)
        self.log = log

    def run(self, exp: Exposure, v: Variant, pipeline: str) -> None:
        """Send one job, wait for its result, record time, peak memory and the child's own time."""
        import dramatiq

        from jwql_dramatiq.broker.states import get_task_state

        if pipeline == "jump":
            message = dramatiq.Message(queue_name=self.config.queue_name, actor_name="calwebb_detector1_save_jump",
                                       args=(exp.path.name, exp.instrument), kwargs={"step_args": exp.step_args},
                                       options={})
        else:
            message = dramatiq.Message(queue_name=self.config.queue_name, actor_name="run_calwebb_detector1",
                                       args=(exp.path.name, exp.short_name, "rate", exp.instrument, exp.step_args),
                                       kwargs={}, options={})
        started = time.perf_counter()
        self.broker.enqueue(message)
        result = self.broker.results_backend.get_result(message, block=True, timeout=JOB_TIMEOUT_S * 1000)
        v.elapsed_s.append(time.perf_counter() - started)
        state = get_task_state(message.message_id, client=self.broker.client, namespace=self.config.namespace)
        details = state.details if state else {}
        v.peak_mib.append(float(details.get("memory_peak_mib", 0) or 0))
        v.memory_method, v.resolved_cores = details.get("memory_method", "?"), details.get("max_cores", "?")
        pattern = rf"Task {message.message_id} \([^)]*\) finished in child \d+: ([\d.]+) s"
        deadline = time.monotonic() + 2.0  # the worker's log line may land just after the result
        while not (found := re.findall(pattern, self.log.read_text(errors="replace"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        if found:
            v.in_child_s.append(float(found[-1]))
        for product in result.values():
            if product:
                Path(product).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()


def run_original(root: Path, exp: Exposure, v: Variant, pipeline: str, i: int) -> None:
    """Send one job to the Celery worker (fresh subprocess per job) and record it."""
    from benchmarks.celery_app import run_pipeline_subprocess

    out = root / f"celery-out-{exp.instrument}-{i}"
    started = time.perf_counter()
    done = run_pipeline_subprocess.delay(str(exp.path), str(root / "celery-work"), str(out), str(root / "crds"),
                                         json.dumps(exp.step_args), v.max_cores, exp.instrument, exp.short_name,
                                         pipeline).get(timeout=JOB_TIMEOUT_S)
    v.elapsed_s.append(time.perf_counter() - started)
    v.peak_mib.append(round(done["maxrss_mib"], 1))
    v.memory_method = "ru_maxrss (largest process)"
    shutil.rmtree(out, ignore_errors=True)


def plan_variants(instruments: list[str], cores_instrument: str, cores: list[str],
                  original_cores: str) -> list[Variant]:
    """Every variant of the run: server and floor per core setting, the original once per instrument."""
    variants = []
    for inst in instruments:
        inst_cores = cores if inst == cores_instrument else []
        inst_cores = inst_cores if "auto" in inst_cores else ["auto", *inst_cores]  # the first table's
        variants += [Variant("server", inst, c) for c in inst_cores]
        variants += [Variant("floor", inst, c) for c in inst_cores]
        variants.append(Variant("server-spawn", inst, "auto"))
        variants.append(Variant("floor-fork", inst, "auto"))
        variants.append(Variant("original", inst, original_cores))
    return variants


def run_all(root: Path, server: RedisServer, exposures: dict[str, Exposure], variants: list[Variant], rounds: int,
            pipeline: str) -> None:
    """Start every worker, the floor and Celery, then run ``rounds`` rounds of every variant; always reaps."""
    import os

    workers_needed = sorted({(v.design, v.max_cores) for v in variants if v.design.startswith("server")})
    incoming = root / "transfer" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for exp in exposures.values():
        shutil.copy(exp.path, incoming / exp.path.name)
    with ExitStack() as stack:
        clients: dict[tuple[str, str], ServerClient] = {}
        for db, (design, cores) in enumerate(workers_needed, start=2):
            pool_start = "spawn" if design == "server-spawn" else "zygote"
            config = write_config(root / f"jwql-{design}-{cores}.json", server.url(db), root,
                                  preload=["jwst.pipeline"], warm_up=True, crds_path=str(root / "crds"),
                                  crds_offline_stub=True, max_cores=cores, pool_start=pool_start)
            log = root / f"jwql-{design}-{cores}.log"
            stack.enter_context(jwql_worker(config, log))
            clients[design, cores] = ServerClient(config, log)
            stack.callback(clients[design, cores].close)
        floor = stack.enter_context(floor_process(root))
        stack.enter_context(celery_worker(server.url(1), root / "celery.log"))
        os.environ["BENCH_REDIS_URL"] = server.url(1)
        os.environ["BENCH_CELERY_IMPORT_JWST"] = "0"
        os.sync()  # the inputs and references just written are not flushed during the first timed job
        for r in range(rounds):
            order = list(enumerate(variants))
            random.Random(r).shuffle(order)  # no variant always runs right after another one
            for i, v in order:
                exp = exposures[v.instrument]
                if v.design.startswith("server"):
                    clients[v.design, v.max_cores].run(exp, v, pipeline)
                elif v.design in ("floor", "floor-fork"):
                    run_floor(floor, root, exp, v, pipeline)
                else:
                    run_original(root, exp, v, pipeline, i)
                print(f"  round {r + 1}: {v.design:12} {v.instrument:6} max_cores={v.max_cores:4} "
                      f"{v.elapsed_s[-1]:6.2f} s  peak {v.peak_mib[-1]:7.1f} MiB", flush=True)


def _find(variants: list[Variant], design: str, inst: str, cores: str) -> Variant | None:
    return next((v for v in variants if (v.design, v.instrument, v.max_cores) == (design, inst, cores)), None)


def _spread(v: Variant) -> str:
    return f"{min(v.elapsed_s):.1f}-{max(v.elapsed_s):.1f}"


def _peak(v: Variant) -> str:
    return f"{statistics.median(v.peak_mib):.0f}" if v.peak_mib else "-"


def report(variants: list[Variant], cores_instrument: str, cores: list[str], pipeline: str) -> None:
    """Print the two tables: server vs floor vs original, and the max_cores comparison."""
    rows = []
    for inst in dict.fromkeys(v.instrument for v in variants):
        s, f = _find(variants, "server", inst, "auto"), _find(variants, "floor", inst, "auto")
        o = next(v for v in variants if v.design == "original" and v.instrument == inst)
        k = _find(variants, "floor-fork", inst, "auto")
        p = _find(variants, "server-spawn", inst, "auto")
        assert s is not None and f is not None and k is not None and p is not None
        child = f"{statistics.median(s.in_child_s):.1f}" if s.in_child_s else "-"
        overhead = f"{statistics.median(e - c for e, c in zip(s.elapsed_s, s.in_child_s)):.3f}" \
            if len(s.in_child_s) == len(s.elapsed_s) else "-"
        rows.append([inst, len(s.elapsed_s), f"{f.median_s:.1f} ({_spread(f)})", f"{s.median_s:.1f} ({_spread(s)})",
                     child, overhead, f"{p.median_s:.1f} ({_spread(p)})", f"{k.median_s:.1f} ({_spread(k)})",
                     f"{o.median_s:.1f} ({_spread(o)})",
                     f"{s.median_s / f.median_s:.3f}x", f"{p.median_s / f.median_s:.3f}x", f"{s.median_s / k.median_s:.3f}x",
                     f"{o.median_s / s.median_s:.2f}x",
                     f"{_peak(s)} ({s.memory_method})", f"{_peak(f)} ({f.memory_method})",
                     f"{_peak(o)}"])
    print_table(f"Full-frame Detector1 job ({pipeline} path), send->result, median s",
                ["instrument", "rounds", "floor s (min-max)", "server s (min-max)", "server in-child s",
                 "server send->result minus in-child s", "server with stcal's spawn pools s (min-max)",
                 "floor in a forked child s (min-max)",
                 "original s (min-max)", "server/floor (target <= 1.05)", "server with stcal's spawn/floor",
                 "server/forked floor",
                 "original/server (target >= 1.3)",
                 "server tree peak MiB", "floor tree peak MiB", "original largest process MiB"], rows)
    rows = []
    for c in cores:
        s, f = _find(variants, "server", cores_instrument, c), _find(variants, "floor", cores_instrument, c)
        if s is None or f is None:
            continue
        rows.append([c, s.resolved_cores, f.median_s, _spread(f), s.median_s, _spread(s),
                     f"{s.median_s / f.median_s:.3f}x", _peak(s), _peak(f)])
    print_table(f"{cores_instrument} full frame by max_cores (floor with the same maximum_cores), median s",
                ["max_cores", "resolved", "floor s", "floor min-max", "server s", "server min-max", "server/floor",
                 "server tree peak MiB", "floor tree peak MiB"], rows)
