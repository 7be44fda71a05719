"""Workers seen on the broker, and remote control of them through Redis (no ssh, no pids).

Each worker process keeps a record, ``<ns>:worker:<worker_id>`` (its Dramatiq broker id, the
same id its heartbeats carry), listed in ``<ns>:workers``. It listens on its own command list,
``<ns>:control:<worker_id>``: lists keep a command sent while the worker is busy or
reconnecting, where pub/sub would drop it.

Commands: ``{"cmd": "shutdown", "now": false}`` finishes the current task then exits 0;
``{"cmd": "shutdown", "now": true}`` kills the running child, puts its message back on the
queue, and exits; ``{"cmd": "terminate", "message_id": ...}`` kills that task's child.

The host a worker reports is ``socket.gethostname()``, or ``$JWQL_DRAMATIQ_HOSTNAME`` when set
(:func:`worker_hostname`): two workers on one machine can then act as two hosts (tests, or two
workers sharing a machine under different names).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from ..config import worker_hostname
from ..connection import BLOCKING_SLICE_S
from .keys import heartbeats_key, held_key

logger = logging.getLogger(__name__)

#: How long a worker's record outlives its last update, in seconds (dead ones stay visible a while).
WORKER_RECORD_TTL_S = 7 * 86_400


def worker_key(namespace: str, worker_id: str) -> str:
    """The hash describing one worker."""
    return f"{namespace}:worker:{worker_id}"


def workers_key(namespace: str) -> str:
    """The set of worker ids ever seen (pruned of expired records by :func:`list_workers`)."""
    return f"{namespace}:workers"


def control_key(namespace: str, worker_id: str) -> str:
    """The list a worker takes commands from."""
    return f"{namespace}:control:{worker_id}"


def send_command(client: redis.Redis, namespace: str, worker_id: str, command: dict[str, Any]) -> None:
    """Queue ``command`` for the worker ``worker_id``."""
    key = control_key(namespace, worker_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(key, json.dumps(command))
        pipe.expire(key, WORKER_RECORD_TTL_S)
        pipe.execute()


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as the broker sees it.

    Attributes
    ----------
    worker_id : str
        Its Dramatiq broker id (the id its heartbeats carry).
    host : str
        The host it reports (see :func:`worker_hostname`).
    pid, main_pid : int
        The Dramatiq worker process and the Dramatiq main process (the one in the pid file).
    started_at : float
        Unix time it registered.
    alive : bool
        Heartbeat younger than the heartbeat timeout, and no clean stop recorded.
    heartbeat_age_s : float or None
        Seconds since its last heartbeat (None once Dramatiq dropped a dead worker's heartbeat).
    current_message, current_actor : str
        The task it runs now, or ``""``.
    current_since : float or None
        Unix time the current task started.
    tasks_done, children_recycled : int
        Tasks processed and task children started so far.
    stopped : bool
        It recorded a clean stop.
    stopping : bool
        A graceful shutdown was requested and it has not stopped yet.
    memory_method : str
        How its tasks' memory is limited and measured (``cgroup-v2``, ``cgroup-v1``, ``poll-pss``);
        ``""`` for in-process workers.
    memory_limit_mib : float
        Its memory limit per task, in MiB (0: none).
    fork_server_rss_mib : float
        Resident memory of its fork server at its last task change, in MiB (0: unknown or none).
    """

    worker_id: str
    host: str
    pid: int
    main_pid: int
    started_at: float
    alive: bool
    heartbeat_age_s: float | None
    current_message: str
    current_actor: str
    current_since: float | None
    tasks_done: int
    children_recycled: int
    stopped: bool
    stopping: bool = False
    memory_method: str = ""
    memory_limit_mib: float = 0.0
    fork_server_rss_mib: float = 0.0

    @property
    def condition(self) -> str:
        """One word: ``alive``, ``stopping``, ``stopped`` or ``dead``."""
        if self.stopped:
            return "stopped"
        if not self.alive:
            return "dead"
        return "stopping" if self.stopping else "alive"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.__dict__, "condition": self.condition}


def list_workers(client: redis.Redis, namespace: str, heartbeat_timeout_s: float) -> list[WorkerInfo]:
    """Every worker with a record, alive or not, newest first.

    A worker is alive when its Dramatiq heartbeat is younger than ``heartbeat_timeout_s`` and
    it has not recorded a clean stop.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    heartbeat_timeout_s : float

    Returns
    -------
    list of WorkerInfo
    """
    ids = sorted(i.decode() for i in client.smembers(workers_key(namespace)))
    with client.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(worker_key(namespace, worker_id))
            pipe.zscore(heartbeats_key(namespace), worker_id)
        replies = pipe.execute()
    # Heartbeats carry each worker's own clock (ms); the Redis server's clock is the common
    # reference here (hosts are assumed NTP-synchronised, as Dramatiq's own sweep assumes).
    seconds, microseconds = client.time()
    now_ms = seconds * 1000 + microseconds // 1000
    workers, gone = [], []
    for worker_id, raw, beat in zip(ids, replies[0::2], replies[1::2]):
        if not raw:
            gone.append(worker_id)
            continue
        data = {k.decode(): v.decode() for k, v in raw.items()}
        age = None if beat is None else max(0.0, (now_ms - beat) / 1000)
        stopped = bool(data.get("stopped_at"))
        workers.append(WorkerInfo(
            worker_id=worker_id, host=data.get("host", "?"), pid=int(data.get("pid", 0)),
            main_pid=int(data.get("main_pid", 0)), started_at=float(data.get("started_at", 0)),
            alive=age is not None and age < heartbeat_timeout_s and not stopped, heartbeat_age_s=age,
            current_message=data.get("current_message", ""), current_actor=data.get("current_actor", ""),
            current_since=float(data["current_since"]) if data.get("current_since") else None,
            tasks_done=int(data.get("tasks_done", 0)), children_recycled=int(data.get("children_recycled", 0)),
            stopped=stopped, stopping=bool(data.get("stopping_at")), memory_method=data.get("memory_method", ""),
            memory_limit_mib=float(data.get("memory_limit_mib") or 0),
            fork_server_rss_mib=float(data.get("fork_server_rss_mib") or 0)))
    if gone:
        client.srem(workers_key(namespace), *gone)
    return sorted(workers, key=lambda w: -w.started_at)


def request_shutdown(client: redis.Redis, namespace: str, worker_ids: list[str], now: bool = False) -> None:
    """Tell workers to shut down: gracefully (finish the current task), or ``now``.

    Parameters
    ----------
    client : redis.Redis
    namespace : str
    worker_ids : list of str
    now : bool
        Kill the running child, put its message back on the queue, and exit at once.
    """
    for worker_id in worker_ids:
        send_command(client, namespace, worker_id, {"cmd": "shutdown", "now": bool(now)})


class WorkerControl:
    """A worker's record and command listener (runs inside the Dramatiq worker process).

    Parameters
    ----------
    broker : JwqlRedisBroker
    executor : Executor or None
        The fresh-process executor, for killing a running child.
    """

    def __init__(self, broker, executor) -> None:
        self.broker = broker
        self.executor = executor
        self.client: redis.Redis = broker.client
        self.namespace = broker.jwql_config.namespace
        self.worker_id = broker.broker_id
        self.key = worker_key(self.namespace, self.worker_id)
        self.current: dict[str, Any] | None = None
        self._stop = threading.Event()

    def register(self) -> None:
        """Write this worker's record."""
        record = {"host": worker_hostname(), "pid": os.getpid(), "main_pid": os.getppid(),
                  "started_at": time.time(), "queue": self.broker.jwql_config.queue_name, "tasks_done": 0,
                  "children_recycled": 0}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, mapping=record)
            pipe.expire(self.key, WORKER_RECORD_TTL_S)
            pipe.sadd(workers_key(self.namespace), self.worker_id)
            pipe.execute()

    def record_fields(self, busy_with: Any = None, done: bool = False) -> dict[str, Any]:
        """Fields for the worker record at a state change (written by the TaskStates pipeline)."""
        fields: dict[str, Any] = {}
        if busy_with is not None:
            fields.update(current_message=busy_with.message_id, current_actor=busy_with.actor_name,
                          current_since=time.time())
        if done:
            fields.update(current_message="", current_actor="", current_since="")
        if self.executor is not None:
            fields["children_recycled"] = self.executor.children_started
            if self.executor.server_pid:  # rides on the state write
                fields["fork_server_rss_mib"] = round(self.executor.fork_server_rss_mib(), 1)
        return fields

    def start(self) -> None:
        """Register and start listening for commands in a daemon thread."""
        self.register()
        threading.Thread(target=self._listen, name="jwql-control", daemon=True).start()

    def mark_stopped(self) -> None:
        """Record a clean stop, so status shows the worker as stopped rather than dead."""
        try:
            self.client.hset(self.key, "stopped_at", time.time())
        except redis.RedisError:
            pass

    def _listen(self) -> None:
        key = control_key(self.namespace, self.worker_id)
        while not self._stop.is_set():
            try:
                item = self.client.blpop([key], timeout=BLOCKING_SLICE_S)
            except redis.RedisError:
                self._stop.wait(1.0)  # Redis restarting: try again, the worker carries on meanwhile
                continue
            if item is None:
                continue
            try:
                self.handle(json.loads(item[1]))
            except Exception:
                logger.exception("Bad control command %r", item[1])

    def handle(self, command: dict[str, Any]) -> None:
        """Carry out one command (see the module docstring)."""
        cmd = command.get("cmd")
        if cmd == "terminate":
            current = self.current
            if current is not None and current.get("message_id") == command.get("message_id") and self.executor:
                logger.warning("Terminating task %s on request.", command["message_id"])
                self.executor.kill_current(reason="revoked")
        elif cmd == "shutdown" and command.get("now"):
            self._shutdown_now()
        elif cmd == "shutdown":
            logger.warning("Graceful shutdown requested: finishing the current task, then exiting.")
            try:
                self.client.hset(self.key, "stopping_at", time.time())
            except redis.RedisError:
                pass
            os.kill(os.getppid(), signal.SIGTERM)  # the dramatiq main process stops its workers gracefully
        else:
            logger.warning("Unknown control command %r", command)

    def _shutdown_now(self) -> None:
        current = self.current
        logger.warning("Immediate shutdown requested: %s, then exiting.",
                       f"killing task {current['message_id']} and requeueing it" if current else "no task running")
        if self.executor is not None:
            self.executor.stop_now()  # the child dies before its message is requeued: never two runs at once
        try:
            self._requeue_in_flight(current)
        except redis.RedisError:
            logger.exception("Could not requeue the in-flight messages; Dramatiq requeues them once this "
                             "worker's heartbeat times out.")
        self.mark_stopped()
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(0)

    def _requeue_in_flight(self, current: dict[str, Any] | None) -> None:
        """Put every message this worker holds (running, or delayed in memory) back on its queue."""
        from . import states

        broker = self.broker
        for queue_name in sorted(set(broker.get_declared_queues()) | set(broker.delay_queues)):
            ids = [i.decode() for i in self.client.smembers(held_key(self.namespace, self.worker_id, queue_name))]
            if ids:
                broker.settle("requeue", queue_name, ids)  # also wakes an idle consumer
                logger.warning("Requeued %d message(s) on %s.", len(ids), queue_name)
        if current is not None:
            ttl_ms = int(broker.jwql_config.result_ttl_s * 1000)
            states.write_state(self.client, self.namespace, current["message_id"], ttl_ms,
                               also=(self.key, {"current_message": "", "current_actor": "", "current_since": ""}),
                               state=states.QUEUED, requeued_at=time.time(), requeued_by=self.worker_id)
