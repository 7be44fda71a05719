"""The foundation end to end: real workers from the dramatiq command line, a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.actors import ping
from jwql_dramatiq.errors import RedisUnavailable, TaskFailed
from jwql_dramatiq.exit_codes import RET_CONFIG, RET_REDIS
from tests import actors_for_tests as t
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)


def test_ping_send_and_get_result(broker, make_config, start_worker):
    start_worker(make_config())
    message = ping.send()
    result = message.get_result(block=True, timeout=10_000)
    assert set(result) == {"host", "pid", "ppid"}
    assert isinstance(result["pid"], int)


def test_failure_names_original_type_message_and_keeps_traceback(broker, make_config, start_worker):
    start_worker(make_config())
    message = t.fail_with.send("ValueError", "bad slope 7")
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=10_000)
    error = info.value
    assert error.orig_exc_type == "ValueError" and error.orig_exc_msg == "bad slope 7"
    assert isinstance(error, TaskFailed)
    assert error.type_name == "ValueError" and "bad slope 7" in str(error)
    assert "Traceback (most recent call last)" in error.traceback_text
    assert "in fail_with" in error.traceback_text


def test_prefetch_is_one_per_thread(broker, make_config, start_worker):
    """Two 2-second tasks sent at once to two workers: each worker runs exactly one."""
    config = make_config()
    start_worker(config)
    start_worker(config)
    messages = [t.record_span.send(2.0), t.record_span.send(2.0)]
    spans = [m.get_result(block=True, timeout=20_000) for m in messages]
    # Each ran under a different fork server (ppid), i.e. on a different worker ...
    assert spans[0]["ppid"] != spans[1]["ppid"]
    # ... and they overlapped in time: neither waited behind the other on one worker.
    assert spans[0]["start"] < spans[1]["end"] and spans[1]["start"] < spans[0]["end"]


def test_worker_with_unreachable_redis_prints_one_line_and_exits_3(make_config, start_worker):
    port = free_port()
    worker = start_worker(make_config(redis_url=f"redis://127.0.0.1:{port}/0"), wait=False)
    code = worker.proc.wait(60)
    log = worker.log()
    assert code == RET_REDIS, log
    assert f"Redis is unreachable at 127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_worker_with_bad_config_prints_one_line_and_exits_2(tmp_path, make_config, start_worker):
    path = make_config()
    data = json.loads(path.read_text())
    data["redis_host"], data["redis_port"] = "127.0.0.1", "seventy"
    data.pop("redis_url")
    path.write_text(json.dumps(data))
    worker = start_worker(path, wait=False)
    code = worker.proc.wait(60)
    log = worker.log()
    assert code == RET_CONFIG, log
    assert "'redis_port'" in log and "seventy" in log and str(path) in log
    assert "Traceback" not in log


def test_monitor_with_unreachable_redis_gets_a_clear_error(make_config):
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config

    port = free_port()
    setup_broker(load_config(make_config(redis_url=f"redis://127.0.0.1:{port}/0")))
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}"):
        ping.send()
    assert time.monotonic() - started < 10


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mistake", ["empty_redis_host", "transfer_dir_is_a_file", "database_out_of_range"])
def test_each_config_mistake_is_one_line_naming_file_and_key(tmp_path, make_config, start_worker, mistake):
    # Given: JWQL's example redis_host (""), a transfer_dir that is a regular file, or a database
    # number beyond the server's (it has 16)
    path = make_config()
    data = json.loads(path.read_text())
    if mistake == "empty_redis_host":
        data.pop("redis_url")
        data.update(redis_host="", redis_port="6379")
        key = "redis_host"
    elif mistake == "database_out_of_range":
        data["redis_url"] = data["redis_url"].rsplit("/", 1)[0] + "/99"
        key = "redis_url"
    else:
        regular = tmp_path / "transfer-file"
        regular.write_text("not a directory")
        data["transfer_dir"] = str(regular)
        key = "transfer_dir"
    path.write_text(json.dumps(data))
    # When: a worker starts, and an operator asks for the status
    worker = start_worker(path, wait=False)
    code = worker.proc.wait(60)
    status = subprocess.run([str(Path(sys.executable).with_name("jwql-dramatiq")), "--config", str(path), "status"],
                            capture_output=True, text=True, timeout=60)
    # Then: worker and status both exit 2 (RET_CONFIG), each with one line naming the file and the key
    log_lines = [line for line in worker.log().splitlines() if f"'{key}'" in line]
    assert code == RET_CONFIG, worker.log()
    assert len(log_lines) == 1 and str(path) in log_lines[0] and "Traceback" not in worker.log()
    assert status.returncode == RET_CONFIG, status
    assert status.stderr.count("\n") == 1 and str(path) in status.stderr and f"'{key}'" in status.stderr
    assert "Traceback" not in status.stderr


def test_misspelt_key_is_warned_in_the_worker_log(make_config, start_worker):
    path = make_config()
    data = json.loads(path.read_text())
    data["tranfer_dir"] = "/somewhere"
    path.write_text(json.dumps(data))
    worker = start_worker(path)
    assert f"{path}: unknown key 'tranfer_dir' is ignored; did you mean 'transfer_dir'?" in worker.log()
