"""Read-only pages: overview (workers and queues), tasks, one task, locks, charts, /metrics, /healthz."""

from __future__ import annotations

import time
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..broker import states
from ..errors import JwqlDramatiqError
from . import charts, data
from .pages import Dashboard, finish, plain, render

#: Rows per page of the task listing.
PAGE_ROWS = 50
#: Most tasks waiting since their first send (read from their messages) counted by the charts.
CHART_WAITING_MOST = 5_000


def _dash(request: Request) -> Dashboard:
    return request.app.state.dashboard


def overview(request: Request) -> Response:
    """Workers (host, pid, alive or dead and for how long, current task) and queues."""
    dash = _dash(request)

    def build() -> dict[str, Any]:
        workers = data.workers(dash.client, dash.config.namespace, dash.config.heartbeat_timeout_s)
        show_all = request.query_params.get("all") == "1"
        shown = [(w, f) for w, f in workers if show_all or not w.stopped]
        return {"title": "Workers and queues", "workers": shown, "hidden": len(workers) - len(shown),
                "queues": data.queues(dash.broker), "heartbeat_timeout_s": dash.config.heartbeat_timeout_s,
                "show_all": show_all}

    return render(request, "overview.html", build)


def tasks(request: Request) -> Response:
    """Recent tasks, newest first, filterable by state, actor, host and text (id, error, input file)."""
    dash = _dash(request)
    q = request.query_params
    filters = {k: q.get(k, "").strip()[:200] for k in ("state", "actor", "host", "text")}
    try:
        offset = max(0, int(q.get("offset", "0")))
    except ValueError:
        offset = 0

    def build() -> dict[str, Any]:
        page = data.task_page(dash.client, dash.config.namespace, PAGE_ROWS, offset, **filters)
        return {"title": "Tasks", "page": page, "filters": filters, "offset": offset,
                "durations": {t.message_id: data.duration_s(t) for t in page.tasks},
                "total": dash.client.zcard(states.index_key(dash.config.namespace))}

    return render(request, "tasks.html", build)


def task(request: Request) -> Response:
    """One task: its state and times, host, duration, peak memory, arguments, result or failure."""
    dash = _dash(request)
    message_id = request.path_params["message_id"]
    found: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        detail = data.task_detail(dash.broker, message_id)
        found["missing"] = detail is None
        return {"title": f"Task {message_id}", "message_id": message_id, "detail": detail,
                "final": detail is not None and detail["task"].state in states.FINAL_STATES}

    response = render(request, "task.html", build)
    if found.get("missing"):
        response.status_code = 404
    return response


def locks(request: Request) -> Response:
    """Held locks: name, owner (host, pid, task), alive or dead, age, fencing token."""
    dash = _dash(request)

    def build() -> dict[str, Any]:
        return {"title": "Locks", "locks": data.locks(dash.client, dash.config.namespace)}

    return render(request, "locks.html", build)


def chart_page(request: Request) -> Response:
    """Tasks per hour by state and duration per actor over the last day, as SVG."""
    dash = _dash(request)

    def build() -> dict[str, Any]:
        def draw() -> dict[str, str]:
            now = data.redis_now_s(dash.client)
            rows = data.recent_rows(dash.client, dash.config.namespace, now - 86_400)
            rows += data.waiting_rows(dash.client, dash.config.namespace, now - 86_400, CHART_WAITING_MOST)
            return {"per_hour": charts.tasks_per_hour(rows, now), "per_actor": charts.duration_per_actor(rows),
                    "count": str(len(rows))}

        return {"title": "Charts", "charts": dash.cached("charts", draw)}

    return render(request, "charts.html", build)


def metrics(request: Request) -> Response:
    """Prometheus exposition, read from Redis at scrape time."""
    body = generate_latest(_dash(request).registry)
    return finish(request, Response(body, media_type=CONTENT_TYPE_LATEST))


def healthz(request: Request) -> Response:
    """200 ``ok`` when Redis answers, else 503 with the banner text."""
    dash = _dash(request)
    try:
        dash.client.ping()
    except (redis.RedisError, JwqlDramatiqError, OSError):
        from .pages import unreachable_text

        return plain(request, unreachable_text(dash.config), 503)
    return plain(request, f"ok {time.time():.0f}", 200)


def routes() -> list[Route]:
    """The read-only routes (GET)."""
    return [Route("/", overview), Route("/tasks", tasks), Route("/tasks/{message_id}", task),
            Route("/locks", locks), Route("/charts", chart_page), Route("/metrics", metrics),
            Route("/healthz", healthz)]
