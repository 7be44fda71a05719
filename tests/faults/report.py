"""Turn the fault suite's figures into the tables of docs/reliability.md.

    JWQL_DRAMATIQ_FAULT_REPORT=/tmp/faults.jsonl .venv/bin/pytest tests/faults -m faults -q
    .venv/bin/python -m tests.faults.report /tmp/faults.jsonl > /tmp/tables.md

Each test appends one JSON object per run (see ``record_figures`` in conftest.py); when a test
ran several times, every run is kept and the table shows each figure's range over the runs.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any, Callable

#: test name prefix -> (fault, expected behaviour, figures to show as "label: key")
FAULTS = [
    ("test_killed_worker_message_completes_on_another_worker",
     "Worker killed (`kill -9` of its process group) 0.5 s into a 3 s task; one other worker",
     "The message is requeued by the survivor's sweeper within heartbeat_timeout_s + sweep_interval_s "
     "+ idle_poll_ms (2 + 0.5 + 0.1 s here) and completes there",
     [("redelivered after (s)", "redelivered_after_s"), ("bound (s)", "bound_s"),
      ("result after (s)", "completed_after_s"), ("lost", "lost")]),
    ("test_200_tasks_survive_a_kill_every_few_seconds",
     "200 tasks on 3 workers, a busy worker `kill -9`'d every 2.5 s and replaced",
     "Every task completes; executions >= 1 per task (duplicates counted); exactly one product per task",
     [("kills", "kills"), ("completed", "completed"), ("executions", "executions"), ("duplicates", "duplicates"),
      ("products", "products"), ("lost", "lost"), ("elapsed (s)", "elapsed_s")]),
    ("test_redis_crash_restart_loses_nothing_and_everyone_reconnects",
     "Redis SIGKILL'd mid-run (60 tasks, 2 workers, a monitor sending every 0.1 s) and restarted 1 s later "
     "with AOF (`appendfsync always`)",
     "No message or result lost; workers' heartbeats, control and sweeper threads and the monitor are back "
     "within 5 s without restarts",
     [("worker heartbeats back (s)", "worker_heartbeat_back_s"), ("monitor back (s)", "monitor_back_s"),
      ("monitor sends refused while down", "monitor_failed_sends"), ("completed", "completed"),
      ("duplicates", "duplicates"), ("products", "products"), ("lost", "lost")]),
    ("test_partitioned_worker_job_completes_elsewhere_and_its_late_run_publishes_nothing",
     "Network partition: the switch port of the host running a real Detector1 job taken down (5 hosts in "
     "network namespaces), longer than the heartbeat timeout, then restored",
     "The job completes on another host; the cut-off run's late completion neither overwrites nor duplicates "
     "a product (fencing token); its lock is never shown alive once its lease lapsed",
     [("redelivered after (s)", "redelivered_after_s"), ("completed elsewhere after (s)",
                                                         "completed_elsewhere_after_s"),
      ("partition (s)", "partition_s"), ("late run ended after heal (s)", "late_run_ended_after_heal_s"),
      ("fencing tokens cut-off / winner", ("cut_off_fencing_token", "winner_fencing_token")),
      ("products overwritten", "products_overwritten"), ("duplicated", "products_duplicated"),
      ("stale lock shown alive", "stale_lock_shown_alive"), ("lost", "lost")]),
]


def _per_failover(key: str) -> Callable[[dict[str, Any]], list[Any]]:
    return lambda entry: [f[key] for f in entry["failovers"] if f.get(key) is not None]


#: Figures of every Sentinel scenario (tests/faults/test_sentinel.py).
_SENTINEL_FIGURES: list[tuple[str, Any]] = [
    ("promoted after (s)", _per_failover("promoted_s")),
    ("first task completed on the new master after (s)", _per_failover("first_completion_s")),
    ("monitor's wait through it (s, bound 30)",
     lambda e: [round(w["elapsed_s"], 1) for w in e["monitor_waits"].values()]),
    ("lost", "lost"), ("duplicated products", "duplicated_products"), ("lock granted twice", "lock_granted_twice"),
    ("fencing tokens repeated", "fencing_tokens_repeated"),
    ("extra executions", lambda e: e["executions"] - e["tasks"]),
    ("sends refused and retried", "failed_send_attempts")]
_SENTINEL_EXPECTED = ("Every acknowledged send has its result (lost 0), one product per task, no lock held twice at "
                      "once, no fencing token repeated, the monitor's wait ends within its bound, and the first task "
                      "completes on the new master within 10 s")
FAULTS += [
    ("test_master_kill_mid_run",
     "Sentinel: `kill -9` of the master mid-run (200 tasks, 2 workers, a monitor; 1 replica, 3 sentinels, "
     "down-after 2 s); the killed node restarted as a replica", _SENTINEL_EXPECTED, _SENTINEL_FIGURES),
    ("test_two_failovers_in_a_row",
     "Sentinel: two failovers in a row (`kill -9` of the master, then of the new one)", _SENTINEL_EXPECTED,
     _SENTINEL_FIGURES),
    ("test_partition_isolates_the_master_with_one_worker[wait]",
     "Sentinel: partition isolating the master with one worker (7 hosts in network namespaces, link down "
     "1 s past the promotion, then healed and the old master made a replica)",
     _SENTINEL_EXPECTED + "; the cut-off worker is granted no lock during the cut",
     [*_SENTINEL_FIGURES, ("grants begun on the cut-off host during the cut", "grants_begun_on_cut_host_during_cut"),
      ("grants stamped just after the cut, confirmed before it",
       "grants_stamped_on_cut_host_during_cut_but_confirmed_before")]),
    ("test_partition_isolates_the_master_with_one_worker[min-replicas-to-write]",
     "Sentinel: the same partition, data nodes with `min-replicas-to-write 1` (`min-replicas-max-lag 2`)",
     _SENTINEL_EXPECTED + "; writes refused with NOREPLICAS are ridden through and strand no result",
     [*_SENTINEL_FIGURES, ("grants begun on the cut-off host during the cut", "grants_begun_on_cut_host_during_cut"),
      ("grants stamped just after the cut, confirmed before it",
       "grants_stamped_on_cut_host_during_cut_but_confirmed_before"),
      ("writes the isolated master refused (NOREPLICAS)", "isolated_master_writes_refused_noreplicas")]),
]


def _range(values: list[Any]) -> str:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        return f"{low:g}" if low == high else f"{low:g}–{high:g}"
    if all(isinstance(v, list) for v in values):
        flat = [x for v in values for x in v]
        return _range(flat) if flat else "–"
    distinct = sorted({json.dumps(v) for v in values})
    return ", ".join(distinct)


def render(entries: list[dict[str, Any]]) -> str:
    """Return the markdown tables for ``entries``."""
    by_test: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_test[entry["test"].split("[", 1)[0]].append(entry)
        if "[" in entry["test"]:  # a parametrized test's own row, when FAULTS names it with its parameter
            by_test[entry["test"]].append(entry)
    runs = max((len(v) for k, v in by_test.items() if k == "test_killed_worker_message_completes_on_another_worker"),
               default=0)
    lines = [f"Runs: {runs}.", "", "| fault | expected behaviour | measured |", "|---|---|---|"]
    for test, fault, expected, shown in FAULTS:
        found = by_test.get(test, [])
        if not found:
            lines.append(f"| {fault} | {expected} | not run (see the test's skip reason) |")
            continue
        parts = []
        for label, key in shown:
            if isinstance(key, tuple):
                parts.append(f"{label}: " + " / ".join(_range([e[k] for e in found]) for k in key))
            elif callable(key):
                parts.append(f"{label}: {_range([key(e) for e in found])}")
            else:
                parts.append(f"{label}: {_range([e[key] for e in found])}")
        lines.append(f"| {fault} | {expected} | " + "; ".join(parts) + f" ({len(found)} run(s)) |")
    lines += ["", "| bad input | what the caller got (type: message, abridged) | s to error | worker alive | lost |",
              "|---|---|---|---|---|"]
    for entry in _first_per_case(by_test.get("test_bad_input", [])):
        seconds = _range([e["seconds_to_error"] for e in by_test["test_bad_input"] if e["case"] == entry["case"]])
        lines.append(f"| {entry['case']} | `{_abridge(entry['error'])}` | {seconds} | yes | 0 |")
    configs = by_test.get("test_bad_config_value_stops_the_worker_with_one_line", [])
    for entry in _first_per_case(configs):
        seconds = _range([e["seconds_to_exit"] for e in configs if e["case"] == entry["case"]])
        lines.append(f"| {entry['case']} | exit code {entry['exit_code']}: `{_abridge(entry['error'].split('] ')[-1])}` "
                     f"| {seconds} | (exits at start, as it should) | – |")
    security = [e for k, v in by_test.items() if k.startswith("test_") and k in _SECURITY for e in v]
    if security:
        lines += ["", "| security check | measured |", "|---|---|"]
        for entry in _first_per_case(security):
            figures = {k: v for k, v in entry.items() if k not in ("test", "at", "case")}
            lines.append(f"| {entry['case']} | " + ", ".join(f"{k}: {_abridge(str(v), 90)}" for k, v in figures.items())
                         + " |")
    return "\n".join(lines) + "\n"


_SECURITY = {"test_acl_user_with_password_from_the_environment", "test_wrong_password_is_one_line_without_the_password",
             "test_tls_with_acl_user", "test_pickled_payload_is_never_unpickled"}


def _first_per_case(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        seen.setdefault(entry["case"], entry)
    return list(seen.values())


def _abridge(text: str, limit: int = 170) -> str:
    import re

    text = re.sub(r"/\.staging\.\S+?:", "/.staging.…:", text)
    text = re.sub(r"/tmp/pytest-of-[^\s:'\"]*?/(transfer|incoming|outgoing)", r"…/\1", text)
    text = re.sub(r"/tmp/pytest-of-\S+", "…", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: list[str]) -> int:
    """Print the tables for the JSON-lines file ``argv[1]``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    sys.stdout.write(render(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
