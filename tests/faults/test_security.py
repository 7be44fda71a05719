"""Security: Redis AUTH with an ACL user, TLS, no credentials in any output, JSON-only messages.

Each test runs its own redis-server set up as docs/security.md recommends (the default user
switched off, one ACL user with a password; TLS with a throwaway CA for the TLS tests).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import uuid

import pytest
import redis

from jwql_dramatiq.actors import ping
from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.embedded import WorkerProcess, free_port
from jwql_dramatiq.errors import RedisAuthFailed, RedisUnavailable
from jwql_dramatiq.exit_codes import RET_CONFIG
from tests.conftest import REPO, base_config, wait_for
from tests.faults.servers import RECOMMENDED_RULES, SecureRedis, make_tls_files, new_password

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

NS = "jwql_dramatiq"


@pytest.fixture
def acl_redis(tmp_path):
    password = new_password()
    server = SecureRedis(tmp_path / "redis", "127.0.0.1", free_port(), "jwql", password,
                         rules=RECOMMENDED_RULES).start()
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    server = SecureRedis(tmp_path / "redis-tls", "127.0.0.1", free_port(), "jwql", new_password(), tls=tls,
                         rules=RECOMMENDED_RULES).start()
    yield server
    server.stop()


def _worker(tmp_path, config: dict, env: dict | None = None, name: str = "worker") -> WorkerProcess:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return WorkerProcess(path, tmp_path / f"{name}.log", cwd=REPO, env=env)


def _status_output(config_path, env: dict) -> str:
    """``status --json`` and ``locks list`` output; fails the test if a command is refused (NOPERM)."""
    out = ""
    for words in (["status", "--json"], ["locks", "list"]):
        done = subprocess.run([sys.executable, "-m", "jwql_dramatiq", "--config", str(config_path), *words],
                              cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        out += done.stdout + done.stderr
        assert "NOPERM" not in out and done.returncode in (0, 1), out
    return out


def test_acl_user_with_password_from_the_environment(tmp_path, acl_redis, record_figures):
    # Given: the username in the config, the password only in the environment
    config = base_config(None, tmp_path, redis_host="127.0.0.1", redis_port=acl_redis.port, redis_username="jwql",
                         maintenance_chance=0)
    del config["redis_url"]
    env = {"JWQL_DRAMATIQ_REDIS_PASSWORD": acl_redis.password}
    worker = _worker(tmp_path, config, env)
    try:
        # When: a worker and a monitor use it
        assert worker.wait_booted(60), worker.log()
        loaded = load_config(tmp_path / "worker.json", environ={**os.environ, **env})
        broker = setup_broker(loaded)
        result = ping.send().get_result(block=True, timeout=10_000)
        status = _status_output(tmp_path / "worker.json", env)
        broker.close()
    finally:
        worker.stop()
    # Then: it works, and the password appears in no log, repr or status output
    assert result["pid"] > 0
    assert acl_redis.password not in worker.log()
    assert acl_redis.password not in repr(loaded) and acl_redis.password not in str(loaded)
    assert acl_redis.password not in status and "127.0.0.1" in status
    # Without credentials the server refuses.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=acl_redis.port).ping()
    record_figures(case="Redis ACL user, password from JWQL_DRAMATIQ_REDIS_PASSWORD", ping_ok=True,
                   password_in_worker_log=False, password_in_repr=False, password_in_status=False,
                   anonymous_client_refused=True)


def test_wrong_password_is_one_line_without_the_password(tmp_path, acl_redis, record_figures):
    # Given: a wrong password, in the file this time
    wrong = new_password()
    config = base_config(None, tmp_path, redis_host="127.0.0.1", redis_port=acl_redis.port, redis_username="jwql",
                         redis_password=wrong)
    del config["redis_url"]
    worker = _worker(tmp_path, config)
    # When: a worker starts, and a monitor sends
    code = worker.proc.wait(60)
    worker.stop()
    setup_broker(load_config(tmp_path / "worker.json"))
    with pytest.raises(RedisUnavailable) as info:
        ping.send()
    # Then: the worker exits with the bad-config code, one line naming the user and host:port, and
    # no output holds the password
    log = worker.log()
    assert code == RET_CONFIG, log
    assert f"authentication failed for user 'jwql' at 127.0.0.1:{acl_redis.port}" in log and "Traceback" not in log
    assert isinstance(info.value, RedisAuthFailed) and "unreachable" not in log
    assert wrong not in log and wrong not in str(info.value) and wrong not in repr(info.value)
    record_figures(case="wrong Redis password", exit_code=code,
                   error=next(line for line in log.splitlines() if "authentication failed" in line).split("] ")[-1][:200],
                   password_in_output=False)


def test_tls_with_acl_user(tmp_path, tls_redis, record_figures):
    # Given: TLS only (no plain port), the CA in the URL, the ACL user's credentials in the URL
    url = (f"rediss://jwql:{tls_redis.password}@127.0.0.1:{tls_redis.port}/0"
           f"?ssl_ca_certs={tls_redis.tls.ca_cert}")
    worker = _worker(tmp_path, base_config(url, tmp_path, maintenance_chance=0))
    try:
        # When: a worker and a monitor use it
        assert worker.wait_booted(60), worker.log()
        loaded = load_config(tmp_path / "worker.json")
        broker = setup_broker(loaded)
        result = ping.send().get_result(block=True, timeout=10_000)
        status = _status_output(tmp_path / "worker.json", {})
        broker.close()
    finally:
        worker.stop()
    # Then: it works over TLS, and the password (in the URL) is in no output
    assert result["pid"] > 0
    assert tls_redis.password not in worker.log() and tls_redis.password not in repr(loaded)
    assert tls_redis.password not in status
    assert f"127.0.0.1:{tls_redis.port}" in worker.log()
    # A plain-text client, or a TLS client that does not trust the CA, gets nowhere.
    plain = _worker(tmp_path, base_config(url.replace("rediss://", "redis://").split("?")[0], tmp_path), name="plain")
    untrusting = _worker(tmp_path, base_config(url.split("?")[0], tmp_path), name="untrusting")
    codes = [plain.proc.wait(60), untrusting.proc.wait(60)]
    plain.stop()
    untrusting.stop()
    assert codes == [3, 3], (plain.log(), untrusting.log())
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.log() or "certificate verify failed" in untrusting.log()
    for log in (plain.log(), untrusting.log()):
        assert tls_redis.password not in log and "Traceback" not in log
    record_figures(case="TLS (rediss://, private CA) + ACL user", ping_ok=True, plaintext_client_exit_code=codes[0],
                   untrusted_ca_exit_code=codes[1], password_in_output=False)


def test_pickled_payload_is_never_unpickled(tmp_path, broker, redis_client, make_config, start_worker, record_figures):
    # Given: a pickle that would create a file if anyone unpickled it
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    worker = start_worker(make_config())
    # When: it is pushed straight into the queue
    redis_id = str(uuid.uuid4())
    redis_client.hset(f"{NS}:jwql.msgs", redis_id, payload)
    redis_client.rpush(f"{NS}:jwql", redis_id)
    redis_client.rpush(f"{NS}:__wake__.jwql", 1)
    # Then: it is dead-lettered with a clear log line, nothing ran it, and the worker lives
    wait_for(lambda: redis_client.zscore(f"{NS}:jwql.XQ", redis_id) is not None, 10, "the pickle to be dead-lettered")
    line = wait_for(lambda: next((l for l in worker.log().splitlines() if redis_id in l), None), 5, "the log line")
    assert "looks like a pickle" in line and "never unpickled" in line
    time.sleep(0.2)
    assert not marker.exists()
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
    record_figures(case="pickled payload with a __reduce__ side effect", dead_lettered=True, unpickled=False,
                   log_line=line.split("[ERROR] ", 1)[-1][:200], worker_alive=True)
