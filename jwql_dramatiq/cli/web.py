"""``jwql-dramatiq web``: serve the dashboard and ``/metrics`` (needs the ``web`` extra)."""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

from ._common import RET_ERROR, RET_OK, RET_USAGE, CommandError, Context

#: Default address and port: this host only; ``--bind 0.0.0.0`` opens read-only viewing to a network.
DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8765
#: Connections waiting to be accepted (uvicorn's default).
BACKLOG = 2048


def cmd_web(ctx: Context, args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted (SIGINT or SIGTERM); return 0."""
    try:
        import uvicorn

        from ..web import create_app
        from ..web.security import MIN_TOKEN_CHARS, TOKEN_ENV, token_from_env
    except ImportError as e:
        raise CommandError(f"the dashboard needs the web extra ({e.name} is missing): "
                           "pip install 'jwql-dramatiq[web]'", RET_USAGE) from None
    import os

    config = ctx.config
    token = token_from_env()
    if token is None and os.environ.get(TOKEN_ENV, "").strip():
        logging.getLogger(__name__).warning("%s is shorter than %d characters: actions stay off.",
                                            TOKEN_ENV, MIN_TOKEN_CHARS)
    app = create_app(config, token=token)
    # Listen before saying "serving", so a port in use is one line (and not uvicorn's exit 3,
    # which is the table's "Redis unreachable").
    sockets = listen(args.bind, args.port)
    ctx.print(f"jwql-dramatiq web: serving http://{args.bind}:{args.port}/ for Redis {config.redis_address} "
              f"({'actions on' if token else 'read-only: actions off, set ' + TOKEN_ENV + ' to allow them'})")
    ctx.out.flush()
    server = uvicorn.Server(uvicorn.Config(app, host=args.bind, port=args.port, log_level=args.log_level,
                                           access_log=args.access_log, server_header=False))
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
    return RET_OK


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on ``host:port``: every address the name resolves to, as asyncio would.

    Raises
    ------
    CommandError
        ``RET_ERROR``, naming ``host:port`` and the reason (e.g. the port is in use).
    """
    def refuse(reason: str) -> CommandError:
        return CommandError(f"cannot listen on {host}:{port}: {reason}", RET_ERROR)

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise refuse(e.strerror or str(e)) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # deduplicated, in order
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # one socket per family, as asyncio's create_server
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise refuse(e.strerror or str(e)) from None
    return sockets


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def add_parsers(sub: Any) -> None:
    """Add ``web`` to the subcommand parsers."""
    p = sub.add_parser("web", help="serve the dashboard and /metrics for Prometheus",
                       description="Serve a dashboard of workers, queues, tasks and locks, with charts, actions "
                                   "(revoke, purge, shutdown, clear a stale lock) and /metrics. Read-only unless "
                                   "$JWQL_DRAMATIQ_WEB_TOKEN is set (at least 12 characters); each action then "
                                   "asks for it. Binds 127.0.0.1 unless --bind says otherwise.")
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="ADDRESS",
                   help=f"address to listen on (default {DEFAULT_BIND}; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port, 1-65535 (default {DEFAULT_PORT})")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=cmd_web)
