"""The actor class of every registered actor: it sends the worker's call to a forked child.

The worker calls ``actor(*args, **kwargs)``; :class:`ForkingActor` passes that call to the running
executor of the broker's :class:`ExecutorOwner` middleware (the worker's
:class:`~jwql_dramatiq.worker.middleware.WorkerMiddleware`), or runs it in-process when there is
none (a monitor, the operator CLI, or ``max_tasks_per_child`` = 0). Importing this module imports
nothing of this package.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware


class ExecutorOwner(Middleware):
    """A middleware that may own the worker's fork-server executor (see :attr:`executor`)."""

    @property
    def executor(self):
        """The running executor, or None (not a worker, or ``max_tasks_per_child`` = 0)."""
        return None


def worker_middleware(broker: dramatiq.Broker) -> ExecutorOwner | None:
    """The broker's :class:`ExecutorOwner` (the worker's middleware), if it has one."""
    return next((m for m in broker.middleware if isinstance(m, ExecutorOwner)), None)


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
