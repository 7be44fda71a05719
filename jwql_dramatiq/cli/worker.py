"""``worker``: start this host's worker, ``dramatiq jwql_dramatiq.actors -p1 -t1``, with a pid file,
a log file per host and settings from the config; in the foreground, or detached like Celery's ``-D``.

In the foreground the command *becomes* the Dramatiq main process (``exec``), so the pid in the pid
file, systemd's main pid and the process that gets SIGTERM are all the same one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..broker.control import list_workers
from ..config import CONFIG_ENV, Config
from ..config import HOSTNAME_ENV, worker_hostname
from ._common import RET_FAIL, RET_OK, RET_PIDFILE, RET_USAGE, CommandError, Context, non_negative_seconds

#: Added to the longest task time limit to make the graceful-stop bound, in seconds: a stop
#: then lets any task finish (the hard limit kills it first) before Dramatiq gives up waiting.
SHUTDOWN_MARGIN_S = 60.0
#: How often ``worker --detach`` looks for the new worker, in seconds.
DETACH_POLL_S = 0.1
#: Lines of the log shown when a detached worker dies during start-up.
LOG_TAIL_LINES = 20


def default_log_path(config: Config, host: str) -> str:
    """``<log_dir>/jwql_dramatiq_<host>.log`` (``log_dir`` falls back to the working directory)."""
    return os.path.join(config.log_dir or config.working_dir, f"jwql_dramatiq_{host}.log")


def default_pid_path(config: Config, host: str) -> str:
    """``<working>/jwql_dramatiq_<host>.pid``."""
    return os.path.join(config.working_dir, f"jwql_dramatiq_{host}.pid")


def shutdown_timeout_ms(config: Config) -> int:
    """Dramatiq's ``--worker-shutdown-timeout``: the longest time limit plus :data:`SHUTDOWN_MARGIN_S`, in ms."""
    longest_s = max([config.time_limit_s, *config.actor_time_limits_s.values()])
    return int((longest_s + SHUTDOWN_MARGIN_S) * 1000)


def dramatiq_argv(pid_path: str, log_path: str | None, timeout_ms: int, extra: list[str]) -> list[str]:
    """The command line of the Dramatiq worker (``log_path`` None logs to stderr)."""
    script = Path(sys.executable).with_name("dramatiq")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "dramatiq"]
    argv += ["jwql_dramatiq.actors", "--processes", "1", "--threads", "1", "--pid-file", pid_path,
             "--worker-shutdown-timeout", str(timeout_ms)]
    if log_path is not None:
        argv += ["--log-file", log_path]
    return argv + extra


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"dramatiq" in f.read()
    except OSError:
        return True  # cannot tell: assume it is, and refuse rather than start a second worker


def check_pid_file(path: str) -> str | None:
    """Refuse if ``path`` names a live worker; remove it if it names a dead one.

    Returns
    -------
    str or None
        A note about a stale pid file that was removed.

    Raises
    ------
    CommandError
        ``RET_PIDFILE`` when a live worker holds the pid file, it holds no pid, or it cannot be read.
    """
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:  # e.g. a file in its path is not a directory, or no permission
        raise CommandError(f"pid file {path} cannot be read: {_reason(e)}", RET_PIDFILE) from None
    try:
        pid = int(text)
    except ValueError:
        raise CommandError(f"pid file {path} does not hold a pid ({text[:40]!r}); refusing to overwrite it",
                           RET_PIDFILE) from None
    if pid != os.getpid() and process_alive(pid) and _is_worker(pid):
        raise CommandError(f"a worker is already running with pid {pid} (pid file {path}); "
                           f"stop it first (jwql-dramatiq shutdown --host ...)", RET_PIDFILE)
    try:
        os.remove(path)
    except FileNotFoundError:  # gone meanwhile: as good as removed
        pass
    except OSError as e:
        raise CommandError(f"stale pid file {path} cannot be removed: {_reason(e)}", RET_PIDFILE) from None
    return f"removed stale pid file {path} (pid {pid} is not running)"


def _reason(error: OSError) -> str:
    """The OS's words for ``error`` ("Not a directory"), without the errno and path Python adds."""
    return error.strerror or str(error)


def check_writable(path: str, what: str, keep: bool) -> None:
    """Make ``path``'s directory and check that ``path`` can be created, before the worker starts.

    A log file is opened for appending, as the worker will, and kept; a pid file (which
    :func:`check_pid_file` has just found absent or removed) is created and removed again, so the
    worker finds none.

    Raises
    ------
    CommandError
        ``RET_PIDFILE``, naming ``what``, ``path`` and the OS's reason: like a pid file that cannot be
        written (the table's meaning for 4), a log file that cannot be written fails again at every
        start, so a supervisor must not restart on it.
    """
    def refuse(reason: str) -> CommandError:
        return CommandError(f"{what} {path} cannot be written: {reason}", RET_PIDFILE)

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except FileExistsError as e:  # makedirs' error when a part of the path is a file
        raise refuse(f"{e.filename} is not a directory") from None
    except OSError as e:
        raise refuse(f"cannot make directory {e.filename}: {_reason(e)}") from None
    try:
        if keep:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        else:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:  # appeared meanwhile: Dramatiq's own pid file check decides
                return
            os.remove(path)
    except OSError as e:
        raise refuse(_reason(e)) from None


def cmd_worker(ctx: Context, args: argparse.Namespace) -> int:
    """``worker``: run this host's worker (see the module docstring).

    Parameters
    ----------
    ctx : Context
        The command's config, Redis client and output.
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit code (in the foreground it does not return (exec); RET_OK or RET_FAIL with --detach).
    """
    config = ctx.config
    host = args.hostname or worker_hostname()
    pid_path = os.path.abspath(args.pid_file or default_pid_path(config, host))
    log_path = None if args.log_file == "-" else os.path.abspath(args.log_file or default_log_path(config, host))
    if args.detach and log_path is None:
        raise CommandError("--detach needs a log file (not --log-file -)", RET_USAGE)
    note = check_pid_file(pid_path)
    if note:
        print(f"jwql-dramatiq: {note}", file=sys.stderr)
    # The files first: a path that cannot be written fails the same way at every start (the table's
    # no-restart RET_PIDFILE), which matters more to a supervisor than a Redis outage that may pass.
    check_writable(pid_path, "pid file", keep=False)
    if log_path is not None:
        check_writable(log_path, "log file", keep=True)
    ctx.client  # noqa: B018 -- fail now, in one line, if Redis is unreachable
    extra = list(args.dramatiq_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    argv = dramatiq_argv(pid_path, log_path, shutdown_timeout_ms(config), extra)
    env = {**os.environ, CONFIG_ENV: os.path.abspath(config.path)}
    if args.hostname:
        env[HOSTNAME_ENV] = args.hostname
    if not args.detach:
        print(f"jwql-dramatiq: starting the worker for host {host}: log {log_path or 'stderr'}, pid file {pid_path}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        ctx.close()
        os.execve(argv[0], argv, env)
    assert log_path is not None
    pid = _spawn_detached(argv, env, log_path)
    return _wait_up(ctx, pid, host, log_path, pid_path, args.wait)


def _spawn_detached(argv: list[str], env: dict[str, str], log_path: str) -> int:
    """Double-fork: the worker runs in its own session, is nobody's child, and logs to ``log_path``.

    Returns
    -------
    int
        The worker's pid (the Dramatiq main process).
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the first child: a new session, then fork the worker and leave
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(write_end)
                os.dup2(null_fd, 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.execve(argv[0], argv, env)
            os.write(write_end, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.close(log_fd)
    os.close(null_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    if not data:
        raise CommandError("could not start the worker process", RET_FAIL)
    return int(data)


def _tail(path: str, lines: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_up(ctx: Context, pid: int, host: str, log_path: str, pid_path: str, wait_s: float) -> int:
    config = ctx.config
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            print(f"jwql-dramatiq: the worker (pid {pid}) exited during start-up; the end of {log_path}:\n"
                  f"{_tail(log_path, LOG_TAIL_LINES)}", file=sys.stderr)
            return RET_FAIL
        for w in list_workers(ctx.client, ctx.namespace, config.heartbeat_timeout_s):
            if w.main_pid == pid and w.alive:
                ctx.print(f"Worker {w.worker_id} is up on host {host}: pid {pid}, log {log_path}, "
                          f"pid file {pid_path}")
                return RET_OK
        time.sleep(DETACH_POLL_S)
    print(f"jwql-dramatiq: the worker (pid {pid}) is running but not up after {wait_s:g} s; see {log_path}",
          file=sys.stderr)
    return RET_FAIL


def add_parser(sub: Any) -> None:
    """Add ``worker`` to the subcommand parsers."""
    p = sub.add_parser(
        "worker", help="start this host's worker (foreground, or --detach)",
        description="Start this host's worker: dramatiq jwql_dramatiq.actors with one process and one thread, a "
                    "pid file, a log file per host, and a graceful-stop bound longer than the longest task time "
                    "limit (so SIGTERM or `shutdown` lets the running task finish). In the foreground the command "
                    "becomes the worker (exec) and exits with its code; --detach starts it in the background and "
                    "returns 0 once it is up. Refuses to start if the pid file names a live worker. Arguments "
                    "after -- go to dramatiq.")
    p.add_argument("--detach", "-D", action="store_true", help="run in the background (Celery's -D)")
    p.add_argument("--pid-file", metavar="PATH", help="default <working>/jwql_dramatiq_<host>.pid")
    p.add_argument("--log-file", metavar="PATH",
                   help="default <log_dir>/jwql_dramatiq_<host>.log; '-' for stderr (foreground only)")
    p.add_argument("--hostname", metavar="NAME",
                   help=f"the host name this worker reports (sets ${HOSTNAME_ENV}; default the machine's)")
    p.add_argument("--wait", type=non_negative_seconds, default=300.0, metavar="S",
                   help="with --detach: seconds to wait for the worker to come up (default 300)")
    p.add_argument("dramatiq_args", nargs=argparse.REMAINDER, metavar="-- DRAMATIQ_ARGS",
                   help="extra arguments for dramatiq, e.g. -- --verbose")
    p.set_defaults(handler=cmd_worker)
