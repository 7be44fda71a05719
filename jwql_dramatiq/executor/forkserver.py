"""The fork server: a preloaded, single-threaded process that forks one child per task slot.

It is forked from the Dramatiq worker process before any worker thread starts, imports the
heavy modules (jwst) once, optionally runs a warm-up job, calls ``gc.freeze()``, and then
only forks. Each child gets a fresh socketpair; the server passes the worker's end to the
worker with SCM_RIGHTS and keeps reaping children, reporting each exit status.

**One task, one process tree, killed as one.** Each child leads its own process group and,
where the host allows it, its own memory cgroup (:mod:`.cgroup`) holding the memory limit.
The server is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a task's orphaned descendants
(stcal's pool) become its children, so every process of a task is reaped here and nowhere
else. The server is therefore the only process that kills: a pid or process group it kills
cannot have been reaped and reused, because it has not reaped it yet. When a child exits, the
server first kills what is left of its group and cgroup (seen with ``WNOWAIT``, before the
child's pid is freed), then reaps it.

Control packets, server -> worker:
    ``("ready", warm_up_s, memory)``       preloading finished; ``memory`` is
                                           ``{"method", "reason"}`` (how task memory is limited)
    ``("child", pid, cgroup)`` + one fd    a new idle child, its cgroup (``(version, path)`` or None)
                                           and the worker's end of its task socket
    ``("exit", pid, status, info)``        a child was reaped; ``status`` is the raw wait status,
                                           ``info`` ``{"oom_kills", "peak_mib"}`` from its cgroup
Worker -> server:
    ``("spawn",)``                         fork one more child (ahead of need)
    ``("kill", pid, reason)``              SIGKILL that child's whole tree (group and cgroup)
The server exits, killing every child's tree, when the worker's end of the control socket closes.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from . import protocol
from . import task as task_api
from .cgroup import Cgroup, create_root
from .linux import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl

logger = logging.getLogger(__name__)

#: How often the server retries removing an exited child's cgroup while one is left, in seconds.
REAP_INTERVAL_S = 0.02
#: Longest the server sleeps with nothing to do, in seconds: a SIGCHLD or a control packet wakes it
#: at once, so this only bounds the cost of a wake-up that went missing.
IDLE_WAKE_S = 1.0


def preload(modules: list[str], warm_up: bool, work_dir: str) -> float:
    """Import ``modules``, run the pipeline warm-up if asked, and freeze the heap.

    Returns
    -------
    float
        Seconds spent.
    """
    start = time.monotonic()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            logger.warning("Could not preload %s: %s", name, e)
    if warm_up:
        try:
            from ..pipeline import warm_up as run_warm_up

            run_warm_up(os.path.join(work_dir, "warm-up"))
        except (Exception, SystemExit):  # a failed warm-up costs speed, not correctness
            logger.warning("Pipeline warm-up failed; tasks will pay the first-run cost:\n%s", traceback.format_exc())
    gc.collect()
    gc.freeze()  # forked children then do not dirty the parent's pages on every collection
    return time.monotonic() - start


def serve(control: socket.socket, modules: list[str], warm_up: bool, work_dir: str, max_tasks: int,
          memory_limit_mib: float = 0.0, memory_method: str = "auto") -> None:
    """Run the fork server until the worker goes away. Never returns.

    Parameters
    ----------
    control : socket.socket
        The server's end of the control channel.
    modules : list of str
        Modules to import before forking anything.
    warm_up : bool
        Whether to run one tiny pipeline job before freezing the heap.
    work_dir : str
        Scratch directory for the warm-up.
    max_tasks : int
        Tasks each child runs before exiting.
    memory_limit_mib : float
        Memory limit of each child's cgroup, in MiB; 0 for none (the cgroup still measures).
    memory_method : {"auto", "cgroup", "v2", "v1", "poll"}
        How task memory is limited: a cgroup where possible (``auto``), or polling only.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    server = _Server(control, max_tasks, memory_limit_mib)
    try:
        warm_up_s = preload(modules, warm_up, work_dir)
        server.wake_fds = _wake_on_child_exit()  # after the warm-up, which may start its own processes
        server.root, reason = create_root(f"jwql-dramatiq.{os.getpid()}", memory_method)
        method = server.root.method if server.root is not None else "poll-pss"
        if server.root is None:
            logger.warning("Task memory is measured by polling (PSS of each task's process tree): %s", reason)
        protocol.send_packet(control, ("ready", warm_up_s, {"method": method, "reason": reason}))
        wanted = 1  # fork ahead: one idle child is always waiting
        while True:
            while wanted > 0:
                server.fork_child()
                wanted -= 1
            # Sleep until a packet or a SIGCHLD (an idle server polling would cost every host's
            # worker a few ms of CPU a second, and delay each exit report by up to the poll).
            wake_fd = server.wake_fds[0]
            readable, _, _ = select.select([control, wake_fd], [], [],
                                           REAP_INTERVAL_S if server.unremoved else IDLE_WAKE_S)
            if wake_fd in readable:
                _drain_wake_fd(wake_fd)
            server.reap()
            if control in readable:
                packet = protocol.recv_packet(control)
                if packet is None:
                    break
                (kind, *rest), _fds = packet
                if kind == "spawn":
                    wanted += 1
                elif kind == "kill":
                    server.kill_tree(rest[0])
                    server.reap()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        server.shutdown()
        os._exit(0)


def _wake_on_child_exit() -> tuple[int, int]:
    """Have every SIGCHLD write a byte to a new pipe; return its (read, write) ends.

    The handler itself does nothing: ``signal.set_wakeup_fd`` writes the byte, so the server
    sleeps in ``select`` on the read end instead of polling for exited children.
    """
    read_fd, write_fd = os.pipe()  # close-on-exec, as every fd Python makes
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # a full pipe is still readable: no loss
    return read_fd, write_fd


def _drain_wake_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _forget_wake_fds(fds: tuple[int, int]) -> None:
    """In a new child: SIGCHLD back to its default and the server's pipe closed, so that the
    task's own subprocesses neither wake the server nor meet a handler the task did not set."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in fds:
        os.close(fd)


#: How long the server waits, when stopping, for its children's trees to die, in seconds.
SHUTDOWN_REAP_S = 2.0


class _Server:
    """The fork server's children, their cgroups, and the one place where they are killed and reaped."""

    def __init__(self, control: socket.socket, max_tasks: int, memory_limit_mib: float) -> None:
        self.control = control
        self.max_tasks = max_tasks
        self.memory_limit_mib = memory_limit_mib
        self.root: Cgroup | None = None
        self.children: dict[int, Cgroup | None] = {}
        self.unremoved: list[Cgroup] = []
        #: The SIGCHLD wake-up pipe (read end, write end), once set up (:func:`_wake_on_child_exit`).
        self.wake_fds: tuple[int, int] = (-1, -1)

    def fork_child(self) -> int:
        """Fork one child in its own process group (and cgroup), and hand its socket to the worker."""
        worker_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                if self.wake_fds[0] >= 0:
                    _forget_wake_fds(self.wake_fds)
                os.setpgid(0, 0)
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the server
                self.control.close()
                worker_end.close()
                code = run_child(child_end, self.max_tasks)
            finally:
                os._exit(code)
        child_end.close()
        try:
            os.setpgid(pid, pid)  # both sides set it: no instant where the child is in our group
        except OSError:
            pass
        cgroup = self._cgroup_for(pid)
        self.children[pid] = cgroup
        described = None if cgroup is None else (cgroup.version, str(cgroup.path))
        protocol.send_packet(self.control, ("child", pid, described), [worker_end.fileno()])
        worker_end.close()
        return pid

    def _cgroup_for(self, pid: int) -> Cgroup | None:
        if self.root is None:
            return None
        try:
            cgroup = self.root.child(f"child.{pid}")
            if self.memory_limit_mib > 0:
                cgroup.set_limit(self.memory_limit_mib)
            cgroup.add(pid)
            return cgroup
        except OSError as e:
            logger.warning("Could not give child %d its own memory cgroup (%s); its memory is polled", pid, e)
            return None

    def kill_tree(self, pid: int) -> None:
        """SIGKILL child ``pid``'s process group and cgroup, if the child is still ours (not reaped)."""
        if pid not in self.children:
            return  # already reaped: its tree was killed then, and the pid may be reused
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        cgroup = self.children[pid]
        if cgroup is not None:
            cgroup.kill()

    def reap(self) -> None:
        """Reap every exited process: for a task child, kill its leftovers first and report its end."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None or info.si_pid == 0:
                break
            pid = info.si_pid
            if pid in self.children:
                self.kill_tree(pid)  # the zombie still holds the pid: the group cannot be someone else's
            _, status = os.waitpid(pid, 0)
            if pid in self.children:
                cgroup = self.children.pop(pid)
                details: dict[str, float | int | None] = {"oom_kills": 0, "peak_mib": None}
                if cgroup is not None:
                    details = {"oom_kills": cgroup.oom_kills(), "peak_mib": cgroup.peak_mib()}
                    self.unremoved.append(cgroup)
                protocol.send_packet(self.control, ("exit", pid, status, details))
        self.unremoved = [c for c in self.unremoved if not c.remove()]

    def shutdown(self) -> None:
        """Kill every child's tree, reap them for a while, and remove the cgroups."""
        for pid in list(self.children):
            self.kill_tree(pid)
        deadline = time.monotonic() + SHUTDOWN_REAP_S
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.005)
            else:
                cgroup = self.children.pop(pid, None)
                if cgroup is not None:
                    self.unremoved.append(cgroup)
        for cgroup in self.unremoved:
            cgroup.remove()
        if self.root is not None:
            for leftover in self.root.path.glob("child.*"):
                Cgroup(self.root.version, leftover).kill()
                Cgroup(self.root.version, leftover).remove()
            self.root.remove()


class _TaskLogHandler(logging.Handler):
    """Sends the child's log records to the worker, which logs them with the task's context."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info))
            protocol.send_frame(self.sock, ("log", record.name, record.levelno, msg))
        except Exception:
            self.handleError(record)


def _set_current_message(context: dict[str, Any]) -> None:
    """Make ``CurrentMessage.get_current_message()`` work inside the child, as it does in-process.

    Through the middleware's public hook, as the worker's own thread does before each message
    (the hook does not use its broker argument; the broker is passed when there is one).
    """
    from dramatiq.message import Message
    from dramatiq.middleware import CurrentMessage

    from ..broker import current_broker

    CurrentMessage().before_process_message(current_broker(), Message(**context))


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB, shared pages included."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(sock: socket.socket, max_tasks: int) -> int:
    """Run up to ``max_tasks`` tasks sent over ``sock``, replying with each outcome.

    A task's outcome is ``("ok", value, stats)`` or ``("error", {"type", "msg", "traceback"}, stats)``,
    where ``stats`` holds ``elapsed_s`` and the child's ``peak_rss_mib`` so far;
    ``SystemExit`` and ``KeyboardInterrupt`` raised by library code are outcomes too, not exits.

    Returns
    -------
    int
        The exit code for the child.
    """
    import json

    from .. import registry
    from ..broker.results import describe_exception

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    log_handler = _TaskLogHandler(sock)
    root.addHandler(log_handler)
    sys.stdout.flush()
    done = 0
    while max_tasks <= 0 or done < max_tasks:
        request = protocol.recv_frame(sock)
        if request is None:
            return 0
        actor_name, args, kwargs, context = request
        started = time.monotonic()
        task_api.bind(sock, log_handler.lock, context)
        context = {k: v for k, v in context.items() if k != task_api.ATTEMPT_KEY}
        try:
            _set_current_message(context)
            value = registry.lookup(actor_name).fn(*args, **kwargs)
            json.dumps(value)  # the results backend stores JSON; fail here, with the task's name
            reply: tuple[Any, ...] = ("ok", value)
        except BaseException as e:  # noqa: B036 - SystemExit from CRDS must become a failure result
            reply = ("error", describe_exception(e))
        stats = {"elapsed_s": round(time.monotonic() - started, 4), "peak_rss_mib": _peak_rss_mib()}
        with log_handler.lock:  # a log line from another thread (a lock renewer) must not split the reply
            protocol.send_frame(sock, (*reply, stats))
        done += 1
    return 0
