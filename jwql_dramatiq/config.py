"""Load and validate the JWQL-style ``config.json`` into a frozen :class:`Config`.

The file is found at ``$JWQL_DRAMATIQ_CONFIG``, otherwise ``./config.json``. It accepts JWQL's
own keys (``redis_host``, ``redis_port``, ``transfer_dir``, ``working``, ``outputs``,
``log_dir``, ``test_data``, ``logging``) and ignores JWQL's other keys, so a monitor host can
point this server at the config file it already has.

Any scalar key can be overridden from the environment as ``JWQL_DRAMATIQ_<KEY IN CAPITALS>``,
for example ``JWQL_DRAMATIQ_REDIS_PORT=6380``, and so can ``redis_sentinels``, as comma-separated
``host:port`` entries (:data:`jwql_dramatiq.config_schema.ENV_LIST_KEYS`); see :data:`ENV_PREFIX`.
Each key's types and checks are in :mod:`jwql_dramatiq.config_schema`. Nothing here runs at
import time: call :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .config_schema import ENV_KEYS, SCHEMA, from_env, type_names, url_database
from .errors import ConfigError

logger = logging.getLogger(__name__)
#: Environment variable naming the config file.
CONFIG_ENV = "JWQL_DRAMATIQ_CONFIG"
#: Prefix of the environment variables that override single keys.
ENV_PREFIX = "JWQL_DRAMATIQ_"
#: Environment variable that overrides the host name a worker reports.
HOSTNAME_ENV = "JWQL_DRAMATIQ_HOSTNAME"
#: Where the config is looked for when ``$JWQL_DRAMATIQ_CONFIG`` is unset.
DEFAULT_CONFIG_PATH = "config.json"

#: The keys that must be present (JWQL's own names). ``redis_url`` replaces the first two.
REQUIRED_KEYS = ("redis_host", "redis_port", "transfer_dir")

#: Old key name -> current key name; the old one is still accepted (both at once is an error).
ALIASES = {"memory_limit_mb": "memory_limit_mib"}


@dataclass(frozen=True)
class Config:
    """The validated configuration. Build it with :func:`load_config`; every field is documented
    in the README's config table."""

    path: str
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_sentinels: tuple[str, ...] = ()
    redis_master_name: str = "jwql"
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_tls_ca_cert: str | None = None
    redis_min_replicas: int | None = None
    redis_wait_ms: int = 1000
    transfer_dir: str = ""
    working: str | None = None
    outputs: str | None = None
    log_dir: str | None = None
    test_data: str | None = None
    queue_name: str = "jwql"
    namespace: str = "jwql_dramatiq"
    result_ttl_s: float = 86_400.0
    time_limit_s: float = 14_400.0
    actor_time_limits_s: dict[str, float] = field(default_factory=dict)
    max_tasks_per_child: int = 1
    memory_limit_mib: float = 0.0
    memory_method: str = "auto"
    lock_lease_s: float = 30.0
    heartbeat_timeout_s: float = 60.0
    sweep_interval_s: float | None = None
    max_message_bytes: int = 10 * 1024 * 1024
    idle_poll_ms: int = 1000
    wait_timeout_s: float = 14_400.0
    warm_up: bool = True
    preload: tuple[str, ...] = ("jwst.pipeline",)
    actor_modules: tuple[str, ...] = ()
    maintenance_chance: int = 1000  # no effect (our broker has no maintenance pass); kept so old configs load
    max_cores: str = "auto"
    pool_start: str = "zygote"
    crds_path: str | None = None
    crds_server_url: str | None = None
    crds_context: str | None = None
    crds_offline_stub: bool = False
    step_args: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    logging: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        """The Redis URL, with credentials. Never log it: use :attr:`redis_address`."""
        if self.redis_url:
            return _with_credentials(self.redis_url, self.redis_username, self.redis_password)
        auth = ""
        if self.redis_password is not None:
            auth = f"{quote(self.redis_username or '', safe='')}:{quote(self.redis_password, safe='')}@"
        elif self.redis_username:
            auth = f"{quote(self.redis_username, safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def wait_replicas(self) -> int:
        """How many replicas must acknowledge a write that must survive a failover (``WAIT n``); 0: none.

        ``redis_min_replicas`` when given, else 1 with sentinels and 0 without.
        """
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def redis_address(self) -> str:
        """``host:port`` (or the unix socket path) of Redis, without credentials, for messages.

        With sentinels: ``sentinels h1:p1,h2:p2 (master 'name')``.
        """
        if self.redis_sentinels:
            return f"sentinels {','.join(self.redis_sentinels)} (master {self.redis_master_name!r})"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return parts.path
        return f"{parts.hostname}:{parts.port or 6379}"

    @property
    def working_dir(self) -> str:
        """The worker's scratch directory (JWQL's ``working``), defaulting under the system tmp dir."""
        return self.working or os.path.join("/tmp", f"jwql_dramatiq-{socket.gethostname()}")

    def time_limit_for(self, actor_name: str) -> float:
        """Return the hard time limit in seconds for ``actor_name`` (per-actor override, else default)."""
        return float(self.actor_time_limits_s.get(actor_name, self.time_limit_s))


def worker_hostname() -> str:
    """The host name this process reports in worker records and task states.

    Returns
    -------
    str
        ``$JWQL_DRAMATIQ_HOSTNAME`` if set and not empty, else ``socket.gethostname()``.
    """
    return os.environ.get(HOSTNAME_ENV, "").strip() or socket.gethostname()


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    """Put ``username``/``password`` into ``url`` unless it carries credentials of its own."""
    parts = urlsplit(url)
    if password is None or parts.password is not None or parts.scheme == "unix":
        return url
    user = quote(parts.username or username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return parts._replace(netloc=netloc).geturl()


#: How alike an unknown key must be to one of ours to be called a misspelling (difflib ratio).
MISSPELLING_CUTOFF = 0.8

def validate(raw: dict[str, Any], path: str) -> Config:
    """Validate a parsed config mapping into a :class:`Config`.

    Parameters
    ----------
    raw : dict
        The parsed JSON object, overrides already applied.
    path : str
        The file name, used in error messages.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming the file, the key and what is wrong.
    """
    if not isinstance(raw, dict):
        raise ConfigError(path, None, f"the top level must be a JSON object, not {type(raw).__name__}")
    raw = _resolve_aliases(raw, path)
    if raw.get("redis_url") and raw.get("redis_sentinels"):
        raise ConfigError(path, "redis_sentinels", "cannot be given with 'redis_url': give one of them "
                          "('redis_sentinels' finds the master through Sentinel, 'redis_url' names one server)")
    required = REQUIRED_KEYS[2:] if raw.get("redis_url") or raw.get("redis_sentinels") else REQUIRED_KEYS
    for key in required:
        if key not in raw:
            raise ConfigError(path, key, "is missing (required)")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SCHEMA:
            _warn_if_misspelt(key, path)  # JWQL's config carries many keys this server does not use
            continue
        types, convert, check = SCHEMA[key]
        # bool is an int in Python; refuse it where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(path, key, f"must be {type_names(types)}, got {json.dumps(value)}")
        try:
            value = convert(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(path, key, str(e)) from None
        problem = check(value) if check else None
        if problem:
            raise ConfigError(path, key, problem)
        values[key] = value
    url_db = url_database(values["redis_url"]) if values.get("redis_url") else None
    if url_db is not None and values.get("redis_db", url_db) != url_db:
        # not refused: redis_url often comes from the environment over a file written for host and port
        logger.warning("%s: 'redis_db' (%d) is ignored: 'redis_url' names database %d (give the database in "
                       "the URL)", path, values["redis_db"], url_db)
    if "transfer_dir" in values and not values["transfer_dir"].strip():
        raise ConfigError(path, "transfer_dir", "must not be empty")
    if not values.get("redis_url") and not values.get("redis_sentinels") and not values.get("redis_host", "x").strip():
        raise ConfigError(path, "redis_host", "must not be empty (give the Redis host name, or a redis_url)")
    return Config(path=path, **values)


def _warn_if_misspelt(key: str, path: str) -> None:
    """Log one line when an unknown key looks like a misspelling of one of ours."""
    close = difflib.get_close_matches(key, [*SCHEMA, *ALIASES], n=1, cutoff=MISSPELLING_CUTOFF)
    if close:
        logger.warning("%s: unknown key %r is ignored; did you mean %r?", path, key, close[0])


def check_transfer_dir(config: Config) -> None:
    """Refuse a ``transfer_dir`` that exists but is not a directory (a missing one is created later).

    Raises
    ------
    ConfigError
        Naming the file, the key and the path.
    """
    path = Path(config.transfer_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(config.path, "transfer_dir", f"{path} exists but is not a directory")
    for sub in ("incoming", "outgoing"):
        if (path / sub).exists() and not (path / sub).is_dir():
            raise ConfigError(config.path, "transfer_dir", f"{path / sub} exists but is not a directory")


def _resolve_aliases(raw: dict[str, Any], path: str) -> dict[str, Any]:
    """Rename old keys (:data:`ALIASES`) to their current names, refusing both given at once."""
    resolved = dict(raw)
    for old, new in ALIASES.items():
        if old in resolved:
            if new in resolved:
                raise ConfigError(path, old, f"is the old name of {new!r}; give only one of them")
            resolved[new] = resolved.pop(old)
    return resolved


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate the config file.

    Parameters
    ----------
    path : str or PathLike, optional
        The file; defaults to ``$JWQL_DRAMATIQ_CONFIG``, then ``./config.json``.
    environ : dict, optional
        The environment to read overrides from; defaults to ``os.environ``.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, is not JSON (with line and column), or a
        key is missing, of the wrong type, or out of range.
    """
    env = os.environ if environ is None else environ
    file = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    shown = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, None, f"no such file (set ${CONFIG_ENV} or create ./config.json)") from None
    except OSError as e:
        raise ConfigError(shown, None, f"cannot be read: {e.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(shown, None, f"is not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    overridden: dict[str, str] = {}  # key -> the variable that gave its value
    if isinstance(raw, dict):
        for key in ENV_KEYS:
            override = env.get(ENV_PREFIX + key.upper())
            if override is not None:
                raw[key] = from_env(key, override)
                overridden[key] = ENV_PREFIX + key.upper()
    try:
        return validate(raw, shown)
    except ConfigError as e:
        if e.key not in overridden:
            raise
        # The bad value is the variable's, not the file's: say so, or the file gets searched in vain.
        raise ConfigError(e.path, e.key, e.problem, env_var=overridden[e.key]) from None


def replace(config: Config, **changes: Any) -> Config:
    """Return a copy of ``config`` with ``changes`` applied and validated again."""
    raw = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "path"}
    raw["preload"], raw["actor_modules"] = list(raw["preload"]), list(raw["actor_modules"])
    raw["redis_sentinels"] = list(raw["redis_sentinels"])
    raw.update(changes)
    return validate({k: v for k, v in raw.items() if v is not None}, config.path)
