"""The operator command line given bad input: one line naming the bad thing, never a traceback, and
the exit code the table (``jwql_dramatiq/exit_codes.py``) gives for it.

Every command runs as the real console script in a subprocess, against this test's own Redis.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jwql_dramatiq.broker.states import get_task_state
from jwql_dramatiq.exit_codes import (NO_RESTART, RESTART, RET_ERROR, RET_FINISHED, RET_INTERRUPTED, RET_NOT_FOUND,
                                      RET_OK, RET_PIDFILE, RET_REDIS, RET_USAGE)
from jwql_dramatiq.locks import lock
from tests import actors_for_tests as t
from tests.conftest import REPO, free_port

JWQL = str(Path(sys.executable).with_name("jwql-dramatiq"))
NS = "jwql_dramatiq"


def run(config: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run ``jwql-dramatiq --config CONFIG ARGS`` (the console script) and wait for it."""
    return subprocess.run([JWQL, "--config", str(config), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


def assert_one_line(proc: subprocess.CompletedProcess, *named: str) -> None:
    """stderr is one error line, naming each of ``named``, with no traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("jwql-dramatiq: error: "), err
    for text in named:
        assert text in err, (text, err)


def assert_usage_error(proc: subprocess.CompletedProcess, argument: str) -> None:
    """An argparse error about ``argument``: usage, then one error line; exit RET_USAGE."""
    assert proc.returncode == RET_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr and f"error: argument {argument}" in proc.stderr, proc.stderr


def reap_detached(pid_path: Path, wait_s: float) -> None:
    """Kill the process group of a detached worker a failing run may have left, waiting up to ``wait_s``
    for its pid file (the worker writes it once it runs)."""
    deadline = time.monotonic() + wait_s
    while not pid_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        pid = int(pid_path.read_text())
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (OSError, ValueError):
        pass


# -- worker: files it cannot write, and --wait ----------------------------------------------------


@pytest.mark.timeout(120)
def test_worker_pid_and_log_files_that_cannot_be_written_exit_4_in_one_line(make_config, tmp_path):
    # The pid file's code (RET_PIDFILE: "cannot be written"), one a supervisor must not restart on;
    # a log file that cannot be written gets the same.
    assert RET_PIDFILE in NO_RESTART
    config = make_config()
    pid_path = tmp_path / "working" / "jwql_dramatiq_host-x.pid"
    cases = [
        (["--pid-file", "/etc/passwd/x.pid"], "pid file /etc/passwd/x.pid", "Not a directory"),
        (["--log-file", "/etc/passwd/x.log"], "log file /etc/passwd/x.log", "/etc/passwd is not a directory"),
        (["--log-file", "/proc/x.log"], "log file /proc/x.log", "No such file or directory"),
        (["--pid-file", "/proc/x.pid"], "pid file /proc/x.pid", "No such file or directory"),
    ]
    try:
        for args, named, reason in cases:
            proc = run(config, "worker", "--detach", "--hostname", "host-x", "--wait", "30", *args)
            assert proc.returncode == RET_PIDFILE, (args, proc.stderr)
            assert_one_line(proc, named, reason)
            assert not pid_path.exists(), "no worker was started"
        # In the foreground too: refused before the command becomes the worker
        fg = subprocess.Popen([JWQL, "--config", str(config), "worker", "--hostname", "host-x", "--log-file",
                               "/proc/x.log"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
        try:
            out, err = fg.communicate(timeout=60)
        finally:
            if fg.poll() is None:
                os.killpg(fg.pid, signal.SIGKILL)
                fg.wait()
        assert fg.returncode == RET_PIDFILE, err
        assert_one_line(subprocess.CompletedProcess(fg.args, fg.returncode, out, err), "log file /proc/x.log")
    finally:
        reap_detached(pid_path, 0)


@pytest.mark.timeout(120)
def test_worker_detach_refuses_a_negative_or_nan_wait_before_starting_anything(make_config, tmp_path):
    config = make_config()
    pid_path = tmp_path / "working" / "jwql_dramatiq_host-w.pid"
    for wait in ("-1", "nan"):
        proc = run(config, "worker", "--detach", "--hostname", "host-w", "--wait", wait)
        try:
            assert_usage_error(proc, "--wait")
            assert "must be 0 or more" in proc.stderr and not pid_path.exists()
        finally:
            # Without the check a worker was started and left running: reap it
            reap_detached(pid_path, 0 if proc.returncode == RET_USAGE else 30)


# -- web: the port ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_web_refuses_a_port_out_of_range_and_names_a_port_in_use(make_config):
    config = make_config()
    for port in ("99999", "0", "http"):
        assert_usage_error(run(config, "web", "--port", port), "--port")

    # A port another process listens on: one line naming host:port, and not Redis's code
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        proc = run(config, "web", "--bind", "127.0.0.1", "--port", str(port), timeout_s=30)
    finally:
        busy.close()
    assert proc.returncode == RET_ERROR and proc.returncode not in (RET_REDIS, *RESTART), proc.stderr
    assert_one_line(proc, f"127.0.0.1:{port}", "in use")
    assert "serving" not in proc.stdout

    # An address that does not resolve, likewise
    proc = run(config, "web", "--bind", "no-such-host.invalid", "--port", str(free_port()), timeout_s=30)
    assert proc.returncode == RET_ERROR and "serving" not in proc.stdout
    assert_one_line(proc, "no-such-host.invalid:")


# -- a reader that goes away ------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_reader_that_goes_away_ends_the_command_quietly(make_config):
    # ``jwql-dramatiq status | head -1``, made deterministic: the reader is gone before the first write
    # (with stdout buffered, the usual case, and unbuffered, as $PYTHONUNBUFFERED makes it)
    config = make_config()
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for args, env in [(args, env) for args in (["status"], ["tasks"], ["locks", "list"], ["--help"])
                      for env in (buffered, {**buffered, "PYTHONUNBUFFERED": "1"})]:
        proc = subprocess.Popen([JWQL, "--config", str(config), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()
        try:
            err = proc.stderr.read()
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, (args, err)
        # (unbuffered, argparse itself ignores a failed write of --help: nothing is left to flush, exit 0)
        expected = (RET_INTERRUPTED, RET_OK) if args == ["--help"] and "PYTHONUNBUFFERED" in env else (RET_INTERRUPTED,)
        assert err == "" and code in expected, (args, code, err)


# -- revoke's help, purge, locks clear, empty ids ---------------------------------------------------


@pytest.mark.timeout(60)
def test_revoke_help_gives_the_codes_revoke_exits_with(broker, make_config):
    config = make_config()
    text = " ".join(run(config, "revoke", "--help").stdout.split())  # unwrapped
    said_unknown = int(re.search(r"unknown id changes nothing and exits (\d+)", text).group(1))
    said_finished = int(re.search(r"finished one changes nothing and exits (\d+)", text).group(1))

    # A finished task: purged (a final state) before any worker ran it
    message = t.record_span.send(0.1)
    assert run(config, "purge", "--yes").returncode == RET_OK
    assert get_task_state(message.message_id).state == "purged"
    assert run(config, "revoke", message.message_id).returncode == said_finished == RET_FINISHED
    assert run(config, "revoke", "no-such-id").returncode == said_unknown == RET_NOT_FOUND


@pytest.mark.timeout(60)
def test_purge_of_an_unknown_queue_says_so_and_removes_nothing(broker, make_config, redis_client):
    config = make_config()
    message = t.record_span.send(0.1)
    proc = run(config, "purge", "--yes", "-Q", "nosuchqueue")
    assert proc.returncode == RET_NOT_FOUND, proc.stdout + proc.stderr
    assert_one_line(proc, "no queue named 'nosuchqueue'", "jwql")
    assert "Purged" not in proc.stdout
    assert get_task_state(message.message_id).state == "queued" and redis_client.llen(f"{NS}:jwql") == 1
    assert_usage_error(run(config, "purge", "--yes", "-Q", ""), "--queue")
    assert redis_client.llen(f"{NS}:jwql") == 1
    # The known queue, by its name or its delay queue's, still purges
    proc = run(config, "purge", "--yes", "-Q", "jwql.DQ")
    assert proc.returncode == RET_OK and "Purged 1 message(s)" in proc.stdout, proc.stderr


@pytest.mark.timeout(60)
def test_locks_clear_stale_with_no_locks_says_there_are_none(make_config, redis_client):
    config = make_config()
    proc = run(config, "locks", "clear", "--stale")
    assert proc.returncode == RET_OK and proc.stdout.strip() == "No locks held: nothing to clear.", proc.stdout
    # With a lock held by a live owner (this process), it says that instead
    held = lock("live-one", lease_s=30, client=redis_client, namespace=NS)
    held.acquire()
    try:
        proc = run(config, "locks", "clear", "--stale")
        assert proc.returncode == RET_OK and "every lock's owner is alive" in proc.stdout, proc.stdout
        assert redis_client.exists(f"{NS}:lock:live-one")
    finally:
        held.release()


@pytest.mark.timeout(60)
def test_an_empty_id_or_name_is_refused_not_taken_as_everything(broker, make_config):
    config = make_config()
    t.record_span.send(0.1)  # a recorded task an empty id must not list
    proc = run(config, "tasks", "")
    assert_usage_error(proc, "MESSAGE_ID")
    assert "must not be empty" in proc.stderr and proc.stdout == ""
    for args, argument in ((["revoke", " "], "MESSAGE_ID"), (["shutdown", "--worker", ""], "--worker"),
                           (["shutdown", "--host", ""], "--host"), (["locks", "clear", ""], "NAME")):
        assert_usage_error(run(config, *args), argument)
