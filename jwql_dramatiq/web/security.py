"""Who may act: the action token from the environment, and CSRF protection for every POST.

Actions are off unless ``$JWQL_DRAMATIQ_WEB_TOKEN`` is set when the dashboard starts; then each
action's confirmation form asks for it. The token is never displayed, logged or put in a page.
Every POST also carries a CSRF token: a random value in a ``SameSite=Strict``, HttpOnly cookie
that the form repeats (double submit); a POST whose Origin is another site is refused as well.
"""

from __future__ import annotations

import hmac
import os
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

#: Environment variable holding the action token (actions are off without it).
TOKEN_ENV = "JWQL_DRAMATIQ_WEB_TOKEN"
#: Name of the CSRF cookie and form field.
CSRF_COOKIE = "jwql_csrf"
CSRF_FIELD = "csrf"
#: Shortest action token accepted, in characters (a shorter one leaves actions off, with a warning).
MIN_TOKEN_CHARS = 12


def token_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The action token, or None when actions are off (unset, empty or shorter than :data:`MIN_TOKEN_CHARS`)."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value if len(value) >= MIN_TOKEN_CHARS else None


def csrf_token(request: Request) -> str:
    """The CSRF value for this browser: its cookie's, or a new one (set by the response, see app.py)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) < 32:
        value = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return value


def same_origin(request: Request) -> bool:
    """False when the request names another site as its Origin (or, without one, as its Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source != "null"
    parts = urlsplit(source)
    return parts.netloc == request.headers.get("host", "")


def check_post(request: Request, form: dict[str, str], token: str | None) -> str | None:
    """Why a POSTed action must be refused (HTTP 403), or None when it may go ahead.

    Parameters
    ----------
    request : Request
    form : dict
        The submitted form.
    token : str or None
        The configured action token; None when actions are off.

    Returns
    -------
    str or None
        A one-line reason, never echoing what was submitted.
    """
    if token is None:
        return f"Actions are off: no action token is configured (set {TOKEN_ENV} where the dashboard runs)."
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return "Refused: the form's CSRF token is missing or does not match (reload the page and try again)."
    if not same_origin(request):
        return "Refused: a cross-site request."
    if not hmac.compare_digest(form.get("token", "").encode(), token.encode()):
        return "Refused: wrong action token."
    return None
