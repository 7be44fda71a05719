"""The Redis client for everything that is not the broker itself (locks, task states, CLI).

Built lazily from the config on first use; importing this module opens no connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from .errors import RedisUnavailable

if TYPE_CHECKING:
    from .config import Config

#: Seconds to wait for a TCP connection to Redis before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Seconds any one reply may take. Blocking commands are issued in slices shorter than this
#: (:data:`BLOCKING_SLICE_S`), so a silent network partition surfaces as an error, not a hang.
SOCKET_TIMEOUT_S = 10.0
#: The longest single blocking command (BLPOP, BRPOPLPUSH) this package sends, in seconds.
BLOCKING_SLICE_S = 5.0

def make_redis(config: Config) -> redis.Redis:
    """Return a new client for ``config``'s Redis (no connection is opened yet).

    Parameters
    ----------
    config : Config

    Returns
    -------
    redis.Redis
    """
    return redis.Redis.from_url(config.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S,
                                health_check_interval=30)


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
    """Ping Redis once and turn a connection failure into :class:`RedisUnavailable`.

    Parameters
    ----------
    client : redis.Redis
    address : str
        ``host:port`` for the message, without credentials.

    Raises
    ------
    RedisUnavailable
    """
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise RedisUnavailable(address, str(e) or type(e).__name__) from None
    except redis.AuthenticationError as e:
        raise RedisUnavailable(address, f"authentication failed: {e}") from None
