"""CPU time of the machine, of workers' process groups and of Redis, and the cost of one bare fork,
for the benchmarks (Linux ``/proc``).

A worker's CPU is read from ``/proc/<pid>/stat`` of each process in its group: user and system
time of the living processes plus what their reaped children used (``cutime``/``cstime``), so a
task child forked, run and reaped between two readings is counted in its reaper's figures.
"""

from __future__ import annotations

import os
import resource

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores; idle and iowait left out)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS_PER_S


def _group_processes(group_ids: set[int]) -> list[tuple[int, int, float, float]]:
    """(pid, process group, own CPU s, reaped children's CPU s) of every process in the groups."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) in group_ids:
            found.append((int(name), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S,
                          (int(fields[13]) + int(fields[14])) / CLOCK_TICKS_PER_S))
    return found


def group_cpu_s(group_ids: set[int]) -> dict[int, tuple[float, float]]:
    """pid -> (own CPU s, reaped children's CPU s) of every process in the process groups ``group_ids``.

    A worker started in its own session is one group: the ``dramatiq`` parent, its worker
    process and the fork server; task children lead groups of their own, and their CPU shows in
    the fork server's reaped figure once reaped.
    """
    return {pid: (own, reaped) for pid, _, own, reaped in _group_processes(group_ids)}


def groups_cpu_s(group_ids: list[int]) -> dict[int, float]:
    """Total CPU seconds (own and reaped children's) of each process group, by group id."""
    totals = dict.fromkeys(group_ids, 0.0)
    for _, group, own, reaped in _group_processes(set(group_ids)):
        totals[group] += own + reaped
    return totals


def redis_cpu_s(client) -> float:
    """CPU seconds the Redis server has used (INFO cpu, user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bare_fork_cpu_ms(forks: int = 300) -> float:
    """CPU milliseconds one fork costs this process and the child together: fork, ``os._exit(0)`` and reap.

    The floor under any fresh-process-per-task design on this host, measured from the calling
    (benchmark) process, which has a Python interpreter with its imports loaded as a fork server has.
    """
    self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    used_s = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
              + children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime)
    return used_s / forks * 1000
