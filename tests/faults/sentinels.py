"""A Redis Sentinel deployment made of real processes: a master, replicas and three sentinels.

Every process is a ``redis-server`` (``--sentinel`` for the sentinels) with its own directory,
config file and log, in its own session so :meth:`Cluster.close` kills it with its group and
reaps it. Nodes can run under a command prefix (a network namespace, see :mod:`tests.faults.netns`)
and bind to any address; by default they listen on free loopback ports. The test talks to a
loopback node with a redis-py client, and to a node under a prefix with ``redis-cli`` run under
that same prefix (inside its host, so it answers even while the host is cut off).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from jwql_dramatiq.embedded import free_port, kill_process_group

#: The master name the sentinels monitor.
MASTER_NAME = "jwql"


@dataclass
class Node:
    """One ``redis-server`` process (a data node or a sentinel)."""

    name: str
    host: str
    port: int
    directory: Path
    conf_lines: list[str]
    sentinel: bool = False
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout_s: float = 10) -> Node:
        """Start it (its config is written once; a sentinel rewrites its own) and wait until it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        if not conf.exists():
            conf.write_text("\n".join(self.conf_lines) + "\n")
        argv = [*self.prefix, "redis-server", str(conf), *(["--sentinel"] if self.sentinel else [])]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.ping():
                    return self
            except (redis.RedisError, RuntimeError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02 if not self.prefix else 0.1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def ping(self) -> bool:
        if not self.prefix:
            return bool(self.client().ping())
        return self.command("PING").strip() == "PONG"

    def command(self, *args: str, timeout_s: float = 5) -> str:
        """Run one command with ``redis-cli`` under the node's prefix (its own host); its raw output.

        Raises RuntimeError when redis-cli fails or the reply is an error.
        """
        done = subprocess.run([*self.prefix, "redis-cli", "-h", self.host, "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              check=False)
        out = done.stdout
        if done.returncode != 0 or out.startswith(("ERR", "Could not connect", "NOREPLICAS", "READONLY")):
            raise RuntimeError(f"redis-cli {' '.join(args)} at {self.name}: {out.strip()} {done.stderr.strip()}")
        return out

    def replication(self) -> dict:
        """``INFO replication`` as redis-py gives it (``slaveN`` entries as dicts)."""
        if not self.prefix:
            return self.client().info("replication")
        info: dict = {}
        for line in self.command("INFO", "replication").splitlines():
            key, sep, value = line.strip().partition(":")
            if not sep:
                continue
            if key.startswith("slave") and key[5:].isdigit():
                info[key] = dict(item.partition("=")[::2] for item in value.split(","))
            else:
                info[key] = int(value) if value.lstrip("-").isdigit() else value
        return info

    def kill(self) -> None:
        """``kill -9`` its process group and reap it."""
        if self.proc is None:
            return
        kill_process_group(self.proc)

    def client(self) -> redis.Redis:
        """A direct client (loopback nodes only)."""
        return redis.Redis(host=self.host, port=self.port, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class Cluster:
    """A master, ``replicas`` replicas and three sentinels (quorum 2).

    Parameters
    ----------
    root : Path
        Directories ``<root>/<node name>``.
    hosts : dict, optional
        Node name -> (bind address, command prefix); default: all on 127.0.0.1 without a prefix.
    down_after_ms : int
        The sentinels' ``down-after-milliseconds``.
    """

    root: Path
    hosts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    down_after_ms: int = 2000
    replicas: int = 1
    #: Extra config lines of every data node (e.g. ``min-replicas-to-write 1``).
    data_conf: list[str] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)

    def _where(self, name: str) -> tuple[str, list[str]]:
        return self.hosts.get(name, ("127.0.0.1", []))

    def start(self) -> Cluster:
        """Start the master, its replicas (synced), then the sentinels (each sees the others)."""
        names = ["redis0", *(f"redis{i}" for i in range(1, self.replicas + 1))]
        master = None
        for name in names:
            host, prefix = self._where(name)
            port = 6379 if prefix else free_port()
            lines = [f"bind {host}", f"port {port}", "save \"\"", "appendonly yes", "appendfsync always",
                     f"dir {self.root / name}", f"logfile {self.root / name / 'redis.log'}", "protected-mode no",
                     "repl-diskless-sync yes", "repl-diskless-sync-delay 0", *self.data_conf]
            if master is not None:
                lines.append(f"replicaof {master.host} {master.port}")
            node = Node(name, host, port, self.root / name, lines, prefix=prefix)
            self.nodes[name] = node.start()
            master = master or node
        assert master is not None
        for index in range(3):
            name = f"sentinel{index}"
            host, prefix = self._where(name)
            port = 26379 if prefix else free_port()
            lines = [f"bind {host}", f"port {port}", f"dir {self.root / name}",
                     f"logfile {self.root / name / 'redis.log'}", "protected-mode no",
                     f"sentinel monitor {MASTER_NAME} {master.host} {master.port} 2",
                     f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                     f"sentinel failover-timeout {MASTER_NAME} 10000",
                     f"sentinel parallel-syncs {MASTER_NAME} 1"]
            self.nodes[name] = Node(name, host, port, self.root / name, lines, sentinel=True, prefix=prefix).start()
        return self

    @property
    def sentinel_addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values() if n.sentinel]

    def data_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.sentinel]

    def master_by_sentinels(self) -> str | None:
        """``host:port`` of the master, when every live sentinel names the same one."""
        seen = set()
        for node in self.nodes.values():
            if not node.sentinel or node.proc is None or node.proc.poll() is not None:
                continue
            try:
                if node.prefix:
                    host, port = node.command("SENTINEL", "get-master-addr-by-name", MASTER_NAME).split()
                else:
                    host, port = node.client().execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                    host = host.decode()
            except (redis.RedisError, RuntimeError, subprocess.TimeoutExpired, TypeError, ValueError):
                return None
            seen.add(f"{host}:{int(port)}")
        return seen.pop() if len(seen) == 1 else None

    def node_at(self, address: str) -> Node:
        return next(n for n in self.data_nodes() if n.address == address)

    def in_sync(self, master: Node) -> bool:
        """Whether ``master`` is a master with every other data node connected and streaming."""
        try:
            info = master.replication()
        except (redis.RedisError, RuntimeError, subprocess.TimeoutExpired):
            return False
        if info.get("role") != "master" or info.get("connected_slaves", 0) < self.replicas:
            return False
        return all(info[f"slave{i}"]["state"] == "online" for i in range(info["connected_slaves"]))

    def restart_as_replica(self, node: Node, master: Node) -> None:
        """Start a killed data node again as a replica of ``master`` (what the deployment guide's
        unit does: ask the sentinels for the master first), so it need not wait for a sentinel to
        demote it (about 8 s) before the new master has a replica again."""
        conf = node.directory / "redis.conf"
        lines = [line for line in conf.read_text().splitlines() if not line.startswith(("replicaof", "slaveof"))]
        conf.write_text("\n".join([*lines, f"replicaof {master.host} {master.port}"]) + "\n")
        node.start()

    def make_replica(self, node: Node, master: Node) -> None:
        """``REPLICAOF`` a running data node (e.g. a cut-off old master once back) to ``master`` at once,
        as :meth:`restart_as_replica` does for a killed one, rather than wait for a sentinel to demote it."""
        if node.prefix:
            node.command("REPLICAOF", master.host, str(master.port))
        else:
            node.client().execute_command("REPLICAOF", master.host, master.port)

    def close(self) -> None:
        """Kill and reap every process. Never raises."""
        for node in self.nodes.values():
            try:
                node.kill()
            except Exception:  # noqa: BLE001 - closing must carry on
                pass
