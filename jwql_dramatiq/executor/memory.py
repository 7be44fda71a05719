"""Memory of a task's whole process tree, as the worker measures it while the task runs.

Two methods, one interface (:class:`TreeMemory`):

- ``cgroup-v2`` / ``cgroup-v1``: the child's own memory cgroup (see :mod:`.cgroup`). The
  kernel enforces the limit; the worker reads the charge, the peak and the OOM-kill count.
- ``poll-pss``: no cgroup could be made. The worker walks the child's descendants through
  ``/proc/<pid>/task/<tid>/children`` and sums each one's PSS (``/proc/<pid>/smaps_rollup``),
  so pages shared copy-on-write with the fork server are split between the processes sharing
  them instead of being counted once per process. Where ``smaps_rollup`` is missing, RSS is
  used and the method says ``poll-rss``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .cgroup import Cgroup

#: Seconds between two PSS polls of a tree (PSS walks page tables: cheap, but not free).
POLL_INTERVAL_S = 0.2


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every live descendant of it, found through ``/proc/<pid>/task/*/children``."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(current)
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    todo.extend(int(p) for p in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def _field_kib(path: str, name: bytes) -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when it is gone)."""
    return (_field_kib(f"/proc/{pid}/status", b"VmRSS:") or 0) / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` in MiB (its RSS where PSS is unavailable; 0 when gone)."""
    kib = _field_kib(f"/proc/{pid}/smaps_rollup", b"Pss:")
    if kib is None:
        kib = _field_kib(f"/proc/{pid}/status", b"VmRSS:")
    return (kib or 0) / 1024


def tree_pss_mib(pid: int) -> float:
    """Sum of :func:`pss_mib` over ``pid`` and its descendants, in MiB."""
    return sum(pss_mib(p) for p in tree_pids(pid))


def host_oom_kills() -> int:
    """OOM kills on this host since boot (``oom_kill`` in ``/proc/vmstat``; 0 if not reported)."""
    kills = _field_kib("/proc/vmstat", b"oom_kill ")
    return kills or 0


class TreeMemory:
    """Measures one task child's tree while it runs, by its cgroup or by polling.

    Parameters
    ----------
    pid : int
        The task child.
    cgroup : Cgroup or None
        The child's own memory cgroup, when the fork server made one.
    """

    def __init__(self, pid: int, cgroup: Cgroup | None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        if cgroup is not None:
            self.method = cgroup.method
        else:
            self.method = "poll-pss" if Path(f"/proc/{pid}/smaps_rollup").exists() else "poll-rss"
        self.peak_mib = 0.0
        self.current_mib = 0.0
        self._kernel_peak = cgroup is not None and cgroup.reset_peak()
        self._oom_kills_at_start = cgroup.oom_kills() if cgroup is not None else 0
        self._host_oom_kills_at_start = host_oom_kills()

    @property
    def interval_s(self) -> float:
        """How often :meth:`sample` is worth calling."""
        return 0.05 if self.cgroup is not None else POLL_INTERVAL_S

    def sample(self) -> float:
        """Measure the tree now; return its memory in MiB and update :attr:`peak_mib`."""
        if self.cgroup is not None:
            self.current_mib = self.cgroup.current_mib()
            kernel_peak = self.cgroup.peak_mib() if self._kernel_peak else None
            self.peak_mib = max(self.peak_mib, self.current_mib, kernel_peak or 0.0)
        else:
            self.current_mib = tree_pss_mib(self.pid)
            self.peak_mib = max(self.peak_mib, self.current_mib)
        return self.current_mib

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer struck this task's cgroup since it started (cgroups only)."""
        return self.cgroup is not None and self.cgroup.oom_kills() > self._oom_kills_at_start

    def host_oom_since_start(self) -> bool:
        """Whether the kernel killed any process on the host for lack of memory since the task started."""
        return host_oom_kills() > self._host_oom_kills_at_start
