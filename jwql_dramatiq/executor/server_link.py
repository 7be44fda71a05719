"""The worker's link to its fork server: the control channel, the idle children, the exit statuses.

:class:`ForkServerLink` forks the fork server (:mod:`.forkserver`) and reads its control packets on a
thread of its own: the idle children it forks ahead, and the exit status of each child it reaps. The
worker asks it, over the same channel, to fork another child or to kill one child's tree. It knows
nothing of tasks; :class:`~.supervisor.Executor` runs them in the children it hands out.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExecutorError
from . import protocol
from .cgroup import Cgroup
from .forkserver import serve

# supervisor.py's logger, as before this module was split from it, so that logging set up for it still applies
logger = logging.getLogger("jwql_dramatiq.executor.supervisor")

#: How long the fork server may take to exit once told to, in seconds, before it is killed.
SERVER_EXIT_WAIT_S = 5.0
#: How many children's exit statuses are remembered.
EXITS_KEPT = 256


@dataclass
class Child:
    """A child forked by the fork server: its pid, the worker's end of its task socket, its cgroup.

    ``tasks_done`` and ``reaped`` are the executor's: how many tasks it has run, and whether its exit
    status has been taken (its tree is then dead).
    """

    pid: int
    sock: socket.socket
    cgroup: Cgroup | None = None
    tasks_done: int = 0
    reaped: bool = False


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


class ForkServerLink:
    """The fork server, seen from the worker: start it, take its idle children, ask it to spawn and kill.

    The public attributes are single values, read without the lock; the control thread writes most of them.
    """

    def __init__(self) -> None:
        #: The fork server's pid while it runs (None before :meth:`start` and after :meth:`close`).
        self.server_pid: int | None = None
        #: Children the fork server has forked so far.
        self.children_started = 0
        #: How task memory is limited and measured, once the fork server is ready (see :mod:`.memory`).
        self.memory_method = ""
        #: Why no cgroup is used, when polling ("" with a cgroup).
        self.memory_method_reason = ""
        self._memory_limit_mib = 0.0  # for the "ready" log line
        self._control: socket.socket | None = None
        self._idle: deque[Child] = deque()
        self._exits: dict[int, tuple[int, dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._ready = False
        self._closed = False

    def start(self, *, preload_modules: list[str], warm_up: bool, work_dir: str, max_tasks_per_child: int,
              memory_limit_mib: float, memory_method: str) -> None:
        """Fork the fork server and start reading its control channel.

        Call while the process is still single-threaded. The parameters are the fork server's
        (:func:`.forkserver.serve`): see :class:`~.supervisor.Executor`.
        """
        self._memory_limit_mib = memory_limit_mib
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                serve(theirs, preload_modules, warm_up, work_dir, max_tasks_per_child, memory_limit_mib,
                      memory_method)
            finally:
                os._exit(1)
        theirs.close()
        self.server_pid, self._control = pid, ours
        threading.Thread(target=self._read_control, name="executor-control", daemon=True).start()

    def close(self) -> None:
        """Stop the fork server (which kills its children's trees) and reap it. Safe to call twice."""
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
                    os.kill(server_pid, signal.SIGKILL)  # our own child, not yet reaped: its pid is ours
                    os.waitpid(server_pid, 0)
                    break
                time.sleep(0.01)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the fork server has preloaded and its first child is idle; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (self._ready and self._idle) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._ready

    def take_child(self) -> Child:
        """Take an idle child, waiting for one.

        Raises
        ------
        ExecutorError
            The fork server has stopped (or the link is closed).
        """
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise ExecutorError("the fork server has stopped; no child can run the task")
                self._cond.wait(1.0)
            return self._idle.popleft()

    def put_back(self, child: Child) -> None:
        """Return a child that finished a task to the idle ones, first in line."""
        with self._cond:
            self._idle.appendleft(child)

    def spawn(self) -> None:
        """Ask the fork server to fork one more idle child.

        Raises
        ------
        ExecutorError
            The link is closed.
        """
        self._send_control(("spawn",))

    def kill(self, pid: int, reason: str) -> None:
        """Ask the fork server, which reaps the child, to kill its whole tree."""
        try:
            self._send_control(("kill", pid, reason))
        except (ExecutorError, OSError):
            pass  # the server is gone or going: it kills every child's tree as it exits

    def exit_status(self, pid: int, timeout_s: float) -> tuple[int | None, dict[str, Any]]:
        """Wait for the fork server to report that a child was reaped.

        Returns
        -------
        tuple
            The raw wait status (None if not reported within ``timeout_s`` or if the link closed) and
            the details from its cgroup (``oom_kills``, ``peak_mib``; empty when unknown).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while pid not in self._exits and time.monotonic() < deadline and not self._closed:
                self._cond.wait(0.05)
            return self._exits.pop(pid, (None, {}))

    def _send_control(self, packet: tuple) -> None:
        control = self._control
        if control is None:
            raise ExecutorError("the executor is closed")
        protocol.send_packet(control, packet)

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
                    self.memory_method = rest[1]["method"]
                    self.memory_method_reason = rest[1]["reason"]
                    logger.info("Fork server %s ready: preload and warm-up took %.2f s; task memory %s by %s%s.",
                                self.server_pid, rest[0], "limited to %g MiB per task" % self._memory_limit_mib
                                if self._memory_limit_mib > 0 else "measured", self.memory_method,
                                f" ({self.memory_method_reason})" if self.memory_method_reason else "")
                elif kind == "child":
                    self.children_started += 1
                    cgroup = None if rest[1] is None else Cgroup(rest[1][0], Path(rest[1][1]))
                    self._idle.append(Child(rest[0], socket.socket(fileno=fds[0]), cgroup))
                elif kind == "exit":
                    self._exits[rest[0]] = (rest[1], rest[2])
                    while len(self._exits) > EXITS_KEPT:  # normal retirements are never asked about
                        del self._exits[next(iter(self._exits))]
                self._cond.notify_all()
