"""Shared fixtures: a private redis-server, one flushed database per test, real config files,
and real worker processes started through the ``dramatiq`` command line and always reaped.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from jwql_dramatiq.embedded import RedisServer, WorkerProcess, free_port  # noqa: F401 (free_port: for tests)

REPO = Path(__file__).resolve().parent.parent

# Database 0 is left alone; tests cycle through 1-15, each flushed before and after use.
_DATABASES = itertools.cycle(range(1, 16))


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (never the machine's shared one)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on the PATH: run the tests through ./dev test, which installs it")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
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


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real workers for this test; every one is stopped and reaped at teardown."""
    workers: list[WorkerProcess] = []
    counter = itertools.count()

    def start(config_path: Path, wait: bool = True, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(config_path, tmp_path / f"worker{next(counter)}.log", cwd=REPO, **kwargs)
        workers.append(worker)
        if wait and not worker.wait_booted(60):
            pytest.fail(f"the worker did not boot (exit code {worker.proc.poll()}):\n{worker.log()}")
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start dashboards (``jwql-dramatiq web`` subprocesses) for this test; each is stopped and reaped."""
    from tests._web import WebServer

    servers: list[WebServer] = []

    def start(config: Path, token: str | None = None) -> WebServer:
        server = WebServer(config, tmp_path / f"web{len(servers)}.log", token)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
