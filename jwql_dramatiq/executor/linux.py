"""The Linux process controls the executor uses (``prctl``); elsewhere they do nothing."""

from __future__ import annotations

#: ``prctl`` options used here (linux/prctl.h).
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def prctl(option: int, value: int) -> None:
    """Call ``prctl(option, value)``; a no-op where there is no ``prctl`` (not Linux)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: process groups alone then
        pass
