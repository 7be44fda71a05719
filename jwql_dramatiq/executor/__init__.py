"""The fresh-process executor: every task runs in a child forked from a preloaded fork server.

See :mod:`.supervisor` (the worker's side), :mod:`.server_link` (its channel to the fork server)
and :mod:`.forkserver` (the server and children).
"""

from __future__ import annotations

from .memory import rss_mib
from .server_link import describe_status
from .supervisor import Executor

__all__ = ["Executor", "describe_status", "rss_mib"]
