"""The Redis client for everything that is not the broker itself (locks, task states, CLI).

Built lazily from the config on first use; importing this module opens no connection.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import redis

from .errors import ConfigError, RedisAuthFailed, RedisUnavailable
from .redis_errors import (  # noqa: F401  (re-exported: the one classification)
    NO_REPLICAS_PREFIX, ROLE_CHANGED_REPLIES, client_address, client_username, is_auth_error, is_no_replicas,
    is_outage)

if TYPE_CHECKING:
    from .config import Config

#: Seconds to wait for a TCP connection to Redis before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Seconds any one reply may take. Blocking commands are issued in slices shorter than this
#: (:data:`BLOCKING_SLICE_S`), so a silent network partition surfaces as an error, not a hang.
SOCKET_TIMEOUT_S = 10.0
#: The longest single blocking command (BLPOP, BRPOPLPUSH) this package sends, in seconds.
BLOCKING_SLICE_S = 5.0
# The process's default config and client (see shared()); set by the broker's setup, else built lazily.
_shared: "tuple[Config, redis.Redis] | None" = None
_shared_lock = threading.Lock()
#: The reply of a Redis server to ``SELECT`` with a database number beyond its ``databases``.
DB_OUT_OF_RANGE = "DB index is out of range"


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


def share(config: Config, client: redis.Redis) -> None:
    """Make ``config`` and ``client`` the process's defaults (the broker's, once it is set up).

    Everything that takes an optional client (locks, task states, waits) then uses this one pool.
    """
    global _shared
    with _shared_lock:
        _shared = (config, client)


def shared() -> tuple[Config, redis.Redis]:
    """The process's default config and client: the broker's, or built from the config file on first use.

    Raises
    ------
    ConfigError
        The configuration is invalid.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            from .config import load_config

            config = load_config()
            _shared = (config, make_redis(config))
        return _shared


def get_redis(config: Config | None = None) -> redis.Redis:
    """Return the process's shared client (see :func:`shared`), or a new client for ``config``.

    Parameters
    ----------
    config : Config, optional
        When given, a new client for it.

    Returns
    -------
    redis.Redis
        No connection is opened until the first command.
    """
    return make_redis(config) if config is not None else shared()[1]


def check_redis(client: redis.Redis, config: Config) -> None:
    """Ping Redis once and turn a failure to reach or log in into :class:`RedisUnavailable`.

    Parameters
    ----------
    client : redis.Redis
        A client for ``config``'s Redis.
    config : Config
        Its config: the address for messages (without credentials), and the file and key a
        database the server does not have is blamed on.

    Raises
    ------
    ConfigError
        The server has no such database (the config's database number is beyond its ``databases``).
    RedisAuthFailed
        Redis refused the credentials.
    RedisUnavailable
        Redis did not answer.
    """
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationWrongNumberOfArgsError, OSError) as e:
        raise redis_unavailable(e, address=config.redis_address, client=client) from None
    except redis.ResponseError as e:  # SELECT, sent on connecting, is the only command with a bad-config reply
        if DB_OUT_OF_RANGE not in str(e):
            raise
        raise db_out_of_range(client, config) from None


def db_out_of_range(client: redis.Redis, config: Config) -> ConfigError:
    """The bad-config error for a database number the server does not have, naming its limit.

    Parameters
    ----------
    client : redis.Redis
        The client whose ``SELECT`` was refused.
    config : Config
        Its config: the file, and the key that chose the database (``redis_url`` when there is
        one, since :attr:`Config.url` ignores ``redis_db`` then).

    Returns
    -------
    ConfigError
        "database 99 does not exist on Redis at host:port, which has databases 0-15 ...".
    """
    key = "redis_url" if config.redis_url else "redis_db"
    db = client.connection_pool.connection_kwargs.get("db")
    count = _database_count(client)
    has = (f"which has databases 0-{count - 1} (its 'databases' setting is {count})" if count
           else "which has fewer databases (see 'databases' in its redis.conf)")
    return ConfigError(config.path, key, f"database {db} does not exist on Redis at {config.redis_address}, {has}")


def _database_count(client: redis.Redis) -> int | None:
    """The server's ``databases`` setting, asked on database 0; None when it cannot be asked.

    Not through sentinels (their pool cannot be copied), nor when ``CONFIG`` is refused or renamed.
    """
    pool = client.connection_pool
    if getattr(pool, "sentinel_manager", None) is not None:
        return None
    probe_pool = redis.ConnectionPool(connection_class=pool.connection_class, **{**pool.connection_kwargs, "db": 0})
    try:
        return int(redis.Redis(connection_pool=probe_pool).config_get("databases")["databases"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        probe_pool.disconnect()  # a client given a pool leaves it open on close()


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
