"""Actions, the CLI's own: revoke (optionally terminating), purge, shut a host's workers down, clear a stale lock.

Each is a confirmation page (GET ``/confirm/<action>``) and a POST (``/actions/<action>``)
that carries the CSRF token and the action token. Without a configured token every POST
answers 403 (:func:`~jwql_dramatiq.web.security.check_post`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..broker.admin import purge
from ..broker.control import list_workers, request_shutdown
from ..broker.revoke import revoke
from ..errors import JwqlDramatiqError, LockError
from ..locks.admin import clear_lock
from . import security
from .pages import Dashboard, finish, render, unreachable_text

logger = logging.getLogger(__name__)

#: Each action: its title, and the form fields it takes.
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "revoke": ("Revoke a task", ("message_id", "terminate")),
    "purge": ("Purge queued and delayed messages", ("queue", "dead_letter")),
    "shutdown": ("Shut down a host's workers", ("host", "now")),
    "clear_lock": ("Clear a stale lock", ("name",)),
}


def _describe(action: str, params: dict[str, str]) -> str:
    if action == "revoke":
        how = " and kill it if it runs (terminate)" if params.get("terminate") else " (it is not killed if it runs)"
        return f"Revoke task {params.get('message_id', '')}{how}."
    if action == "purge":
        queue = params.get("queue") or "every queue"
        dead = ", and empty the dead-letter queue" if params.get("dead_letter") else ""
        return f"Purge the waiting and delayed messages of {queue}{dead}; their monitors get TaskPurged."
    if action == "shutdown":
        how = "now, requeueing what they run" if params.get("now") else "after their current task"
        return f"Shut down every live worker on host {params.get('host', '')} {how}."
    return f"Clear lock {params.get('name', '')} if its owner is dead (a live owner's lock is refused)."


def confirm(request: Request) -> Response:
    """The confirmation page of an action, with its CSRF token and a field for the action token."""
    action = request.path_params["action"]
    if action not in ACTIONS:
        return render(request, "result.html", lambda: {"title": "No such action", "ok": False,
                                                       "text": "No such action."}, 404)
    params = {k: request.query_params.get(k, "")[:300] for k in ACTIONS[action][1]}
    return render(request, "confirm.html", lambda: {
        "title": ACTIONS[action][0], "action": action, "params": params, "text": _describe(action, params)})


async def act(request: Request) -> Response:
    """Carry out a confirmed action (POST), or refuse it with 403."""
    dash: Dashboard = request.app.state.dashboard
    action = request.path_params["action"]
    form_data = await request.form()
    form = {k: str(v) for k, v in form_data.items()}
    refusal = security.check_post(request, form, dash.token)
    if refusal is not None:
        logger.warning("Refused %s from %s: %s", action, request.client.host if request.client else "?",
                       refusal.split(":")[0])
        return _result(request, 403, False, refusal)
    if action not in ACTIONS:
        return _result(request, 404, False, "No such action.")
    params = {k: form.get(k, "").strip() for k in ACTIONS[action][1]}
    try:
        from starlette.concurrency import run_in_threadpool

        status, ok, text, back = await run_in_threadpool(_run, dash, action, params)
    except (redis.RedisError, OSError):
        return _result(request, 503, False, unreachable_text(dash.config))
    logger.warning("Action %s %s: %s", action, params, text)
    return _result(request, status, ok, text, back)


def _run(dash: Dashboard, action: str, params: dict[str, str]) -> tuple[int, bool, str, str]:
    """Do the action; return (HTTP status, success, one line, the page to go back to)."""
    broker, ns = dash.broker, dash.config.namespace
    if action == "revoke":
        if not params["message_id"]:
            return 400, False, "No task given.", "/tasks"
        outcome = revoke(params["message_id"], terminate=bool(params["terminate"]), broker=broker)
        status = {"unknown": 404, "finished": 409}.get(outcome.outcome, 200)
        return (status, status == 200, f"{outcome.outcome}: {outcome.detail}",
                f"/tasks/{params['message_id']}")
    if action == "purge":
        purged = purge(broker, queue=params["queue"] or None, dead_letter=bool(params["dead_letter"]))
        return 200, True, f"Purged {len(purged)} message(s).", "/"
    if action == "shutdown":
        host = params["host"]
        targets = [w for w in list_workers(broker.client, ns, dash.config.heartbeat_timeout_s)
                   if w.alive and w.host == host]
        if not targets:
            return 404, False, f"No live worker on host {host!r}.", "/"
        request_shutdown(broker.client, ns, [w.worker_id for w in targets], now=bool(params["now"]))
        return 200, True, f"Asked {len(targets)} worker(s) on {host} to shut down.", "/"
    try:
        removed = clear_lock(params["name"], force=False, client=broker.client, namespace=ns)
    except LockError as exc:
        return 409, False, str(exc), "/locks"
    except JwqlDramatiqError as exc:
        raise redis.ConnectionError(type(exc).__name__) from exc
    if removed is None:
        return 404, False, f"Nobody holds lock {params['name']!r}.", "/locks"
    return 200, True, f"Removed lock {params['name']!r} held by {removed.describe()}.", "/locks"


def _result(request: Request, status: int, ok: bool, text: str, back: str = "/") -> Response:
    response = render(request, "result.html", lambda: {"title": "Done" if ok else "Not done", "ok": ok,
                                                       "text": text, "back": back}, status)
    return finish(request, response)


def routes() -> list[Route]:
    """The action routes (a GET confirmation page and a POST each)."""
    return [Route("/confirm/{action}", confirm, methods=["GET"]),
            Route("/actions/{action}", act, methods=["POST"])]


__all__: list[Any] = ["routes", "ACTIONS"]
