"""How the fresh-process executor attaches to a Dramatiq worker, through Dramatiq's own extension points.

- :class:`WorkerMiddleware` owns the worker's fork server: it boots the worker in the process
  boot hook (``after_process_boot``, emitted by the ``dramatiq`` command line in each worker
  process while it is still single-threaded), refuses a thread count other than one
  (``before_worker_boot``), and stops the fork server at shutdown (``after_worker_shutdown``).
  Every broker carries one; outside a worker (monitors, the operator CLI) nothing emits those
  hooks, so it does nothing.
- :class:`ForkingActor` is the actor class of every registered actor: the worker calls
  ``actor(*args, **kwargs)``, and this class sends that call to a forked child when the
  broker's middleware has a running executor, or runs it in-process otherwise.

Importing this module imports nothing of this package.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware

logger = logging.getLogger(__name__)


class WorkerMiddleware(Middleware):
    """Boots the worker in ``after_process_boot`` and owns its fork server until shutdown."""

    def __init__(self) -> None:
        #: What :func:`jwql_dramatiq.boot.boot_worker` started (None until the process boots).
        self.booted = None
        #: Why booting failed; raised in ``before_worker_boot`` (Dramatiq only logs errors of after-hooks).
        self.boot_error: BaseException | None = None

    @property
    def executor(self):
        """The running executor, or None (not a worker, or ``max_tasks_per_child`` = 0)."""
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


def worker_middleware(broker: dramatiq.Broker) -> WorkerMiddleware | None:
    """The broker's :class:`WorkerMiddleware`, if it has one."""
    return next((m for m in broker.middleware if isinstance(m, WorkerMiddleware)), None)


class ForkingActor(dramatiq.Actor):
    """A Dramatiq actor whose calls run in a fresh child when the worker's executor is running."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        middleware = worker_middleware(self.broker)
        executor = None if middleware is None else middleware.executor
        if executor is None:
            return super().__call__(*args, **kwargs)
        return executor.run(self.actor_name, tuple(args), dict(kwargs), message_context())


def message_context() -> dict[str, Any]:
    """The message being processed, as the fields that rebuild it in the child ({} outside a task)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return {}
    return {
        "queue_name": message.queue_name, "actor_name": message.actor_name, "args": message.args,
        "kwargs": message.kwargs, "options": dict(message.options), "message_id": message.message_id,
        "message_timestamp": message.message_timestamp,
    }
