"""What every command shares: exit codes (from :mod:`jwql_dramatiq.exit_codes`), the config/Redis/broker
context, and output helpers."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Iterable, TextIO

import redis

from ..config import Config, load_config
from ..errors import JwqlDramatiqError, RedisUnavailable
# The one exit-code table (shared with the worker), re-exported for the commands.
from ..exit_codes import (EXIT_CODES, RET_CONFIG, RET_ERROR, RET_FAIL, RET_FINISHED,  # noqa: F401
                          RET_INTERRUPTED, RET_NOT_FOUND, RET_OK, RET_PIDFILE, RET_REDIS, RET_REFUSED, RET_USAGE)


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
                check_redis(broker.client, self.config)
            except RedisUnavailable:
                broker.close()
                raise
            self._broker = broker
        return self._broker

    @property
    def client(self) -> redis.Redis:
        """The broker's Redis client (checked)."""
        return self.broker.client

    def client_if_built(self) -> redis.Redis | None:
        """The broker's client if the broker was built, else None (never connects)."""
        return None if self._broker is None else self._broker.client

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


# -- argument types (a bad value is an argparse error: one line, exit RET_USAGE) --------------------


def non_negative_seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (``nan`` refused: every comparison with it is false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def non_empty(text: str) -> str:
    """An argparse type: a name or id that is not empty (an empty one would match, or mean, everything)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def quiet_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, after its reader went away (a closed pipe).

    Python's own recipe for ``BrokenPipeError``: the interpreter flushes stdout once more at exit,
    and that flush must find somewhere to go, or it prints a second error.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no real stdout (a test's capture): nothing to redirect
        pass
