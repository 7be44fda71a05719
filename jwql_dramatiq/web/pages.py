"""What every dashboard page shares: the dashboard's state, rendering, and security headers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from ..config import Config
from ..errors import JwqlDramatiqError
from . import security

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Seconds between two fetches of a page's live part, in the browser.
POLL_INTERVAL_S = 2.0
#: Seconds a chart is reused before it is drawn again from Redis.
CHART_CACHE_S = 15.0

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Dashboard:
    """What every request shares: config, a broker (for its client and the actions), the token, templates."""

    config: Config
    broker: Any
    token: str | None
    templates: Jinja2Templates
    registry: CollectorRegistry
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    @property
    def actions_enabled(self) -> bool:
        """Whether an action token is configured."""
        return self.token is not None

    @property
    def client(self) -> redis.Redis:
        """The Redis client (reconnects by itself after a Redis restart)."""
        return self.broker.client

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``, reused for :data:`CHART_CACHE_S`."""
        hit = self.cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CHART_CACHE_S:
            return hit[1]
        value = build()
        self.cache[key] = (time.monotonic(), value)
        return value


def unreachable_text(config: Config) -> str:
    """The banner shown while Redis is down (its address only, never credentials)."""
    return f"Redis unreachable at {config.redis_address}"


def render(request: Request, template: str, build: Callable[[], dict[str, Any]], status_code: int = 200) -> Response:
    """Render ``template`` (a page's live part) with ``build()``'s context, whole or as a fragment.

    With ``?fragment=1`` only the live part is sent (what the page's script fetches every
    :data:`POLL_INTERVAL_S`). A Redis error renders the banner instead of the data, and the page
    keeps polling, so it recovers by itself when Redis is back.
    """
    dash: Dashboard = request.app.state.dashboard
    try:
        context = build()
        error = None
    except (redis.RedisError, JwqlDramatiqError, OSError) as exc:
        logger.warning("Redis read failed: %s", type(exc).__name__)
        context, error = {}, unreachable_text(dash.config)
    context.update(request=request, redis_error=error, fragment=template, actions_enabled=dash.actions_enabled,
                   address=dash.config.redis_address, namespace=dash.config.namespace,
                   poll_ms=int(POLL_INTERVAL_S * 1000), now=time.time(), csrf=security.csrf_token(request))
    name = template if request.query_params.get("fragment") == "1" else "page.html"
    response = dash.templates.TemplateResponse(request, name, context, status_code=status_code)
    return finish(request, response)


def finish(request: Request, response: Response) -> Response:
    """Add the security headers, and the CSRF cookie when this browser has none yet."""
    response.headers.update(SECURITY_HEADERS)
    new = request.state.__dict__.get("new_csrf")
    if new:
        response.set_cookie(security.CSRF_COOKIE, new, httponly=True, samesite="strict", path="/")
    return response


def plain(request: Request, text: str, status_code: int) -> Response:
    """A short plain-text answer with the security headers."""
    return finish(request, HTMLResponse(text, status_code=status_code, media_type="text/plain"))
