"""How the fresh-process executor attaches to a Dramatiq worker, through Dramatiq's own extension points.

- :class:`WorkerMiddleware` owns the worker's fork server: it boots the worker in the process
  boot hook (``after_process_boot``, emitted by the ``dramatiq`` command line in each worker
  process while it is still single-threaded), refuses a thread count other than one
  (``before_worker_boot``), and stops the fork server at shutdown (``after_worker_shutdown``).
  Every broker carries one; outside a worker (monitors, the operator CLI) nothing emits those
  hooks, so it does nothing.
- :class:`~jwql_dramatiq.worker.forking_actor.ForkingActor` is the actor class of every
  registered actor: the worker calls ``actor(*args, **kwargs)``, and that class sends the call to
  a forked child when this middleware has a running executor, or runs it in-process otherwise.

Importing this module imports nothing of this package.
"""

from __future__ import annotations

import logging

from .forking_actor import ExecutorOwner

logger = logging.getLogger(__name__)


class WorkerMiddleware(ExecutorOwner):
    """Boots the worker in ``after_process_boot`` and owns its fork server until shutdown."""

    def __init__(self) -> None:
        #: What :func:`jwql_dramatiq.worker.boot.boot_worker` started (None until the process boots).
        self.booted = None
        #: Why booting failed; raised in ``before_worker_boot`` (Dramatiq only logs errors of after-hooks).
        self.boot_error: BaseException | None = None

    @property
    def executor(self):  # noqa: D102 (ExecutorOwner's)
        return None if self.booted is None else self.booted.executor

    def after_process_boot(self, broker) -> None:  # noqa: D102
        from .boot import boot_worker

        try:
            self.booted = boot_worker(broker)
        except Exception as e:  # kept for before_worker_boot, which can stop the worker
            self.boot_error = e

    def before_worker_boot(self, broker, worker) -> None:  # noqa: D102
        from .boot import ONE_LINE_ERRORS, WorkerBootFailed, WorkerUsageError, install_one_line_errors, wait_ready

        install_one_line_errors()
        if isinstance(self.boot_error, ONE_LINE_ERRORS):
            raise self.boot_error
        if self.boot_error is not None:
            raise WorkerBootFailed(f"the worker could not boot: {self.boot_error!r}") from self.boot_error
        if worker.worker_threads != 1:
            self.close()
            raise WorkerUsageError(
                f"a worker runs one task at a time, each in a fresh process: start it with --threads 1 (-t1), "
                f"not --threads {worker.worker_threads}")
        if self.booted is not None:
            wait_ready(broker, self.booted)

    def after_worker_shutdown(self, broker, worker) -> None:  # noqa: D102
        self.close()

    def close(self) -> None:
        """Stop the fork server and record a clean stop (nothing when the process never booted)."""
        if self.booted is not None:
            self.booted.close()
