"""The worker's side of the fresh-process executor.

:class:`Executor` runs each task in a child forked from the fork server: it sends the call,
relays the child's log lines, and enforces the hard limits from outside the child while it
waits: the time limit, and the memory limit of the child's whole process tree (its cgroup's,
or the sum of its processes' PSS; see :mod:`.memory`). Every kill is asked of the fork server,
which reaps the child and so is the only process that may kill it (:mod:`.forkserver`); the
control channel to it, the idle children it forks ahead and their exit statuses are held by
:class:`~.server_link.ForkServerLink`. Waiting is a ``select`` on the child's socket, so the
worker holds no GIL while a task runs and its heartbeats go on whatever the child does
(Dramatiq issue #692).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from typing import Any, Callable, NoReturn

from ..broker.results import TaskResultFailure
from ..errors import ChildDied, ExecutorError, MemoryLimitExceeded, TaskRevoked, TimeLimitExceeded
from . import protocol
from .attempts import Attempt, MemoryKill, memory_failure_text, release_locks, remove_tracked, retry_cores
from .memory import TreeMemory, rss_mib
from .server_link import Child, ForkServerLink, describe_status
from .task import ATTEMPT_KEY

logger = logging.getLogger(__name__)

#: How often the worker checks the running child's clock and memory, in seconds.
CHECK_INTERVAL_S = 0.05
#: How long to wait for the fork server to report a dead child's exit status, in seconds; also how
#: long to read what a killed child sent before it died.
EXIT_STATUS_WAIT_S = 2.0


class Executor:
    """Runs tasks in children forked from a preloaded fork server.

    Parameters
    ----------
    max_tasks_per_child : int
        Tasks a child runs before it is replaced (at least 1).
    time_limit_for : callable
        ``time_limit_for(actor_name) -> seconds``, for all of a task's attempts together.
    memory_limit_mib : float
        Memory limit per task, for its whole process tree, in MiB; 0 for none.
    preload_modules : list of str
        Modules the fork server imports once.
    warm_up : bool
        Whether the fork server runs one tiny pipeline job before freezing its heap.
    work_dir : str
        Scratch directory for the warm-up.
    memory_method : {"auto", "cgroup", "v2", "v1", "poll"}
        How task memory is limited and measured: a cgroup per child where the host allows one
        (``auto``), or polling the tree's PSS (``poll``).
    on_progress : callable, optional
        ``on_progress(message_id, fields, final)``: called as attempts end, and as they start from
        the second on (a first attempt is what "running" already says), with the fields
        ``attempt``, ``max_cores``, ``memory_peak_mib``, ``memory_method`` and ``attempts`` (for
        the task's recorded state). ``final`` is True for the last call of a task, after its
        last attempt, when the fields can wait for the task's final state (one round trip fewer).
        Errors it raises are logged and ignored.
    """

    def __init__(self, *, max_tasks_per_child: int, time_limit_for, memory_limit_mib: float = 0.0,
                 preload_modules: list[str] | None = None, warm_up: bool = False, work_dir: str = "/tmp",
                 memory_method: str = "auto",
                 on_progress: Callable[[str, dict[str, Any], bool], None] | None = None) -> None:
        self.max_tasks_per_child = max(1, max_tasks_per_child)
        self.time_limit_for = time_limit_for
        self.memory_limit_mib = memory_limit_mib
        self.preload_modules = preload_modules or []
        self.warm_up = warm_up
        self.work_dir = work_dir
        self.requested_memory_method = memory_method
        self.on_progress = on_progress
        self.tasks_run = 0
        self._server = ForkServerLink()
        self._current: Child | None = None
        self._kill_reason: str | None = None
        self._attempt_over = threading.Event()
        self._attempt_over.set()
        #: Stats of the last task that ended: ``elapsed_s``, ``peak_rss_mib`` (the child alone),
        #: ``memory_peak_mib`` (its whole tree), ``memory_method``, ``attempt``, ``max_cores``, ``attempts``.
        self.last_stats: dict[str, Any] = {}

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def server_pid(self) -> int | None:
        """The fork server's pid while it runs, else None."""
        return self._server.server_pid

    @property
    def children_started(self) -> int:
        """Children the fork server has forked so far."""
        return self._server.children_started

    @property
    def memory_method(self) -> str:
        """How task memory is limited and measured, once the fork server is ready (see :mod:`.memory`)."""
        return self._server.memory_method

    @property
    def memory_method_reason(self) -> str:
        """Why no cgroup is used, when polling ("" with a cgroup)."""
        return self._server.memory_method_reason

    def start(self) -> None:
        """Fork the fork server. Call while the process is still single-threaded."""
        self._server.start(preload_modules=self.preload_modules, warm_up=self.warm_up, work_dir=self.work_dir,
                           max_tasks_per_child=self.max_tasks_per_child, memory_limit_mib=self.memory_limit_mib,
                           memory_method=self.requested_memory_method)

    def close(self) -> None:
        """Stop the fork server (which kills its children's trees) and reap it. Safe to call twice."""
        self._server.close()

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the fork server has preloaded and its first child is idle."""
        return self._server.wait_ready(timeout_s)

    def fork_server_rss_mib(self) -> float:
        """The fork server's resident set in MiB (0 when it is not running): a /proc read, no Redis work."""
        return rss_mib(self.server_pid) if self.server_pid else 0.0

    def kill_current(self, reason: str = "killed") -> int | None:
        """Have the fork server SIGKILL the tree of the child running a task now, if any; return its pid.

        Parameters
        ----------
        reason : str
            ``"revoked"`` makes the task fail with :class:`~jwql_dramatiq.errors.TaskRevoked`.
        """
        child = self._current
        if child is None:
            return None
        self._kill_reason = reason
        self._server.kill(child.pid, reason)
        return child.pid

    def stop_now(self) -> None:
        """Kill the running child's tree and stop the fork server, for an immediate shutdown.

        Returns once the task's announced directories are removed (or after
        :data:`EXIT_STATUS_WAIT_S`). The thread waiting on the killed child then never reports a
        result: the message is put back on the queue and the process is about to exit.
        """
        self._kill_reason = "stop_now"
        self.kill_current("stop_now")
        self.close()
        self._attempt_over.wait(EXIT_STATUS_WAIT_S)

    # -- running tasks ------------------------------------------------------------------------

    def run(self, actor_name: str, args: tuple, kwargs: dict, context: dict[str, Any]) -> Any:
        """Run one task in a child, again with fewer cores after a memory kill, and return its value.

        Raises
        ------
        TaskResultFailure
            The task raised; carries the original type, message and traceback.
        TimeLimitExceeded
            The child's tree was killed for going past the time limit.
        MemoryLimitExceeded
            Every attempt was killed for memory (see :mod:`.attempts`).
        ChildDied
            The child died (signal or exit code) before replying, for a reason other than memory.
        """
        message_id = context.get("message_id")
        deadline = time.monotonic() + self.time_limit_for(actor_name)
        attempts: list[Attempt] = []
        cores: str | None = None
        while True:
            attempt = Attempt(len(attempts) + 1, max_cores=cores)
            attempts.append(attempt)
            if attempt.attempt > 1:  # shown live: a retry with fewer cores
                self._progress(message_id, final=False, attempt=attempt.attempt, max_cores=cores or "")
            try:
                kind, payload, stats = self._run_attempt(actor_name, args, kwargs, context, deadline, attempt)
            except MemoryKill as kill:
                attempt.outcome = f"killed by {kill.by}"
                self._record(message_id, attempts, {"elapsed_s": None, "peak_rss_mib": None}, final=False)
                cores = retry_cores(attempt)
                if cores is None or time.monotonic() >= deadline:
                    raise MemoryLimitExceeded(memory_failure_text(actor_name, message_id, self.memory_limit_mib,
                                                                  attempts)) from None
                logger.warning("Task %s (%s) %s; running it again in a fresh child with maximum_cores=%s.",
                               message_id, actor_name, attempt.words(), cores)
                continue
            attempt.outcome = kind
            self._record(message_id, attempts, stats, final=True)
            logger.info("Task %s (%s) finished in child %d: %.3f s, peak %.1f MiB for its process tree (%s), "
                        "attempt %d.", message_id, actor_name, attempt.pid, stats["elapsed_s"],
                        attempt.memory_peak_mib, attempt.memory_method, attempt.attempt)
            if kind == "ok":
                return payload
            raise TaskResultFailure(payload["type"], payload["msg"], payload["traceback"], message_id)

    def _record(self, message_id: str | None, attempts: list[Attempt], stats: dict[str, Any], final: bool) -> None:
        last = attempts[-1]
        self.last_stats = {**stats, "memory_peak_mib": round(last.memory_peak_mib, 1),
                           "memory_method": last.memory_method, "attempt": last.attempt,
                           "max_cores": last.max_cores, "attempts": [a.summary() for a in attempts]}
        self._progress(message_id, final=final, attempt=last.attempt, max_cores=last.max_cores or "",
                       memory_peak_mib=round(max(a.memory_peak_mib for a in attempts), 1),
                       memory_method=last.memory_method, attempts=[a.summary() for a in attempts])

    def _progress(self, message_id: str | None, *, final: bool, **fields: Any) -> None:
        if self.on_progress is None or message_id is None:
            return
        try:
            self.on_progress(message_id, fields, final)
        except Exception:
            logger.exception("Could not record the progress of task %s", message_id)

    def _run_attempt(self, actor_name: str, args: tuple, kwargs: dict, context: dict[str, Any], deadline: float,
                     attempt: Attempt) -> tuple[str, Any, dict[str, Any]]:
        child = self._server.take_child()
        attempt.pid = child.pid
        last_task = child.tasks_done + 1 >= self.max_tasks_per_child
        if last_task:
            self._server.spawn()  # fork the replacement while this task runs
        self._current, self._kill_reason = child, None
        self._attempt_over.clear()
        memory = TreeMemory(child.pid, child.cgroup)
        attempt.memory_method = memory.method
        context = {**context, ATTEMPT_KEY: {"attempt": attempt.attempt, "max_cores": attempt.max_cores}}
        try:
            protocol.send_frame(child.sock, (actor_name, args, kwargs, context))
            reply = self._wait_reply(child, actor_name, context.get("message_id"), deadline, memory, attempt)
        except BaseException as e:
            self._discard(child, replace=not last_task)
            if not child.reaped:
                self._server.exit_status(child.pid, EXIT_STATUS_WAIT_S)  # the tree is dead once its leader is reaped
            remove_tracked(attempt)
            release_locks(attempt)
            self._attempt_over.set()
            if isinstance(e, _StopNow):
                threading.Event().wait()  # the process exits under us; report nothing
            raise
        finally:
            self._current = None
            self.tasks_run += 1
        child.tasks_done += 1
        if last_task:
            child.sock.close()  # the child sees end of stream and exits
        else:
            self._server.put_back(child)
        memory.sample()
        attempt.memory_peak_mib = memory.peak_mib
        remove_tracked(attempt)
        self._attempt_over.set()
        return reply

    def _discard(self, child: Child, replace: bool) -> None:
        self._server.kill(child.pid, "discarded")
        child.sock.close()
        if replace:
            try:
                self._server.spawn()
            except ExecutorError:
                pass

    def _wait_reply(self, child: Child, actor_name: str, message_id: str | None, deadline: float,
                    memory: TreeMemory, attempt: Attempt) -> tuple[str, Any, dict[str, Any]]:
        limit_s = self.time_limit_for(actor_name)
        started = deadline - limit_s  # the task's first attempt started then
        task_logger = logging.getLogger(f"jwql_dramatiq.task.{actor_name}")
        next_sample = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._server.kill(child.pid, "time limit")
                self._drain(child, attempt, task_logger, message_id, actor_name)
                raise TimeLimitExceeded(
                    f"{actor_name} ({message_id}) ran past its time limit of {limit_s:g} s "
                    f"and was killed after {now - started:.2f} s")
            if now >= next_sample:
                next_sample = now + memory.interval_s
                used = memory.sample()
                attempt.memory_peak_mib = memory.peak_mib
                by = None
                if memory.oom_killed():
                    by = "the OOM killer in its cgroup"
                elif self.memory_limit_mib > 0 and used > self.memory_limit_mib:
                    by = f"the worker at {used:.1f} MiB"
                if by is not None:
                    self._server.kill(child.pid, "memory")
                    self._drain(child, attempt, task_logger, message_id, actor_name)
                    raise MemoryKill(by, memory.peak_mib, memory.method)
            readable, _, _ = select.select([child.sock], [], [], min(CHECK_INTERVAL_S, max(0.0, deadline - now)))
            if not readable:
                continue
            frame = protocol.recv_frame(child.sock)
            if frame is None:
                self._ended(child, actor_name, message_id, memory, attempt)
            if not self._handle_frame(frame, attempt, task_logger, message_id, actor_name):
                return frame

    def _ended(self, child: Child, actor_name: str, message_id: str | None, memory: TreeMemory,
               attempt: Attempt) -> NoReturn:
        """The child's socket closed before a reply: say why, as an exception."""
        if self._kill_reason == "stop_now":
            raise _StopNow()
        if self._kill_reason == "revoked":
            raise TaskRevoked(f"task {message_id} ({actor_name}) was revoked and its child "
                              f"(PID {child.pid}) killed with its process tree")
        status, details = self._server.exit_status(child.pid, EXIT_STATUS_WAIT_S)
        child.reaped = True
        attempt.memory_peak_mib = max(memory.peak_mib, details.get("peak_mib") or 0.0)
        killed = status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if details.get("oom_kills") or memory.oom_killed():
            raise MemoryKill("the OOM killer in its cgroup", attempt.memory_peak_mib, memory.method)
        if killed and memory.host_oom_since_start():
            raise MemoryKill("the host's OOM killer", attempt.memory_peak_mib, memory.method)
        raise ChildDied(f"the child (PID {child.pid}) running {actor_name} ({message_id}) "
                        f"{describe_status(status)} before returning a result")

    def _handle_frame(self, frame: tuple, attempt: Attempt, task_logger: logging.Logger, message_id: str | None,
                      actor_name: str) -> bool:
        """Act on a log line or an announcement; False for a reply."""
        if frame[0] == "log":
            _, name, level, text = frame
            task_logger.log(level, "[%s] [%s] [%s] %s", message_id, actor_name, name, text)
        elif frame[0] == "track":
            attempt.tracked_dirs.append(frame[1])
        elif frame[0] == "note":
            if frame[1].get("max_cores"):
                attempt.max_cores = frame[1]["max_cores"]
        else:
            return False
        return True

    def _drain(self, child: Child, attempt: Attempt, task_logger: logging.Logger, message_id: str | None,
               actor_name: str) -> None:
        """After a kill: read what the child sent before it died (announced directories above all)."""
        deadline = time.monotonic() + EXIT_STATUS_WAIT_S
        while time.monotonic() < deadline:
            readable, _, _ = select.select([child.sock], [], [], CHECK_INTERVAL_S)
            if readable:
                try:
                    frame = protocol.recv_frame(child.sock)
                except (OSError, EOFError, ValueError):
                    return
                if frame is None:
                    return
                self._handle_frame(frame, attempt, task_logger, message_id, actor_name)


class _StopNow(BaseException):
    """Internal: the worker is stopping now; the task's thread must report nothing."""
