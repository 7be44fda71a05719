"""The operator command line, ``jwql-dramatiq`` (also ``python -m jwql_dramatiq``).

Every procedure of the old runbook is one command: start a host's worker (``worker``), see
what runs (``status``, ``tasks``), empty the queues without leaving a monitor waiting
(``purge``), stop workers from any host (``shutdown``), cancel a task (``revoke``), and find
and clear stale locks (``locks``). Read commands take ``--json``. Exit codes are the ``RET_*``
constants of :mod:`jwql_dramatiq.exit_codes`, the worker's table too (see :data:`EXIT_CODES` and
``jwql-dramatiq --help``): a bad config is 2 and Redis unreachable is 3 for every command and for
the worker. Errors are one line, never a traceback, and never show Redis credentials.
"""

from __future__ import annotations

import argparse
import logging
import sys

import redis

from ..errors import ConfigError, JwqlDramatiqError, RedisAuthFailed, RedisUnavailable
from . import actions, views, web, worker
from ._common import (EXIT_CODES, RET_CONFIG, RET_ERROR, RET_FAIL, RET_FINISHED, RET_INTERRUPTED, RET_NOT_FOUND,
                      RET_OK, RET_PIDFILE, RET_REDIS, RET_REFUSED, RET_USAGE, CommandError, Context,
                      quiet_stdout)

__all__ = ["main", "build_parser", "EXIT_CODES", "RET_OK", "RET_FAIL", "RET_USAGE", "RET_REDIS", "RET_PIDFILE",
           "RET_CONFIG", "RET_NOT_FOUND", "RET_FINISHED", "RET_REFUSED", "RET_ERROR", "RET_INTERRUPTED"]

EPILOG = """examples:
  # start this host's worker in the background (pid file and log file per host)
  jwql-dramatiq worker --detach

  # is anything alive? (exit 0 if at least one worker is; usable as a health check)
  jwql-dramatiq status
  jwql-dramatiq status --json

  # recent task states, and one task in full
  jwql-dramatiq tasks --state failed
  jwql-dramatiq tasks 5b1c0a3e-...

  # empty the queue; monitors waiting on purged tasks get a 'purged' failure at once
  jwql-dramatiq purge --yes

  # stop pljwql3's worker after its current task, from any host
  jwql-dramatiq shutdown --host pljwql3
  # stop every worker now, requeueing what they run
  jwql-dramatiq shutdown --all --now

  # cancel a task, killing it if it runs
  jwql-dramatiq revoke 5b1c0a3e-... --terminate

  # locks left by a killed process
  jwql-dramatiq locks list
  jwql-dramatiq locks clear --stale

  # the dashboard and /metrics (read-only unless $JWQL_DRAMATIQ_WEB_TOKEN is set)
  jwql-dramatiq web --bind 0.0.0.0 --port 8765

exit codes:
""" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors end in :class:`CommandError` (exit code ``RET_USAGE``) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise CommandError(message, RET_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (one subcommand per operation).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = _Parser(prog="jwql-dramatiq", description="Operate the JWQL task server (Dramatiq + Redis).",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", metavar="PATH",
                        help="the config file (default $JWQL_DRAMATIQ_CONFIG, else ./config.json)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show the package's log lines (warnings and up)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    worker.add_parser(sub)
    views.add_parsers(sub)
    actions.add_parsers(sub)
    web.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jwql-dramatiq`` with ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        One of the ``RET_*`` codes (see :data:`EXIT_CODES`); ``RET_INTERRUPTED`` when the reader of
        the output went away (a closed pipe), without a message.
    """
    try:
        code = _run(argv)
        # Flush here, not at interpreter exit, so a reader that went away is caught below.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader of our output went away (``jwql-dramatiq status | head -1``): stop quietly, as
        # Unix tools do, with the code of a command cut short from outside.
        quiet_stdout()
        return RET_INTERRUPTED


def _run(argv: list[str] | None) -> int:
    """:func:`main` without its handling of a closed output pipe."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CommandError as e:
        print(f"jwql-dramatiq: error: {e}", file=sys.stderr)
        return e.code
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR,
                            format="%(levelname)s %(name)s: %(message)s")
    ctx = Context(args.config)
    try:
        return int(args.handler(ctx, args))
    except CommandError as e:
        _error(str(e))
        return e.code
    except ConfigError as e:
        _error(f"bad config: {e}")
        return RET_CONFIG
    except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as e:  # also after the first check
        from ..connection import redis_unavailable

        error = redis_unavailable(e, address=_address(ctx), client=ctx.client_if_built())
        _error(str(error))
        return RET_CONFIG if isinstance(error, RedisAuthFailed) else RET_REDIS
    except redis.RedisError as e:
        _error(f"Redis error at {_address(ctx)}: {e}")
        return RET_ERROR
    except JwqlDramatiqError as e:
        _error(str(e))
        return RET_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return RET_INTERRUPTED
    finally:
        ctx.close()


def _error(message: str) -> None:
    print(f"jwql-dramatiq: error: {message}", file=sys.stderr)


def _address(ctx: Context) -> str:
    try:
        return ctx.config.redis_address
    except JwqlDramatiqError:
        return "?"
