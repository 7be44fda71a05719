"""The fork server: a preloaded, single-threaded process that forks one child per task slot.

It is forked from the Dramatiq worker process before any worker thread starts, imports the
heavy modules (jwst) once, optionally runs a warm-up job, calls ``gc.freeze()``, and then
only forks. Each child gets a fresh socketpair; the server passes the worker's end to the
worker with SCM_RIGHTS and keeps reaping children, reporting each exit status.

Control packets, server -> worker:
    ``("ready", warm_up_s)``       preloading finished
    ``("child", pid)`` + one fd     a new idle child and the worker's end of its task socket
    ``("exit", pid, status)``       a child was reaped; ``status`` is the raw wait status
Worker -> server:
    ``("spawn",)``                  fork one more child (ahead of need)
The server exits, killing its children, when the worker's end of the control socket closes.
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

logger = logging.getLogger(__name__)

#: How often the server reaps children when nothing else wakes it, in seconds.
REAP_INTERVAL_S = 0.02


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


def serve(control: socket.socket, modules: list[str], warm_up: bool, work_dir: str, max_tasks: int) -> None:
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
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    children: set[int] = set()
    try:
        warm_up_s = preload(modules, warm_up, work_dir)
        protocol.send_packet(control, ("ready", warm_up_s))
        wanted = 1  # fork ahead: one idle child is always waiting
        while True:
            while wanted > 0:
                children.add(_fork_child(control, max_tasks))
                wanted -= 1
            readable, _, _ = select.select([control], [], [], REAP_INTERVAL_S)
            _reap(control, children)
            if readable:
                packet = protocol.recv_packet(control)
                if packet is None:
                    break
                if packet[0][0] == "spawn":
                    wanted += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)


def _reap(control: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        protocol.send_packet(control, ("exit", pid, status))


def _fork_child(control: socket.socket, max_tasks: int) -> int:
    worker_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            control.close()
            worker_end.close()
            code = run_child(child_end, max_tasks)
        finally:
            os._exit(code)
    child_end.close()
    protocol.send_packet(control, ("child", pid), [worker_end.fileno()])
    worker_end.close()
    return pid


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
    """Make ``CurrentMessage.get_current_message()`` work inside the child, as it does in-process."""
    from dramatiq.message import Message
    from dramatiq.middleware import CurrentMessage

    message = Message(**context)
    CurrentMessage._MESSAGE.set(message)


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
    from ..results import describe_exception

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
