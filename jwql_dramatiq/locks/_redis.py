"""Redis plumbing shared by the lock modules: key names, settings, defaults and error conversion.

Key layout (``<ns>`` is the configured namespace, one prefix for everything):

``<ns>:lock:<name>`` (or, for the redis-py drop-in :class:`~jwql_dramatiq.locks.compat.Lock`, the bare name)
    String, the holder's token, exactly as redis-py's ``Lock`` stores it. Its PX is the lease.
``<ns>:lock-owner:<name>``
    String, the owner record: JSON ``{"fence":N,"token_hex":...,"key":...,"acquired_at":...,"host":...}``.
    Written and deleted with the lock key, with the same PX, so it expires with the lease.
``<ns>:lock-fence``
    Integer, ONE fencing counter for the namespace: incremented by each successful acquisition, so tokens
    only grow. It never expires; no per-name key outlives a lock. A holder's token is in its owner record.
``<ns>:lock-queue:<name>`` and ``<ns>:lock-waiters:<name>``
    Zsets of waiting ids: arrival order, and the deadline after which a waiter is presumed dead.
``<ns>:lock-signal:<name>:<waiter id>``
    List a waiter BLPOPs on; release LPUSHes the head waiter's list.

Nothing here connects to Redis or reads the configuration at import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from jwql_dramatiq.errors import LockError, RedisUnavailable

#: How long (ms) a queued waiter keeps its place past the wait it was handed.
WAITER_GRACE_MS = 1000
#: Longest single BLPOP (s) a waiter does before looking at the lock again, whatever the lease
#: (the package's ``connection.BLOCKING_SLICE_S``: a partition surfaces as an error, not a hang).
MAX_POLL_S = 5.0
#: Margin (s) kept below a client's ``socket_timeout`` so a BLPOP never trips it.
SOCKET_TIMEOUT_MARGIN_S = 0.5


@dataclass(frozen=True)
class LockKeys:
    """The Redis keys of one lock name.

    Parameters
    ----------
    namespace : str
        The key prefix.
    name : str
        The lock name.
    lock_key : str or None
        The key holding the token; None for ``<ns>:lock:<name>`` (the redis-py drop-in uses the bare name).
    """

    namespace: str
    name: str
    lock_key: str | None = None

    @property
    def lock(self) -> str:
        """str: the key holding the holder's token, ``<ns>:lock:<name>`` unless given."""
        return self.lock_key if self.lock_key is not None else f"{self.namespace}:lock:{self.name}"

    @property
    def owner(self) -> str:
        """str: ``<ns>:lock-owner:<name>``, the owner record (with the fencing token)."""
        return f"{self.namespace}:lock-owner:{self.name}"

    @property
    def fence(self) -> str:
        """str: ``<ns>:lock-fence``, the namespace's one fencing counter."""
        return f"{self.namespace}:lock-fence"

    @property
    def queue(self) -> str:
        """str: ``<ns>:lock-queue:<name>``, waiters in arrival order."""
        return f"{self.namespace}:lock-queue:{self.name}"

    @property
    def waiters(self) -> str:
        """str: ``<ns>:lock-waiters:<name>``, waiter deadlines."""
        return f"{self.namespace}:lock-waiters:{self.name}"

    @property
    def signal_prefix(self) -> str:
        """str: ``<ns>:lock-signal:<name>:``, prefix of each waiter's wake-up list."""
        return f"{self.namespace}:lock-signal:{self.name}:"


def owner_key_pattern(namespace: str) -> str:
    """Return the SCAN pattern matching every owner record of a namespace.

    Parameters
    ----------
    namespace : str
        The key prefix; glob metacharacters in it are escaped.

    Returns
    -------
    str
        ``<escaped ns>:lock-owner:*``.
    """
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in namespace)
    return f"{escaped}:lock-owner:*"


def client_address(client: Any) -> str:
    """Describe where a client connects, without credentials.

    Parameters
    ----------
    client : redis.Redis or redis.client.Pipeline
        The client.

    Returns
    -------
    str
        ``host:port/db`` or ``unix:<path>/db``.
    """
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return "<unknown>"
    db = kwargs.get("db", 0)
    if getattr(client.connection_pool, "sentinel_manager", None) is not None:
        from jwql_dramatiq.connection import client_address as address

        return f"{address(client)}/{db}"
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}/{db}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def socket_timeout_s(client: Any) -> float | None:
    """Return a client's socket timeout in seconds, or None when it has none.

    Parameters
    ----------
    client : redis.Redis
        The client.

    Returns
    -------
    float or None
        The ``socket_timeout`` connection argument.
    """
    try:
        value = client.connection_pool.connection_kwargs.get("socket_timeout")
    except AttributeError:
        return None
    return float(value) if value else None


def unavailable(client: Any, exc: BaseException) -> RedisUnavailable:
    """Convert a redis-py connection or timeout error into :class:`RedisUnavailable`.

    Parameters
    ----------
    client : redis.Redis
        The client that failed.
    exc : BaseException
        The driver's error.

    Returns
    -------
    RedisUnavailable
        The error to raise ``from exc``.
    """
    from jwql_dramatiq.connection import redis_unavailable

    return redis_unavailable(exc, address=client_address(client), client=client)


def unknown_code(script: str, code: object, lock_name: str) -> LockError:
    """Build the error raised for a Lua return code that no exception is mapped to.

    Parameters
    ----------
    script : str
        The script's file name.
    code : object
        What it returned.
    lock_name : str
        The lock concerned.

    Returns
    -------
    LockError
        The error to raise.
    """
    return LockError(lock_name, f"{script} returned unknown code {code!r} for lock {lock_name!r}")


def default_client() -> redis.Redis:
    """Return the package's shared client (built lazily from the configuration).

    Returns
    -------
    redis.Redis
        ``jwql_dramatiq.connection.get_redis()``.
    """
    from jwql_dramatiq.connection import get_redis

    return get_redis()


def default_settings() -> tuple[str, float]:
    """Return the configured namespace and lock lease.

    The config is the one ``get_redis()``'s client comes from (``jwql_dramatiq.connection.shared()``),
    so a lock's namespace and client always come from the same file.

    Returns
    -------
    tuple of (str, float)
        ``(config.namespace, config.lock_lease_s)``.

    Raises
    ------
    ConfigError
        The configuration is invalid.
    """
    from jwql_dramatiq.connection import shared

    config = shared()[0]
    return config.namespace, float(config.lock_lease_s)


def resolve(client: redis.Redis | None, namespace: str | None, lease_s: float | None) -> tuple[redis.Redis, str, float]:
    """Fill in whatever the caller left as None from the configuration, lazily.

    Parameters
    ----------
    client : redis.Redis or None
        An explicit client, or None for :func:`default_client`.
    namespace : str or None
        An explicit key prefix, or None for the configured one.
    lease_s : float or None
        An explicit lease, or None for the configured one.

    Returns
    -------
    tuple of (redis.Redis, str, float)
        The client, namespace and lease to use.
    """
    if namespace is None or lease_s is None:
        config_namespace, config_lease_s = default_settings()
        namespace = config_namespace if namespace is None else namespace
        lease_s = config_lease_s if lease_s is None else lease_s
    if client is None:
        client = default_client()
    return client, namespace, float(lease_s)


@dataclass(frozen=True)
class LockSettings:
    """Everything a lock needs at acquisition, resolved once (lazily) from its arguments and the config.

    Attributes
    ----------
    client : redis.Redis
        The client.
    keys : LockKeys
        The lock's keys.
    lease_s : float
        The lease.
    lease_ms : int
        The lease, in ms.
    max_hold_ms : int
        The maximum hold time in ms, 0 for none.
    first_ttl_ms : int
        The PX written at acquisition: ``min(lease_ms, max_hold_ms)``.
    poll_ms : int
        The longest single BLPOP of a waiter: ``min(lease, MAX_POLL_S)``, and below the socket timeout.
    signal_ttl_ms : int
        How long an unconsumed wake-up is kept.
    record_settings : str
        The ``"key"``, ``"lease_s"`` and ``"timeout_s"`` members of the owner record, pre-encoded.
    """

    client: redis.Redis
    keys: LockKeys
    lease_s: float
    lease_ms: int
    max_hold_ms: int
    first_ttl_ms: int
    poll_ms: int
    signal_ttl_ms: int
    record_settings: str
    acquire_keys: list[str] = field(repr=False)
    try_keys: list[str] = field(repr=False)
    release_keys: list[str] = field(repr=False)
    leave_keys: list[str] = field(repr=False)


def bind(
    name: str,
    client: redis.Redis | None,
    namespace: str | None,
    lease_s: float | None,
    timeout: float | None,
    lock_key: str | None = None,
) -> LockSettings:
    """Resolve a lock's settings (reading the config only for what was left as None).

    Parameters
    ----------
    name : str
        The lock name.
    client : redis.Redis or None
        An explicit client, or None for the default.
    namespace : str or None
        An explicit key prefix, or None for the configured one.
    lease_s : float or None
        An explicit lease, or None for the configured one.
    timeout : float or None
        The maximum hold time in seconds, None for none.
    lock_key : str or None
        The key holding the token; None for ``<ns>:lock:<name>``.

    Returns
    -------
    LockSettings
        The resolved settings.

    Raises
    ------
    ValueError
        The (configured) lease is not positive.
    """
    client, namespace, lease_s = resolve(client, namespace, lease_s)
    if not lease_s > 0:
        raise ValueError(f"lock lease must be > 0 seconds, got {lease_s!r}")
    keys = LockKeys(namespace, name, lock_key)
    lease_ms = max(1, round(lease_s * 1000))
    max_hold_ms = 0 if timeout is None else max(1, round(timeout * 1000))
    poll_s = min(lease_s, MAX_POLL_S)
    socket_timeout = socket_timeout_s(client)
    if socket_timeout is not None:
        poll_s = min(poll_s, max(socket_timeout - SOCKET_TIMEOUT_MARGIN_S, socket_timeout / 2))
    poll_ms = max(1, int(poll_s * 1000))
    timeout_json = "null" if timeout is None else repr(float(timeout))
    return LockSettings(
        client=client,
        keys=keys,
        lease_s=lease_s,
        lease_ms=lease_ms,
        max_hold_ms=max_hold_ms,
        first_ttl_ms=min(lease_ms, max_hold_ms) if max_hold_ms else lease_ms,
        poll_ms=poll_ms,
        signal_ttl_ms=poll_ms + WAITER_GRACE_MS,
        record_settings=f',"key":{json.dumps(keys.lock)},"lease_s":{float(lease_s)!r},"timeout_s":{timeout_json},',
        acquire_keys=[keys.lock, keys.owner, keys.fence, keys.queue, keys.waiters],
        try_keys=[keys.lock, keys.owner, keys.fence, keys.queue],
        release_keys=[keys.lock, keys.owner, keys.queue, keys.waiters],
        leave_keys=[keys.lock, keys.queue, keys.waiters],
    )


def text(value: Any) -> str:
    """Decode a reply value that may be bytes (clients with or without ``decode_responses``).

    Parameters
    ----------
    value : bytes or str or int
        A reply value.

    Returns
    -------
    str
        The value as text.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
