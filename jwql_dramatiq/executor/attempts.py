"""One task's attempts: the core back-off after out-of-memory kills, and what each attempt leaves behind.

A task killed for memory (by the memory limit, by the OOM killer in its cgroup, or by the
host's OOM killer while it ran) runs again in a fresh child with fewer cores, as JWQL did:
``all -> half -> none`` (:func:`jwql_dramatiq.pipeline.guard.next_max_cores`). Only a task that
announced the cores it used (:func:`.task.announce_max_cores`) is retried; the caller gets
:class:`~jwql_dramatiq.errors.MemoryLimitExceeded` naming the limit and every attempt's peak
once nothing smaller is left.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExecutorError

logger = logging.getLogger(__name__)


class MemoryKill(ExecutorError):
    """Internal: one attempt was killed for memory (never leaves the executor)."""

    def __init__(self, by: str, peak_mib: float, method: str) -> None:
        super().__init__(by)
        self.by = by
        self.peak_mib = peak_mib
        self.method = method


@dataclass
class Attempt:
    """What one run of a task in one child did.

    Attributes
    ----------
    attempt : int
        1 for the first run.
    max_cores : str or None
        The ``maximum_cores`` the task announced (None: it announced none).
    memory_peak_mib : float
        Peak memory of the child's whole process tree, in MiB.
    memory_method : str
        ``cgroup-v2``, ``cgroup-v1``, ``poll-pss`` or ``poll-rss``.
    outcome : str
        ``ok``, ``error``, or how it was killed.
    pid : int
        The child.
    tracked_dirs : list of str
        Directories the task announced; removed when the attempt ends.
    """

    attempt: int
    max_cores: str | None = None
    memory_peak_mib: float = 0.0
    memory_method: str = ""
    outcome: str = "running"
    pid: int = 0
    tracked_dirs: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The attempt as recorded in the task's state and stats (without its directories)."""
        data = asdict(self)
        del data["tracked_dirs"]
        data["memory_peak_mib"] = round(self.memory_peak_mib, 1)
        return data

    def words(self) -> str:
        """``attempt 1 (maximum_cores=all): peak 812.3 MiB by cgroup-v1, killed by ...``."""
        cores = f"maximum_cores={self.max_cores}" if self.max_cores else "cores not announced"
        return f"attempt {self.attempt} ({cores}): peak {self.memory_peak_mib:.1f} MiB by {self.memory_method}, " \
               f"{self.outcome}"


def remove_tracked(attempt: Attempt) -> None:
    """Remove the directories an attempt announced (after its whole tree is dead); never raises."""
    for path in attempt.tracked_dirs:
        if Path(path).exists():
            logger.info("Removing %s, left by task child %d", path, attempt.pid)
            shutil.rmtree(path, ignore_errors=True)


def release_locks(attempt: Attempt) -> None:
    """Clear the locks a killed attempt's child still held, once its whole tree is dead; never raises.

    A SIGKILLed child cannot release its locks, and they would otherwise block the next run of the
    same file for a whole lease. Its late writes stay fenced off.
    """
    from ..locks.admin import clear_stale_locks
    from ..locks.owner import hostname

    if not attempt.pid:
        return
    try:
        clear_stale_locks(owner=(hostname(), attempt.pid))  # logs each lock it clears
    except Exception as e:  # Redis away: the lease frees them
        logger.warning("Could not release the locks of task child %d (%s); their lease frees them", attempt.pid, e)


def retry_cores(attempt: Attempt) -> str | None:
    """The ``maximum_cores`` for the next attempt after ``attempt`` was killed for memory, or None."""
    from ..pipeline.guard import next_max_cores

    if attempt.max_cores is None:
        return None
    return next_max_cores(attempt.max_cores)


def memory_failure_text(actor_name: str, message_id: str | None, limit_mib: float, attempts: list[Attempt]) -> str:
    """The message of the final :class:`~jwql_dramatiq.errors.MemoryLimitExceeded`."""
    if limit_mib > 0:
        head = f"{actor_name} ({message_id}) went past its memory limit of {limit_mib:g} MiB"
    else:
        head = f"{actor_name} ({message_id}) ran out of memory (no memory_limit_mib is set)"
    last = attempts[-1]
    tail = "and nothing smaller than maximum_cores=" + last.max_cores + " is left" if last.max_cores \
        else "and it announced no maximum_cores to back off from"
    return f"{head}, {tail}: " + "; ".join(a.words() for a in attempts)
