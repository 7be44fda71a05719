"""The Redis client for everything that is not the broker itself (locks, task states, CLI).

Built lazily from the config on first use; importing this module opens no connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis

from .errors import RedisAuthFailed, RedisUnavailable

if TYPE_CHECKING:
    from .config import Config

#: Seconds to wait for a TCP connection to Redis before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Seconds any one reply may take. Blocking commands are issued in slices shorter than this
#: (:data:`BLOCKING_SLICE_S`), so a silent network partition surfaces as an error, not a hang.
SOCKET_TIMEOUT_S = 10.0
#: The longest single blocking command (BLPOP, BRPOPLPUSH) this package sends, in seconds.
BLOCKING_SLICE_S = 5.0
#: How a master begins its refusal of a write while it has fewer good replicas than its
#: ``min-replicas-to-write`` asks for (after a partition, or on a new master until its replica is back).
NO_REPLICAS_PREFIX = "NOREPLICAS"
#: Error replies that mean "the master changed", not "this command is wrong": a blocking command
#: (BLPOP, BRPOPLPUSH, WAIT) cut short because the node was just made a replica (``UNBLOCKED force
#: unblock ... (master -> replica?)``), and a ``WAIT`` that reached a node already made one.
ROLE_CHANGED_REPLIES = ("UNBLOCKED ", "ERR WAIT cannot be used with replica instances")
#: What redis-py puts before an error reply it raises from a pipeline ("Command # 2 (...) of pipeline caused error: ").
_PIPELINE_PREFIX = " of pipeline caused error: "

def make_redis(config: Config) -> redis.Redis:
    """Return a new client for ``config``'s Redis (no connection is opened yet).

    Parameters
    ----------
    config : Config

    With ``redis_sentinels`` in the config, the client finds the master through the sentinels and
    follows a failover on its own (:func:`jwql_dramatiq.sentinel.sentinel_client`). Either way it
    carries the config's ``WAIT`` settings (:attr:`Config.wait_replicas`, ``redis_wait_ms``) for
    the writes that must survive a failover (:func:`jwql_dramatiq.sentinel.run_durably`).

    Returns
    -------
    redis.Redis
    """
    from .sentinel import sentinel_client, set_wait

    if config.redis_sentinels:
        client = sentinel_client(config, CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S)
    else:
        client = redis.Redis.from_url(config.url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=SOCKET_TIMEOUT_S, health_check_interval=30)
    return set_wait(client, config.wait_replicas, config.redis_wait_ms)


def get_redis(config: Config | None = None) -> redis.Redis:
    """Return the configured broker's client (one pool per process), or a new client for ``config``.

    Parameters
    ----------
    config : Config, optional
        When given, a new client for it; otherwise the broker's (built from the config file on
        first use).

    Returns
    -------
    redis.Redis
    """
    if config is not None:
        return make_redis(config)
    from .broker import get_broker

    return get_broker().client


def check_redis(client: redis.Redis, address: str) -> None:
    """Ping Redis once and turn a failure to reach or log in into :class:`RedisUnavailable`.

    Parameters
    ----------
    client : redis.Redis
    address : str
        ``host:port`` for the message, without credentials.

    Raises
    ------
    RedisAuthFailed
        Redis refused the credentials.
    RedisUnavailable
        Redis did not answer.
    """
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationWrongNumberOfArgsError, OSError) as e:
        raise redis_unavailable(e, address=address, client=client) from None


def redis_unavailable(error: BaseException, address: str | None = None, client: Any = None,
                      what: str | None = None) -> RedisUnavailable:
    """Turn a redis-py error into this package's error: the one conversion, used everywhere.

    A refused login (wrong password, unknown or disabled ACL user, ``NOAUTH``) becomes
    :class:`RedisAuthFailed`, "Redis authentication failed for user 'X' at host:port: ...", which
    is not an outage (never retried, and exits with the bad-config code); a master's
    ``NOREPLICAS`` refusal (:func:`is_no_replicas`) becomes
    :class:`~jwql_dramatiq.sentinel.ReplicasRefused`, a
    :class:`~jwql_dramatiq.sentinel.ReplicaTimeout`; anything else (connection refused, timeout,
    reset) becomes :class:`RedisUnavailable`, "Redis is unreachable at host:port: ...". No
    message carries credentials.

    Parameters
    ----------
    error : BaseException
        The driver's error; an existing :class:`RedisUnavailable` is returned unchanged (or, with
        ``what``, as the same class with ``what`` put before its reason).
    address : str, optional
        ``host:port`` (no credentials); default: the client's address.
    client : redis.Redis, optional
        The client that failed: its address and ACL user name are used.
    what : str, optional
        What was being done, put before the driver's message ("sending jw..._uncal.fits").

    Returns
    -------
    RedisUnavailable
        To be raised, normally ``from None`` (a driver traceback may carry connection details).
    """
    if isinstance(error, RedisUnavailable):
        if not what:
            return error
        address, reason = error.address, error.reason
    else:
        reason = str(error) or type(error).__name__
    if address is None:
        address = client_address(client)
    if what:
        reason = f"{what}: {reason}"
    if is_auth_error(error):
        username = error.username if isinstance(error, RedisAuthFailed) else client_username(client)
        return RedisAuthFailed(address, reason, username)
    if is_no_replicas(error):
        from .sentinel import ReplicasRefused

        return ReplicasRefused(address, what or "a write", str(error))
    return RedisUnavailable(address, reason)


def is_outage(error: BaseException) -> bool:
    """Whether Redis could not carry out a command now but may soon: the one classification of outages.

    An outage is what a caller rides through within its bound and a worker retries until Redis
    takes it: Redis unreachable, timed out or reset (``redis.ConnectionError``,
    ``redis.TimeoutError``, the built-in ``ConnectionError``, this package's
    :class:`~jwql_dramatiq.errors.RedisUnavailable`, which includes
    :class:`~jwql_dramatiq.sentinel.ReplicaTimeout`), a master refusing writes for want of
    replicas (:func:`is_no_replicas`: nothing was written, so the write is safe to repeat), and a
    node that was made a replica while a command waited on it (:data:`ROLE_CHANGED_REPLIES`: a
    failover; redis-py's Sentinel client already turns ``READONLY`` into a connection error). A
    refused login is not one (:func:`is_auth_error`): retrying cannot fix it.

    Parameters
    ----------
    error : BaseException

    Returns
    -------
    bool
    """
    if is_auth_error(error):
        return False
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError, RedisUnavailable, ConnectionError)) \
        or is_no_replicas(error) or _reply_text(error).startswith(ROLE_CHANGED_REPLIES)


def is_no_replicas(error: BaseException) -> bool:
    """Whether ``error`` is a master's ``NOREPLICAS`` refusal (``min-replicas-to-write``), alone or as
    a pipeline reports it (``Command # 1 (...) of pipeline caused error: NOREPLICAS ...``)."""
    return _reply_text(error).startswith(NO_REPLICAS_PREFIX)


def _reply_text(error: BaseException) -> str:
    """The server's error reply behind a ``redis.ResponseError`` (without redis-py's pipeline prefix); else ""."""
    if not isinstance(error, redis.ResponseError):
        return ""
    text = str(error)
    return text.split(_PIPELINE_PREFIX, 1)[1] if _PIPELINE_PREFIX in text else text


def is_auth_error(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing the credentials (not an outage)."""
    return isinstance(error, (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError, RedisAuthFailed))


def client_address(client: Any) -> str:
    """``host:port`` (or ``unix:<path>``) of a redis-py client, without credentials; ``?`` if unknown."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return "?"
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        addresses = ",".join(f"{s.connection_pool.connection_kwargs.get('host')}:"
                             f"{s.connection_pool.connection_kwargs.get('port')}" for s in manager.sentinels)
        return f"sentinels {addresses} (master {client.connection_pool.service_name!r})"
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def client_username(client: Any) -> str | None:
    """The ACL user name a redis-py client logs in as (``"default"`` if none is given; None: no client)."""
    try:
        return client.connection_pool.connection_kwargs.get("username") or "default"
    except AttributeError:
        return None
