"""A private Redis and real worker processes, for the demo, the tests and the benchmarks.

:class:`RedisServer` runs ``redis-server`` on a free loopback port (never the machine's shared
6379) and :class:`WorkerProcess` runs ``dramatiq jwql_dramatiq.actors -p1 -t1`` in its own
process group, so stopping it reaps the fork server and every task child too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import redis

from .errors import JwqlDramatiqError


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Call ``predicate`` until it is truthy or ``timeout_s`` passes; return whether it became truthy."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (it leads one) and reap ``proc``; nothing if it is gone already."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


class RedisServer:
    """A private ``redis-server`` on a free loopback port and a unix socket.

    Parameters
    ----------
    directory : Path
        Where its socket, log and (with ``appendonly``) data go.
    appendonly : bool
        Turn on AOF persistence, so a restart keeps the queues.
    port : int, optional
        Defaults to a free port.
    """

    def __init__(self, directory: Path, appendonly: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise JwqlDramatiqError("redis-server is not on the PATH (./dev installs it; see the README)")
        directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.directory = directory
        self.socket_path = str(directory / "redis.sock")
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
                     "--dir", str(directory), "--unixsocket", self.socket_path, "--databases", "16"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10) -> "RedisServer":
        """Start (or restart) the server and wait until it answers."""
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host=self.host, port=self.port)
        try:
            if not poll_until(lambda: _answers(client), timeout_s):
                self.stop()
                raise JwqlDramatiqError(f"redis-server did not start on port {self.port}; see {self.directory}/redis.log")
        finally:
            client.close()
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, db: int = 0) -> str:
        """The URL of database ``db`` on this server."""
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A new client on database ``db`` of this server."""
        return redis.Redis(host=self.host, port=self.port, db=db)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class WorkerProcess:
    """A real ``dramatiq jwql_dramatiq.actors -p1 -t1`` process group.

    Parameters
    ----------
    config_path : Path
        Passed as ``$JWQL_DRAMATIQ_CONFIG``.
    log_path : Path
        The worker's combined output.
    cwd : Path, optional
        Working directory (also put on the import path with ``--path``).
    env : dict, optional
        Extra environment variables.
    """

    def __init__(self, config_path: Path, log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None) -> None:
        self.log_path = log_path
        cwd = cwd or Path.cwd()
        full_env = {**os.environ, "JWQL_DRAMATIQ_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1", **(env or {})}
        dramatiq = str(Path(sys.executable).with_name("dramatiq"))
        self.argv = [dramatiq, "jwql_dramatiq.actors", "-p1", "-t1", "--path", str(cwd), *(extra_args or [])]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        """The dramatiq main process's pid."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker has printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_booted(self, timeout_s: float = 120) -> bool:
        """Wait until the worker says it is ready for action; False if it exited or timed out."""
        poll_until(lambda: "ready for action" in self.log() or self.proc.poll() is not None, timeout_s, 0.05)
        return self.proc.poll() is None and "ready for action" in self.log()

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM the worker, wait up to ``timeout_s``, then SIGKILL its process group; always reaps."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        kill_process_group(self.proc)
        self._log.close()
        return self.proc.returncode
