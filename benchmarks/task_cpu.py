"""CPU per task: one stock Dramatiq worker, one in-process and one fresh-child jwql_dramatiq worker.

    .venv/bin/python benchmarks/task_cpu.py [--tasks 1000]

Why ``benchmarks/scale.py``'s throughput at 32 + 32 workers on 2 cores is what it is: there
every worker competes for the same CPU, so a task's throughput follows the CPU it costs. Each
variant runs alone on its own private redis-server: one worker (``-p1 -t1``) boots and is frozen
(SIGSTOP), this process sends T no-op tasks, thaws the worker and reads every result. Reported:
tasks/s, the machine's CPU per task over the drain (``/proc/stat``: everything, Redis and this
process included), and each process of the worker's group (CPU it used itself, and CPU of the
children it reaped: for the fork server, the task children), and the CPU of one bare fork, exit
and reap of a Python process, the floor under any fresh process per task (:mod:`benchmarks.cpu`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BIN, print_table, stop_process, write_config  # noqa: E402
from benchmarks.cpu import bare_fork_cpu_ms, group_cpu_s, machine_cpu_s  # noqa: E402
from benchmarks.scale import results_backend, start_workers, thaw  # noqa: E402
from jwql_dramatiq.embedded import RedisServer  # noqa: E402

def run_variant(kind: str, tasks: int, root: Path) -> dict:
    """Drain ``tasks`` no-op tasks through one worker of ``kind``; return the figures."""
    from dramatiq.results import ResultMissing

    with RedisServer(root / f"redis-{kind}") as server:
        url = server.url(0)
        if kind == "stock":
            os.environ["BENCH_REDIS_URL"] = url
            from benchmarks import plain_dramatiq_app as plain

            send, backend = plain.plain_ping, results_backend(plain.broker)
            specs = [([str(BIN / "dramatiq"), "benchmarks.plain_dramatiq_app", "-p1", "-t1"],
                      {"BENCH_REDIS_URL": url})]
        else:
            from jwql_dramatiq.actors import ping
            from jwql_dramatiq.broker import setup_broker
            from jwql_dramatiq.config import load_config

            config = write_config(root / f"{kind}.json", url, root, result_ttl_s=600, log_dir=str(root / "logs"),
                                  max_tasks_per_child=0 if kind == "in-process" else 1)
            send, backend = ping, results_backend(setup_broker(load_config(config)))
            specs = [([str(BIN / "dramatiq"), "jwql_dramatiq.actors", "-p1", "-t1"],
                      {"JWQL_DRAMATIQ_CONFIG": str(config)})]
        procs = start_workers(specs, root, kind)
        try:
            groups = {proc.pid for proc in procs}
            messages = [send.send() for _ in range(tasks)]
            before, machine0, started = group_cpu_s(groups), machine_cpu_s(), time.perf_counter()
            thaw(procs)
            done = 0
            while done < tasks:
                try:
                    messages[done].get_result(backend=backend)
                    done += 1
                except ResultMissing:
                    time.sleep(0.01)
            drain_s, machine_s = time.perf_counter() - started, machine_cpu_s() - machine0
            after = group_cpu_s(groups)
        finally:
            for proc in procs:
                stop_process(proc)
    # The worker's processes in start order: the dramatiq parent, its worker, then the fork server.
    per_process = []
    for pid in sorted(after):
        own0, reaped0 = before.get(pid, (0.0, 0.0))
        own, reaped = after[pid]
        per_process.append(((own - own0) / tasks * 1e3, (reaped - reaped0) / tasks * 1e3))
    return {"throughput": tasks / drain_s, "machine_ms": machine_s / tasks * 1e3, "per_process": per_process}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="no-op tasks drained per variant")
    args = parser.parse_args()
    roles = ["dramatiq parent", "worker process", "fork server"]
    fork_ms = bare_fork_cpu_ms()
    with tempfile.TemporaryDirectory(prefix="bench-task-cpu-") as tmp:
        rows = {kind: run_variant(kind, args.tasks, Path(tmp)) for kind in ("stock", "in-process", "fresh-child")}
    stock_ms = rows["stock"]["machine_ms"]
    print_table(f"CPU per no-op task, one worker alone, {args.tasks} tasks",
                ["worker", "tasks/s", "machine CPU ms per task", "vs stock", "by process: own ms (reaped children ms)"],
                [[kind, row["throughput"], f"{row['machine_ms']:.2f}", f"{row['machine_ms'] / stock_ms:.2f}x",
                  "; ".join(f"{roles[i] if i < len(roles) else 'process'} {own:.2f} ({reaped:.2f})"
                            for i, (own, reaped) in enumerate(row["per_process"]))]
                 for kind, row in rows.items()])
    print(f"\nFloor under any fresh process per task on this host: one bare fork, exit and reap of a Python "
          f"process costs {fork_ms:.2f} ms of CPU ({fork_ms / stock_ms:.2f}x a stock task's machine CPU).")
    print(f"\n(command: .venv/bin/python benchmarks/task_cpu.py --tasks {args.tasks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
