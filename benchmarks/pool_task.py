"""The first task of a pool in :mod:`benchmarks.pool_startup`: stdlib only, so a worker's start is not padded."""

import importlib
import os


def first_task(module: str) -> int:
    """Import ``module`` (what unpickling stcal's pool function does) and return this worker's pid."""
    importlib.import_module(module)
    return os.getpid()
