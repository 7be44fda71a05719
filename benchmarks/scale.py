"""Scale: many workers draining no-op tasks, jwql_dramatiq against stock Dramatiq, in one run (issue #13).

    .venv/bin/python benchmarks/scale.py [--workers 32] [--tasks 20000] [--states 100000] [--probe-tasks 300]

Each variant gets its own private redis-server, so INFO figures are its alone:

1. **Stock Dramatiq** (``benchmarks/plain_dramatiq_app.py``: RedisBroker + Results, ``-p1 -t1``):
   2N worker processes.
2. **jwql_dramatiq**: N in-process workers (``max_tasks_per_child: 0``) and N fresh-child workers
   (``max_tasks_per_child: 1``), all ``dramatiq jwql_dramatiq.actors -p1 -t1``, on one queue.

For each: the workers boot and are frozen (SIGSTOP); this process sends T no-op tasks (``ping``,
``plain_ping``; sends/s from one monitor process); the workers are thawed (SIGCONT) and drain them
while this process reads the results in send order. Reported: throughput (T / time from the thaw
to the last result), Redis commands per task (INFO commandstats deltas, commands inside Lua
scripts included, this process's result reads subtracted), and Redis memory per finished task
(``used_memory`` delta over the sends and the drain, results kept ``--result-ttl-s``).

CPU per task over the drain is read from ``/proc`` for each worker's process group (its fork server
and reaped task children included) and from the Redis server, with jwql_dramatiq's in-process and
fresh-child workers apart (tasks counted from their worker records); beside them, the CPU of one
bare fork, exit and reap of a Python process on this host, the floor of any fresh-process-per-task
design (:mod:`benchmarks.cpu`).

Then, for jwql_dramatiq only, with the workers stopped: ``--states`` more tasks are sent (queued
messages: a first send records no state, its task reads as "queued" from its message), and as many
finished task states are written (as workers leave them, through ``task_state.lua``, pipelined), so
that Redis holds ``--states`` stored states; ``status`` and ``tasks`` are timed as command lines (median of 3, CLI
start-up included; ``--help`` shows the start-up alone), and ``purge --yes`` is timed with the size
of what it prints. Last, round trips per task (send, worker) are counted by
``benchmarks/scale_probe.py`` for both variants.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BIN, REPO, print_table, start_process, stop_process, write_config  # noqa: E402
from benchmarks.cpu import bare_fork_cpu_ms, groups_cpu_s, redis_cpu_s  # noqa: E402
from jwql_dramatiq.embedded import RedisServer, poll_until  # noqa: E402

#: Seconds allowed for all workers of a variant to say they are ready.
BOOT_TIMEOUT_S = 600
#: Seconds allowed for a drain.
DRAIN_TIMEOUT_S = 1800
BREAKDOWN_ROWS = 25  # commands listed per variant in the by-command table


def command_calls(client) -> Counter:
    """Calls per command the server has run (INFO commandstats), leaving out INFO itself."""
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items() if k != "cmdstat_info"})


def command_count(client) -> int:
    """Commands the server has run (INFO commandstats), leaving out INFO itself."""
    return sum(command_calls(client).values())


def used_memory(client) -> int:
    """The server's ``used_memory`` in bytes."""
    return int(client.info("memory")["used_memory"])


def results_backend(broker):
    """The backend of the broker's (first) Results middleware."""
    from dramatiq.results import Results

    return next(m.backend for m in broker.middleware if isinstance(m, Results))


def start_workers(argvs_envs: list[tuple[list[str], dict[str, str]]], root: Path, name: str) -> list:
    """Start every worker, wait until all are ready, then freeze them (SIGSTOP on each process group)."""
    procs, logs = [], []
    for i, (argv, env) in enumerate(argvs_envs):
        log = root / f"{name}{i}.log"
        logs.append(log)
        procs.append(start_process(argv, log, env))
    started = time.monotonic()
    ready = poll_until(lambda: all("ready for action" in log.read_text(errors="replace") for log in logs),
                       BOOT_TIMEOUT_S, 0.2)
    if not ready:
        for proc in procs:
            stop_process(proc)
        raise SystemExit(f"{name} workers did not all boot; see {root}")
    print(f"  {len(procs)} {name} workers ready in {time.monotonic() - started:.1f} s", flush=True)
    for proc in procs:
        os.killpg(proc.pid, signal.SIGSTOP)
    return procs


def thaw(procs: list) -> None:
    """Let frozen workers run again (SIGCONT on each process group)."""
    for proc in procs:
        os.killpg(proc.pid, signal.SIGCONT)


def run_drain(client, send, backend, tasks: int, procs: list) -> dict[str, float]:
    """Send ``tasks`` with the workers frozen, thaw them, and read every result; return the figures."""
    from dramatiq.results import ResultFailure, ResultMissing

    # What one result read costs the server (subtracted from the drain's count).
    probe = send.message()
    before = command_count(client)
    for _ in range(20):
        try:
            probe.get_result(backend=backend)
        except ResultMissing:
            pass
    poll_cost = (command_count(client) - before) / 20

    memory0, calls0 = used_memory(client), command_calls(client)
    commands0 = sum(calls0.values())
    started = time.perf_counter()
    messages = [send.send() for _ in range(tasks)]
    send_s = time.perf_counter() - started
    commands_sent = command_count(client)

    cpu0, redis_cpu0 = groups_cpu_s([p.pid for p in procs]), redis_cpu_s(client)
    thawed = time.perf_counter()
    thaw(procs)
    polls = failures = i = 0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while i < tasks:
        polls += 1
        try:
            messages[i].get_result(backend=backend)
            i += 1
        except ResultMissing:
            if time.monotonic() > deadline:
                raise SystemExit(f"the drain did not finish in {DRAIN_TIMEOUT_S} s ({i} of {tasks} done)") from None
            time.sleep(0.01)
        except ResultFailure:
            failures += 1
            i += 1
    drain_s = time.perf_counter() - thawed
    cpu1, redis_cpu1 = groups_cpu_s([p.pid for p in procs]), redis_cpu_s(client)
    calls1, memory1 = command_calls(client), used_memory(client)
    commands1 = sum(calls1.values())
    worker_commands = commands1 - commands_sent - polls * poll_cost
    return {
        "sends_per_s": tasks / send_s,
        "send_us": send_s / tasks * 1e6,
        "throughput": tasks / drain_s,
        "drain_s": drain_s,
        "send_commands": (commands_sent - commands0) / tasks,
        "worker_commands": worker_commands / tasks,
        "commands": (commands_sent - commands0 + worker_commands) / tasks,
        "memory_bytes": (memory1 - memory0) / tasks,
        "failures": failures,
        # CPU seconds over the drain: each worker's process group (by its leader's pid), and the Redis server's
        "worker_cpu_s": {pid: cpu1[pid] - cpu0[pid] for pid in cpu0},
        "redis_cpu_s": redis_cpu1 - redis_cpu0,
        # Which commands a task costs (sends, workers and this process's result reads together).
        "by_command": {name: calls / tasks for name, calls in (calls1 - calls0).most_common(BREAKDOWN_ROWS)},
    }


def store_finished_states(client, config, count: int) -> None:
    """Write ``count`` "succeeded" task states, as workers leave them (``task_state.lua``, 1000 a round trip)."""
    from jwql_dramatiq.broker.scripts import TASK_STATE
    from jwql_dramatiq.broker.states import state_call

    ttl_ms = int(config.result_ttl_s * 1000)
    now_s = time.time()
    TASK_STATE.load(client)
    for first in range(0, count, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + 1000, count)):
                script_keys, script_args = state_call(
                    config.namespace, f"finished-{i}", ttl_ms, state="succeeded", actor="ping", queue=config.queue_name,
                    enqueued_at=now_s, started_at=now_s, finished_at=now_s, host="bench", pid=1, input_file="",
                    arguments='{"args": [], "kwargs": {}}')
                TASK_STATE.queue(pipe, keys=script_keys, args=script_args)
            pipe.execute()


def run_cli(config: Path, *args: str) -> tuple[float, str, int]:
    """Run ``jwql-dramatiq --config CONFIG ARGS``; return (seconds, stdout, exit code)."""
    started = time.perf_counter()
    out = subprocess.run([str(BIN / "jwql-dramatiq"), "--config", str(config), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=1200)
    return time.perf_counter() - started, out.stdout, out.returncode


def median_cli_s(config: Path, *args: str, runs: int = 3) -> float:
    """Median wall time of ``runs`` runs of the command line, in seconds."""
    return statistics.median(run_cli(config, *args)[0] for _ in range(runs))


def probe_round_trips(variant: str, url: str, config: Path | None, tasks: int) -> dict[str, float]:
    """Round trips per task (send, worker) from ``benchmarks/scale_probe.py``."""
    argv = [sys.executable, "-m", "benchmarks.scale_probe", variant, url, *([str(config)] if config else []),
            "--tasks", str(tasks)]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"scale_probe {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:  # noqa: C901 (one measured run, phase after phase)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32,
                        help="N: jwql_dramatiq runs N in-process + N fresh-child workers, stock Dramatiq 2N")
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks drained per variant")
    parser.add_argument("--states", type=int, default=100_000,
                        help="tasks sent (and left queued) before timing status, tasks and purge")
    parser.add_argument("--probe-tasks", type=int, default=300, help="tasks for the round-trip count")
    parser.add_argument("--result-ttl-s", type=float, default=600.0,
                        help="jwql_dramatiq's result_ttl_s (stock Dramatiq keeps results 600 s)")
    args = parser.parse_args()
    command = (f".venv/bin/python benchmarks/scale.py --workers {args.workers} --tasks {args.tasks} "
               f"--states {args.states} --probe-tasks {args.probe_tasks} --result-ttl-s {args.result_ttl_s:g}")
    n = args.workers
    fork_ms = bare_fork_cpu_ms()  # before this process holds thousands of messages

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        rows: dict[str, dict[str, float]] = {}

        # 1. Stock Dramatiq: 2N workers on its own server.
        print(f"stock Dramatiq: {2 * n} workers, {args.tasks} tasks", flush=True)
        with RedisServer(root / "redis-stock") as server:
            url = server.url(0)
            os.environ["BENCH_REDIS_URL"] = url
            from benchmarks import plain_dramatiq_app as plain

            client = server.client(0)
            argv = [str(BIN / "dramatiq"), "benchmarks.plain_dramatiq_app", "-p1", "-t1"]
            procs = start_workers([(argv, {"BENCH_REDIS_URL": url})] * (2 * n), root, "stock")
            try:
                rows["stock"] = run_drain(client, plain.plain_ping, results_backend(plain.broker), args.tasks, procs)
            finally:
                for proc in procs:
                    stop_process(proc)
            plain.broker.close()
            rows["stock"].update(probe_round_trips("stock", server.url(1), None, args.probe_tasks))
            client.close()

        # 2. jwql_dramatiq: N in-process + N fresh-child workers on one queue, its own server.
        print(f"jwql_dramatiq: {n} in-process + {n} fresh-child workers, {args.tasks} tasks", flush=True)
        with RedisServer(root / "redis-jwql") as server:
            from jwql_dramatiq.actors import ping
            from jwql_dramatiq.broker import setup_broker
            from jwql_dramatiq.broker.control import list_workers
            from jwql_dramatiq.config import load_config

            url = server.url(0)
            common = {"result_ttl_s": args.result_ttl_s, "log_dir": str(root / "logs")}
            in_process = write_config(root / "in-process.json", url, root, max_tasks_per_child=0, **common)
            fresh = write_config(root / "fresh.json", url, root, max_tasks_per_child=1, **common)
            broker = setup_broker(load_config(in_process))
            client = server.client(0)
            argv = [str(BIN / "dramatiq"), "jwql_dramatiq.actors", "-p1", "-t1"]
            specs = ([(argv, {"JWQL_DRAMATIQ_CONFIG": str(in_process)})] * n
                     + [(argv, {"JWQL_DRAMATIQ_CONFIG": str(fresh)})] * n)
            procs = start_workers(specs, root, "jwql")
            try:
                rows["jwql"] = run_drain(client, ping, results_backend(broker), args.tasks, procs)
                done_by_pid = {w.main_pid: w.tasks_done for w in list_workers(
                    client, broker.jwql_config.namespace, broker.jwql_config.heartbeat_timeout_s)}
                groups = {"in-process": procs[:n], "fresh-child": procs[n:]}
                rows["jwql"]["cpu_groups"] = {
                    name: (sum(rows["jwql"]["worker_cpu_s"][p.pid] for p in group),
                           sum(done_by_pid.get(p.pid, 0) for p in group)) for name, group in groups.items()}
            finally:
                for proc in procs:
                    stop_process(proc)

            # 3. Operations with --states task states stored and as many messages queued.
            print(f"jwql_dramatiq: sending {args.states} tasks for status, tasks and purge", flush=True)
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                for _ in pool.map(lambda _: ping.send(), range(args.states), chunksize=500):
                    pass
            fill_s = time.perf_counter() - started
            store_finished_states(client, broker.jwql_config, args.states)
            stored = client.dbsize()
            ops = {
                "help_s": median_cli_s(in_process, "--help"),
                "status_s": median_cli_s(in_process, "status"),
                "tasks_s": median_cli_s(in_process, "tasks"),
                "tasks_queued_s": median_cli_s(in_process, "tasks", "--state", "queued"),
            }
            purge_s, purge_out, purge_rc = run_cli(in_process, "purge", "--yes")
            ops.update(purge_s=purge_s, purge_bytes=len(purge_out.encode()), purge_lines=purge_out.count("\n"),
                       purge_rc=purge_rc)
            broker.close()
            rows["jwql"].update(probe_round_trips("jwql", server.url(1), in_process, args.probe_tasks))
            client.close()

    stock, ours = rows["stock"], rows["jwql"]

    def ratio(key: str) -> str:
        return f"{ours[key] / stock[key]:.2f}x" if stock[key] else "-"

    print_table(
        f"Scale: stock Dramatiq ({2 * n} workers) vs jwql_dramatiq ({n} in-process + {n} fresh-child), "
        f"{args.tasks} no-op tasks",
        ["measure", "stock Dramatiq", "jwql_dramatiq", "jwql / stock", "issue #13 target"],
        [["drain throughput (tasks/s)", stock["throughput"], ours["throughput"], ratio("throughput"), ">= 1.0x"],
         ["Redis commands per task (all)", f"{stock['commands']:.2f}", f"{ours['commands']:.2f}", ratio("commands"),
          "<= stock + 1"],
         ["  of which to send", f"{stock['send_commands']:.2f}", f"{ours['send_commands']:.2f}",
          ratio("send_commands"), ""],
         ["  of which in workers", f"{stock['worker_commands']:.2f}", f"{ours['worker_commands']:.2f}",
          ratio("worker_commands"), ""],
         ["Redis memory per finished task (bytes)", f"{stock['memory_bytes']:.0f}", f"{ours['memory_bytes']:.0f}",
          ratio("memory_bytes"), ""],
         ["sends/s from one monitor process", stock["sends_per_s"], ours["sends_per_s"], ratio("sends_per_s"),
          ">= 1.0x"],
         ["  µs per send", stock["send_us"], ours["send_us"], ratio("send_us"), ""],
         ["round trips per task: send", f"{stock['send_rt']:.2f}", f"{ours['send_rt']:.2f}", ratio("send_rt"), "1"],
         ["round trips per task: worker", f"{stock['worker_rt']:.2f}", f"{ours['worker_rt']:.2f}",
          ratio("worker_rt"), "<= 3"]])
    print_table(
        f"jwql_dramatiq operations with {args.states} tasks queued and {args.states} finished states stored "
        f"({stored} keys in Redis)",
        ["command", "seconds", "issue #13 target"],
        [["jwql-dramatiq --help (CLI start-up alone)", ops["help_s"], ""],
         ["status", ops["status_s"], "< 1 s"],
         ["tasks", ops["tasks_s"], ""],
         ["tasks --state queued", ops["tasks_queued_s"], ""],
         [f"purge --yes of {args.states} messages (exit {ops['purge_rc']}; prints {ops['purge_lines']} lines, "
          f"{ops['purge_bytes']} bytes)", ops["purge_s"], "<= 5 s, output summarised"]])
    (in_cpu_s, in_tasks), (fresh_cpu_s, fresh_tasks) = (ours["cpu_groups"]["in-process"],
                                                        ours["cpu_groups"]["fresh-child"])
    stock_cpu_s = sum(stock["worker_cpu_s"].values())
    stock_ms = stock_cpu_s / args.tasks * 1000

    def cpu_cells(cpu_s: float, tasks: int) -> list[str]:
        """CPU ms per task, and its ratio to stock's."""
        if not tasks:
            return ["-", "-"]
        ms = cpu_s / tasks * 1000
        return [f"{ms:.2f}", f"{ms / stock_ms:.2f}x"]

    print_table(
        "CPU per task over the drain, in ms (each worker's process group: fork server and task children "
        "included)",
        ["who", "tasks run", "CPU ms per task", "/ stock's"],
        [["stock Dramatiq workers", args.tasks, *cpu_cells(stock_cpu_s, args.tasks)],
         ["jwql_dramatiq in-process workers", in_tasks, *cpu_cells(in_cpu_s, in_tasks)],
         ["jwql_dramatiq fresh-child workers", fresh_tasks, *cpu_cells(fresh_cpu_s, fresh_tasks)],
         ["  floor: one bare fork, exit and reap of a Python process, nothing run", "",
          *cpu_cells(fork_ms / 1000, 1)],
         ["Redis server, stock", args.tasks, f"{stock['redis_cpu_s'] / args.tasks * 1000:.2f}", "1.00x"],
         ["Redis server, jwql_dramatiq", args.tasks, f"{ours['redis_cpu_s'] / args.tasks * 1000:.2f}",
          f"{ours['redis_cpu_s'] / stock['redis_cpu_s']:.2f}x" if stock["redis_cpu_s"] else "-"]])
    names = list(dict.fromkeys([*stock["by_command"], *ours["by_command"]]))
    print_table("Redis calls per task by command over the sends and the drain (result reads included)",
                ["command", "stock Dramatiq", "jwql_dramatiq"],
                [[name, f"{stock['by_command'].get(name, 0):.2f}", f"{ours['by_command'].get(name, 0):.2f}"]
                 for name in names])
    print(f"\n(drain: stock {stock['drain_s']:.1f} s, jwql_dramatiq {ours['drain_s']:.1f} s; failed tasks: stock "
          f"{stock['failures']}, jwql_dramatiq {ours['failures']}; sending {args.states} tasks from 8 threads took "
          f"{fill_s:.1f} s; round trips from {args.probe_tasks} tasks through an in-process dramatiq.Worker of one "
          f"thread; commands include those inside Lua scripts; result_ttl_s {args.result_ttl_s:g})")
    print(f"(command: {command})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
