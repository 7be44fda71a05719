"""Fixtures of the fault suite: a recorder for the measured figures, and helpers to kill workers.

Every test here is marked ``faults`` and has its own timeout. Figures go to the JSON file named
by ``$JWQL_DRAMATIQ_FAULT_REPORT`` (one object per test, appended) and are printed as
``FAULT-FIGURES {...}`` lines (shown with ``-s``); ``python -m tests.faults.report FILE`` turns
the file into the table of ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import redis

from jwql_dramatiq.embedded import WorkerProcess, kill_process_group

#: Environment variable naming the JSON-lines file the figures are appended to.
REPORT_ENV = "JWQL_DRAMATIQ_FAULT_REPORT"

#: Settings that make dead-worker recovery fast and bounded in tests (seconds).
FAST_RECOVERY = {"heartbeat_timeout_s": 2, "sweep_interval_s": 0.5, "idle_poll_ms": 100, "maintenance_chance": 0,
                 "lock_lease_s": 2}


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """``record_figures(**figures)``: print and append this test's measured figures."""

    def record(**figures: Any) -> dict[str, Any]:
        entry = {"test": request.node.name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
        line = json.dumps(entry, sort_keys=True, default=str)
        print(f"FAULT-FIGURES {line}")
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return entry

    return record


def kill_group(worker: WorkerProcess) -> None:
    """``kill -9`` a worker's whole process group (the dramatiq main process, its worker
    process, the fork server and any task child), and reap the main process."""
    kill_process_group(worker.proc)


def owner_of(pid: int, workers: Iterable[WorkerProcess]) -> WorkerProcess | None:
    """The worker whose process group holds ``pid`` (a Dramatiq worker process), if any."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return next((w for w in workers if w.proc.pid == group), None)


def task_hash(client: redis.Redis, namespace: str, message_id: str) -> dict[str, str]:
    """The task-state hash of a message (empty if none)."""
    return {k.decode(): v.decode() for k, v in client.hgetall(f"{namespace}:task:{message_id}").items()}


def queue_leftovers(client: redis.Redis, namespace: str, queue: str = "jwql") -> dict[str, int]:
    """How many ids wait in the queue and its delay queue, payloads are kept, and ids sit in ack sets."""
    acks = 0
    for key in client.scan_iter(match=f"{namespace}:__acks__.*", count=500):
        acks += client.scard(key)
    return {"queued": client.llen(f"{namespace}:{queue}") + client.llen(f"{namespace}:{queue}.DQ"),
            "payloads": client.hlen(f"{namespace}:{queue}.msgs") + client.hlen(f"{namespace}:{queue}.DQ.msgs"),
            "unacked": acks}


def products_in(directory: Path, suffix: str = ".out") -> list[Path]:
    """The visible products in ``directory`` (temporary dot-files left out)."""
    return sorted(p for p in directory.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))


class Agent:
    """A monitor process (:mod:`tests.faults.agent`) and a way to call it, with a bound on every call.

    Parameters
    ----------
    config_path : Path
        The monitor's config file.
    log_path : Path
        Where its stderr (logs) go.
    prefix : list of str, optional
        Command words before the Python interpreter, e.g. ``["ip", "netns", "exec", ns]``.
    env : dict, optional
        Extra environment variables.
    """

    def __init__(self, config_path: Path, log_path: Path, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        from tests.conftest import REPO

        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "tests.faults.agent", str(config_path)],
                                     cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True)
        self._next_id = 1
        self._buffer = b""
        ready = self._read_reply(0, 60)
        if not ready.get("ok"):
            raise RuntimeError(f"the agent did not start: {ready}\n{log_path.read_text(errors='replace')}")

    def _read_reply(self, request_id: int, timeout_s: float) -> dict[str, Any]:
        import select

        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                reply = json.loads(line)
                if reply.get("id") == request_id:
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the agent did not answer request {request_id} within {timeout_s} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the agent exited (code {self.proc.poll()}):\n"
                                       f"{self.log_path.read_text(errors='replace')[-3000:]}")
                self._buffer += chunk

    def request(self, cmd: str, timeout_s: float = 30, **arguments: Any) -> dict[str, Any]:
        """Send one request and return the whole reply (``ok``, ``value`` or ``type``/``error``)."""
        request_id, self._next_id = self._next_id, self._next_id + 1
        self.proc.stdin.write((json.dumps({"id": request_id, "cmd": cmd, **arguments}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read_reply(request_id, timeout_s)

    def call(self, cmd: str, timeout_s: float = 30, **arguments: Any) -> Any:
        """Send one request and return its value; raise AssertionError on an error reply."""
        reply = self.request(cmd, timeout_s, **arguments)
        if not reply["ok"]:
            raise AssertionError(f"agent {cmd} failed: {reply['type']}: {reply['error']}\n{reply.get('traceback')}")
        return reply["value"]

    def stop(self) -> None:
        """End the agent (and its process group) and reap it."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, ValueError, Exception):  # noqa: BLE001 - it is being killed anyway
                pass
        kill_process_group(self.proc)
        self._log.close()


@pytest.fixture
def start_agent(tmp_path: Path):
    """Start monitor agents for this test; every one is stopped at teardown."""
    import itertools

    agents: list[Agent] = []
    counter = itertools.count()

    def start(config_path: Path, **kwargs: Any) -> Agent:
        agent = Agent(config_path, tmp_path / f"agent{next(counter)}.log", **kwargs)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
