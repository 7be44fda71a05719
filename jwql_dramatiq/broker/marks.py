"""Marks a message carries between Dramatiq's middleware hooks and our consumer's ack or nack.

A :class:`dramatiq.MessageProxy` is a plain object: the worker hands the same proxy to every hook
and then to the consumer, so attributes set on it travel with it. This module names them:
``failure`` (the exception it failed with), ``deferred_writes`` (script runs that go with the
ack, in its round trip), ``final_state_fields`` (fields that go with its final state), and how
the Results middleware treats it. It imports nothing of this
package, so the consumer, the results backend and the task states can all use it.
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import Middleware
from dramatiq.results import Results


class KeepFailure(Middleware):
    """Keeps the exception a message failed with on its proxy, as ``message.failure``.

    Dramatiq hands the exception to ``after_process_message``; the consumer's nack and the
    task-state middleware read it from here (Dramatiq keeps its own copy in a private field).
    """

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:  # noqa: D102
        message.failure = exception

    def after_skip_message(self, broker, message) -> None:  # noqa: D102
        message.failure = None


def defer_write(message, script, keys: list, args: list) -> bool:
    """Queue a script run for ``message``'s ack, in the ack's own round trip; False if it cannot be deferred.

    Only messages fetched by :class:`WakingConsumer` carry the list. Dramatiq retries an ack that
    meets a connection error until Redis is back, and the deferred writes go with it, so they are
    written at most once more (every script here is safe to run again) and never lost.
    """
    writes = getattr(message, "deferred_writes", None)
    if not isinstance(writes, list):
        return False
    writes.append((script, keys, args))
    return True


def add_final_state_fields(message, fields: dict[str, Any]) -> None:
    """Have ``fields`` recorded with ``message``'s final state, in that write's round trip rather
    than one of their own: the executor's figures of a task's last attempt (its memory peak, its
    attempts). The task-state middleware reads them with :func:`final_state_fields_of`."""
    message.final_state_fields = {**final_state_fields_of(message), **fields}


def final_state_fields_of(message) -> dict[str, Any]:
    """The fields to record with ``message``'s final state (see :func:`add_final_state_fields`)."""
    return getattr(message, "final_state_fields", None) or {}


def failure_of(message) -> BaseException | None:
    """The exception ``message`` failed with (see :class:`KeepFailure`), or None."""
    return getattr(message, "failure", None)


def results_middleware(broker) -> Results | None:
    """The broker's Results middleware, or None."""
    return next((m for m in broker.middleware if isinstance(m, Results)), None)


def results_options(broker, message) -> tuple[bool, int | None]:
    """Whether ``message``'s result is stored, and for how long (ms), as the Results middleware decides.

    Returns ``(False, None)`` when the broker has no Results middleware or the actor is unknown.
    """
    results = results_middleware(broker)
    if results is None or message.actor_name not in broker.actors:
        return False, None
    options = broker.get_actor(message.actor_name).options
    store = message.options.get("store_results", options.get("store_results", results.store_results))
    ttl_ms = message.options.get("result_ttl", options.get("result_ttl", results.result_ttl))
    return bool(store), ttl_ms
