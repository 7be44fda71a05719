"""The dashboard, ``jwql-dramatiq web``: workers, queues, tasks, locks, charts, actions and ``/metrics``.

Needs the ``web`` extra (``pip install 'jwql-dramatiq[web]'``). Read-only unless an action token is
configured (:data:`~jwql_dramatiq.web.security.TOKEN_ENV`). See ``docs/dashboard.md``.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
