"""Test hosts in network namespaces: a switch namespace with a bridge, and one namespace per host.

Every address lives inside namespaces this module creates (``10.231.0.0/24`` on a bridge in the
switch namespace); the root namespace gets no address and no route, so no test traffic can
leave the machine. Names carry the test process's pid, so concurrent runs do not collide.
Cutting a host's link sets its port on the switch down: the host keeps its address and route,
and its packets are silently dropped, as when a cable or a switch port fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: The private subnet, inside the namespaces only.
SUBNET = "10.231.0"


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is not installed (iproute2 / util-linux)"
    probe = f"jqprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left by earlier runs of this module whose test process is gone (names only)."""
    import re

    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(r"jq(\d+)-\w+", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass
class Host:
    """One test host: its namespace, address, host name and switch port."""

    name: str
    netns: str
    address: str
    port: str

    def prefix(self) -> list[str]:
        """Command words that run the rest inside this host's namespace, under its own host name."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name]


@dataclass
class Lab:
    """A switch and hosts; :meth:`close` removes everything, processes first."""

    tag: str = field(default_factory=lambda: f"jq{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def up(self, names: list[str]) -> "Lab":
        """Create the switch and one host per name (addresses .1, .2, ... in :data:`SUBNET`)."""
        _ip("netns", "add", self.switch)
        self.namespaces.append(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            host = Host(name=name, netns=f"{self.tag}-{name}", address=f"{SUBNET}.{index}", port=f"p{index}")
            _ip("netns", "add", host.netns)
            self.namespaces.append(host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns)
            _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
            _ip("-n", self.switch, "link", "set", host.port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            self.hosts[name] = host
        return self

    def cut(self, name: str) -> None:
        """Take a host's switch port down (its packets are dropped silently)."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def heal(self, name: str) -> None:
        """Bring a host's switch port back up."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def spawn(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """Run ``argv`` on a host (its own session, so it and its children are killed together)."""
        log = open(log_path, "ab")
        proc = subprocess.Popen([*self.hosts[name].prefix(), *argv], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        log.close()
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        """Kill every process started here, then delete every namespace. Never raises."""
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for netns in reversed(self.namespaces):
            # Anything still inside (a stray grandchild) dies with the namespace's last reference.
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self.namespaces.clear()
