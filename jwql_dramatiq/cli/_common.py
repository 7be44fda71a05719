"""What every command shares: exit codes, the config/Redis/broker context, and output helpers."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, TextIO

import redis

from ..config import Config, load_config
from ..errors import JwqlDramatiqError, RedisUnavailable

#: Done; for ``status``, Redis answers and at least one worker is alive.
RET_OK = 0
#: The check failed or the action did not finish: ``status`` found no live worker, ``shutdown``
#: targets were still running after ``--wait``, ``worker --detach`` did not come up.
RET_FAIL = 1
#: Invalid command line, or ``purge`` not confirmed (no ``--yes``, and no "y" typed at a terminal).
RET_USAGE = 2
#: Redis is unreachable (the same code as a worker's).
RET_REDIS = 3
#: ``worker``: the pid file points at a live worker (the same code as Dramatiq's).
RET_PIDFILE = 4
#: The config file is missing or invalid.
RET_CONFIG = 5
#: No such task, lock or live worker.
RET_NOT_FOUND = 6
#: ``revoke``: the task already finished; nothing changed.
RET_FINISHED = 7
#: ``locks clear``: the lock's owner is alive (give ``--force`` to remove it anyway).
RET_REFUSED = 8
#: Any other error of this package.
RET_ERROR = 9

#: Exit codes and their meaning, for ``--help`` and the README.
EXIT_CODES = (
    (RET_OK, "done; status: Redis answers and at least one worker is alive"),
    (RET_FAIL, "status: no live worker; shutdown: targets still running after --wait; "
               "worker --detach: the worker did not come up"),
    (RET_USAGE, "invalid command line; purge not confirmed"),
    (RET_REDIS, "Redis is unreachable"),
    (RET_PIDFILE, "worker: the pid file points at a live worker"),
    (RET_CONFIG, "the config file is missing or invalid"),
    (RET_NOT_FOUND, "no such task, lock or live worker"),
    (RET_FINISHED, "revoke: the task already finished; nothing changed"),
    (RET_REFUSED, "locks clear: the owner is alive (use --force)"),
    (RET_ERROR, "any other error"),
)


class CommandError(JwqlDramatiqError):
    """A command cannot do what was asked; ``code`` is the exit code, the message is one line.

    Parameters
    ----------
    message : str
    code : int
        One of the ``RET_*`` codes.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Context:
    """The config and, on first use, a checked Redis client and a broker, for one command.

    Parameters
    ----------
    config_path : str or None
        ``--config``; None for ``$JWQL_DRAMATIQ_CONFIG`` or ``./config.json``.
    out : file
        Where results go (stdout).
    """

    def __init__(self, config_path: str | None, out: TextIO | None = None) -> None:
        self.config_path = config_path
        self.out = out or sys.stdout
        self._config: Config | None = None
        self._broker: Any = None

    @property
    def config(self) -> Config:
        """The loaded config (raises :class:`~jwql_dramatiq.errors.ConfigError`)."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def namespace(self) -> str:
        """The config's key prefix."""
        return self.config.namespace

    @property
    def broker(self):
        """A broker for this config, built once, with Redis checked.

        Built with :func:`~jwql_dramatiq.broker.build_broker`, neither installed as Dramatiq's
        global broker nor left as the broker of this process's actors (so calling :func:`main`
        in a monitor or a test changes nothing there).
        """
        if self._broker is None:
            from ..broker import build_broker
            from ..connection import check_redis

            broker = build_broker(self.config, declare_actors=False)
            try:
                check_redis(broker.client, self.config.redis_address)
            except RedisUnavailable:
                broker.close()
                raise
            self._broker = broker
        return self._broker

    @property
    def client(self) -> redis.Redis:
        """The broker's Redis client (checked)."""
        return self.broker.client

    def close(self) -> None:
        """Close the broker's connections, if one was built."""
        if self._broker is not None:
            try:
                self._broker.close()
            except Exception:  # closing must never hide the command's own outcome
                pass
            self._broker = None

    def print(self, *args: Any) -> None:
        """Print a line of results."""
        print(*args, file=self.out)

    def print_json(self, obj: Any) -> None:
        """Print ``obj`` as indented JSON."""
        print(json.dumps(obj, indent=2, default=str), file=self.out)


def table(rows: Iterable[Iterable[Any]], headers: Iterable[str]) -> str:
    """Lay out ``rows`` under ``headers`` in left-aligned columns (numbers right-aligned)."""
    head = [str(h) for h in headers]
    body = [["-" if c is None or c == "" else str(c) for c in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in body) and bool(body) for i in range(len(head))]
    widths = [max([len(head[i])] + [len(r[i]) for r in body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(head)] + [line(r) for r in body])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def clock(timestamp: float | str | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``, or ``-``."""
    try:
        value = float(timestamp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if value <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def seconds(value: float | None) -> str:
    """A duration in seconds, short: ``0.4 s``, ``12 s``, ``5 min``, ``3.2 h``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def ask_yes(question: str, stdin: TextIO | None = None, out: TextIO | None = None) -> bool:
    """Ask ``question`` at a terminal; True only when the operator types y or yes.

    Returns False at once when stdin is not a terminal.
    """
    stdin = stdin or sys.stdin
    out = out or sys.stderr
    if not stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=out, flush=True)
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")
