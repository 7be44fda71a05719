"""Redis Sentinel: a client that finds the master through the sentinels, and writes that wait for a replica.

:func:`sentinel_client` is what :func:`jwql_dramatiq.connection.make_redis` returns when the config
names ``redis_sentinels``: a ``redis.Redis`` on a :class:`redis.sentinel.SentinelConnectionPool`,
which asks the sentinels for the master's address on every new connection and drops its
connections when the master changes (or when a demoted master answers ``READONLY``), so every
client (broker, results, locks, CLI, dashboard) follows a failover on its own.

Replication is asynchronous, so a write acknowledged by a master that dies before passing it on
is lost on failover. :func:`run_durably` sends a write and ``WAIT <replicas> <ms>`` on the same
connection, in one round trip, and raises :class:`ReplicaTimeout` (a
:class:`~jwql_dramatiq.errors.RedisUnavailable`) when fewer replicas acknowledged it in time:
the caller gets an error, never a success that a failover can take back. The settings ride on the
client (:data:`WAIT_ATTRIBUTE`), set by ``make_redis`` from ``redis_min_replicas`` and
``redis_wait_ms``; a client built elsewhere has none and does not wait.

Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from .errors import RedisUnavailable
from .lua import LuaScript
from .redis_errors import is_no_replicas, is_outage

#: Seconds to wait for one sentinel to accept a connection or answer: short, since the next one is tried.
SENTINEL_TIMEOUT_S = 1.0
#: Attribute of a redis-py client holding ``(replicas, wait_ms)`` for :func:`run_durably`.
WAIT_ATTRIBUTE = "jwql_wait_replicas"


class ReplicaTimeout(RedisUnavailable):
    """A write reached the master but fewer replicas than required acknowledged it within the bound.

    The write may still be on the master, or may be lost on a failover: the caller must treat it
    as not done (and may retry: every such write here is safe to repeat).

    Parameters
    ----------
    address : str
        Where Redis is (no credentials).
    what : str
        The write ("enqueue", "result", "lock acquisition").
    replicas, acked, wait_ms : int
        Required replicas, those that acknowledged, and the bound in milliseconds.
    """

    def __init__(self, address: str, what: str, replicas: int, acked: int, wait_ms: int) -> None:
        self.what, self.replicas, self.acked, self.wait_ms = what, replicas, acked, wait_ms
        super().__init__(address, f"{what}: {acked} of {replicas} replica(s) acknowledged it within {wait_ms} ms "
                                  f"(WAIT {replicas} {wait_ms}); it is not durable and may be lost on a failover")


class ReplicasRefused(ReplicaTimeout):
    """The master refused a write with ``NOREPLICAS``: it has fewer good replicas than its
    ``min-replicas-to-write`` (an isolated old master once ``min-replicas-max-lag`` has passed, or a
    new master until its replica is back). Nothing was written; like any :class:`ReplicaTimeout`,
    it is an outage (:func:`jwql_dramatiq.connection.is_outage`): safe to repeat, and ridden through.

    Parameters
    ----------
    address : str
        Where Redis is (no credentials).
    what : str
        The write.
    reason : str
        The server's message.
    """

    def __init__(self, address: str, what: str, reason: str) -> None:
        self.what, self.replicas, self.acked, self.wait_ms = what, 0, 0, 0
        RedisUnavailable.__init__(self, address, f"{what}: the master refused it ({reason}): it has fewer good "
                                                 "replicas than its min-replicas-to-write; nothing was written")


class JwqlSentinel(Sentinel):
    """redis-py's :class:`~redis.sentinel.Sentinel` whose "no master" error is one line naming every
    sentinel tried and what each said."""

    def addresses(self) -> list[str]:
        """``host:port`` of every sentinel, in the configured order."""
        return [client_host_port(s) for s in self._configured]

    def discover_master(self, service_name: str) -> tuple[str, int]:
        problems = []
        for index, sentinel in enumerate(self.sentinels):
            address = client_host_port(sentinel)
            try:
                masters = sentinel.sentinel_masters()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                problems.append(f"{address}: {str(e) or type(e).__name__}")
                continue
            except redis.ResponseError as e:
                problems.append(f"{address}: {e}")
                continue
            state = masters.get(service_name)
            if not state:
                problems.append(f"{address}: no master named {service_name!r}")
            elif not self.check_master_state(state, service_name):
                problems.append(f"{address}: master {state['ip']}:{state['port']} is down")
            else:
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        raise MasterNotFoundError(f"no sentinel gave a master {service_name!r}; tried " + "; ".join(problems))


def client_host_port(client: Any) -> str:
    """``host:port`` of a plain redis-py client."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def parse_address(entry: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``."""
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)


def sentinel_client(config: Any, connect_timeout_s: float, socket_timeout_s: float) -> redis.Redis:
    """A client for the master the config's sentinels name (no connection is opened yet).

    Parameters
    ----------
    config : Config
        With ``redis_sentinels``; ``redis_master_name``, ``redis_db``, the data nodes'
        ``redis_username``/``redis_password``, the sentinels' ``redis_sentinel_username``/
        ``redis_sentinel_password`` and, for TLS to both, ``redis_tls_ca_cert``.
    connect_timeout_s, socket_timeout_s : float
        For connections to the master.

    Returns
    -------
    redis.Redis
    """
    tls: dict[str, Any] = {}
    if config.redis_tls_ca_cert:
        tls = {"ssl": True, "ssl_ca_certs": config.redis_tls_ca_cert}
    sentinel_kwargs = {"socket_connect_timeout": SENTINEL_TIMEOUT_S, "socket_timeout": SENTINEL_TIMEOUT_S,
                       "username": config.redis_sentinel_username, "password": config.redis_sentinel_password, **tls}
    manager = JwqlSentinel([parse_address(a) for a in config.redis_sentinels], sentinel_kwargs=sentinel_kwargs,
                           socket_connect_timeout=connect_timeout_s, socket_timeout=socket_timeout_s,
                           health_check_interval=30, db=config.redis_db, username=config.redis_username,
                           password=config.redis_password, **tls)
    manager._configured = list(manager.sentinels)  # discover_master reorders the list
    return manager.master_for(config.redis_master_name, redis_class=redis.Redis)


def sentinel_manager(client: Any) -> JwqlSentinel | None:
    """The :class:`JwqlSentinel` behind a client made by :func:`sentinel_client`, else None."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    return manager if isinstance(manager, JwqlSentinel) else None


def set_wait(client: redis.Redis, replicas: int, wait_ms: int) -> redis.Redis:
    """Make :func:`run_durably` on ``client`` wait for ``replicas`` replicas, at most ``wait_ms`` ms."""
    setattr(client, WAIT_ATTRIBUTE, (int(replicas), int(wait_ms)))
    return client


def wait_settings(client: Any) -> tuple[int, int]:
    """``(replicas, wait_ms)`` of a client; ``(0, 0)``: it does not wait."""
    return getattr(client, WAIT_ATTRIBUTE, (0, 0))


def run_durably(client: Any, script: LuaScript, keys: Sequence[Any], args: Sequence[Any], what: str,
                address: str, must_wait: Callable[[Any], bool] = lambda reply: True) -> Any:
    """Run a Lua script (``EVALSHA``) and, on the same connection, ``WAIT`` for the client's replicas.

    Parameters
    ----------
    client : redis.Redis
        With :func:`set_wait` settings; without them the script is simply run.
    script : jwql_dramatiq.lua.LuaScript
        The script (loaded on ``NOSCRIPT``, then run again: it did not run).
    keys, args : sequence
    what : str
        The write, for the error.
    address : str
        Where Redis is, for the error.
    must_wait : callable
        Given the script's reply, whether it wrote something that must be durable (e.g. only an
        acquisition, not "held by someone else").

    Returns
    -------
    Any
        The script's reply.

    Raises
    ------
    ReplicaTimeout
        Fewer replicas than required acknowledged the write in time, the node was made a replica
        while ``WAIT`` blocked (``UNBLOCKED``), or (:class:`ReplicasRefused`) the master refused the
        write with ``NOREPLICAS``.
    redis.RedisError
        As raised by the client (the caller converts connection errors).
    """
    replicas, wait_ms = wait_settings(client)
    if replicas <= 0:
        return LuaScript.run(script, client, keys, args)  # the loader's own run, whatever subclass wraps it
    for attempt in (1, 2):
        with client.pipeline(transaction=False) as pipe:
            script.queue(pipe, keys, args)
            pipe.execute_command("WAIT", replicas, wait_ms)
            reply, acked = pipe.execute(raise_on_error=False)
        if isinstance(reply, redis.exceptions.NoScriptError) and attempt == 1:
            script.load(client)
            continue
        if is_no_replicas(reply):
            raise ReplicasRefused(address, what, str(reply))
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            if not must_wait(reply):
                return reply
            if is_outage(acked):  # UNBLOCKED: made a replica while WAIT blocked (a failover); not durable
                raise ReplicaTimeout(address, f"{what} (WAIT cut short: {acked})", replicas, 0, wait_ms)
            raise acked
        if int(acked) < replicas and must_wait(reply):
            raise ReplicaTimeout(address, what, replicas, int(acked), wait_ms)
        return reply
    raise AssertionError("unreachable")  # pragma: no cover


def topology(client: Any) -> dict[str, Any]:
    """What ``status`` shows: the master, its replicas and their lag, and each sentinel's view.

    Parameters
    ----------
    client : redis.Redis
        A client from :func:`jwql_dramatiq.connection.make_redis`.

    Returns
    -------
    dict
        ``{"master": "host:port" or None, "replicas": [{"address", "state", "offset", "lag_bytes",
        "lag_s"}], "master_offset": int, "sentinels": [{"address", "master", "flags",
        "other_sentinels", "replicas", "quorum", "error"}]}`` (``sentinels`` is empty without Sentinel).
        Replicas' ``lag_s`` is the seconds since each last acknowledged the replication stream.
    """
    info = client.info("replication")
    replicas = []
    for index in range(int(info.get("connected_slaves", 0))):
        entry = info.get(f"slave{index}", {})
        replicas.append({"address": f"{entry.get('ip')}:{entry.get('port')}", "state": entry.get("state"),
                         "offset": entry.get("offset"), "lag_bytes": info.get("master_repl_offset", 0)
                         - int(entry.get("offset", 0)), "lag_s": entry.get("lag")})
    manager = sentinel_manager(client)
    master = None
    views = []
    if manager is not None:
        name = client.connection_pool.service_name
        host, port = client.connection_pool.get_master_address()
        master = f"{host}:{port}"
        for sentinel in manager._configured:
            view: dict[str, Any] = {"address": client_host_port(sentinel)}
            try:
                state = sentinel.sentinel_master(name)
                view.update(master=f"{state['ip']}:{state['port']}", flags=state.get("flags", ""),
                            other_sentinels=state.get("num-other-sentinels"), replicas=state.get("num-slaves"),
                            quorum=state.get("quorum"))
            except redis.RedisError as e:
                view["error"] = str(e) or type(e).__name__
            views.append(view)
    else:
        kwargs = client.connection_pool.connection_kwargs
        master = f"{kwargs.get('host')}:{kwargs.get('port')}" if info.get("role") == "master" else None
    return {"master": master, "role": info.get("role"), "master_offset": info.get("master_repl_offset"),
            "replicas": replicas, "sentinels": views, "wait": list(wait_settings(client))}
