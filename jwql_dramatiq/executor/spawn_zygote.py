"""Fast starts for stcal's process pools: "spawned" processes forked from a warm copy of the task.

stcal's jump detection and ramp fitting start their pools with multiprocessing's ``spawn``
method, chosen in stcal's code: each pool process is a fresh interpreter that imports numpy,
astropy and stcal again, about 0.8 s per pool on 2 cores, and a Detector1 job starts two.
A task child has all of that imported already. Inside :func:`fast_pool_starts`:

- the task child forks a *zygote*, a copy of itself taken between jobs, that serves a unix
  socket in a private directory (mode 0700; peers of another uid are refused);
- multiprocessing's spawn executable is set (``multiprocessing.set_executable``, its public
  switch) to a launcher, :mod:`.spawn_launcher`, written into that directory;
- each spawned process is then the launcher, which sends its ``-c`` code and file descriptors
  to the zygote (SCM_RIGHTS). The zygote forks a process that runs multiprocessing's own
  ``spawn_main`` on those descriptors, as the fresh interpreter would have. The launcher
  stands in for it (signals forwarded, same exit status), so the pool sees a normal spawn.

Code other than ``spawn_main`` (the resource tracker) is refused and the launcher execs the real
interpreter. Every process stays in the task's tree: the zygote and its forks descend from the
task child, share its process group and memory cgroup, and die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

from . import task as task_api
from .linux import PR_SET_PDEATHSIG, prctl

logger = logging.getLogger(__name__)

#: The only code the zygote runs: what ``multiprocessing.spawn.get_command_line`` writes.
SPAWN_MAIN_CODE = re.compile(r"from multiprocessing\.spawn import spawn_main; spawn_main\((?P<args>[^()]*)\)")
#: ``spawn_main`` arguments that are file descriptors (which the launcher must have handed over).
FD_ARGUMENTS = ("pipe_handle", "tracker_fd")
#: Longest ``#!`` line Linux reads (the launcher needs the interpreter's path on it).
SHEBANG_MAX_BYTES = 255
#: Longest unix socket path.
SOCKET_PATH_MAX_BYTES = 107
#: Most descriptors one launcher may hand over.
FDS_MAX = 64
#: Seconds the task child waits for the zygote to exit before killing it.
ZYGOTE_EXIT_WAIT_S = 5.0


def spawn_main_arguments(code: str) -> dict[str, int | None] | None:
    """The keyword arguments of a ``spawn_main(...)`` command line, or None for any other code."""
    match = SPAWN_MAIN_CODE.fullmatch(code)
    if match is None:
        return None
    arguments: dict[str, int | None] = {}
    for part in match["args"].split(", "):
        pair = re.fullmatch(r"(pipe_handle|tracker_fd|parent_pid)=(\d+|None)", part)
        if pair is None:
            return None
        arguments[pair[1]] = None if pair[2] == "None" else int(pair[2])
    return arguments if arguments.get("pipe_handle") is not None else None


def write_launcher(directory: Path, socket_path: Path) -> Path | None:
    """Write the launcher (executable) into ``directory``; None if this interpreter's path cannot be a ``#!`` line."""
    shebang = f"#!{sys.executable} -IS\n"
    if len(shebang.encode()) > SHEBANG_MAX_BYTES or any(c.isspace() for c in sys.executable):
        return None
    source = Path(__file__).with_name("spawn_launcher.py").read_text()
    source = source.replace("REAL_PYTHON = sys.executable", f"REAL_PYTHON = {sys.executable!r}", 1)
    source = source.replace('SOCKET_PATH = ""', f"SOCKET_PATH = {str(socket_path)!r}", 1)
    path = directory / "python"
    path.write_text(shebang + source)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def fast_pool_starts(enabled: bool = True) -> Iterator[bool]:
    """Within the block, spawn-method pools started by this process fork from a zygote (see the module doc).

    Parameters
    ----------
    enabled : bool
        False makes the block a no-op (stcal's own spawn).

    Yields
    ------
    bool
        Whether pool starts go through a zygote (False if disabled or not possible here).
    """
    if not enabled or not hasattr(os, "pidfd_open"):
        yield False
        return
    name = f"jwql-dramatiq-pools.{os.getpid()}.{secrets.token_hex(4)}"
    directory = task_api.track_dir(Path(tempfile.gettempdir()) / name)  # removed by the worker after a kill
    zygote_pid, watch_w = None, None
    try:
        socket_path = directory / "zygote"
        try:
            directory.mkdir(mode=0o700)
            launcher = write_launcher(directory, socket_path)
            if launcher is None or len(str(socket_path).encode()) > SOCKET_PATH_MAX_BYTES:
                logger.info("Process pools start with stcal's own spawn: the paths are too long for a launcher")
            else:
                zygote_pid, watch_w = _start_zygote(socket_path)
        except OSError as e:  # a slower start, not a failed job
            logger.warning("Process pools start with stcal's own spawn: could not start a zygote (%s)", e)
        if zygote_pid is None:
            yield False
            return
        multiprocessing.set_executable(str(launcher))
        logger.info("stcal's process pools start from a zygote (pid %d) in this task", zygote_pid)
        try:
            yield True
        finally:
            multiprocessing.set_executable(sys.executable)
    finally:
        if watch_w is not None:
            os.close(watch_w)  # the zygote's cue to stop
        if zygote_pid is not None:
            _reap(zygote_pid)
        shutil.rmtree(directory, ignore_errors=True)


def _start_zygote(socket_path: Path) -> tuple[int, int]:
    """Fork the zygote serving ``socket_path``; returns its pid and the pipe end whose closing stops it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(socket_path))
        listener.listen(16)
        watch_r, watch_w = os.pipe()
    except OSError:
        listener.close()
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the task
            if os.getppid() != parent:  # it died before the line above took effect
                os._exit(0)
            os.close(watch_w)
            task_api.detach_forked()
            code = _Zygote(listener, watch_r).serve()
        except BaseException:  # noqa: B036 - nothing may unwind into the task's code in this fork
            traceback.print_exc()
        finally:
            os._exit(code)
    listener.close()
    os.close(watch_r)
    return pid, watch_w


def _reap(pid: int) -> None:
    """Wait for the zygote (it exits once its pipe closes); kill it if it does not."""
    fd = os.pidfd_open(pid)
    try:
        if not select.select([fd], [], [], ZYGOTE_EXIT_WAIT_S)[0]:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    finally:
        os.close(fd)


def _install_fds(mapping: dict[int, int]) -> None:
    """Put each received descriptor at the number it had in the launcher (``mapping``: that number -> ours).

    They must keep their numbers: multiprocessing pickles a pipe as its number in the spawning
    process. First every one is moved above all of them, so no move overwrites another.
    """
    import fcntl

    high = max([*mapping, *mapping.values()]) + 1
    moved = {number: fcntl.fcntl(fd, fcntl.F_DUPFD, high) for number, fd in mapping.items()}
    for fd in mapping.values():
        os.close(fd)
    for number, fd in moved.items():
        os.dup2(fd, number)
        os.close(fd)


class _Zygote:
    """The zygote's loop: fork a ``spawn_main`` per launcher, and tell each launcher how its fork ended."""

    def __init__(self, listener: socket.socket, watch_r: int) -> None:
        self.listener = listener
        self.watch_r = watch_r
        self.forks: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the launcher's connection)

    def serve(self) -> int:
        """Serve until the task child closes the pipe (or dies); returns the exit code."""
        try:
            while True:
                ready, _, _ = select.select([self.listener, self.watch_r, *self.forks], [], [])
                if self.watch_r in ready:
                    return 0
                for fd in ready:
                    if fd in self.forks:
                        self._report_exit(fd)
                if self.listener in ready:
                    self._accept()
        finally:
            for pidfd, (pid, conn) in self.forks.items():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                conn.close()
                os.close(pidfd)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        received: list[int] = []
        try:
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))
            if uid != os.getuid():
                conn.close()
                return
            message, received, _flags, _address = socket.recv_fds(conn, 1 << 16, FDS_MAX)
            request = json.loads(message)
            arguments = spawn_main_arguments(request.get("code", ""))
            numbers = request.get("fds", [])
            if arguments is None or len(numbers) != len(received) \
                    or any(arguments.get(name) not in (None, *numbers) for name in FD_ARGUMENTS):
                conn.sendall(b"refused\n")
                conn.close()
                return
            mapping = dict(zip(numbers, received))
            pid = os.fork()
            if pid == 0:
                self._become_spawned(conn, mapping, arguments)
            conn.sendall(b"pid %d\n" % pid)
            self.forks[os.pidfd_open(pid)] = (pid, conn)
        except (OSError, ValueError):  # a launcher that went away mid-request: its pool sees it exit
            conn.close()
        finally:
            for fd in received:
                os.close(fd)

    def _report_exit(self, pidfd: int) -> None:
        pid, conn = self.forks.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            conn.sendall(b"exit %d\n" % status)
        conn.close()

    def _become_spawned(self, conn: socket.socket, mapping: dict[int, int], arguments: dict[str, int | None]) -> None:
        """In the zygote's fork: become the spawned process (``spawn_main``), then exit. Never returns."""
        code = 1
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            self.listener.close()
            conn.close()
            os.close(self.watch_r)
            for pidfd, (_pid, other) in self.forks.items():
                os.close(pidfd)
                other.close()
            _install_fds(mapping)
            logging.getLogger().handlers.clear()  # as in a fresh interpreter: not the task's handler
            sys.argv = ["-c", "--multiprocessing-fork"]
            from multiprocessing.spawn import spawn_main

            spawn_main(**arguments)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: B036 - report, never unwind into the zygote's loop
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
