"""The dashboard's Starlette application: its routes, templates and metrics (pages: :mod:`.pages`)."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..broker.states import ALL_STATES
from ..cli._common import clock, seconds
from ..config import Config
from . import actions, views
from .metrics import RedisCollector
from .pages import HERE, Dashboard, finish, plain, render

def create_app(config: Config, token: str | None = None) -> Starlette:
    """Build the dashboard for ``config``.

    Parameters
    ----------
    config : Config
    token : str or None
        The action token; None leaves actions off (every action answers 403).

    Returns
    -------
    starlette.applications.Starlette
        No connection is opened until the first request.
    """
    from ..broker import build_broker

    broker = build_broker(config, declare_actors=False)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters["clock"] = clock
    env.filters["seconds"] = seconds
    env.globals["state_names"] = ALL_STATES
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(broker))
    dashboard = Dashboard(config=config, broker=broker, token=token, templates=templates, registry=registry)
    routes = [*views.routes(), *actions.routes(), Mount("/static", StaticFiles(directory=str(HERE / "static")),
                                                        name="static")]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        broker.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = dashboard
    return app


__all__ = ["create_app", "Dashboard", "render", "finish", "plain"]
