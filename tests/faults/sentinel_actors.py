"""The actor of the Sentinel fault test (loaded through the config's ``actor_modules``)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time

from jwql_dramatiq.registry import actor


@actor
def fenced_product(directory: str, task_id: str, lock_name: str, duration_s: float) -> dict:
    """Take the lock ``lock_name``, note the grant, sleep, publish ``<directory>/<task_id>.out`` once, release.

    Each grant is one line appended to ``<directory>/grants.jsonl``: ``{"task", "lock", "token",
    "start", "end", "pid", "host"}`` (wall-clock seconds), written after the release, so two grants of one
    lock at once show as overlapping intervals, and a fencing token handed out twice as a repeat.
    The product is hard-linked into place: a second execution never creates or replaces it.
    """
    from jwql_dramatiq.config import load_config
    from jwql_dramatiq.errors import RedisUnavailable
    from jwql_dramatiq.locks import RedisLock
    from jwql_dramatiq.outage import ride_through

    # As the monitors' shared_tasks do: an outage (a failover) is ridden through within a bound.
    lock = RedisLock(lock_name, blocking_timeout=60)
    address = load_config().redis_address
    if not ride_through(lambda: lock.acquire(), time.monotonic() + 60, address, f"locking {lock_name}"):
        raise RuntimeError(f"lock {lock_name} not acquired within 60 s")
    try:
        start = time.time()
        token = lock.fencing_token
        time.sleep(duration_s)
        final = os.path.join(directory, f"{task_id}.out")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{task_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{task_id} written by pid {os.getpid()} on {socket.gethostname()} under token {token}\n")
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        end = time.time()
    finally:
        try:
            lock.release()
        except RedisUnavailable:  # the lease lapses on its own; the next grant has a newer token
            pass
    line = json.dumps({"task": task_id, "lock": lock_name, "token": token, "start": start, "end": end,
                       "pid": os.getpid(), "host": socket.gethostname()})
    fd = os.open(os.path.join(directory, "grants.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    return {"path": final, "token": token, "end": end}
