"""Task states kept in Redis: queued, scheduled, running, succeeded, failed, purged, revoked.

A middleware records each change with one pipelined round trip (HSET + PEXPIRE + ZADD):

- ``<ns>:task:<message_id>``: a hash with ``state``, ``actor``, ``queue``, ``updated_at`` and,
  as they become known, ``enqueued_at``, ``eta``, ``started_at``, ``finished_at``, ``host``,
  ``worker``, ``pid`` and ``error``; it expires with the results (``result_ttl_s``).
- ``<ns>:tasks``: a sorted set of message ids scored by their last change, for listings.

Monitor code asks :func:`get_task_state`; the CLI's ``tasks`` command lists :func:`list_tasks`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

#: The states a task goes through.
QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, PURGED, REVOKED = (
    "queued", "scheduled", "running", "succeeded", "failed", "purged", "revoked")
#: States after which a task never changes again.
FINAL_STATES = frozenset({SUCCEEDED, FAILED, PURGED, REVOKED})
#: Most entries kept in the listing index.
INDEX_MAX = 10_000


def task_key(namespace: str, message_id: str) -> str:
    """The hash holding one task's state."""
    return f"{namespace}:task:{message_id}"


def index_key(namespace: str) -> str:
    """The sorted set of recent task ids."""
    return f"{namespace}:tasks"


def write_state(client: redis.Redis, namespace: str, message_id: str, ttl_ms: int,
                also: tuple[str, dict[str, Any]] | None = None, **fields: Any) -> None:
    """Record a state change in one pipelined round trip.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    message_id : str
    ttl_ms : int
        How long the record is kept.
    also : (key, fields), optional
        Another hash to update in the same round trip (the worker's own record).
    **fields
        Hash fields; ``state`` among them. None values are left out.
    """
    now = time.time()
    mapping = {k: (v if isinstance(v, (str, int, float)) else json.dumps(v)) for k, v in fields.items() if v is not None}
    mapping["updated_at"] = now
    key = task_key(namespace, message_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=mapping)
        pipe.pexpire(key, ttl_ms)
        pipe.zadd(index_key(namespace), {message_id: now})
        if also is not None and also[1]:
            pipe.hset(also[0], mapping=also[1])
        pipe.execute()


@dataclass(frozen=True)
class TaskState:
    """One task's recorded state (see the module docstring for the fields)."""

    message_id: str
    state: str
    actor: str = ""
    queue: str = ""
    updated_at: float = 0.0
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"message_id": self.message_id, "state": self.state, "actor": self.actor, "queue": self.queue,
                "updated_at": self.updated_at, **self.details}


def _decode(message_id: str, raw: dict[bytes, bytes]) -> TaskState | None:
    if not raw:
        return None
    data = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    return TaskState(message_id=message_id, state=data.pop("state", "unknown"), actor=data.pop("actor", ""),
                     queue=data.pop("queue", ""), updated_at=float(data.pop("updated_at", 0) or 0), details=data)


def get_task_state(message_id: str, client: redis.Redis | None = None, namespace: str | None = None) -> TaskState | None:
    """Return the recorded state of ``message_id``, or None if none is recorded (or it expired).

    Parameters
    ----------
    message_id : str
    client : redis.Redis, optional
        Defaults to the configured client.
    namespace : str, optional
        Defaults to the configured namespace.
    """
    client, namespace = _defaults(client, namespace)
    return _decode(message_id, client.hgetall(task_key(namespace, message_id)))


def list_tasks(limit: int = 50, client: redis.Redis | None = None, namespace: str | None = None) -> list[TaskState]:
    """Return the ``limit`` most recently changed tasks, newest first (expired ones dropped)."""
    client, namespace = _defaults(client, namespace)
    ids = [i.decode() for i in client.zrevrange(index_key(namespace), 0, limit - 1)]
    with client.pipeline(transaction=False) as pipe:
        for message_id in ids:
            pipe.hgetall(task_key(namespace, message_id))
        raws = pipe.execute()
    states = [_decode(i, raw) for i, raw in zip(ids, raws)]
    return [s for s in states if s is not None]


def _defaults(client: redis.Redis | None, namespace: str | None) -> tuple[redis.Redis, str]:
    if client is None or namespace is None:
        from .broker import get_config
        from .connection import get_redis

        client = client or get_redis()
        namespace = namespace or get_config().namespace
    return client, namespace


class TaskStates(Middleware):
    """Records each message's state changes (see the module docstring).

    Parameters
    ----------
    namespace : str
        The key prefix.
    ttl_ms : int
        How long records are kept; the same as results.
    """

    def __init__(self, namespace: str, ttl_ms: int) -> None:
        self.namespace = namespace
        self.ttl_ms = ttl_ms
        self.host = socket.gethostname()
        #: The worker's :class:`~jwql_dramatiq.control.WorkerControl`, set when a worker boots.
        self.control = None
        self.tasks_done = 0

    def _write(self, broker, message, worker_fields: dict[str, Any] | None = None, **fields: Any) -> None:
        also = None
        if self.control is not None and worker_fields is not None:
            also = (self.control.key, worker_fields)
        try:
            write_state(broker.client, self.namespace, message.message_id, self.ttl_ms, also=also,
                        actor=message.actor_name, queue=q_name(message.queue_name), **fields)
        except redis.RedisError:  # states are advisory: never fail a task for them
            pass

    def after_enqueue(self, broker, message, delay) -> None:  # noqa: D102
        # A delayed message is enqueued twice: on its delay queue, then on its queue when due.
        state = SCHEDULED if delay else QUEUED
        self._write(broker, message, state=state, eta=message.options.get("eta") if delay else None,
                    redis_id=message.options.get("redis_message_id"), enqueued_at=time.time())

    def before_process_message(self, broker, message) -> None:  # noqa: D102
        worker_fields = None
        if self.control is not None:
            self.control.current = {"message_id": message.message_id, "queue_name": message.queue_name,
                                    "redis_message_id": message.options.get("redis_message_id")}
            worker_fields = self.control.record_fields(busy_with=message)
        self._write(broker, message, worker_fields, state=RUNNING, started_at=time.time(), host=self.host,
                    worker=broker.broker_id, pid=os.getpid())

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:  # noqa: D102
        worker_fields = None
        if self.control is not None:
            self.control.current = None
            self.tasks_done += 1
            worker_fields = {**self.control.record_fields(done=True), "tasks_done": self.tasks_done}
        if exception is None:
            self._write(broker, message, worker_fields, state=SUCCEEDED, finished_at=time.time())
        else:
            from .results import describe_exception

            exn = describe_exception(exception)
            state = REVOKED if exn["type"] == "TaskRevoked" else FAILED
            self._write(broker, message, worker_fields, state=state, finished_at=time.time(),
                        error=f"{exn['type']}: {exn['msg']}")

    def after_skip_message(self, broker, message) -> None:  # noqa: D102
        from .revoke import is_revoked

        if is_revoked(broker.client, self.namespace, message.message_id):
            self._write(broker, message, state=REVOKED, finished_at=time.time())
