"""The operator command line against a real Redis and real worker processes.

Most commands run in-process through ``main([...])``; ``worker`` and ``status`` also run
through the installed console script. Two workers on one machine act as two hosts through
``$JWQL_DRAMATIQ_HOSTNAME``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.cli import (RET_CONFIG, RET_FAIL, RET_FINISHED, RET_NOT_FOUND, RET_OK, RET_PIDFILE, RET_REDIS,
                               RET_REFUSED, RET_USAGE, main)
from jwql_dramatiq.cli.worker import process_alive
from jwql_dramatiq.config import HOSTNAME_ENV
from jwql_dramatiq.locks import lock
from jwql_dramatiq.broker.states import get_task_state
from tests import actors_for_tests as t
from tests.conftest import REPO, free_port, wait_for

JWQL = str(Path(sys.executable).with_name("jwql-dramatiq"))
NS = "jwql_dramatiq"


def cli(capsys, config, *args: str) -> tuple[int, str, str]:
    """Run ``jwql-dramatiq --config CONFIG ARGS`` in-process; return (exit code, stdout, stderr)."""
    code = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, config, *args: str):
    code, out, err = cli(capsys, config, *args, "--json")
    return code, json.loads(out)


def state_of(message) -> str | None:
    state = get_task_state(message.message_id)
    return state.state if state else None


def running_state(message, timeout_s: float = 15):
    return wait_for(lambda: (s := get_task_state(message.message_id)) is not None and s.state == "running" and s,
                    timeout_s, f"{message.actor_name} to run")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies still count for killpg: look for a live member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and process_alive(int(entry)):
                    return True
            except ProcessLookupError:
                continue
    return False


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- command line, config and Redis errors --------------------------------------------------------


@pytest.mark.timeout(30)
def test_usage_errors_help_and_exit_code_table(capsys):
    assert main(["--help"]) == RET_OK
    out = capsys.readouterr().out
    assert "examples:" in out and "exit codes:" in out and "locks clear --stale" in out
    assert main(["shutdown"]) == RET_USAGE  # a target is required
    assert "one of the arguments --host --worker --all is required" in capsys.readouterr().err
    assert main(["locks"]) == RET_USAGE
    assert main(["nonsense"]) == RET_USAGE
    assert main(["tasks", "--limit", "0"]) == RET_USAGE


@pytest.mark.timeout(30)
def test_bad_config_and_unreachable_redis_are_one_line_without_credentials(make_config, tmp_path, capsys):
    code, out, err = cli(capsys, tmp_path / "missing.json", "status")
    assert code == RET_CONFIG and "missing.json" in err and "Traceback" not in err

    port = free_port()
    config = make_config(redis_url=f"redis://operator:s3cret-pw@127.0.0.1:{port}/0")
    for args in (["status"], ["tasks"], ["locks", "list"], ["purge", "--yes"], ["shutdown", "--all"]):
        code, out, err = cli(capsys, config, *args)
        assert code == RET_REDIS, (args, err)
        assert err.strip().count("\n") == 0 and f"Redis is unreachable at 127.0.0.1:{port}" in err
        assert "s3cret" not in out + err and "Traceback" not in err


# -- status --------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_status_shows_two_workers_a_killed_one_dead_and_exits_1_when_none_is_left(make_config, start_worker, capsys):
    # Given two workers acting as two hosts, with a 3 s heartbeat timeout
    config = make_config(heartbeat_timeout_s=3)
    a = start_worker(config, env={HOSTNAME_ENV: "host-a"})
    b = start_worker(config, env={HOSTNAME_ENV: "host-b"})

    # Then status (the console script) shows both alive and exits 0
    proc = subprocess.run([JWQL, "--config", str(config), "status", "--json"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == RET_OK, proc.stderr
    report = json.loads(proc.stdout)
    workers = {w["host"]: w for w in report["workers"]}
    assert set(workers) == {"host-a", "host-b"} and all(w["alive"] for w in workers.values())
    assert workers["host-a"]["main_pid"] == a.pid and workers["host-a"]["heartbeat_age_s"] < 3
    assert report["healthy"] and {q["queue"] for q in report["queues"]} >= {"jwql"}
    code, out, _ = cli(capsys, config, "status")
    assert code == RET_OK and "2 worker(s) alive" in out and "host-a" in out and "DEAD-LETTER" in out

    # When host-a's worker is killed (its whole process group)
    os.killpg(a.pid, signal.SIGKILL)
    killed = time.monotonic()

    # Then within the heartbeat timeout status shows it dead, and still exits 0 for host-b
    def host_a():
        code, report = cli_json(capsys, config, "status")
        w = {w["host"]: w for w in report["workers"]}["host-a"]
        return (code, w) if w["condition"] == "dead" else None

    code, dead = wait_for(host_a, 8, "host-a to show as dead", interval_s=0.1)
    assert time.monotonic() - killed < 3 + 1.5
    assert code == RET_OK and not dead["alive"]
    code, out, _ = cli(capsys, config, "status")
    assert "1 worker(s) alive, 1 dead" in out

    # And once host-b is gone too, status exits 1
    os.killpg(b.pid, signal.SIGKILL)
    wait_for(lambda: cli(capsys, config, "status")[0] == RET_FAIL, 8, "status to exit 1", interval_s=0.1)
    proc = subprocess.run([JWQL, "--config", str(config), "status"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == RET_FAIL and "0 worker(s) alive, 2 dead" in proc.stdout


# -- purge ---------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.timeout(60)
def test_purge_returns_blocked_monitors_at_once_and_keeps_the_dead_letter_queue(broker, make_config, redis_client,
                                                                                capsys, monkeypatch):
    # Given a queued and a delayed message (no worker running), each with a monitor blocked on its result
    config = make_config()
    queued = t.record_span.send(0.1)
    delayed = t.record_span.send_with_options(args=(0.1,), delay=60_000)
    assert (state_of(queued), state_of(delayed)) == ("queued", "scheduled")
    redis_client.zadd(f"{NS}:jwql.XQ", {"dead-1": 1})
    redis_client.hset(f"{NS}:jwql.XQ.msgs", "dead-1", "{}")
    returned: dict[str, tuple[BaseException, float]] = {}

    def monitor(message) -> None:
        try:
            message.get_result(block=True, timeout=30_000)
        except ResultFailure as e:
            returned[message.message_id] = (e, time.monotonic())

    monitors = [threading.Thread(target=monitor, args=(m,)) for m in (queued, delayed)]
    for thread in monitors:
        thread.start()
    wait_for(lambda: sum(c["cmd"] in ("brpoplpush", "blmove") for c in redis_client.client_list()) >= 2, 10,
             "both monitors to block")

    # When purge is not confirmed, it refuses and removes nothing
    assert cli(capsys, config, "purge")[0] == RET_USAGE  # stdin is not a terminal
    monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))
    assert cli(capsys, config, "purge")[0] == RET_USAGE
    assert redis_client.llen(f"{NS}:jwql") == 1 and not returned

    # When purge --yes runs
    purged_at = time.monotonic()
    code, out, _ = cli(capsys, config, "purge", "--yes")

    # Then both monitors return within 1 s with a "purged" failure
    for thread in monitors:
        thread.join(5)
    assert code == RET_OK
    assert set(returned) == {queued.message_id, delayed.message_id}
    for error, at in returned.values():
        assert at - purged_at < 1.0
        assert error.orig_exc_type == "TaskPurged" and "purged" in error.orig_exc_msg
    assert (state_of(queued), state_of(delayed)) == ("purged", "purged")
    assert "Purged 2 message(s): 1 ready, 1 delayed" in out and "Kept 1 dead-lettered" in out
    assert redis_client.zcard(f"{NS}:jwql.XQ") == 1

    # And the dead-letter queue goes only when asked, here confirmed by typing y
    monkeypatch.setattr(sys, "stdin", FakeTerminal("y\n"))
    code, out, _ = cli(capsys, config, "purge", "--dead-letter")
    assert code == RET_OK and "Removed 1 dead-lettered" in out
    assert redis_client.zcard(f"{NS}:jwql.XQ") == 0


@pytest.mark.timeout(60)
def test_purge_of_many_messages_prints_a_summary_and_json_lists_all(broker, make_config, redis_client, capsys,
                                                                    monkeypatch):
    from jwql_dramatiq.broker import admin

    # Given 25 queued messages (no worker running), purged in chunks of 7, and an undecodable payload
    monkeypatch.setattr(admin, "PURGE_CHUNK", 7)
    config = make_config()
    sent = [t.record_span.send(0.1) for _ in range(25)]
    redis_client.hset(f"{NS}:jwql.msgs", "garbled", "not a message")
    redis_client.rpush(f"{NS}:jwql", "garbled")
    # When purge --yes runs
    code, out, _ = cli(capsys, config, "purge", "--yes")
    # Then it prints the counts, the first ten ids and how many more, not one line per message
    assert code == RET_OK and "Purged 26 message(s): 26 ready, 0 delayed" in out  # the undecodable one too
    assert "... and 16 more (--json lists every one)" in out
    assert sum(m.message_id in out for m in sent) == 10
    assert {state_of(m) for m in sent} == {"purged"} and redis_client.llen(f"{NS}:jwql") == 0
    assert redis_client.hlen(f"{NS}:jwql.msgs") == 0, "every payload, the undecodable one too, is gone"
    with pytest.raises(ResultFailure, match="purged"):
        sent[-1].get_result(block=False)  # the last chunk's waiter is told too
    # And --json lists every one
    more = [t.record_span.send(0.1) for _ in range(12)]
    code, out, _ = cli(capsys, config, "purge", "--yes", "--json")
    assert code == RET_OK and {item["message_id"] for item in json.loads(out)["purged"]} == {m.message_id for m in more}


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_shutdown_host_lets_the_task_finish_and_leaves_the_other_host_running(broker, make_config, start_worker,
                                                                             capsys):
    # Given two hosts' workers, one of them running a 3-second task
    config = make_config()
    workers = {"host-a": start_worker(config, env={HOSTNAME_ENV: "host-a"}),
               "host-b": start_worker(config, env={HOSTNAME_ENV: "host-b"})}
    message = t.record_span.send(3.0)
    host = running_state(message).details["host"]
    other = "host-b" if host == "host-a" else "host-a"

    # When that host is shut down (gracefully, the default)
    code, out, _ = cli(capsys, config, "shutdown", "--host", host, "--wait", "30")

    # Then the task completed and its result is stored, the worker exited 0, the other runs on
    assert code == RET_OK, out
    assert f"{host} " in out and "stopped after" in out
    span = message.get_result(block=True, timeout=5_000)
    assert span["end"] - span["start"] >= 3.0
    wait_for(lambda: state_of(message) == "succeeded", 5, "the succeeded state")
    assert workers[host].proc.wait(15) == 0
    assert workers[other].proc.poll() is None
    code, report = cli_json(capsys, config, "status")
    assert code == RET_OK and [w["host"] for w in report["workers"] if w["alive"]] == [other]
    assert t.record_span.send(0.0).get_result(block=True, timeout=10_000)["end"] > 0


@pytest.mark.timeout(90)
def test_shutdown_now_kills_the_child_requeues_and_another_worker_completes_it(broker, make_config, start_worker,
                                                                              capsys):
    # Given two workers, one of them running a 4-second task
    config = make_config()
    workers = {"host-a": start_worker(config, env={HOSTNAME_ENV: "host-a"}),
               "host-b": start_worker(config, env={HOSTNAME_ENV: "host-b"})}
    message = t.record_span.send(4.0)
    first = running_state(message)
    host, worker_id = first.details["host"], first.details["worker"]
    other = "host-b" if host == "host-a" else "host-a"

    # When that worker (named by a prefix of its id) is shut down now
    asked_at, asked_wall = time.monotonic(), time.time()
    code, out, _ = cli(capsys, config, "shutdown", "--worker", worker_id[:8], "--now", "--wait", "10")

    # Then it is gone well before its task could have ended, child included
    assert code == RET_OK, out
    assert workers[host].proc.wait(10) == 0
    wait_for(lambda: not group_alive(workers[host].pid), 5, "the task child to be gone")
    assert time.monotonic() - asked_at < 3.0
    # And the message went back on the queue, and the other worker ran it from the start
    span = message.get_result(block=True, timeout=20_000)
    assert span["start"] >= asked_wall
    final = wait_for(lambda: (s := get_task_state(message.message_id)).state == "succeeded" and s, 5,
                     "the succeeded state")
    assert final.details["host"] == other
    assert final.details.get("requeued_by") == worker_id
    assert workers[other].proc.poll() is None


@pytest.mark.timeout(30)
def test_shutdown_of_an_unknown_target_says_so(make_config, redis_client, capsys):
    config = make_config()
    code, _, err = cli(capsys, config, "shutdown", "--host", "nowhere")
    assert code == RET_NOT_FOUND and "no live worker on host 'nowhere'" in err
    assert cli(capsys, config, "shutdown", "--worker", "0123abcd")[0] == RET_NOT_FOUND


# -- locks ---------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from jwql_dramatiq.locks import lock
lock(sys.argv[1], lease_s=30).acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_locks_clear_stale_removes_a_killed_holders_lock_and_refuses_a_live_one(make_config, redis_client, capsys):
    # Given a lock held by a process killed with kill -9, and one held by this (live) process
    config = make_config()
    env = {**os.environ, "JWQL_DRAMATIQ_CONFIG": str(config)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "dead-one"], cwd=REPO, env=env, stdout=subprocess.PIPE)
    live = lock("live-one", lease_s=30, client=redis_client, namespace=NS)
    try:
        assert holder.stdout.readline().strip() == b"held"
        live.acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)

        # Then list shows both, with their owners' state
        code, listed = cli_json(capsys, config, "locks", "list")
        assert code == RET_OK
        assert {x["name"]: x["owner_alive"] for x in listed} == {"dead-one": False, "live-one": True}
        assert {x["name"]: x["pid"] for x in listed}["dead-one"] == holder.pid
        code, out, _ = cli(capsys, config, "locks", "list")
        assert "DEAD" in out and "live-one" in out

        # When clear --stale runs, it removes the dead owner's lock only, and says so
        code, out, _ = cli(capsys, config, "locks", "clear", "--stale")
        assert code == RET_OK and "Removed lock 'dead-one'" in out and f"pid {holder.pid}" in out
        assert "live-one" not in out
        assert not redis_client.exists(f"{NS}:lock:dead-one") and redis_client.exists(f"{NS}:lock:live-one")

        # And a live owner's lock is refused by name, unless forced
        code, _, err = cli(capsys, config, "locks", "clear", "live-one")
        assert code == RET_REFUSED and "live owner" in err and "--force" in err
        assert redis_client.exists(f"{NS}:lock:live-one")
        code, out, _ = cli(capsys, config, "locks", "clear", "live-one", "--force")
        assert code == RET_OK and "Removed lock 'live-one'" in out
        assert cli(capsys, config, "locks", "clear", "no-such-lock")[0] == RET_NOT_FOUND
        assert cli(capsys, config, "locks", "clear")[0] == RET_USAGE
        assert cli(capsys, config, "locks", "clear", "--stale")[1].startswith("No locks held")  # none is left
    finally:
        holder.kill()
        holder.wait()
        try:
            live.release()
        except Exception:  # it was force-cleared: the release finds it gone
            pass


# -- task states and revoke ----------------------------------------------------------------------


def watch_states(messages, stop: threading.Event, seen: dict[str, list]) -> None:
    """Record each message's distinct states in order (with the TaskState of each)."""
    while True:
        last = stop.is_set()
        for m in messages:
            state = get_task_state(m.message_id)
            history = seen.setdefault(m.message_id, [])
            if state is not None and (not history or history[-1].state != state.state):
                history.append(state)
        if last:
            return
        time.sleep(0.01)


@pytest.mark.timeout(90)
def test_tasks_shows_the_states_of_a_succeeded_a_failed_and_a_purged_task(broker, make_config, start_worker,
                                                                         capsys):
    config = make_config()
    # A purged task: queued, then purged
    purged = t.record_span.send(0.1)
    assert state_of(purged) == "queued"
    assert cli(capsys, config, "purge", "--yes")[0] == RET_OK
    assert state_of(purged) == "purged"

    # A task that succeeds and one that fails, watched from before a worker exists
    ok, bad = t.record_span.send(1.0), t.fail_after.send(1.0, "bad slope")
    seen: dict[str, list] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_states, args=([ok, bad], stop, seen))
    watcher.start()
    try:
        start_worker(config, env={HOSTNAME_ENV: "host-t"})
        ok.get_result(block=True, timeout=20_000)
        with pytest.raises(ResultFailure):
            bad.get_result(block=True, timeout=20_000)
        wait_for(lambda: (state_of(ok), state_of(bad)) == ("succeeded", "failed"), 5, "the final states")
    finally:
        stop.set()
        watcher.join()
    assert [s.state for s in seen[ok.message_id]] == ["queued", "running", "succeeded"]
    assert [s.state for s in seen[bad.message_id]] == ["queued", "running", "failed"]
    running = seen[ok.message_id][1]
    assert running.details["host"] == "host-t" and float(running.details["started_at"]) > 0
    assert seen[bad.message_id][-1].details["error"] == "ValueError: bad slope"

    # The listing shows all three, newest first
    code, listed = cli_json(capsys, config, "tasks")
    assert code == RET_OK
    assert {x["message_id"]: x["state"] for x in listed} == {
        purged.message_id: "purged", ok.message_id: "succeeded", bad.message_id: "failed"}
    code, out, _ = cli(capsys, config, "tasks")
    assert "ValueError: bad slope" in out and "purged" in out and "on host-t" in out
    code, failed_only = cli_json(capsys, config, "tasks", "--state", "failed")
    assert [x["message_id"] for x in failed_only] == [bad.message_id]
    code, out, _ = cli(capsys, config, "tasks", ok.message_id)
    assert code == RET_OK and "succeeded" in out and "host-t" in out
    assert cli(capsys, config, "tasks", "no-such-id")[0] == RET_NOT_FOUND

    # Revoke with --terminate kills a running task; its monitor returns at once
    long = t.record_span.send(60.0)
    running_state(long)
    code, out, _ = cli(capsys, config, "revoke", long.message_id, "--terminate")
    assert code == RET_OK and "terminating" in out
    started = time.monotonic()
    with pytest.raises(ResultFailure) as info:
        long.get_result(block=True, timeout=10_000)
    assert info.value.orig_exc_type == "TaskRevoked" and time.monotonic() - started < 2
    assert state_of(long) == "revoked"
    # ... the worker goes on with the next task, and finished or unknown ids change nothing
    assert t.record_span.send(0.0).get_result(block=True, timeout=10_000)["end"] > 0
    code, out, _ = cli(capsys, config, "revoke", long.message_id)
    assert code == RET_FINISHED and "already revoked" in out
    assert cli(capsys, config, "revoke", ok.message_id)[0] == RET_FINISHED
    assert state_of(ok) == "succeeded"
    assert cli(capsys, config, "revoke", "no-such-id")[0] == RET_NOT_FOUND


# -- worker --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_worker_command_detached_and_in_the_foreground(broker, make_config, tmp_path, capsys):
    config = make_config(time_limit_s=100, actor_time_limits_s={"record_span": 200})
    jwql = [JWQL, "--config", str(config)]
    pid_path = tmp_path / "working" / "jwql_dramatiq_host-d.pid"
    log_path = tmp_path / "logs" / "jwql_dramatiq_host-d.log"
    pids: list[int] = []
    try:
        # --detach returns 0 once the worker is up, with a pid file and a log file for the host
        proc = subprocess.run([*jwql, "worker", "--detach", "--hostname", "host-d"], cwd=REPO, capture_output=True,
                              text=True, timeout=90)
        assert proc.returncode == RET_OK, proc.stderr
        pid = int(pid_path.read_text())
        pids.append(os.getpgid(pid))
        assert "is up on host host-d" in proc.stdout and str(pid) in proc.stdout
        assert process_alive(pid) and os.getsid(pid) != os.getsid(0)  # a session of its own
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--worker-shutdown-timeout") + 1] == str((200 + 60) * 1000).encode()
        assert b"-p1" not in argv and argv[argv.index(b"--processes") + 1] == b"1"

        # A second start is refused while it lives
        again = subprocess.run([*jwql, "worker", "--detach", "--hostname", "host-d"], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == RET_PIDFILE and f"already running with pid {pid}" in again.stderr

        # A task's log lines reach the host's log file with the task id and the actor name
        message = t.log_lines.send(2)
        assert message.get_result(block=True, timeout=10_000) == 2
        # (Dramatiq's main process copies its worker process's log pipe into the file: a line may land
        # there after the task's result)
        def task_lines() -> list[str] | None:
            found = [line for line in log_path.read_text().splitlines() if "task log line" in line]
            return found if len(found) >= 2 else None

        lines = wait_for(task_lines, 10, "both of the task's log lines")
        assert len(lines) == 2 and all(f"[{message.message_id}] [log_lines]" in line for line in lines)

        # shutdown (the console script) stops it; the pid file goes with it
        stop = subprocess.run([*jwql, "shutdown", "--host", "host-d", "--wait", "30"], capture_output=True,
                              text=True, timeout=60)
        assert stop.returncode == RET_OK, stop.stdout + stop.stderr
        wait_for(lambda: not process_alive(pid), 15, "the detached worker to exit")
        wait_for(lambda: not pid_path.exists(), 5, "the pid file to be removed")

        # In the foreground the command becomes the worker: same pid, SIGTERM stops it with 0
        with open(tmp_path / "foreground.out", "wb") as out:
            fg = subprocess.Popen([*jwql, "worker", "--hostname", "host-f"], cwd=REPO, stdout=out, stderr=out,
                                  start_new_session=True)
        pids.append(fg.pid)

        def foreground_worker():
            code, report = cli_json(capsys, config, "status")
            return [w for w in report["workers"] if w["host"] == "host-f" and w["alive"]]

        (w,) = wait_for(foreground_worker, 60, "the foreground worker to be up", interval_s=0.1)
        assert w["main_pid"] == fg.pid
        assert (tmp_path / "logs" / "jwql_dramatiq_host-f.log").exists()
        fg.send_signal(signal.SIGTERM)
        assert fg.wait(30) == 0
    finally:
        if pid_path.exists():  # a detached worker the assertions did not get to
            try:
                pids.append(os.getpgid(int(pid_path.read_text())))
            except (ValueError, ProcessLookupError):
                pass
        for pid in pids:
            kill_group(pid)


@pytest.mark.timeout(30)
def test_a_stale_pid_file_is_removed_and_a_garbage_one_refused(tmp_path):
    from jwql_dramatiq.cli._common import CommandError
    from jwql_dramatiq.cli.worker import check_pid_file

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "stale.pid"
    stale.write_text(str(dead.pid))
    assert "removed stale pid file" in check_pid_file(str(stale)) and not stale.exists()
    garbage = tmp_path / "config.json"
    garbage.write_text("{}")
    with pytest.raises(CommandError) as info:
        check_pid_file(str(garbage))
    assert info.value.code == RET_PIDFILE and garbage.exists()
    assert check_pid_file(str(tmp_path / "none.pid")) is None


def _assert_restart_policy_follows_the_exit_code_table(settings: dict[str, str]) -> None:
    from jwql_dramatiq import exit_codes

    prevented = {int(code) for code in settings["RestartPreventExitStatus"].split()}
    # A bad config (or refused credentials) and a pid file naming a live worker fail the same way
    # again: never restarted. Redis unreachable and a killed worker may pass: restarted.
    assert exit_codes.RET_CONFIG in prevented and exit_codes.RET_PIDFILE in prevented
    assert prevented == set(exit_codes.NO_RESTART)
    assert not prevented & set(exit_codes.RESTART) and exit_codes.RET_REDIS not in prevented


def _systemd_seconds(text: str) -> float:
    import re

    units = {"h": 3600, "min": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)\s*(h|min|s)\b", text))


@pytest.mark.timeout(30)
def test_the_systemd_unit_stops_gracefully_and_outwaits_the_longest_task():
    from jwql_dramatiq.cli.worker import shutdown_timeout_ms
    from jwql_dramatiq.config import validate

    unit = (REPO / "deploy" / "jwql-dramatiq-worker.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["ExecStart"].endswith("jwql-dramatiq worker")
    assert settings["KillMode"] == "mixed" and settings["KillSignal"] == "SIGTERM"
    assert settings["Restart"] == "on-failure"
    _assert_restart_policy_follows_the_exit_code_table(settings)
    default = validate({"redis_host": "h", "redis_port": 6379, "transfer_dir": "/t"}, "defaults")
    assert _systemd_seconds(settings["TimeoutStopSec"]) > shutdown_timeout_ms(default) / 1000
    env = (REPO / "deploy" / "jwql-dramatiq.env").read_text()
    assert "JWQL_DRAMATIQ_CONFIG=" in env and HOSTNAME_ENV in env
