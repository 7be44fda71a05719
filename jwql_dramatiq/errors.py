"""The one error tree of jwql_dramatiq.

Every error this package raises on purpose derives from :class:`JwqlDramatiqError`, so
callers can catch the package's failures with one ``except`` and tell them apart by type.
Driver errors (redis-py, dramatiq) are converted at the boundary with ``raise ... from e``.
"""

from __future__ import annotations

import redis.exceptions
from dramatiq.results import ResultTimeout


class JwqlDramatiqError(Exception):
    """Base class for every jwql_dramatiq error."""


class ConfigError(JwqlDramatiqError):
    """The configuration file or an override is invalid.

    Parameters
    ----------
    path : str
        The config file (or ``"<environment>"`` for an override).
    key : str or None
        The offending key, when one can be named.
    problem : str
        What is wrong, in words.
    env_var : str or None
        The environment variable the key's value came from (``JWQL_DRAMATIQ_REDIS_PORT``), so
        the message blames it and not the file; None when the value is the file's.
    """

    def __init__(self, path: str, key: str | None, problem: str, env_var: str | None = None) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        self.env_var = env_var
        source = f" (from ${env_var})" if env_var else ""
        where = f"{path}: key {key!r}{source}: " if key else f"{path}: "
        super().__init__(where + problem)


class RedisUnavailable(JwqlDramatiqError):
    """Redis could not be reached at the configured address.

    Parameters
    ----------
    address : str
        ``host:port`` or the unix socket path, never with credentials.
    reason : str
        The driver's own message.
    """

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"Redis is unreachable at {address}: {reason}")


class RedisAuthFailed(RedisUnavailable):
    """Redis refused the configured credentials (wrong password, unknown or disabled ACL user).

    A :class:`RedisUnavailable` (Redis cannot be used), but not an outage: it is never retried,
    and commands and workers exit with the bad-config code. Build it with
    :func:`jwql_dramatiq.connection.redis_unavailable`, never with the password.

    Parameters
    ----------
    address : str
        ``host:port``, never with credentials.
    reason : str
        The server's own message (it never contains the password).
    username : str or None
        The ACL user (``"default"`` for a bare ``requirepass``); None when not known.
    """

    def __init__(self, address: str, reason: str, username: str | None = None) -> None:
        self.address = address
        self.reason = reason
        self.username = username
        user = f" for user {username!r}" if username else ""
        JwqlDramatiqError.__init__(self, f"Redis authentication failed{user} at {address}: {reason}")


class TaskError(JwqlDramatiqError):
    """Base class for a task that did not produce a value."""


class TaskFailed(TaskError):
    """A task raised; carries the original exception's type, message and traceback text.

    Parameters
    ----------
    type_name : str
        The original exception's class name, e.g. ``"ValueError"``.
    message : str
        ``str()`` of the original exception.
    traceback_text : str
        The worker-side traceback, formatted, or ``""`` when none was recorded.
    message_id : str or None
        The Dramatiq message id of the task.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str = "", message_id: str | None = None) -> None:
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        self.message_id = message_id
        super().__init__(f"{type_name}: {message}")


class TaskRevoked(TaskError):
    """The task was revoked (and, if it was running with ``terminate``, its child was killed)."""


class TaskTimeout(TaskError, ResultTimeout):
    """A caller's bounded wait for a result ran out. The task itself may still be running.

    Also Dramatiq's :class:`dramatiq.results.ResultTimeout`, so code written for Dramatiq's
    ``message.get_result(block=True)`` (``except ResultTimeout``) catches it too.
    """


class ExecutorError(JwqlDramatiqError):
    """Base class for failures of the fresh-process executor itself."""


class ChildDied(ExecutorError):
    """The child process running a task died before sending its result."""


class TimeLimitExceeded(ExecutorError):
    """The executor killed a child that ran past its actor's time limit."""


class MemoryLimitExceeded(ExecutorError):
    """The executor killed a child whose resident memory went past the configured limit."""


class LockError(JwqlDramatiqError, redis.exceptions.LockError):
    """Base class for lock errors; also a redis-py ``LockError``, so ``except LockError`` written for redis-py
    catches it.

    Parameters
    ----------
    lock_name : str
        The lock's name (without the key prefix).
    message : str
        What happened.
    """

    def __init__(self, lock_name: str, message: str) -> None:
        redis.exceptions.LockError.__init__(self, message, lock_name=lock_name)
        self.lock_name = lock_name

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.lock_name, str(self.message))


class LockNotAcquired(LockError):
    """The lock was held by someone else and could not be acquired within the bound."""


class LockNotOwned(LockError, redis.exceptions.LockNotOwnedError):
    """A release, extend or renewal found the lock expired or owned by someone else; nothing was changed.

    Also a redis-py ``LockNotOwnedError``.
    """


class PipelineError(JwqlDramatiqError):
    """A JWST pipeline run failed or its inputs were refused."""


class BadInput(PipelineError):
    """A task's input (file, instrument, step, extension or step arguments) is invalid; names the bad thing."""


class CrdsError(PipelineError):
    """CRDS failed (jwst raises these as ``SystemExit``); turned into an ordinary error."""
