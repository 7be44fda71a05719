"""Worker start-up: what :class:`jwql_dramatiq.worker.middleware.WorkerMiddleware` does in a worker.

``dramatiq jwql_dramatiq.actors -p1 -t1`` imports the actors (which installs the deferred broker
of :mod:`jwql_dramatiq.worker.deferred_broker` and reads nothing), asks ``dramatiq.get_broker()`` for
the broker and emits ``process_boot``. The broker is built from the config at that moment, and
the middleware's ``after_process_boot`` calls :func:`boot_worker` while the process is still
single-threaded: it sets the CRDS environment, forks the preloaded fork server, checks that
Redis answers, and starts the control and sweeper threads.

Dramatiq ignores (logs) errors raised in ``after_`` hooks, so a start-up failure there is kept
and raised by the middleware's ``before_worker_boot``, where a :class:`MiddlewareError` stops the
worker before any thread starts. It is reported in one line (no traceback) and ends the worker
with the codes of :mod:`jwql_dramatiq.exit_codes` (Dramatiq's own): ``RET_CONFIG`` (2, Dramatiq's
``RET_IMPORT``) for a bad config, credentials Redis refuses, or a thread count other than one;
``RET_REDIS`` (3, Dramatiq's ``RET_CONNECT``) for Redis unreachable. Dramatiq picks the code by
the exception's type, hence the classes below.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing.util
import os
from dataclasses import dataclass
from typing import Any

from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import MiddlewareError

from ..errors import ConfigError, JwqlDramatiqError, RedisAuthFailed, RedisUnavailable

logger = logging.getLogger(__name__)

#: Seconds the worker waits for the fork server's preload and first child before taking messages.
READY_TIMEOUT_S = 600.0


class WorkerConfigError(ConfigError, ImportError, MiddlewareError):
    """A bad config at worker start; Dramatiq exits with RET_IMPORT, our RET_CONFIG (2)."""


class WorkerRedisAuthFailed(RedisAuthFailed, ImportError, MiddlewareError):
    """Redis refused the configured credentials at worker start: a bad config, exit RET_CONFIG (2)."""


class WorkerRedisUnavailable(RedisUnavailable, BrokerConnectionError, MiddlewareError):
    """Redis unreachable at worker start; Dramatiq exits with RET_CONNECT, our RET_REDIS (3)."""


class WorkerUsageError(JwqlDramatiqError, ImportError, MiddlewareError):
    """The worker was started with options it cannot honour (``--threads`` other than 1); exit 2.

    Dramatiq's RET_IMPORT (2) also means "invalid command line argument".
    """


class WorkerBootFailed(JwqlDramatiqError, MiddlewareError):
    """An unexpected error while booting the worker (its cause is chained); the worker does not start."""


#: The start-up errors printed as one line.
ONE_LINE_ERRORS = (WorkerConfigError, WorkerRedisAuthFailed, WorkerRedisUnavailable, WorkerUsageError)


class _OneLineErrors(logging.Filter):
    """Print a worker's start-up errors as one line instead of a screen of traceback.

    Only the start-up errors: a task's failure keeps Dramatiq's own message, which names the
    message id and the actor.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ONE_LINE_ERRORS):
            record.msg, record.args = f"jwql-dramatiq: {exc}", ()
            record.exc_info, record.exc_text = None, None
        return True


def install_one_line_errors() -> None:
    """Add the one-line filter to every root handler that lacks it."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OneLineErrors) for f in handler.filters):
            handler.addFilter(_OneLineErrors())


def as_worker_config_error(error: ConfigError) -> WorkerConfigError:
    """``error`` as the type Dramatiq's CLI turns into exit 2, with the one-line filter installed."""
    install_one_line_errors()
    return WorkerConfigError(error.path, error.key, error.problem, env_var=error.env_var)


@dataclass
class BootedWorker:
    """What :func:`boot_worker` started; :meth:`close` stops it."""

    executor: Any  # jwql_dramatiq.executor.Executor, or None with max_tasks_per_child = 0
    control: Any = None  # jwql_dramatiq.broker.control.WorkerControl, once Redis answered

    def close(self) -> None:
        """Stop the fork server (killing its children) and record a clean stop. Safe to call twice."""
        if self.executor is not None:
            self.executor.close()
        if self.control is not None:
            self.control.mark_stopped()


def boot_worker(broker) -> BootedWorker:
    """Boot this process as a jwql_dramatiq worker of ``broker`` (see the module docstring).

    Parameters
    ----------
    broker : JwqlRedisBroker
        The broker the worker consumes from, already built from the config.

    Returns
    -------
    BootedWorker
        The executor (None for in-process tasks) and the control thread's owner.

    Raises
    ------
    WorkerConfigError
        The config is invalid.
    WorkerRedisAuthFailed
        Redis refused the configured credentials.
    WorkerRedisUnavailable
        Redis does not answer.
    """
    from ..broker import task_states
    from ..config import check_transfer_dir
    from ..connection import check_redis
    from ..broker.control import WorkerControl
    from ..broker.sweeper import start_sweeper

    install_one_line_errors()
    config = broker.jwql_config
    try:
        check_transfer_dir(config)
    except ConfigError as e:
        raise as_worker_config_error(e) from None

    os.makedirs(config.working_dir, exist_ok=True)
    if config.logging:  # JWQL's config carries a dictConfig; honour it as the original did
        import logging.config

        logging.config.dictConfig(config.logging)
        install_one_line_errors()
    if config.crds_path:
        from ..pipeline.crds_env import apply_crds_environment

        apply_crds_environment(config.crds_path, server_url=config.crds_server_url, context=config.crds_context,
                               offline_stub=config.crds_offline_stub)
    for module in config.actor_modules:  # before the fork server starts, so its children have them too
        importlib.import_module(module)
    booted = BootedWorker(executor=_start_executor(broker, config))
    try:
        check_redis(broker.client, config)
    except RedisAuthFailed as e:
        booted.close()
        raise WorkerRedisAuthFailed(e.address, e.reason, e.username) from None
    except RedisUnavailable as e:
        booted.close()
        raise WorkerRedisUnavailable(e.address, e.reason) from None
    except ConfigError as e:  # e.g. a database number the server does not have
        booted.close()
        raise as_worker_config_error(e) from None
    booted.control = control = WorkerControl(broker, booted.executor)
    task_states(broker).control = control
    control.start()
    # Dramatiq's worker processes end through multiprocessing, which skips atexit but runs its
    # own finalizers: record the stop there too when the worker never reaches its shutdown hooks.
    multiprocessing.util.Finalize(control, control.mark_stopped, exitpriority=20)
    start_sweeper(broker)  # after the fork server is forked: the thread must not be inherited
    return booted


def _start_executor(broker, config):
    """Fork the fork server (``max_tasks_per_child`` > 0), or return None for in-process tasks."""
    if config.max_tasks_per_child <= 0:
        return None
    from ..executor import Executor

    executor = Executor(
        max_tasks_per_child=config.max_tasks_per_child,
        time_limit_for=config.time_limit_for,
        memory_limit_mib=config.memory_limit_mib,
        preload_modules=list(config.preload),
        warm_up=config.warm_up,
        work_dir=config.working_dir,
        memory_method=config.memory_method,
        on_progress=_progress_recorder(broker),
    )
    executor.start()
    # Reap the fork server in multiprocessing's finalizers and at exit too, for the ends that
    # skip the worker's shutdown hooks (a second SIGTERM); closing twice is harmless.
    multiprocessing.util.Finalize(executor, executor.close, exitpriority=10)
    atexit.register(executor.close)
    return executor


def wait_ready(broker, booted: BootedWorker) -> None:
    """Wait for the fork server's preload, then record how task memory is limited, and log the boot."""
    executor, config = booted.executor, broker.jwql_config
    if executor is not None and not executor.wait_ready(READY_TIMEOUT_S):
        logger.warning("The fork server is not ready after %.0f s; tasks will wait for it.", READY_TIMEOUT_S)
    if executor is not None and executor.memory_method and booted.control is not None:
        _record_memory_method(broker, booted.control.key, executor)
    logger.info("jwql_dramatiq worker booted: queue %r on %s, max_tasks_per_child=%d.",
                config.queue_name, config.redis_address, config.max_tasks_per_child)


def _progress_recorder(broker):
    """``on_progress`` for the executor: attempt, cores and memory peak go into the task's state.

    A task's last figures go with its final state, in the round trip of its ack
    (:func:`~jwql_dramatiq.broker.marks.add_final_state_fields`); those of an attempt killed for
    memory, and a retry's start, are written at once, for operators to see while it runs.
    """
    from dramatiq.middleware import CurrentMessage

    from ..broker.marks import add_final_state_fields
    from ..broker.states import write_state

    namespace, ttl_ms = broker.jwql_config.namespace, int(broker.jwql_config.result_ttl_s * 1000)

    def record(message_id: str, fields: dict, final: bool) -> None:
        message = CurrentMessage.get_current_message()
        if final and message is not None and message.message_id == message_id:
            add_final_state_fields(message, fields)
        else:
            write_state(broker.client, namespace, message_id, ttl_ms, mode="guard", **fields)

    return record


def _record_memory_method(broker, worker_key: str, executor) -> None:
    """Put how task memory is limited into the worker's record, for ``status``."""
    import redis

    try:
        broker.client.hset(worker_key, mapping={
            "memory_method": executor.memory_method, "memory_limit_mib": executor.memory_limit_mib,
            "memory_method_reason": executor.memory_method_reason})
    except redis.RedisError:
        logger.warning("Could not record the memory method in the worker record.")
