"""A monitor process for the fault tests, driven over stdin/stdout with one JSON object per line.

    python -m tests.faults.agent CONFIG_PATH

It is monitor code, as a JWQL monitor host runs it: it builds the broker from the config, sends
messages and waits for results, and reads task states, locks and workers. The fault tests run it
as a separate process so that it can live inside a network namespace (the test process itself
never talks to Redis there), and so that its reconnection after a Redis restart is measured
without restarting it.

Each request is ``{"id": n, "cmd": name, ...arguments}``; each reply is ``{"id": n, "ok": true,
"value": ...}`` or ``{"id": n, "ok": false, "type": ..., "error": ...}``. ``ping_loop`` runs in
the background and appends ``{"t": unix time, "ok": bool, "error": ...}`` lines to a file.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from typing import Any

_messages: dict[str, Any] = {}
_loop_stop = threading.Event()
_pings: list[Any] = []


def _ping_loop(path: str, interval_s: float) -> None:
    from jwql_dramatiq.actors import ping

    with open(path, "a", encoding="utf-8") as out:
        while not _loop_stop.is_set():
            started = time.time()
            entry: dict[str, Any] = {"t": started}
            try:
                message = ping.send()
                _pings.append(message)
                entry.update(ok=True, rtt_s=time.time() - started)
            except Exception as e:  # noqa: BLE001 - every failure is a data point
                entry.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
            out.write(json.dumps(entry) + "\n")
            out.flush()
            _loop_stop.wait(interval_s)


def _lock_loop(path: str, interval_s: float) -> None:
    """Sample :func:`list_locks` every ``interval_s`` into a file: ``{"t": unix time, "locks": [...]}``."""
    from jwql_dramatiq.broker import get_broker
    from jwql_dramatiq.locks import list_locks

    broker = get_broker()
    with open(path, "a", encoding="utf-8") as out:
        while not _loop_stop.is_set():
            entry: dict[str, Any] = {"t": time.time()}
            try:
                entry["locks"] = [{"name": i.name, "fencing_token": i.fencing_token, "host": i.host, "pid": i.pid,
                                   "alive": i.alive, "ttl_s": i.ttl_s}
                                  for i in list_locks(broker.client, broker.namespace)]
            except Exception as e:  # noqa: BLE001
                entry["error"] = f"{type(e).__name__}: {e}"[:300]
            out.write(json.dumps(entry) + "\n")
            out.flush()
            _loop_stop.wait(interval_s)


def _ping_results(timeout_s: float) -> dict[str, int]:
    """Wait (bounded) for the result of every ping the loop sent; count what came back."""
    deadline = time.monotonic() + timeout_s
    done = failed = 0
    for message in _pings:
        try:
            message.get_result(block=True, timeout=max(1000, int((deadline - time.monotonic()) * 1000)))
            done += 1
        except Exception:  # noqa: BLE001
            failed += 1
    return {"sent": len(_pings), "results": done, "missing": failed}


def handle(request: dict[str, Any]) -> Any:
    """Carry out one request and return its value."""
    from dramatiq.message import Message

    from jwql_dramatiq.broker import get_broker, get_config
    from jwql_dramatiq.locks import list_locks
    from jwql_dramatiq.broker.states import get_task_state

    broker = get_broker()
    cmd = request["cmd"]
    from tests.faults import agent_batch

    if cmd in agent_batch.COMMANDS:
        return agent_batch.handle(request)
    if cmd == "send":
        actor = broker.get_actor(request["actor"])
        message = actor.send_with_options(args=tuple(request.get("args", ())), kwargs=request.get("kwargs", {}))
        _messages[message.message_id] = message
        return message.message_id
    if cmd == "result":
        message = _messages[request["message_id"]]
        return message.get_result(block=True, timeout=int(request.get("timeout_ms", 10_000)))
    if cmd == "state":
        state = get_task_state(request["message_id"], broker.client, broker.namespace)
        return None if state is None else state.to_dict()
    if cmd == "locks":
        return [{"name": i.name, "fencing_token": i.fencing_token, "host": i.host, "pid": i.pid, "alive": i.alive,
                 "ttl_s": i.ttl_s, "message_id": i.message_id} for i in list_locks(broker.client, broker.namespace)]
    if cmd == "get":
        value = broker.client.get(request["key"])
        return None if value is None else value.decode()
    if cmd == "heartbeats":
        return {k.decode(): v for k, v in broker.client.zrange(f"{broker.namespace}:__heartbeats__", 0, -1,
                                                                 withscores=True)}
    if cmd == "ping_loop":
        _loop_stop.clear()
        threading.Thread(target=_ping_loop, args=(request["path"], float(request.get("interval_s", 0.1))),
                         daemon=True).start()
        return True
    if cmd == "ping_results":
        return _ping_results(float(request.get("wait_s", 30)))
    if cmd == "lock_loop":
        _loop_stop.clear()
        threading.Thread(target=_lock_loop, args=(request["path"], float(request.get("interval_s", 0.25))),
                         daemon=True).start()
        return True
    if cmd == "wait_running":  # poll the task state here, close to Redis, and return it once it runs
        deadline = time.monotonic() + float(request.get("wait_s", 30))
        while time.monotonic() < deadline:
            state = get_task_state(request["message_id"], broker.client, broker.namespace)
            if state is not None and state.state == "running" and state.details.get("worker") not in \
                    request.get("not_workers", []):
                return state.to_dict()
            time.sleep(0.01)
        raise TimeoutError(f"message {request['message_id']} did not start within {request.get('wait_s', 30)} s")
    if cmd == "wait_lock":  # return the lock's owner once someone holds it
        from jwql_dramatiq.locks import get_lock_info

        deadline = time.monotonic() + float(request.get("wait_s", 30))
        while time.monotonic() < deadline:
            info = get_lock_info(request["name"], broker.client, broker.namespace)
            if info is not None:
                return {"name": info.name, "fencing_token": info.fencing_token, "host": info.host, "pid": info.pid,
                        "alive": info.alive, "ttl_s": info.ttl_s, "message_id": info.message_id}
            time.sleep(0.005)
        raise TimeoutError(f"nobody took lock {request['name']!r} within {request.get('wait_s', 30)} s")
    if cmd == "stop_loop":
        _loop_stop.set()
        return True
    if cmd == "config":
        config = get_config()
        return {"redis_address": config.redis_address, "namespace": config.namespace}
    if cmd == "message":  # a message of an actor the workers may not have, for the bad-input cases
        message = Message(queue_name=get_config().queue_name, actor_name=request["actor"], args=(), kwargs={},
                          options={})
        message = broker.enqueue(message)
        _messages[message.message_id] = message
        return message.message_id
    raise ValueError(f"unknown command {cmd!r}")


def main(argv: list[str]) -> int:
    """Serve requests from stdin until it closes or ``{"cmd": "exit"}``."""
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config

    import jwql_dramatiq.actors  # noqa: F401  (declares the actors)
    import tests.actors_for_tests  # noqa: F401

    setup_broker(load_config(argv[1]))
    print(json.dumps({"id": 0, "ok": True, "value": "ready"}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "exit":
            break
        try:
            reply = {"id": request.get("id"), "ok": True, "value": handle(request)}
        except Exception as e:  # noqa: BLE001 - the test decides what an error means
            reply = {"id": request.get("id"), "ok": False, "type": getattr(e, "type_name", type(e).__name__),
                     "error": str(e), "traceback": traceback.format_exc(limit=5)}
        print(json.dumps(reply, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
