"""Commands that change things: ``purge``, ``shutdown``, ``revoke`` and ``locks``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..broker.control import WorkerInfo, list_workers, request_shutdown
from ..errors import LockError
from ._common import (RET_FAIL, RET_FINISHED, RET_NOT_FOUND, RET_OK, RET_REFUSED, RET_USAGE, CommandError,
                      Context, ask_yes, clock, non_empty, non_negative_seconds, seconds, table)
from .views import LOCK_HEADERS, _lock_dict, lock_rows

#: How often ``shutdown`` looks at the workers while it waits, in seconds.
SHUTDOWN_POLL_S = 0.2


#: Purged messages listed one per line; the rest are counted (``--json`` lists every one).
PURGE_LISTED = 10


def cmd_purge(ctx: Context, args: argparse.Namespace) -> int:
    """``purge``: remove waiting messages; each one's waiter gets a ``TaskPurged`` failure at once.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK; an unknown queue raises CommandError(RET_NOT_FOUND), not confirmed
        CommandError(RET_USAGE)).
    """
    from dramatiq.common import q_name

    from ..broker.admin import purge, queue_lengths

    broker = ctx.broker
    every = queue_lengths(broker)
    # purge() takes "jwql.DQ" as "jwql": compare canonical names
    lengths = [q for q in every if args.queue is None or q.queue == q_name(args.queue)]
    if args.queue is not None and not lengths:
        raise CommandError(f"no queue named {args.queue!r} on {ctx.config.redis_address} (queues: "
                           f"{', '.join(q.queue for q in every) or 'none'}); nothing was removed", RET_NOT_FOUND)
    if not args.yes:
        waiting = sum(q.ready + q.delayed for q in lengths)
        where = f"queue {args.queue!r}" if args.queue else "every queue"
        dead = sum(q.dead for q in lengths) if args.dead_letter else 0
        question = f"Purge {waiting} waiting message(s) from {where}" + (
            f" and {dead} dead-lettered one(s)" if args.dead_letter else "") + f" on {ctx.config.redis_address}?"
        if not ask_yes(question):
            raise CommandError("purge not confirmed: give --yes (or answer y at a terminal); nothing was removed",
                               RET_USAGE)
    dead_before = sum(q.dead for q in lengths)
    purged = purge(broker, queue=args.queue, dead_letter=args.dead_letter)
    if args.json:
        ctx.print_json({"purged": purged, "dead_letter_removed": dead_before if args.dead_letter else 0})
        return RET_OK
    counts = {"queued": 0, "scheduled": 0}
    for item in purged:
        counts[item["was"]] = counts.get(item["was"], 0) + 1
    ctx.print(f"Purged {len(purged)} message(s): {counts['queued']} ready, {counts['scheduled']} delayed; "
              f"each one's result is a TaskPurged failure, so no monitor waits on it.")
    by_queue: dict[str, int] = {}
    for item in purged:
        by_queue[item["queue"]] = by_queue.get(item["queue"], 0) + 1
    if len(by_queue) > 1:
        ctx.print("  per queue: " + ", ".join(f"{queue} {n}" for queue, n in sorted(by_queue.items())))
    for item in purged[:PURGE_LISTED]:
        what = item["message_id"] or item.get("note", "?")
        ctx.print(f"  {what}  {item['actor']}  ({item['queue']}, was {item['was']})")
    if len(purged) > PURGE_LISTED:
        ctx.print(f"  ... and {len(purged) - PURGE_LISTED} more (--json lists every one)")
    if args.dead_letter:
        ctx.print(f"Removed {dead_before} dead-lettered message(s).")
    elif dead_before:
        ctx.print(f"Kept {dead_before} dead-lettered message(s) (--dead-letter removes them).")
    return RET_OK


def _targets(ctx: Context, args: argparse.Namespace) -> list[WorkerInfo]:
    workers = list_workers(ctx.client, ctx.namespace, ctx.config.heartbeat_timeout_s)
    alive = [w for w in workers if w.alive]
    if args.all:
        chosen = alive
        what = "no worker is alive"
    elif args.host:
        chosen = [w for w in alive if w.host == args.host]
        what = f"no live worker on host {args.host!r}" + (
            f" (live hosts: {', '.join(sorted({w.host for w in alive}))})" if alive else "")
    else:
        matches = [w for w in workers if w.worker_id.startswith(args.worker)]
        if len(matches) > 1:
            raise CommandError(f"worker id {args.worker!r} is ambiguous: it starts "
                               f"{', '.join(w.worker_id for w in matches)}", RET_USAGE)
        if matches and not matches[0].alive:
            raise CommandError(f"worker {matches[0].worker_id} on {matches[0].host} is {matches[0].condition}",
                               RET_NOT_FOUND)
        chosen = matches
        what = f"no worker with id {args.worker!r}"
    if not chosen:
        raise CommandError(what, RET_NOT_FOUND)
    return chosen


def cmd_shutdown(ctx: Context, args: argparse.Namespace) -> int:
    """``shutdown``: stop workers from any host through Redis, then wait (bounded) until they are gone.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK, or RET_FAIL if a target still runs after --wait).
    """
    targets = _targets(ctx, args)
    request_shutdown(ctx.client, ctx.namespace, [w.worker_id for w in targets], now=args.now)
    how = ("now: the running task's child is killed and its message requeued" if args.now
           else "gracefully: each finishes its current task first")
    if not args.json:
        ctx.print(f"Asked {len(targets)} worker(s) to shut down {how}:")
        for w in targets:
            busy = f", running {w.current_actor} {w.current_message}" if w.current_message else ", idle"
            ctx.print(f"  {w.host}  {w.worker_id}  pid {w.main_pid}{busy}")
    started = time.monotonic()
    pending = {w.worker_id: w for w in targets}
    stopped: dict[str, float] = {}
    while pending and time.monotonic() - started < args.wait:
        time.sleep(SHUTDOWN_POLL_S)
        now = {w.worker_id: w for w in list_workers(ctx.client, ctx.namespace, ctx.config.heartbeat_timeout_s)}
        for worker_id in list(pending):
            current = now.get(worker_id)
            if current is None or not current.alive:
                stopped[worker_id] = time.monotonic() - started
                w = pending.pop(worker_id)
                if not args.json:
                    state = "stopped" if current is None or current.stopped else current.condition
                    ctx.print(f"{w.host} {worker_id[:8]}: {state} after {seconds(stopped[worker_id])}")
            else:
                pending[worker_id] = current
    if args.json:
        ctx.print_json({"now": args.now, "stopped": [{"worker_id": i, "after_s": s} for i, s in stopped.items()],
                        "still_running": [w.to_dict() for w in pending.values()]})
    elif pending:
        for w in pending.values():
            busy = (f" (finishing {w.current_actor} {w.current_message}, started {clock(w.current_since)})"
                    if w.current_message else "")
            ctx.print(f"{w.host} {w.worker_id[:8]}: still running after {seconds(args.wait)}{busy}; "
                      f"{'it exits once its task ends' if not args.now else 'check it'}")
    return RET_FAIL if pending and args.wait > 0 else RET_OK


def cmd_revoke(ctx: Context, args: argparse.Namespace) -> int:
    """``revoke``: a waiting task never runs; with ``--terminate`` a running one is killed.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK, RET_NOT_FOUND or RET_FINISHED).
    """
    from ..broker.revoke import revoke

    outcome = revoke(args.message_id, terminate=args.terminate, broker=ctx.broker)
    if args.json:
        ctx.print_json(outcome.to_dict())
    else:
        before = f" (was {outcome.state})" if outcome.state else ""
        ctx.print(f"{args.message_id}: {outcome.outcome}{before}: {outcome.detail}")
    return {"unknown": RET_NOT_FOUND, "finished": RET_FINISHED}.get(outcome.outcome, RET_OK)


def cmd_locks_list(ctx: Context, args: argparse.Namespace) -> int:
    """``locks list``: held locks, their owners, and whether each owner is alive.

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK).
    """
    from ..locks import list_locks

    locks = list_locks(ctx.client, ctx.namespace)
    if args.json:
        ctx.print_json([_lock_dict(info) for info in locks])
    else:
        ctx.print(table(lock_rows(locks, time.time()), LOCK_HEADERS) if locks else "No locks held.")
    return RET_OK


def cmd_locks_clear(ctx: Context, args: argparse.Namespace) -> int:
    """``locks clear NAME`` or ``locks clear --stale``: remove locks whose owner is dead (or, forced, any).

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (RET_OK; refusals raise CommandError(RET_REFUSED, RET_NOT_FOUND or RET_USAGE)).
    """
    from ..locks import clear_lock, clear_stale_locks, list_locks

    if bool(args.name) == bool(args.stale):
        raise CommandError("locks clear takes a lock NAME or --stale (not both)", RET_USAGE)
    if args.stale:
        if args.force:
            raise CommandError("--force does not go with --stale: name the live lock to force", RET_USAGE)
        removed = clear_stale_locks(ctx.client, ctx.namespace)
        # Nothing removed: say whether any lock is held at all (and not "every owner is alive").
        held = bool(removed) or bool(list_locks(ctx.client, ctx.namespace))
    else:
        try:
            info = clear_lock(args.name, force=args.force, client=ctx.client, namespace=ctx.namespace)
        except LockError as e:
            raise CommandError(str(e) + ("" if args.force else " (--force removes it anyway)"), RET_REFUSED) from None
        if info is None:
            raise CommandError(f"no lock named {args.name!r} is held", RET_NOT_FOUND)
        removed = [info]
    if args.json:
        ctx.print_json({"removed": [_lock_dict(info) for info in removed]})
        return RET_OK
    if not removed:
        if not args.stale:
            ctx.print("Nothing removed.")
        else:
            ctx.print("No stale locks: every lock's owner is alive." if held else "No locks held: nothing to clear.")
    for info in removed:
        ctx.print(f"Removed lock {info.name!r}, held by {info.describe()}.")
    return RET_OK


def add_parsers(sub: Any) -> None:
    """Add ``purge``, ``shutdown``, ``revoke`` and ``locks`` to the subcommand parsers."""
    p = sub.add_parser("purge", help="remove waiting messages; their monitors get a 'purged' failure at once",
                       description="Remove waiting (ready and delayed) messages. Each purged message's result "
                                   "becomes a TaskPurged failure, so a monitor blocked on it returns at once. "
                                   "Running tasks are left alone; the dead-letter queue is kept unless "
                                   "--dead-letter. Without --yes, asks at a terminal and refuses otherwise.")
    p.add_argument("--queue", "-Q", metavar="Q", type=non_empty,
                   help="only this queue (default: every queue); an unknown one exits "
                        f"{RET_NOT_FOUND}")
    p.add_argument("--dead-letter", action="store_true", help="also empty the dead-letter queue")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_purge)

    p = sub.add_parser("shutdown", help="stop workers from any host, gracefully or --now",
                       description="Stop workers through Redis, from any host (no ssh, no pids). Gracefully "
                                   "by default: each finishes its current task, then exits 0. With --now, the "
                                   "running task's child is killed, its message goes back on the queue for "
                                   "another worker, and the worker exits. Waits up to --wait seconds for the "
                                   "targets to go and reports each.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", metavar="H", type=non_empty, help="every live worker on host H")
    target.add_argument("--worker", metavar="WORKER_ID", type=non_empty,
                        help="one worker, by its id or a unique prefix of it (as status shows)")
    target.add_argument("--all", action="store_true", help="every live worker")
    p.add_argument("--now", action="store_true", help="do not wait for the current task: kill it and requeue it")
    p.add_argument("--wait", type=non_negative_seconds, default=60.0, metavar="S",
                   help="seconds to wait for the workers to go (default 60; 0 returns at once)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_shutdown)

    p = sub.add_parser("revoke", help="make a waiting task never run; --terminate kills a running one",
                       description="Revoke a task: a queued or delayed one never runs, and a monitor waiting "
                                   "on it gets a TaskRevoked failure at once. A running one keeps running "
                                   "(its result is discarded) unless --terminate, which kills its child. An "
                                   f"unknown id changes nothing and exits {RET_NOT_FOUND}; a finished one "
                                   f"changes nothing and exits {RET_FINISHED}.")
    p.add_argument("message_id", metavar="MESSAGE_ID", type=non_empty)
    p.add_argument("--terminate", action="store_true", help="kill the task's child if it is running")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_revoke)

    p = sub.add_parser("locks", help="list locks, or clear dead owners' locks",
                       description="List held locks with their owners, or clear locks. Clearing refuses to "
                                   "remove a lock whose owner is alive unless --force.")
    locks_sub = p.add_subparsers(dest="locks_command", metavar="{list,clear}", required=True)
    q = locks_sub.add_parser("list", help="held locks, their owners, and whether each owner is alive")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_locks_list)
    q = locks_sub.add_parser("clear", help="remove a lock whose owner is dead, or every such lock (--stale)")
    q.add_argument("name", nargs="?", metavar="NAME", type=non_empty, help="the lock's name (as locks list shows it)")
    q.add_argument("--stale", action="store_true", help="every lock whose owner is dead")
    q.add_argument("--force", action="store_true", help="remove NAME even though its owner is alive")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_locks_clear)
