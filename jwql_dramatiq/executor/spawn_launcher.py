"""The "interpreter" multiprocessing spawns inside a task: it asks the task's zygote to fork the process instead.

This file is not imported. :mod:`.spawn_zygote` copies it, behind a ``#!<python> -IS`` line and
two constants (``REAL_PYTHON``, ``SOCKET_PATH``), into the zygote's private directory and points
``multiprocessing.set_executable`` at the copy. multiprocessing then runs it as it would run
Python::

    launcher [interpreter flags] -c "from multiprocessing.spawn import spawn_main; spawn_main(...)" --multiprocessing-fork

with the pipes of the new process open. The launcher sends the ``-c`` code and every file
descriptor it holds to the zygote (SCM_RIGHTS). If the zygote takes it, the launcher waits,
forwarding the signals the pool sends (``terminate()`` is a SIGTERM) to the forked process, and
exits as that process exited. If the zygote refuses (code it does not run, e.g. the resource
tracker's) or cannot be reached, the launcher becomes the real interpreter: a plain spawn.

Standard library only, and started with ``-I -S``: it must start in milliseconds.
"""

import json
import os
import signal
import socket
import sys

REAL_PYTHON = sys.executable  # replaced in the copy: the interpreter a plain spawn runs
SOCKET_PATH = ""  # replaced in the copy: the zygote's socket

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def open_fds(skip):
    """The descriptors this process holds, but ``skip``."""
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    held = []
    for fd in listed:
        if fd == skip:
            continue
        try:
            os.fstat(fd)  # the listing's own descriptor is closed by now
        except OSError:
            continue
        held.append(fd)
    return held


def run_in_zygote(argv):
    """Have the zygote run ``-c`` code; returns the exit status to take, or None to exec Python instead."""
    if "-c" not in argv or not SOCKET_PATH:
        return None
    code = argv[argv.index("-c") + 1]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET_PATH)
    except OSError:
        sock.close()
        return None
    fds = open_fds(sock.fileno())
    socket.send_fds(sock, [json.dumps({"code": code, "fds": fds}).encode()], fds)
    replies = sock.makefile("rb")
    first = replies.readline().split()
    if first[:1] != [b"pid"]:
        sock.close()
        return None  # refused: nothing was forked, our descriptors are intact
    pid = int(first[1])

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # it has ended; its exit status is on its way
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    for fd in fds:
        if fd > 2:
            os.close(fd)  # the forked process holds them now; the pool's EOFs must not wait for us
    last = replies.readline().split()
    if last[:1] != [b"exit"]:
        return 1 << 8  # the zygote died (its task ended): the forked process died with it
    return int(last[1])


def exit_as(status):
    """End this process the way the forked one ended (``status`` as ``os.waitpid`` gives it)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main():
    """Run the spawned process in the zygote, or else exec the real interpreter."""
    status = run_in_zygote(sys.argv[1:])
    if status is None:
        os.execv(REAL_PYTHON, [REAL_PYTHON, *sys.argv[1:]])
    exit_as(status)


if __name__ == "__main__":
    main()
