"""Read commands: ``status`` (workers, queues, locks; a health check) and ``tasks`` (task states)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..broker.control import WorkerInfo, list_workers
from ..broker.states import ALL_STATES, TaskState, get_task_state, list_tasks
from ..config import check_transfer_dir
from ._common import RET_FAIL, RET_NOT_FOUND, RET_OK, Context, clock, non_empty, seconds, table


def visible_workers(workers: list[WorkerInfo], show_all: bool) -> list[WorkerInfo]:
    """The workers ``status`` shows: all with ``show_all``, else the live ones and the dead ones
    not since replaced by a later worker on the same host (cleanly stopped workers are hidden).

    Parameters
    ----------
    workers : list of WorkerInfo
    show_all : bool

    Returns
    -------
    list of WorkerInfo
    """
    if show_all:
        return list(workers)
    latest: dict[str, float] = {}
    for w in workers:
        latest[w.host] = max(latest.get(w.host, 0.0), w.started_at)
    return [w for w in workers if w.alive or (not w.stopped and w.started_at >= latest.get(w.host, 0.0))]


def _lock_dict(info: Any) -> dict[str, Any]:
    return {"name": info.name, "host": info.host, "pid": info.pid, "thread": info.thread,
            "message_id": info.message_id, "actor": info.actor_name, "acquired_at": info.acquired_at,
            "lease_s": info.lease_s, "ttl_s": info.ttl_s, "timeout_s": info.timeout_s,
            "fencing_token": info.fencing_token, "owner_alive": info.alive}


def lock_rows(locks: list[Any], now: float) -> list[list[Any]]:
    """Table rows for locks: name, owner, task, held for, lease left, owner state."""
    rows = []
    for info in locks:
        task = f"{info.actor_name} {info.message_id}" if info.message_id else ""
        rows.append([info.name, f"{info.host} pid {info.pid}", task,
                     seconds(max(0.0, now - info.acquired_at)) if info.acquired_at else "-",
                     seconds(info.ttl_s) if info.ttl_s is not None else "no expiry",
                     "alive" if info.alive else "DEAD"])
    return rows


LOCK_HEADERS = ("LOCK", "OWNER", "TASK", "HELD FOR", "LEASE LEFT", "OWNER STATE")


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    """``status``: workers, queue lengths and locks; 0 if at least one worker is alive, else 1.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK or RET_FAIL).
    """
    from ..broker.admin import queue_lengths
    from ..locks import list_locks

    config = ctx.config
    check_transfer_dir(config)
    workers = list_workers(ctx.client, ctx.namespace, config.heartbeat_timeout_s)
    queues = queue_lengths(ctx.broker)
    locks = list_locks(ctx.client, ctx.namespace)
    alive = [w for w in workers if w.alive]
    shown = visible_workers(workers, args.all)
    code = RET_OK if alive else RET_FAIL
    replication = _replication(ctx) if config.redis_sentinels or config.wait_replicas else None
    if args.json:
        ctx.print_json({"redis": config.redis_address, "namespace": ctx.namespace, "healthy": bool(alive),
                        "heartbeat_timeout_s": config.heartbeat_timeout_s,
                        "workers": [w.to_dict() for w in shown], "queues": [q.to_dict() for q in queues],
                        "locks": [_lock_dict(info) for info in locks],
                        **({"replication": replication} if replication is not None else {})})
        return code

    now = time.time()
    dead = sum(1 for w in shown if w.condition == "dead")
    hidden = len(workers) - len(shown)
    summary = f"Redis {config.redis_address}, namespace {ctx.namespace}: {len(alive)} worker(s) alive"
    if dead:
        summary += f", {dead} dead"
    if hidden:
        summary += f" ({hidden} stopped or replaced not shown; --all shows them)"
    ctx.print(summary)
    ctx.print("")
    rows = []
    for w in shown:
        beat = "no heartbeat" if w.heartbeat_age_s is None else f"{seconds(w.heartbeat_age_s)} ago"
        task = ""
        if w.current_message:
            since = ""
            if w.current_since:
                since = f" since {clock(w.current_since)[11:]} ({seconds(now - w.current_since)})"
            task = f"{w.current_actor} {w.current_message}{since}"
        rows.append([w.host, w.worker_id[:8], w.main_pid, w.condition, beat, task, w.tasks_done, w.children_recycled,
                     _memory(w)])
    ctx.print(table(rows, ("HOST", "WORKER", "PID", "STATE", "HEARTBEAT", "CURRENT TASK", "DONE", "RECYCLED",
                           "TASK MEMORY"))
              if rows else "No workers have registered.")
    ctx.print("")
    ctx.print(table([[q.queue, q.ready, q.delayed, q.dead] for q in queues],
                    ("QUEUE", "READY", "DELAYED", "DEAD-LETTER")))
    ctx.print("")
    ctx.print(table(lock_rows(locks, now), LOCK_HEADERS) if locks else "No locks held.")
    if replication is not None:
        ctx.print("")
        for line in replication_lines(replication):
            ctx.print(line)
    return code


def _replication(ctx: Context) -> dict[str, Any]:
    """The master, replicas and sentinels (:func:`jwql_dramatiq.sentinel.topology`), or ``{"error": ...}``."""
    import redis

    from ..sentinel import topology

    try:
        return topology(ctx.client)
    except redis.RedisError as e:  # e.g. an ACL without +info
        return {"error": str(e) or type(e).__name__}


def replication_lines(rep: dict[str, Any]) -> list[str]:
    """The replication part of ``status``: master, replicas with their lag, each sentinel's view."""
    if "error" in rep:
        return [f"Replication: not shown ({rep['error']})"]
    replicas, wait = rep["replicas"], rep.get("wait", [0, 0])
    waits = f"durable writes WAIT {wait[0]} {wait[1]}" if wait[0] else "durable writes do not wait"
    lines = [f"Master {rep['master'] or '?'} (role {rep['role']}), {len(replicas)} replica(s); {waits}"]
    if replicas:
        lines.append(table([[r["address"], r["state"], r["lag_bytes"], "-" if r["lag_s"] is None else f"{r['lag_s']} s"]
                            for r in replicas], ("REPLICA", "STATE", "LAG (BYTES)", "LAST ACK")))
    if rep["sentinels"]:
        lines.append("")
        rows = [[v["address"], v.get("master", "-"), v.get("flags", ""), v.get("replicas", "-"),
                 v.get("other_sentinels", "-"), v.get("quorum", "-"), v.get("error", "")] for v in rep["sentinels"]]
        lines.append(table(rows, ("SENTINEL", "MASTER", "FLAGS", "REPLICAS", "OTHER SENTINELS", "QUORUM", "ERROR")))
        named = {v.get("master") for v in rep["sentinels"] if v.get("master")}
        if len(named) > 1:
            lines.append(f"WARNING: the sentinels disagree on the master: {', '.join(sorted(named))}")
    return lines


def _memory(worker: WorkerInfo) -> str:
    """``cgroup-v1, limit 600 MiB``: how the worker limits each task's memory (whole process tree)."""
    if not worker.memory_method:
        return "in-process"
    limit = f"limit {worker.memory_limit_mib:g} MiB" if worker.memory_limit_mib > 0 else "no limit"
    return f"{worker.memory_method}, {limit}"


def _peak(d: dict[str, str]) -> str:
    """``, peak 812.3 MiB (cgroup-v1), attempt 3 (maximum_cores=none)`` when recorded."""
    text = f", peak {d['memory_peak_mib']} MiB ({d.get('memory_method', '?')})" if d.get("memory_peak_mib") else ""
    if d.get("attempt") and d["attempt"] != "1":
        text += f", attempt {d['attempt']} (maximum_cores={d.get('max_cores') or '?'})"
    return text


def _detail(state: TaskState) -> str:
    d = state.details
    if state.state == "running":
        return f"on {d.get('host', '?')} (worker {d.get('worker', '?')[:8]}, pid {d.get('pid', '?')}) " \
               f"since {clock(d.get('started_at'))}"
    if state.state == "failed":
        return d.get("error", "") + _peak(d)
    if state.state == "scheduled":
        eta = d.get("eta")
        return f"due {clock(float(eta) / 1000)}" if eta else ""
    if state.state == "succeeded":
        started, finished = d.get("started_at"), d.get("finished_at")
        took = f" in {seconds(float(finished) - float(started))}" if started and finished else ""
        return f"on {d.get('host', '?')}{took}{_peak(d)}"
    if state.state in ("revoked", "purged"):
        return d.get("error", "")
    if state.state == "queued" and d.get("requeued_at"):
        return f"requeued {clock(d['requeued_at'])}"
    return ""


def cmd_tasks(ctx: Context, args: argparse.Namespace) -> int:
    """``tasks [MESSAGE_ID]``: recent task states, or one task's.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK, or RET_NOT_FOUND for an unknown id).
    """
    if args.message_id is not None:
        state = get_task_state(args.message_id, ctx.client, ctx.namespace)
        if state is None:
            if args.json:
                ctx.print_json(None)
            else:
                ctx.print(f"No task {args.message_id} is recorded (unknown id, or its record expired).")
            return RET_NOT_FOUND
        if args.json:
            ctx.print_json(state.to_dict())
            return RET_OK
        info = state.to_dict()
        for key in sorted(info, key=lambda k: (k not in ("message_id", "state", "actor", "queue"), k)):
            value = info[key]
            if key.endswith("_at"):
                value = clock(value)
            ctx.print(f"{key + ':':<14}{value}")
        return RET_OK

    tasks = list_tasks(args.limit, ctx.client, ctx.namespace, states=args.state)
    if args.json:
        ctx.print_json([t.to_dict() for t in tasks])
        return RET_OK
    if not tasks:
        ctx.print("No task states recorded" + (f" in state {', '.join(args.state)}." if args.state else "."))
        return RET_OK
    ctx.print(table([[t.message_id, t.actor, t.state, clock(t.updated_at), _detail(t)] for t in tasks],
                    ("MESSAGE ID", "ACTOR", "STATE", "UPDATED", "DETAIL")))
    return RET_OK


def add_parsers(sub: Any) -> None:
    """Add ``status`` and ``tasks`` to the subcommand parsers."""
    p = sub.add_parser("status", help="workers, queue lengths and locks; exit 0 if a worker is alive (health check)",
                       description="Show every worker seen on the broker (host, pid, alive or dead with its "
                                   "heartbeat's age, current task, tasks done, children recycled), the queue "
                                   "lengths and the locks held. Exits 0 when Redis answers and at least one "
                                   "worker is alive, 1 when none is (3 when Redis is unreachable).")
    p.add_argument("--all", action="store_true", help="also show cleanly stopped workers and dead ones since replaced")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("tasks", help="recent task states, or one task's",
                       description="List recent task states (queued, scheduled, running, succeeded, failed, "
                                   "purged, revoked), newest first, or show one task in full.")
    p.add_argument("message_id", nargs="?", metavar="MESSAGE_ID", type=non_empty, help="show this task only")
    p.add_argument("--state", action="append", choices=ALL_STATES, help="only tasks in this state (repeatable)")
    p.add_argument("--limit", type=_positive_int, default=20, help="most tasks listed (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_tasks)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value
