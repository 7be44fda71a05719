"""Worker start-up: what happens when ``dramatiq jwql_dramatiq.actors`` imports the actors.

The Dramatiq CLI imports the broker module in each worker process, then calls
``dramatiq.get_broker()``. :func:`boot_worker` runs in that window, while the process is still
single-threaded: it loads the config, sets the CRDS environment, builds the broker, forks the
preloaded fork server, routes every actor through it, and checks that Redis answers.

Failures are reported in one line (no traceback) and end the worker with the codes of
:mod:`jwql_dramatiq.exit_codes` (Dramatiq's own): ``RET_CONFIG`` (2, Dramatiq's ``RET_IMPORT``)
for a bad config or credentials Redis refuses, ``RET_REDIS`` (3, Dramatiq's ``RET_CONNECT``) for
Redis unreachable. Dramatiq picks the code by the exception's type, hence the two classes below.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing.util
import os
import sys

from dramatiq.errors import BrokerConnectionError

from . import registry
from .errors import ConfigError, RedisAuthFailed, RedisUnavailable

logger = logging.getLogger(__name__)

#: Seconds the worker waits for the fork server's preload and first child before taking messages.
READY_TIMEOUT_S = 600.0

#: The worker's executor, once booted (None in monitors and in-process workers).
EXECUTOR = None


class WorkerConfigError(ConfigError, ImportError):
    """A bad config at worker start; Dramatiq exits with RET_IMPORT, our RET_CONFIG (2)."""


class WorkerRedisAuthFailed(RedisAuthFailed, ImportError):
    """Redis refused the configured credentials at worker start: a bad config, exit RET_CONFIG (2)."""


class WorkerRedisUnavailable(RedisUnavailable, BrokerConnectionError):
    """Redis unreachable at worker start; Dramatiq exits with RET_CONNECT, our RET_REDIS (3)."""


class _OneLineErrors(logging.Filter):
    """Print a worker's start-up errors as one line instead of a screen of traceback.

    Only the start-up errors: a task's failure keeps Dramatiq's own message, which names the
    message id and the actor.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (WorkerConfigError, WorkerRedisAuthFailed, WorkerRedisUnavailable)):
            record.msg, record.args = f"jwql-dramatiq: {exc}", ()
            record.exc_info, record.exc_text = None, None
        return True


def _install_one_line_errors() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OneLineErrors())


def boot_worker() -> None:
    """Boot this process as a jwql_dramatiq worker (see the module docstring).

    Raises
    ------
    WorkerConfigError
        The config is invalid.
    WorkerRedisAuthFailed
        Redis refused the configured credentials.
    WorkerRedisUnavailable
        Redis does not answer.
    """
    global EXECUTOR
    from .broker import setup_broker, task_states
    from .config import check_transfer_dir, load_config
    from .connection import check_redis
    from .control import WorkerControl
    from .sweeper import start_sweeper

    _install_one_line_errors()
    try:
        config = load_config()
        check_transfer_dir(config)
    except ConfigError as e:
        raise WorkerConfigError(e.path, e.key, e.problem) from None

    os.makedirs(config.working_dir, exist_ok=True)
    if config.logging:  # JWQL's config carries a dictConfig; honour it as the original did
        import logging.config

        logging.config.dictConfig(config.logging)
        _install_one_line_errors()
    if config.crds_path:
        from .pipeline.crds_env import apply_crds_environment

        apply_crds_environment(config.crds_path, server_url=config.crds_server_url, context=config.crds_context,
                               offline_stub=config.crds_offline_stub)
    broker = setup_broker(config)
    for module in config.actor_modules:  # before the fork server starts, so its children have them too
        importlib.import_module(module)
    if config.max_tasks_per_child > 0:
        from .executor import Executor

        EXECUTOR = Executor(
            max_tasks_per_child=config.max_tasks_per_child,
            time_limit_for=config.time_limit_for,
            memory_limit_mib=config.memory_limit_mib,
            preload_modules=list(config.preload),
            warm_up=config.warm_up,
            work_dir=config.working_dir,
            memory_method=config.memory_method,
            on_progress=_progress_recorder(broker),
        )
        EXECUTOR.start()
        # Dramatiq's worker processes end through multiprocessing, which skips atexit but runs
        # its own finalizers: reap the fork server there so it does not linger as a zombie.
        multiprocessing.util.Finalize(EXECUTOR, EXECUTOR.close, exitpriority=10)
        atexit.register(EXECUTOR.close)
        registry.set_task_runner(_run_in_child)
    try:
        check_redis(broker.client, config.redis_address)
    except RedisAuthFailed as e:
        raise WorkerRedisAuthFailed(e.address, e.reason, e.username) from None
    except RedisUnavailable as e:
        raise WorkerRedisUnavailable(e.address, e.reason) from None
    control = WorkerControl(broker, EXECUTOR)
    task_states(broker).control = control
    control.start()
    multiprocessing.util.Finalize(control, control.mark_stopped, exitpriority=20)
    start_sweeper(broker)  # after the fork server is forked: the thread must not be inherited
    if EXECUTOR is not None and not EXECUTOR.wait_ready(READY_TIMEOUT_S):
        logger.warning("The fork server is not ready after %.0f s; tasks will wait for it.", READY_TIMEOUT_S)
    if EXECUTOR is not None and EXECUTOR.memory_method:
        _record_memory_method(broker, control.key, EXECUTOR)
    logger.info("jwql_dramatiq worker booted: queue %r on %s, max_tasks_per_child=%d.",
                config.queue_name, config.redis_address, config.max_tasks_per_child)


def _progress_recorder(broker):
    """``on_progress`` for the executor: attempt, cores and memory peak go into the task's state."""
    from .states import write_state

    namespace, ttl_ms = broker.jwql_config.namespace, int(broker.jwql_config.result_ttl_s * 1000)

    def record(message_id: str, fields: dict) -> None:
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


def _run_in_child(actor_name: str, args: tuple, kwargs: dict):
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    context = {}
    if message is not None:
        context = {
            "queue_name": message.queue_name, "actor_name": message.actor_name, "args": message.args,
            "kwargs": message.kwargs, "options": dict(message.options), "message_id": message.message_id,
            "message_timestamp": message.message_timestamp,
        }
    return EXECUTOR.run(actor_name, tuple(args), dict(kwargs), context)


def is_dramatiq_cli() -> bool:
    """Whether this process was started by the ``dramatiq`` command line (which imports dramatiq.cli)."""
    return "dramatiq.cli" in sys.modules
