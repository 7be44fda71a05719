"""Memory cgroups for task children: one per child, so the kernel limits and measures the whole tree.

Where the worker may create memory cgroups (root, or systemd's ``Delegate=yes``), the fork
server makes one directory for itself, ``<own cgroup>/jwql-dramatiq.<pid>``, and one per child
inside it, ``child.<pid>``, with the memory limit set. The kernel then enforces the limit on
every process of the task (stcal's pool included), and its OOM kills are counted in the
cgroup's events.

- cgroup v2 (current hosts): the unified hierarchy with the ``memory`` controller. A cgroup
  that holds processes cannot give controllers to its children, so when the worker's own cgroup
  has processes they are first moved to a leaf, ``<own>/jwql-main`` (what systemd expects of a
  delegated service). Files: ``memory.max``, ``memory.swap.max``, ``memory.oom.group``,
  ``memory.current``, ``memory.peak``, ``memory.events``, ``cgroup.kill``.
- cgroup v1 (older hosts, and this test machine): the ``memory`` hierarchy. Files:
  ``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``,
  ``memory.oom_control``.

Nothing here runs at import time; :func:`create_root` does the probing.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

#: Name of the leaf a v2 cgroup's own processes are moved to before it delegates controllers.
V2_LEAF = "jwql-main"
#: How long removing a child's cgroup keeps killing its processes, in seconds.
KILL_WAIT_S = 2.0
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Cgroup:
    """One memory cgroup directory and its hierarchy's version (1 or 2)."""

    version: int
    path: Path

    @property
    def method(self) -> str:
        """``"cgroup-v1"`` or ``"cgroup-v2"``: how memory is limited and measured."""
        return f"cgroup-v{self.version}"

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _write(self, name: str, value: str) -> None:
        with open(self.path / name, "w") as f:
            f.write(value)

    def pids(self) -> list[int]:
        """Processes in this cgroup (empty when it is gone)."""
        try:
            return [int(p) for p in self._read("cgroup.procs").split()]
        except (FileNotFoundError, ProcessLookupError, OSError):
            return []

    def add(self, pid: int) -> None:
        """Move ``pid`` into this cgroup."""
        self._write("cgroup.procs", str(pid))

    def current_mib(self) -> float:
        """Memory charged to the cgroup now, in MiB (0 when it is gone)."""
        try:
            name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
            return int(self._read(name)) / _MIB
        except (OSError, ValueError):
            return 0.0

    def peak_mib(self) -> float | None:
        """Highest memory charged since creation or :meth:`reset_peak`, in MiB; None if unknown."""
        try:
            name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
            return int(self._read(name)) / _MIB
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> bool:
        """Restart the peak from now (v1 always; v2 on kernels from 6.12). Returns whether it could."""
        try:
            self._write("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes", "0")
            return True
        except OSError:
            return False

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup so far (0 when it is gone)."""
        try:
            text = self._read("memory.events" if self.version == 2 else "memory.oom_control")
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def set_limit(self, limit_mib: float) -> None:
        """Limit the cgroup's memory to ``limit_mib`` MiB; on v2, no swap and OOM kills the whole group."""
        limit = str(int(limit_mib * _MIB))
        if self.version == 2:
            self._write("memory.max", limit)
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                try:
                    self._write(name, value)
                except FileNotFoundError:
                    pass
        else:
            self._write("memory.limit_in_bytes", limit)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, until it is empty or :data:`KILL_WAIT_S` passed.

        Only the fork server calls this: it is the subreaper of every task process, so a pid read
        here cannot be reaped and reused by someone else before it is killed.
        """
        if self.version == 2:
            try:
                self._write("cgroup.kill", "1")
            except OSError:
                pass
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    def remove(self) -> bool:
        """Remove the (empty) cgroup directory; False while processes are still leaving it."""
        try:
            os.rmdir(self.path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            raise

    def child(self, name: str) -> Cgroup:
        """Create (if needed) the sub-cgroup ``name``."""
        path = self.path / name
        path.mkdir(exist_ok=True)
        return Cgroup(self.version, path)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if tail and tail[0] in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4], tail[0], tail[2] if len(tail) > 2 else ""))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per hierarchy: ``{"": v2 path, "memory": v1 path, ...}``."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _join(mount_root: str, mount_point: str, own: str) -> Path | None:
    if not own.startswith(mount_root):
        return None
    return Path(mount_point) / own[len(mount_root):].lstrip("/")


def _v2_parent(own_dir: Path) -> Path:
    """Give ``own_dir`` the memory controller for its children, moving its processes to a leaf if needed."""
    if "memory" not in (own_dir / "cgroup.controllers").read_text().split():
        raise OSError(errno.EPERM, f"the memory controller is not enabled for {own_dir}")
    if "memory" in (own_dir / "cgroup.subtree_control").read_text().split():
        return own_dir
    try:
        (own_dir / "cgroup.subtree_control").write_text("+memory")
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        leaf = own_dir / V2_LEAF  # "no internal processes": move ours out first
        leaf.mkdir(exist_ok=True)
        for _ in range(10):
            pids = (own_dir / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                try:
                    (leaf / "cgroup.procs").write_text(pid)
                except OSError:
                    pass  # gone meanwhile, or a kernel thread
        (own_dir / "cgroup.subtree_control").write_text("+memory")
    return own_dir


def create_root(name: str, prefer: str = "auto") -> tuple[Cgroup | None, str]:
    """Create the fork server's cgroup ``name`` under this process's own, if the host allows it.

    Parameters
    ----------
    name : str
        Directory name, e.g. ``jwql-dramatiq.<pid>``.
    prefer : {"auto", "cgroup", "v2", "v1", "poll"}
        ``poll`` never creates one; ``v2``/``v1`` try only that version.

    Returns
    -------
    (Cgroup or None, str)
        The cgroup (with the memory controller given to its children), or None and the reason
        none could be made, in words.
    """
    if prefer == "poll":
        return None, "polling was asked for (memory_method: poll)"
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError as e:
        return None, f"cannot read this process's cgroups: {e}"
    reasons = []
    for version in (2, 1):
        if prefer in ("v1", "v2") and prefer != f"v{version}":
            continue
        for root, point, fstype, options in mounts:
            if version == 2 and fstype != "cgroup2" or version == 1 and (
                    fstype != "cgroup" or "memory" not in options.split(",")):
                continue
            path = _join(root, point, own.get("" if version == 2 else "memory", "\0"))
            if path is None:
                continue
            try:
                parent = _v2_parent(path) if version == 2 else path
                made = Cgroup(version, parent / name)
                made.path.mkdir(exist_ok=True)
                if version == 2:
                    (made.path / "cgroup.subtree_control").write_text("+memory")
                probe = made.child("probe")  # proves a child can be created and limited
                probe.set_limit(1024)
                probe.remove()
                return made, ""
            except OSError as e:
                reasons.append(f"cgroup v{version} at {path}: {e.strerror or e}")
                try:
                    os.rmdir(path / name)
                except OSError:
                    pass
            break
        else:
            reasons.append(f"no cgroup v{version} memory hierarchy mounted")
    return None, "; ".join(reasons)
