"""Shared fixtures: a private redis-server, one flushed database per test, real config files,
and real worker processes started through the ``dramatiq`` command line and always reaped.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

REPO = Path(__file__).resolve().parent.parent
DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))

# Database 0 is left alone; tests cycle through 1-15, each flushed before and after use.
_DATABASES = itertools.cycle(range(1, 16))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class RedisServer:
    """A private ``redis-server`` on a free port and a unix socket, owned by the test session."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on the PATH: run the tests through ./dev test, which installs it")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.directory = directory
        self.socket_path = str(directory / "redis.sock")
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if appendonly else "no", "--dir", str(directory),
                     "--unixsocket", self.socket_path, "--databases", "16"]
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        log = open(self.directory / "redis.log", "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host=self.host, port=self.port)
        wait_for(lambda: _pings(client), 10, f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        """Stop the server and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, db: int) -> str:
        """The URL of database ``db`` on this server."""
        return f"redis://{self.host}:{self.port}/{db}"


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (never the machine's shared one)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[int]:
    """A database number reserved for this test, flushed (flushdb, never flushall) before and after."""
    db = next(_DATABASES)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db)
    client.flushdb()
    yield db
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer, redis_db: int) -> str:
    """URL of this test's own database on the private server."""
    return redis_server.url(redis_db)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on this test's own database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def base_config(url: str, root: Path, **overrides: Any) -> dict[str, Any]:
    """A config for tests: light workers (no jwst preload or warm-up) unless overridden."""
    config: dict[str, Any] = {
        "redis_url": url,
        "transfer_dir": str(root / "transfer"),
        "working": str(root / "working"),
        "log_dir": str(root / "logs"),
        "preload": [],
        "warm_up": False,
        "actor_modules": ["tests.actors_for_tests"],
        "heartbeat_timeout_s": 10,
        "idle_poll_ms": 200,
    }
    config.update(overrides)
    return config


@pytest.fixture
def make_config(tmp_path: Path, redis_url: str) -> Callable[..., Path]:
    """Write a real config.json for this test and return its path; keyword arguments override keys."""
    counter = itertools.count()

    def make(**overrides: Any) -> Path:
        path = tmp_path / f"config{next(counter)}.json"
        path.write_text(json.dumps(base_config(redis_url, tmp_path, **overrides), indent=2))
        return path

    return make


@pytest.fixture
def broker(make_config: Callable[..., Path]):
    """The monitor side: the production broker built from this test's config."""
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config

    import tests.actors_for_tests  # noqa: F401  (declares the test actors)

    broker = setup_broker(load_config(make_config()))
    yield broker
    broker.close()


class Worker:
    """A real ``dramatiq jwql_dramatiq.actors -p1 -t1`` process group."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.log_path = log_path
        full_env = {**os.environ, "JWQL_DRAMATIQ_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.argv = [DRAMATIQ, "jwql_dramatiq.actors", "-p1", "-t1", "--path", str(REPO), *(extra_args or [])]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        """The dramatiq main process's pid."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker has printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_booted(self, timeout_s: float = 60) -> None:
        """Wait until the worker process says it is ready for action."""
        wait_for(lambda: "ready for action" in self.log() or self.proc.poll() is not None, timeout_s,
                 "the worker to boot")
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM the worker, wait, then SIGKILL its whole process group; always reaps."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start real workers for this test; every one is stopped and reaped at teardown."""
    workers: list[Worker] = []
    counter = itertools.count()

    def start(config_path: Path, wait: bool = True, **kwargs: Any) -> Worker:
        worker = Worker(config_path, tmp_path / f"worker{next(counter)}.log", **kwargs)
        workers.append(worker)
        if wait:
            worker.wait_booted()
        return worker

    yield start
    for worker in workers:
        worker.stop()
