"""The config's schema: for each key of ``config.json``, the JSON types it accepts, how its value is
converted, and the check that names what is wrong with it (:data:`SCHEMA`), with the keys the
environment may override (:data:`ENV_KEYS`). :func:`jwql_dramatiq.config.validate` applies it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.connection import parse_url

from .errors import BadInput


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else f"port {v} is out of range 1-65535"


def _to_int(v: Any) -> int:
    if isinstance(v, str):
        v = v.strip()
        if not v.lstrip("-").isdigit():
            raise ValueError(f"{v!r} is not a whole number")
    return int(v)


def _host_port(v: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too) into its parts; ValueError when it is not one."""
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not host:port")
    return host, int(port)


def _sentinels_problem(v: tuple[str, ...]) -> str | None:
    for entry in v:
        if not isinstance(entry, str):
            return f"entry {entry!r} is not a \"host:port\" string"
        try:
            _host_port(entry)
        except ValueError as e:
            return f"entry {e}"
    return None


def _url(v: str) -> str | None:
    """What is wrong with a Redis URL (None: nothing), checked as redis-py will read it.

    redis-py takes a missing host for localhost, ignores a database path it cannot read (db 0),
    and fails only at the first connection on a bad port; each is refused here instead. A URL
    carries credentials, so a problem names only the offending part, never the whole URL.
    """
    if not v.lower().startswith(("redis://", "rediss://", "unix://")):
        return "must start with redis://, rediss:// or unix://"
    try:
        parts = urlsplit(v)
    except ValueError:  # urlsplit's "Invalid IPv6 URL"; the host part could be a mangled password
        return "has an unmatched '[' or ']' in its host part"
    if "@" in parts.path + parts.query + parts.fragment:
        # An unencoded '/', '?' or '#' in the password ends the host part early: what follows
        # would be read as host, port and database, and naming them would show the password.
        return "has an '@' after its host part: percent-encode '/', '?', '#' and '@' in the user name and password"
    host_port = parts.netloc.rpartition("@")[2]  # never the credentials
    try:
        port = parts.port
    except ValueError:
        text = host_port.rpartition(":")[2]
        return (f"port {text} is out of range 1-65535" if _digits(text)
                else f"port {text!r} is not a whole number")
    query_db = _query_db(parts.query)
    if query_db is not None and not _digits(query_db):
        return f"?db={query_db!r} is not a whole number"
    if parts.scheme == "unix":
        if parts.hostname:  # redis-py would drop it and use only the path
            return f"unix:// takes an absolute socket path (unix:///run/redis.sock), not host {parts.hostname!r}"
        if not parts.path.strip("/"):
            return "has no socket path (give unix:///path/to/redis.sock)"
    else:
        if not parts.hostname:  # redis-py would quietly connect to localhost
            return f"has no host (give {parts.scheme}://host:port/db)"
        if port is not None and not 1 <= port <= 65535:
            return f"port {port} is out of range 1-65535"
        path_db = unquote(parts.path).strip("/")
        if path_db and not _digits(path_db):
            return f"database {parts.path!r} is not a whole number (give {parts.scheme}://host:port/N, or none for 0)"
        if path_db and query_db is not None and int(path_db) != int(query_db):
            return f"names database {int(path_db)} in its path and {int(query_db)} in ?db=; give one"
    try:
        parse_url(v)  # redis-py's own parse, for its typed query arguments (?socket_timeout=...)
    except ValueError as e:  # its messages name the argument, not the value
        return str(e)
    return None


def _digits(text: str) -> bool:
    """True for ASCII digits only (``str.isdigit`` also takes '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def url_database(url: str) -> int:
    """The database a valid Redis URL names (its path, else ``?db=``, else 0), as redis-py reads it."""
    parts = urlsplit(url)
    path_db = unquote(parts.path).strip("/") if parts.scheme != "unix" else ""
    query_db = _query_db(parts.query)
    return int(path_db or query_db or 0)


def _query_db(query: str) -> str | None:
    """The ``db`` query argument as redis-py reads it (the first non-empty one), or None."""
    values = parse_qs(query).get("db")
    return values[0] if values else None


_STR = ((str,), str, None)
_OPT_STR = ((str, type(None)), lambda v: v, None)
#: key -> (accepted JSON types, converter, check); the check returns a problem string or None.
SCHEMA: dict[str, tuple[tuple[type, ...], Any, Any]] = {
    "redis_host": _STR,
    "redis_port": ((int, str), _to_int, _port),
    "redis_db": ((int, str), _to_int, _non_negative),
    "redis_username": _OPT_STR,
    "redis_password": _OPT_STR,
    "redis_url": ((str, type(None)), lambda v: v, lambda v: v and _url(v)),
    "redis_sentinels": ((list,), tuple, _sentinels_problem),
    "redis_master_name": ((str,), str, lambda v: None if v.strip() else "must not be empty"),
    "redis_sentinel_username": _OPT_STR,
    "redis_sentinel_password": _OPT_STR,
    "redis_tls_ca_cert": _OPT_STR,
    "redis_min_replicas": ((int, type(None)), lambda v: v, lambda v: v is not None and _non_negative(v)),
    "redis_wait_ms": ((int,), int, lambda v: None if 1 <= v <= 60_000 else "must be between 1 and 60000"),
    "transfer_dir": _STR,
    "working": _OPT_STR,
    "outputs": _OPT_STR,
    "log_dir": _OPT_STR,
    "test_data": _OPT_STR,
    "queue_name": ((str,), str, lambda v: None if v.replace("_", "a").replace("-", "a").replace(".", "a").isalnum()
                   else "may only hold letters, digits, '.', '_' and '-'"),
    "namespace": _STR,
    "result_ttl_s": ((int, float), float, _positive),
    "time_limit_s": ((int, float), float, _positive),
    "actor_time_limits_s": ((dict,), dict, lambda v: next(
        (f"limit for {k!r} must be a positive number" for k, s in v.items()
         if isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0), None)),
    "max_tasks_per_child": ((int,), int, _non_negative),
    "memory_limit_mib": ((int, float), float, _non_negative),
    "memory_method": ((str,), str, lambda v: None if v in ("auto", "cgroup", "v2", "v1", "poll")
                      else "must be 'auto', 'cgroup', 'v2', 'v1' or 'poll'"),
    "lock_lease_s": ((int, float), float, _positive),
    "heartbeat_timeout_s": ((int, float), float, _positive),
    "sweep_interval_s": ((int, float, type(None)), lambda v: v if v is None else float(v),
                         lambda v: v is not None and _positive(v)),
    "max_message_bytes": ((int,), int, lambda v: None if v >= 1024 else "must be at least 1024"),
    "idle_poll_ms": ((int,), int, lambda v: None if 10 <= v <= 60_000 else "must be between 10 and 60000"),
    "wait_timeout_s": ((int, float), float, _positive),
    "warm_up": ((bool,), bool, None),
    "preload": ((list,), tuple, lambda v: next((f"entry {m!r} is not a module name" for m in v
                                                if not isinstance(m, str) or not m.replace(".", "_").isidentifier()), None)),
    "actor_modules": ((list,), tuple, lambda v: next((f"entry {m!r} is not a module name" for m in v
                                                      if not isinstance(m, str) or not m.replace(".", "_").isidentifier()), None)),
    "maintenance_chance": ((int,), int, lambda v: None if 0 <= v <= 1_000_000 else "must be between 0 and 1000000"),
    "max_cores": ((str, int), str, lambda v: None if v in ("auto", "none", "quarter", "half", "all") or v.isdigit()
                  else "must be 'auto', 'none', 'quarter', 'half', 'all' or a whole number"),
    "pool_start": ((str,), str, lambda v: None if v in ("zygote", "spawn") else "must be 'zygote' or 'spawn'"),
    "crds_path": _OPT_STR,
    "crds_server_url": _OPT_STR,
    "crds_context": _OPT_STR,
    "crds_offline_stub": ((bool,), bool, None),
    "step_args": ((dict,), dict, lambda v: _step_args_problem(v)),
    "logging": ((dict, type(None)), lambda v: v, None),
}

#: List keys that may be overridden from the environment too, as comma-separated entries
#: (``JWQL_DRAMATIQ_REDIS_SENTINELS=a:26379,b:26379,c:26379``; an empty value: an empty list).
ENV_LIST_KEYS = ("redis_sentinels",)
#: Config keys that may be overridden from the environment (``JWQL_DRAMATIQ_<KEY>``).
ENV_KEYS = tuple(k for k, (types, _, _) in SCHEMA.items()
                 if dict not in types and (list not in types or k in ENV_LIST_KEYS))


def _step_args_problem(value: dict[str, Any]) -> str | None:
    """Check the deployment's ``step_args``: ``{"*", "<instrument>" or "<instrument>/<SUBARRAY>": {step: {...}}}``.

    Step names may be jwql's (``rate``) or Detector1's (``ramp_fit``); each must be known to
    at least one of the two pipeline paths.
    """
    from .pipeline.deployment import deployment_path_args, split_key

    for key, steps in value.items():
        try:
            split_key(key)
            deployment_path_args(steps, "cal")
            deployment_path_args(steps, "jump")
        except BadInput as e:
            return f"[{key!r}]: {e}"
    return None


def type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "an object", list: "a list", type(None): "null"}
    return " or ".join(names[t] for t in types)


def from_env(key: str, raw: str) -> Any:
    """Parse an environment override into the JSON type its key expects (a list: comma-separated)."""
    types = SCHEMA[key][0]
    if list in types:
        return [entry.strip() for entry in raw.split(",") if entry.strip()]
    if bool in types:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        return raw
    if float in types:
        try:
            return float(raw)
        except ValueError:
            return raw
    if int in types and str not in types:
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw
