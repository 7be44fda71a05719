"""Revoking tasks: a queued or delayed message never runs; a running one can be killed.

The revocation is a sorted set, ``<ns>:revoked`` (message id -> time), so it outlives worker
restarts. Revoking stores a ``TaskRevoked`` failure as the task's result at once, so a caller
blocked on it returns immediately; the results backend never lets a later result replace it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from dramatiq.common import dq_name
from dramatiq.message import Message

from . import keys, states
from .keys import revoked_key

#: How long revocations are remembered, in seconds (longer than any task may wait or run).
REVOKED_KEEP_S = 7 * 86_400


@dataclass(frozen=True)
class RevokeOutcome:
    """What :func:`revoke` did: ``outcome`` is one of ``unknown``, ``finished``, ``revoked``,
    ``terminating``; ``state`` is the task's state before."""

    message_id: str
    outcome: str
    state: str | None
    detail: str

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-ready dict."""
        return {"message_id": self.message_id, "outcome": self.outcome, "state": self.state, "detail": self.detail}


def revoke(message_id: str, terminate: bool = False, broker=None) -> RevokeOutcome:
    """Revoke a task so that it never runs, or with ``terminate`` kill it if it runs now.

    Parameters
    ----------
    message_id : str
    terminate : bool
        Kill the task's child if the task is running (the worker then takes its next message).
    broker : JwqlRedisBroker, optional
        Defaults to the configured broker.

    Returns
    -------
    RevokeOutcome
        ``unknown`` and ``finished`` change nothing.
    """
    from . import get_broker
    from .control import send_command

    broker = broker or get_broker()
    client, namespace = broker.client, broker.jwql_config.namespace
    state = states.get_task_state(message_id, client, namespace)
    if state is None:
        return RevokeOutcome(message_id, "unknown", None, "no task with this id is recorded (or its record expired)")
    if state.state in states.FINAL_STATES:
        if terminate and state.state == states.REVOKED and _running_on(client, namespace, state):
            # revoked earlier without terminate: it still runs, and may still be killed
            send_command(client, namespace, state.details["worker"], {"cmd": "terminate", "message_id": message_id})
            return RevokeOutcome(message_id, "terminating", state.state,
                                 "it was revoked but still ran; the worker running it was told to kill it")
        return RevokeOutcome(message_id, "finished", state.state, f"the task is already {state.state}; nothing changed")

    client.zadd(revoked_key(namespace), {message_id: time.time()})
    client.zremrangebyscore(revoked_key(namespace), 0, time.time() - REVOKED_KEEP_S)
    redis_id = state.details.get("redis_id")
    if redis_id and state.state in (states.QUEUED, states.SCHEDULED):
        _remove_waiting(client, namespace, state.queue, redis_id)
    ttl_ms = int(broker.jwql_config.result_ttl_s * 1000)
    message = Message(queue_name=state.queue, actor_name=state.actor, args=(), kwargs={}, options={},
                      message_id=message_id, message_timestamp=0)
    text = f"task {message_id} ({state.actor}) was revoked"
    broker.results_backend.store_failure(message, {"type": "TaskRevoked", "msg": text, "traceback": ""}, ttl_ms,
                                         force=True)
    # (a task waiting since its first send has no record: this one keeps what its message told)
    kept = {k: state.details[k] for k in ("enqueued_at", "input_file", "arguments") if k in state.details}
    states.write_state(client, namespace, message_id, ttl_ms, mode="force", state=states.REVOKED, actor=state.actor,
                       queue=state.queue, revoked_at=time.time(), error=f"TaskRevoked: {text}", **kept)
    if state.state == states.RUNNING and terminate and state.details.get("worker"):
        send_command(client, namespace, state.details["worker"], {"cmd": "terminate", "message_id": message_id})
        return RevokeOutcome(message_id, "terminating", state.state, "the worker running it was told to kill it")
    return RevokeOutcome(message_id, "revoked", state.state, "it will not run" if state.state != states.RUNNING
                         else "it keeps running (no --terminate), but its result is discarded")


def _running_on(client: redis.Redis, namespace: str, state: states.TaskState) -> bool:
    """Whether the worker recorded in ``state`` is running that task now (its record's current message)."""
    from .control import worker_key

    worker = state.details.get("worker")
    if not worker:
        return False
    current = client.hget(worker_key(namespace, worker), "current_message")
    return (current.decode() if isinstance(current, bytes) else current) == state.message_id


def _remove_waiting(client: redis.Redis, namespace: str, queue: str, redis_id: str) -> None:
    for name in (queue, dq_name(queue)):
        for key in keys.waiting_list_keys(client, namespace, name):
            if client.lrem(key, 0, redis_id):
                client.hdel(keys.messages_key(namespace, name), redis_id)
