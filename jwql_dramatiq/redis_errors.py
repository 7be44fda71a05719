"""How this package reads a redis-py error: an outage to ride through, a refused login, or a bug.

The one classification (:func:`is_outage`) and the address/user of a client for messages. It
imports nothing of this package but :mod:`jwql_dramatiq.errors`, so the connection and Sentinel
modules can both use it; :mod:`jwql_dramatiq.connection` re-exports every name.
"""

from __future__ import annotations

from typing import Any

import redis

from .errors import RedisAuthFailed, RedisUnavailable

#: How a master begins its refusal of a write while it has fewer good replicas than its
#: ``min-replicas-to-write`` asks for (after a partition, or on a new master until its replica is back).
NO_REPLICAS_PREFIX = "NOREPLICAS"
#: Error replies that mean "the master changed", not "this command is wrong": a blocking command
#: (BLPOP, BRPOPLPUSH, WAIT) cut short because the node was just made a replica (``UNBLOCKED force
#: unblock ... (master -> replica?)``), and a ``WAIT`` that reached a node already made one.
ROLE_CHANGED_REPLIES = ("UNBLOCKED ", "ERR WAIT cannot be used with replica instances")
#: What redis-py puts before an error reply it raises from a pipeline ("Command # 2 (...) of pipeline caused error: ").
_PIPELINE_PREFIX = " of pipeline caused error: "


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
