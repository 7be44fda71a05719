"""Health-check actors."""

from __future__ import annotations

import os
import socket

from ..registry import actor


@actor(actor_name="ping")
def ping() -> dict[str, object]:
    """Return where the task ran: ``{"host": hostname, "pid": process id, "ppid": parent's pid}``.

    With the fresh-process executor ``pid`` is the child's and ``ppid`` the fork server's.
    """
    return {"host": socket.gethostname(), "pid": os.getpid(), "ppid": os.getppid()}
