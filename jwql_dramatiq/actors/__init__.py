"""Every actor of the task server; the module a worker is started with.

    dramatiq jwql_dramatiq.actors -p1 -t1

Importing this package declares the actors without reading the config or touching Redis,
so monitors can import it freely. When the ``dramatiq`` command line imports it, the
worker is booted here (:func:`jwql_dramatiq.boot.boot_worker`), because the CLI asks
Dramatiq for the global broker right after this import.
"""

from __future__ import annotations

from ..boot import boot_worker, is_dramatiq_cli
from .health import ping
from .pipeline import calwebb_detector1_save_jump, run_calwebb_detector1

__all__ = ["calwebb_detector1_save_jump", "ping", "run_calwebb_detector1"]

if is_dramatiq_cli():
    boot_worker()
