"""The worker's side of the fresh-process executor.

:class:`Executor` starts the fork server, keeps the idle child it forks ahead, and runs each
task in a child: it sends the call, relays the child's log lines, and enforces the hard
limits from outside the child while it waits. Waiting is a ``select`` on the child's socket,
so the worker holds no GIL while a task runs and its heartbeats go on whatever the child does
(Dramatiq issue #692).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import ChildDied, ExecutorError, MemoryLimitExceeded, TaskRevoked, TimeLimitExceeded
from ..results import TaskResultFailure
from . import protocol
from .forkserver import serve

logger = logging.getLogger(__name__)

#: How often the worker checks the running child's clock and memory, in seconds.
CHECK_INTERVAL_S = 0.05
#: How long to wait for the fork server to report a dead child's exit status, in seconds.
EXIT_STATUS_WAIT_S = 2.0
#: How long the fork server may take to exit once told to, in seconds, before it is killed.
SERVER_EXIT_WAIT_S = 5.0
#: How many children's exit statuses are remembered.
EXITS_KEPT = 256


@dataclass
class _Child:
    pid: int
    sock: socket.socket
    tasks_done: int = 0


def describe_status(status: int | None) -> str:
    """Say in words how a process ended, from its raw wait status."""
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def rss_mib(pid: int) -> float:
    """Return the resident set size of ``pid`` in MiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class Executor:
    """Runs tasks in children forked from a preloaded fork server.

    Parameters
    ----------
    max_tasks_per_child : int
        Tasks a child runs before it is replaced (at least 1).
    time_limit_for : callable
        ``time_limit_for(actor_name) -> seconds``.
    memory_limit_mib : float
        Resident-memory limit per child; 0 for none.
    preload_modules : list of str
        Modules the fork server imports once.
    warm_up : bool
        Whether the fork server runs one tiny pipeline job before freezing its heap.
    work_dir : str
        Scratch directory for the warm-up.
    """

    def __init__(self, *, max_tasks_per_child: int, time_limit_for, memory_limit_mib: float = 0.0,
                 preload_modules: list[str] | None = None, warm_up: bool = False, work_dir: str = "/tmp") -> None:
        self.max_tasks_per_child = max(1, max_tasks_per_child)
        self.time_limit_for = time_limit_for
        self.memory_limit_mib = memory_limit_mib
        self.preload_modules = preload_modules or []
        self.warm_up = warm_up
        self.work_dir = work_dir
        self.server_pid: int | None = None
        self.children_started = 0
        self.tasks_run = 0
        self._control: socket.socket | None = None
        self._idle: deque[_Child] = deque()
        self._exits: dict[int, int] = {}
        self._cond = threading.Condition()
        self._ready = False
        self._closed = False
        self._current: _Child | None = None
        self._kill_reason: str | None = None
        #: ``{"elapsed_s", "peak_rss_mib"}`` of the last task that replied.
        self.last_stats: dict[str, float] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Fork the fork server. Call while the process is still single-threaded."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                serve(theirs, self.preload_modules, self.warm_up, self.work_dir, self.max_tasks_per_child)
            finally:
                os._exit(1)
        theirs.close()
        self.server_pid, self._control = pid, ours
        threading.Thread(target=self._read_control, name="executor-control", daemon=True).start()

    def close(self) -> None:
        """Stop the fork server (which kills its children) and reap it. Safe to call twice."""
        with self._cond:
            self._closed = True
            for child in self._idle:
                child.sock.close()
            self._idle.clear()
            self._cond.notify_all()
            control, self._control = self._control, None
            server_pid, self.server_pid = self.server_pid, None
        if control is not None:
            try:
                control.shutdown(socket.SHUT_RDWR)  # the server reads end-of-stream and exits
            except OSError:
                pass
            control.close()
        if server_pid is not None:
            deadline = time.monotonic() + SERVER_EXIT_WAIT_S
            while os.waitpid(server_pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(server_pid, signal.SIGKILL)
                    os.waitpid(server_pid, 0)
                    break
                time.sleep(0.01)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the fork server has preloaded and its first child is idle."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (self._ready and self._idle) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._ready

    def kill_current(self, reason: str = "killed") -> int | None:
        """SIGKILL the child running a task now, if any, and return its pid.

        Parameters
        ----------
        reason : str
            ``"revoked"`` makes the task fail with :class:`~jwql_dramatiq.errors.TaskRevoked`.
        """
        child = self._current
        if child is None:
            return None
        self._kill_reason = reason
        self._kill(child)
        return child.pid

    def stop_now(self) -> None:
        """Kill the running child and stop the fork server, for an immediate shutdown.

        The thread waiting on the killed child then never reports a result: the message was put
        back on the queue and the process is about to exit.
        """
        self._kill_reason = "stop_now"
        self.kill_current("stop_now")
        self.close()

    def _read_control(self) -> None:
        control = self._control
        assert control is not None
        while True:
            try:
                packet = protocol.recv_packet(control)
            except OSError:
                packet = None
            with self._cond:
                if packet is None:
                    if not self._closed:
                        logger.critical("The fork server (PID %s) has gone away.", self.server_pid)
                    self._closed = True
                    self._cond.notify_all()
                    return
                (kind, *rest), fds = packet
                if kind == "ready":
                    self._ready = True
                    logger.info("Fork server %s ready: preload and warm-up took %.2f s.", self.server_pid, rest[0])
                elif kind == "child":
                    self.children_started += 1
                    self._idle.append(_Child(rest[0], socket.socket(fileno=fds[0])))
                elif kind == "exit":
                    self._exits[rest[0]] = rest[1]
                    while len(self._exits) > EXITS_KEPT:  # normal retirements are never asked about
                        del self._exits[next(iter(self._exits))]
                self._cond.notify_all()

    def _request_child(self) -> None:
        control = self._control
        if control is None:
            raise ExecutorError("the executor is closed")
        protocol.send_packet(control, ("spawn",))

    def _take_child(self) -> _Child:
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise ExecutorError("the fork server has stopped; no child can run the task")
                self._cond.wait(1.0)
            return self._idle.popleft()

    def _exit_status(self, pid: int) -> int | None:
        deadline = time.monotonic() + EXIT_STATUS_WAIT_S
        with self._cond:
            while pid not in self._exits and time.monotonic() < deadline and not self._closed:
                self._cond.wait(0.05)
            return self._exits.pop(pid, None)

    # -- running tasks ------------------------------------------------------------------------

    def run(self, actor_name: str, args: tuple, kwargs: dict, context: dict[str, Any]) -> Any:
        """Run one task in a child and return its value.

        Raises
        ------
        TaskResultFailure
            The task raised; carries the original type, message and traceback.
        TimeLimitExceeded, MemoryLimitExceeded
            The child was killed for going past a limit.
        ChildDied
            The child died (signal or exit code) before replying.
        """
        child = self._take_child()
        last_task = child.tasks_done + 1 >= self.max_tasks_per_child
        if last_task:
            self._request_child()  # fork the replacement while this task runs
        self._current, self._kill_reason = child, None
        try:
            protocol.send_frame(child.sock, (actor_name, args, kwargs, context))
            reply = self._wait_reply(child, actor_name, context.get("message_id"))
        except BaseException:
            self._discard(child, replace=not last_task)
            raise
        finally:
            self._current = None
            self.tasks_run += 1
        child.tasks_done += 1
        if last_task:
            child.sock.close()  # the child sees end of stream and exits
        else:
            with self._cond:
                self._idle.appendleft(child)
        kind, payload, self.last_stats = reply
        logger.info("Task %s (%s) finished in child %d: %.3f s, peak RSS %.1f MiB.", context.get("message_id"),
                    actor_name, child.pid, self.last_stats["elapsed_s"], self.last_stats["peak_rss_mib"])
        if kind == "ok":
            return payload
        raise TaskResultFailure(payload["type"], payload["msg"], payload["traceback"], context.get("message_id"))

    def _discard(self, child: _Child, replace: bool) -> None:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.sock.close()
        if replace:
            self._request_child()

    def _wait_reply(self, child: _Child, actor_name: str, message_id: str | None) -> tuple[str, Any]:
        limit_s = self.time_limit_for(actor_name)
        started = time.monotonic()
        task_logger = logging.getLogger(f"jwql_dramatiq.task.{actor_name}")
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= limit_s:
                self._kill(child)
                raise TimeLimitExceeded(
                    f"{actor_name} ({message_id}) ran past its time limit of {limit_s:g} s "
                    f"and was killed after {elapsed:.2f} s")
            if self.memory_limit_mib > 0:
                rss = rss_mib(child.pid)
                if rss > self.memory_limit_mib:
                    self._kill(child)
                    raise MemoryLimitExceeded(
                        f"{actor_name} ({message_id}) reached {rss:.1f} MiB resident, past its memory limit "
                        f"of {self.memory_limit_mib:g} MiB, and was killed")
            readable, _, _ = select.select([child.sock], [], [], min(CHECK_INTERVAL_S, limit_s - elapsed))
            if not readable:
                continue
            frame = protocol.recv_frame(child.sock)
            if frame is None:
                if self._kill_reason == "stop_now":
                    threading.Event().wait()  # the process exits under us; report nothing
                if self._kill_reason == "revoked":
                    raise TaskRevoked(f"task {message_id} ({actor_name}) was revoked and its child "
                                      f"(PID {child.pid}) killed")
                status = self._exit_status(child.pid)
                raise ChildDied(f"the child (PID {child.pid}) running {actor_name} ({message_id}) "
                                f"{describe_status(status)} before returning a result")
            if frame[0] == "log":
                _, name, level, text = frame
                task_logger.log(level, "[%s] [%s] [%s] %s", message_id, actor_name, name, text)
                continue
            return frame

    def _kill(self, child: _Child) -> None:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
