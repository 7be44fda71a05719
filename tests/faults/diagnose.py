"""What a failed Sentinel fault run leaves behind, gathered so that the failure explains itself.

A scenario that fails (an assertion, a ``wait_for`` that timed out, or the test's own timeout)
calls :func:`explain` before the error propagates. For every message in question (lost: an
acknowledged send with no result; repeated: a task that ran more than once) it gathers:

- the monitor's every send attempt of its task (start, end, message id, error);
- where the message is on the current master (payload, queue, ack sets, task state, result);
- every write that names it in each data node's append-only file, including a copy of the
  isolated master's taken before the partition healed (its writes during the cut are thrown
  away by the resync that follows), so it shows which master held it and what was done to it;
- the workers' log lines that name it, and its lock grants.

It writes ``diagnosis.json`` next to the run's files and returns a short text for the test output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

#: Lines kept per message from each worker log, and commands from each append-only file.
LINES_PER_SOURCE = 30


def snapshot_aof(node_directory: Path, destination: Path) -> Path | None:
    """Copy a data node's ``appendonlydir`` to ``destination`` (its state at this moment); None if absent."""
    source = node_directory / "appendonlydir"
    if not source.is_dir():
        return None
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return destination


def aof_commands(directory: Path) -> Iterator[tuple[str, int, list[str]]]:
    """Every command in the incremental append-only files of ``directory``: ``(file, index, argv)``.

    The base file (an RDB snapshot with the default preamble) is not parsed; the incremental
    files are RESP arrays, one per command, in the order the node applied them.
    """
    for path in sorted(directory.glob("*.incr.aof"), key=lambda p: int(p.name.split(".")[-3])):
        data = path.read_bytes()
        index = position = 0
        while position < len(data):
            if data[position:position + 1] != b"*":
                break
            end = data.index(b"\r\n", position)
            count = int(data[position + 1:end])
            position = end + 2
            argv = []
            for _ in range(count):
                end = data.index(b"\r\n", position)
                size = int(data[position + 1:end])
                position = end + 2
                argv.append(data[position:position + size].decode("utf-8", "replace"))
                position += size + 2
            yield path.name, index, argv
            index += 1


def writes_naming(directory: Path | None, needles: list[str]) -> dict[str, list[str]]:
    """For each needle, the commands of ``directory``'s append-only files that contain it (abridged)."""
    found: dict[str, list[str]] = {n: [] for n in needles}
    if directory is None or not directory.is_dir():
        return found
    for name, index, argv in aof_commands(directory):
        text = " ".join(argv)
        for needle in needles:
            if needle in text and len(found[needle]) < LINES_PER_SOURCE:
                shown = " ".join(a if len(a) <= 80 else a[:77] + "..." for a in argv)
                found[needle].append(f"{name}#{index}: {shown}")
    return found


def log_lines_naming(path: Path, needles: list[str]) -> dict[str, list[str]]:
    """For each needle, the lines of the log at ``path`` that contain it."""
    found: dict[str, list[str]] = {n: [] for n in needles}
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        for needle in needles:
            if needle in line and len(found[needle]) < LINES_PER_SOURCE:
                found[needle].append(line[:400])
    return found


def explain(directory: Path, monitor: Any, events: list[dict], logs: dict[str, Path], aofs: dict[str, Path | None],
            products: Path, error: BaseException | None = None) -> str:
    """Gather everything about the lost and repeated messages of a run; write ``diagnosis.json``.

    Parameters
    ----------
    directory : Path
        Where ``diagnosis.json`` goes.
    monitor : tests.faults.conftest.Agent
        The monitor that sent the tasks (it answers ``batch``, ``find`` and ``trace``).
    events : list of dict
        The faults as the test recorded them (times, old and new master).
    logs : dict
        Name -> worker (or agent) log file.
    aofs : dict
        Name -> a directory of append-only files (a node's own, or a copy taken earlier).
    products : Path
        The directory with the products and ``grants.jsonl``.
    error : BaseException, optional
        What failed.

    Returns
    -------
    str
        A summary for the test output; the whole record is in ``diagnosis.json``.
    """
    record: dict[str, Any] = {"error": f"{type(error).__name__}: {error}"[:2000] if error else None,
                              "events": events}
    try:
        batch = monitor.call("batch", timeout_s=10)
    except Exception as e:  # noqa: BLE001 - a dead monitor is part of the story
        batch = {"acked": [], "seen": {}, "sends": {}, "waits": {}}
        record["monitor_error"] = f"{type(e).__name__}: {e}"[:500]
    acked, seen = batch["acked"], batch["seen"]
    lost = [mid for mid in acked if mid not in seen]
    grants_path = products / "grants.jsonl"
    grants = [json.loads(line) for line in grants_path.read_text().splitlines()] if grants_path.exists() else []
    by_task: dict[str, list[dict]] = {}
    for grant in grants:
        by_task.setdefault(grant["task"], []).append(grant)
    repeated = {task: runs for task, runs in by_task.items() if len(runs) > 1}
    record.update(acknowledged=len(acked), results_seen=len(seen), sends=batch.get("sends"),
                  waits=batch.get("waits"), lost=lost, tasks_run_more_than_once=sorted(repeated))
    tasks_of_lost: dict[str, str] = {}
    try:
        where = monitor.call("find", message_ids=lost[:20], timeout_s=30) if lost else {}
        for mid in lost[:20]:
            args = (where.get(mid) or {}).get("args") or []
            if len(args) > 1:
                tasks_of_lost[mid] = args[1]
        traces = monitor.call("trace", tasks=sorted(set(tasks_of_lost.values()) | set(repeated)), timeout_s=10)
    except Exception as e:  # noqa: BLE001
        where, traces = {}, {}
        record["find_error"] = f"{type(e).__name__}: {e}"[:500]
    record["current_master"] = where.get("master")
    needles = lost[:20] + [a["message_id"] for task in repeated for a in traces.get(task, [])]
    needles += [(where.get(mid) or {}).get("redis_message_id", "") for mid in lost[:20]]
    needles = [n for n in dict.fromkeys(needles) if n]
    aof_hits = {name: writes_naming(path, needles) for name, path in aofs.items()}
    log_hits = {name: log_lines_naming(path, needles) for name, path in logs.items()}
    messages: dict[str, Any] = {}
    for mid in lost[:20]:
        rid = (where.get(mid) or {}).get("redis_message_id", "")
        task = tasks_of_lost.get(mid)
        messages[mid] = {"kind": "lost", "task": task, "where_now": where.get(mid), "send_attempts": traces.get(task),
                         "grants": by_task.get(task, []),
                         "aof": {n: hits[mid] + hits.get(rid, []) for n, hits in aof_hits.items()},
                         "logs": {n: hits[mid] + hits.get(rid, []) for n, hits in log_hits.items()}}
    for task, runs in repeated.items():
        ids = [a["message_id"] for a in traces.get(task, [])]
        messages[task] = {"kind": "ran more than once", "grants": runs, "send_attempts": traces.get(task),
                          "aof": {n: [line for i in ids for line in hits.get(i, [])] for n, hits in aof_hits.items()},
                          "logs": {n: [line for i in ids for line in hits.get(i, [])] for n, hits in log_hits.items()}}
    record["messages"] = messages
    path = directory / "diagnosis.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    summary = [f"DIAGNOSIS ({path}): {record['error']}",
               f"acknowledged {len(acked)}, results seen {len(seen)}, lost {len(lost)}, "
               f"tasks run more than once {len(repeated)}; events {json.dumps(events, default=str)}",
               f"sends {json.dumps(batch.get('sends'), default=str)[:600]}",
               f"waits {json.dumps(batch.get('waits'), default=str)[:600]}"]
    for key, entry in list(messages.items())[:5]:
        summary.append(f"{key}: {json.dumps(entry, default=str)[:3000]}")
    return "\n".join(summary)
