"""The executor attaches through Dramatiq's public extension points (issue 13).

Importing starts nothing; ``dramatiq jwql_dramatiq.actors`` boots through the process boot hook,
refuses a thread count other than one, stops its fork server at shutdown, and the task's child
sees its message through ``CurrentMessage``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jwql_dramatiq.exit_codes import RET_CONFIG
from jwql_dramatiq.worker.forking_actor import ForkingActor
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent

#: Run in a plain process: records every fork, process start, socket connection and config read.
_IMPORT_PROBE = """
import json, sys, threading
seen = []
config = sys.argv[1]

def audit(event, args):
    if event in ("os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen", "socket.connect"):
        seen.append(event)
    elif event == "open" and isinstance(args[0], str) and args[0] == config:
        seen.append("config read")

sys.addaudithook(audit)
import dramatiq, dramatiq.cli
import jwql_dramatiq.actors
import jwql_dramatiq.broker
from jwql_dramatiq.worker.deferred_broker import DeferredBroker
print(json.dumps({"seen": seen, "threads": threading.active_count(),
                  "built": jwql_dramatiq.broker.current_broker() is not None,
                  "global_is_deferred": isinstance(dramatiq.get_broker(), DeferredBroker)}))
"""


def _session_processes(sid: int) -> list[int]:
    """Pids of live (not zombie) processes in session ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def test_importing_dramatiq_cli_and_the_actors_starts_nothing(make_config):
    # Given: a valid config whose Redis address is dead, named by the environment
    path = make_config(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    env = {"PATH": os.environ["PATH"], "JWQL_DRAMATIQ_CONFIG": str(path)}
    # When: a plain process imports Dramatiq's CLI module and the actors, as the worker command does
    done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    # Then: no fork, no process, no connection, no config read, no thread; only the deferred broker
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"seen": [], "threads": 1, "built": False, "global_is_deferred": True}


def test_two_threads_are_refused_in_one_line_with_exit_2_and_nothing_left(make_config, start_worker):
    # Given: a worker started with -t2 after -p1 -t1 (argparse keeps the last)
    worker = start_worker(make_config(), wait=False, extra_args=["-t2"])
    # When: it starts
    code = worker.proc.wait(60)
    # Then: exit 2 with one line saying why, no traceback, and no process of its session left
    log = worker.log()
    assert code == RET_CONFIG, log
    lines = [line for line in log.splitlines() if "--threads 1" in line]
    assert len(lines) == 1 and "not --threads 2" in lines[0], log
    assert "Traceback" not in log and "Unexpected failure" not in log
    wait_for(lambda: not _session_processes(worker.pid), 10, "the fork server and its children to exit")


def test_actors_are_forking_actors_and_the_child_sees_its_message(broker, make_config, start_worker):
    import tests.attach_actors as a

    # Given: a worker whose tasks run in forked children
    worker = start_worker(make_config(actor_modules=["tests.actors_for_tests", "tests.attach_actors"]))
    assert isinstance(a.current_message_id.actor, ForkingActor)
    # When: a task asks CurrentMessage for its message
    message = a.current_message_id.send()
    result = message.get_result(block=True, timeout=10_000)
    # Then: the child (not the worker) knows its message id
    assert result["message_id"] == message.message_id
    assert result["pid"] != worker.pid
    # ... and the worker's record shows its fork server's memory and the children it started
    from jwql_dramatiq.broker.control import list_workers

    record = wait_for(lambda: next((w for w in list_workers(broker.client, broker.namespace, 60)
                                    if w.fork_server_rss_mib > 0), None), 10, "the worker record after the task")
    assert record.children_recycled >= 1


def test_zero_tasks_per_child_runs_in_process_and_still_sees_its_message(broker, make_config, start_worker):
    import tests.attach_actors as a

    start_worker(make_config(max_tasks_per_child=0, actor_modules=["tests.actors_for_tests", "tests.attach_actors"]))
    message = a.current_message_id.send()
    assert message.get_result(block=True, timeout=10_000)["message_id"] == message.message_id


def test_shutdown_closes_the_fork_server_and_records_the_stop(broker, make_config, start_worker, redis_client):
    from jwql_dramatiq.actors import ping

    # Given: a booted worker that ran a task (its result names the fork server as the child's parent)
    worker = start_worker(make_config())
    server_pid = ping.send().get_result(block=True, timeout=10_000)["ppid"]
    assert server_pid in _session_processes(worker.pid)
    # When: it is stopped as systemd stops it (SIGTERM)
    code = worker.stop()
    # Then: a clean exit, the fork server gone, and the worker's record marked stopped
    assert code == 0, worker.log()
    assert "Unexpected failure" not in worker.log()
    wait_for(lambda: server_pid not in _session_processes(worker.pid), 10, "the fork server to exit")
    records = [redis_client.hgetall(k) for k in redis_client.scan_iter("*worker*") if redis_client.type(k) == b"hash"]
    assert any(b"stopped_at" in r for r in records), records


def test_unreachable_redis_still_exits_3_after_booting_through_the_hook(make_config, start_worker):
    worker = start_worker(make_config(redis_url=f"redis://127.0.0.1:{free_port()}/0"), wait=False)
    assert worker.proc.wait(60) == 3, worker.log()
    assert "Traceback" not in worker.log() and "Unexpected failure" not in worker.log()
    wait_for(lambda: not _session_processes(worker.pid), 10, "the fork server to exit")


def test_a_monitor_calling_an_actor_directly_runs_it_in_process(broker):
    from jwql_dramatiq.actors import ping

    assert ping()["pid"] == os.getpid()
    assert ping.actor()["pid"] == os.getpid()  # the real ForkingActor, no executor in a monitor
