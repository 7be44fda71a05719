"""Batch commands of the fault suite's monitor agent (:mod:`tests.faults.agent`).

``send_batch`` sends messages from a background thread, each retried until it is acknowledged
or its bound runs out (a send that raised is not acknowledged: the caller was told it failed);
``watch`` polls the results of every acknowledged message every 50 ms and records when each was
first seen; ``wait_bg`` waits for some messages with :func:`jwql_dramatiq.waiting.iter_results`
(its outage ride-through included) within a bound, in the background; ``batch`` reports all three.
``find`` tells where some messages are in Redis (payload kept, queued, in whose ack set, task state,
result), and on which master; ``trace`` gives every send attempt of some tasks (times, message id,
outcome), so a lost or duplicated message can be told apart from a send that was refused.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_lock = threading.Lock()
_acked: dict[str, Any] = {}  # message id -> message, in send order
_send_log: dict[str, Any] = {"attempts": 0, "errors": 0, "given_up": [], "done": False, "first_error": None,
                             "error_types": {}}
_seen: dict[str, dict[str, Any]] = {}  # message id -> {"t": first seen, "value": ...}
_waits: dict[str, dict[str, Any]] = {}
#: task (the first argument after the directory) -> every send attempt: {"t0", "t1", "message_id", "error"}
_trace: dict[str, list[dict[str, Any]]] = {}
_stop = threading.Event()

COMMANDS = ("send_batch", "watch", "wait_bg", "batch", "find", "trace")


def _send_all(broker: Any, queue_name: str, actor_name: str, arg_lists: list[list[Any]], pace_s: float,
              retry_s: float) -> None:
    from dramatiq.message import Message

    for args in arg_lists:
        deadline = time.monotonic() + retry_s
        attempts = _trace.setdefault(str(args[1] if len(args) > 1 else args), [])
        while True:
            _send_log["attempts"] += 1
            message = Message(queue_name=queue_name, actor_name=actor_name, args=tuple(args), kwargs={}, options={})
            attempt: dict[str, Any] = {"t0": time.time(), "message_id": message.message_id}
            attempts.append(attempt)
            try:
                message = broker.enqueue(message)
                attempt["t1"] = time.time()
            except Exception as e:  # noqa: BLE001 - a failed send is retried, and counted
                attempt.update(t1=time.time(), error=f"{type(e).__name__}: {e}"[:300])
                _send_log["errors"] += 1
                kind = type(e).__name__
                _send_log["error_types"][kind] = _send_log["error_types"].get(kind, 0) + 1
                _send_log["first_error"] = _send_log["first_error"] or f"{type(e).__name__}: {e}"[:300]
                if time.monotonic() > deadline:
                    _send_log["given_up"].append(args)
                    break
                time.sleep(0.1)
                continue
            with _lock:
                _acked[message.message_id] = message
            break
        time.sleep(pace_s)
    _send_log["done"] = True


def _watch(broker: Any, interval_s: float) -> None:
    backend = broker.results_backend
    while not _stop.is_set():
        with _lock:
            pending = {mid: m for mid, m in _acked.items() if mid not in _seen}
        if pending:
            try:
                with backend.client.pipeline(transaction=False) as pipe:
                    for message in pending.values():
                        pipe.lindex(backend.build_message_key(message), 0)
                    raws = pipe.execute()
                now = time.time()
                for mid, raw in zip(pending, raws):
                    if raw is not None:
                        try:
                            value = backend.unwrap_result(backend.encoder.decode(raw))
                        except Exception as e:  # noqa: BLE001 - a failed task is a data point
                            value = {"error": f"{type(e).__name__}: {e}"}
                        _seen[mid] = {"t": now, "value": value}
            except Exception:  # noqa: BLE001, S110 - an outage: poll again
                pass
        _stop.wait(interval_s)


def _wait(name: str, messages: list[Any], timeout_s: float) -> None:
    from jwql_dramatiq.waiting import iter_results

    started = time.monotonic()
    entry: dict[str, Any] = {"bound_s": timeout_s}
    try:
        entry["results"] = len(list(iter_results(messages, timeout_s)))
        entry["ok"] = True
    except Exception as e:  # noqa: BLE001
        entry.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
    entry["elapsed_s"] = time.monotonic() - started
    _waits[name] = entry


def handle(request: dict[str, Any]) -> Any:
    """Carry out one batch command (see the module docstring)."""
    from jwql_dramatiq.broker import get_broker, get_config

    broker = get_broker()
    cmd = request["cmd"]
    if cmd == "send_batch":
        threading.Thread(target=_send_all, args=(broker, get_config().queue_name, request["actor"],
                                                 request["arg_lists"], float(request.get("pace_s", 0.02)),
                                                 float(request.get("retry_s", 60))), daemon=True).start()
        return True
    if cmd == "watch":
        _stop.clear()
        threading.Thread(target=_watch, args=(broker, float(request.get("interval_s", 0.05))), daemon=True).start()
        return True
    if cmd == "wait_bg":
        messages = [_acked[mid] for mid in request["message_ids"]]
        _waits.pop(request["name"], None)
        threading.Thread(target=_wait, args=(request["name"], messages, float(request["bound_s"])),
                         daemon=True).start()
        return True
    if cmd == "batch":
        with _lock:
            acked = list(_acked)
        return {"acked": acked, "sends": {k: (dict(v) if isinstance(v, dict) else v) for k, v in _send_log.items()},
                "seen": dict(_seen),
                "waits": dict(_waits)}
    if cmd == "find":
        client, ns, queue = broker.client, broker.namespace, get_config().queue_name
        ack_sets = list(client.scan_iter(match=f"{ns}:__acks__.*", count=500))
        found: dict[str, Any] = {}
        pool = client.connection_pool
        found["master"] = ":".join(map(str, pool.get_master_address())) if hasattr(pool, "get_master_address") \
            else None
        backend = broker.results_backend
        for mid in request["message_ids"]:
            message = _acked.get(mid)
            # Dramatiq keys a message in Redis by its own "redis_message_id", not the message id.
            rid = message.options.get("redis_message_id", mid) if message is not None else mid
            found[mid] = {"redis_message_id": rid, "payload": client.hexists(f"{ns}:{queue}.msgs", rid),
                          "queued": rid.encode() in client.lrange(f"{ns}:{queue}", 0, -1),
                          "in_ack_sets": [k.decode() for k in ack_sets if client.sismember(k, rid)],
                          "task_state": {k.decode(): v.decode()[:200]
                                         for k, v in client.hgetall(f"{ns}:task:{mid}").items()},
                          "result": None if message is None else
                          client.lrange(backend.build_message_key(message), 0, -1)[:1],
                          "args": None if message is None else list(message.args)}
        return found
    if cmd == "trace":
        return {task: _trace.get(task, []) for task in request["tasks"]}
    raise ValueError(f"unknown command {cmd!r}")
