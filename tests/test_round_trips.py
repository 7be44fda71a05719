"""Redis round trips and commands per task, on a private Redis: a send, and a worker's share of a task.

Round trips are counted on the client's own connections (each request, a single command or a whole
pipeline, is one send): in this process by a connection class, in a real worker's processes by
``tests/request_counter/sitecustomize.py``. Commands are counted by the server (``MONITOR``), per
client address.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dramatiq
import pytest
import redis

from tests.conftest import wait_for

N_TASKS = 100
REQUEST_COUNTER = Path(__file__).resolve().parent / "request_counter"
IDLE_POLL_S = 2.0


def idle_round_trips(elapsed_s: float) -> float:
    """A worker's round trips that do not depend on its tasks, over ``elapsed_s``: each of its two
    consumers (queue, delay queue) makes at most two per idle_poll_ms (a fetch and a wait, or a
    heartbeat), plus a few as its thread starts (on a loaded machine, after the first task's result)."""
    return 2 * 2 * (elapsed_s / IDLE_POLL_S + 2)


class CountingConnection(redis.Connection):
    """Counts round trips: every request (a command, or a whole pipeline) is one send."""

    sends = 0

    def send_packed_command(self, command, check_health=True):  # noqa: D102
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


class SenderConnection(CountingConnection):
    sends = 0


class WorkerConnection(CountingConnection):
    sends = 0


def _broker(config_path, connection_class):
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.config import load_config

    import tests.actors_for_tests  # noqa: F401  (declares the test actors)

    broker = build_broker(load_config(config_path))
    kwargs = dict(broker.client.connection_pool.connection_kwargs)  # the production client's settings
    broker.client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
    broker.results_backend.client = broker.client
    return broker


class Monitor:
    """Counts the commands the server runs, per client port, while it is open."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.commands: list[tuple[str, str]] = []  # (client host:port, or "lua" inside a script; command name)
        self.raw: list[tuple[str, str]] = []  # (client host:port, the whole command)
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            while not self._stop:
                try:
                    event = monitor.next_command()
                except redis.TimeoutError:  # a quiet spell longer than the socket timeout
                    continue
                address = event["client_address"]
                if event.get("client_port"):
                    address = f"{address}:{event['client_port']}"
                self.commands.append((address, event["command"].split()[0].lower()))
                self.raw.append((address, event["command"]))

    def close(self, poke: redis.Redis) -> None:
        self._stop = True
        poke.ping()  # one more command ends the listen loop
        self._thread.join(5)
        self.client.close()


@pytest.mark.timeout(120)
def test_a_send_is_one_round_trip_and_a_worker_needs_at_most_three_per_task(make_config, redis_client, redis_url):
    from tests import actors_for_tests as t

    config = make_config(idle_poll_ms=int(IDLE_POLL_S * 1000), max_tasks_per_child=0)
    sender = _broker(config, SenderConnection)
    dramatiq.set_broker(sender)
    t.record_span.send(0)  # loads the scripts
    redis_client.flushdb()
    monitor = Monitor(redis_url)

    # When: N tasks are sent with no worker running (between two markers the monitor sees)
    redis_client.echo("sends-start")
    before = SenderConnection.sends
    sent = [t.record_span.send(0) for _ in range(N_TASKS)]
    send_round_trips = (SenderConnection.sends - before) / N_TASKS
    redis_client.echo("sends-end")

    def markers() -> list[int] | None:
        found = [i for i, (_, name) in enumerate(monitor.commands) if name == "echo"]
        return found if len(found) >= 2 else None

    marks = wait_for(markers, 10, "the monitor to see both markers")
    send_commands = (marks[1] - marks[0] - 1) / N_TASKS

    # ... and one in-process worker (one thread) drains them
    worker_broker = _broker(config, WorkerConnection)
    worker = dramatiq.Worker(worker_broker, worker_threads=1, worker_timeout=100)  # results are read by the sender
    worker.start()
    try:
        # (the first task also opens the worker's connections: counted from its result on)
        sender.results_backend.get_result(sent[0], block=True, timeout=30_000)
        started, started_at = WorkerConnection.sends, time.monotonic()
        for message in sent[1:]:
            sender.results_backend.get_result(message, block=True, timeout=30_000)
        worker_round_trips = (WorkerConnection.sends - started) / (N_TASKS - 1)
        idle = idle_round_trips(time.monotonic() - started_at)
    finally:
        worker.stop()
    monitor.close(redis_client)

    # Then: a send is one round trip, and the worker needs at most 3 per task (fetch, start, finish)
    # beside its idle polls
    assert send_round_trips == 1
    # ... and one script: EVALSHA, and inside it the payload, the queue and the wake-up (a first send
    # records no state: the task reads as "queued" from its message), the wake-up list being trimmed
    # now and then while no worker is idle
    assert send_commands <= 4 + 1 / 64 + 2 / N_TASKS, f"{send_commands:.2f} commands per send"
    assert worker_round_trips <= 3 + idle / (N_TASKS - 1), f"{worker_round_trips:.2f} per task"
    commands = [name for _, name in monitor.commands]
    sent_commands = sum(address != "lua" for address, _ in monitor.commands)
    print(f"\nper task: send {send_round_trips:.2f} round trips and {send_commands:.2f} commands, worker {worker_round_trips:.2f}; commands the "
          f"server ran: {sent_commands / N_TASKS:.2f} sent by clients (result reads included), "
          f"{(len(commands) - sent_commands) / N_TASKS:.2f} inside scripts")
    # No dead-worker recovery and no KEYS run on the task path
    assert "keys" not in commands
    sender.close()
    worker_broker.close()


@pytest.mark.timeout(120)
def test_a_fresh_child_worker_needs_at_most_three_round_trips_per_task(make_config, start_worker, tmp_path):
    # Given: a real worker (the dramatiq command line) running each task in a fresh child, whose
    # processes log each request they send to Redis (tests/request_counter/sitecustomize.py)
    from tests import actors_for_tests as t

    request_log = tmp_path / "requests.log"
    python_path = os.pathsep.join(filter(None, [str(REQUEST_COUNTER), os.environ.get("PYTHONPATH")]))
    config = make_config(idle_poll_ms=int(IDLE_POLL_S * 1000), max_tasks_per_child=1)
    sender = _broker(config, SenderConnection)
    dramatiq.set_broker(sender)
    sent = [t.record_span.send(0) for _ in range(N_TASKS)]

    # When: it drains N tasks, one fresh child each
    start_worker(config, env={"PYTHONPATH": python_path, "JWQL_TEST_REQUEST_LOG": str(request_log)})
    # (the first task also opens the worker's connections: counted from its result on)
    sender.results_backend.get_result(sent[0], block=True, timeout=60_000)
    started_at = time.monotonic()
    for message in sent[1:]:
        sender.results_backend.get_result(message, block=True, timeout=60_000)
    ended_at = time.monotonic()

    # Then: its processes sent at most 3 requests per task (fetch, start, finish) beside their idle
    # polls and heartbeats
    times_s = [float(line) for line in request_log.read_text().splitlines()]
    assert times_s, "the worker logged no request: was tests/request_counter on its PYTHONPATH?"
    requests = sum(started_at <= at_s <= ended_at for at_s in times_s) / (N_TASKS - 1)
    print(f"\nfresh-child worker: {requests:.2f} round trips per task over {ended_at - started_at:.1f} s")
    assert requests <= 3 + idle_round_trips(ended_at - started_at) / (N_TASKS - 1), f"{requests:.2f} round trips per task"
    sender.close()


@pytest.mark.timeout(60)
def test_a_worker_takes_the_highest_priority_message_first(make_config, redis_client):
    # Given: actors of priority 0 and 10 (lower runs first, as in Dramatiq), 5 messages each sent alternately
    # with no worker running
    from jwql_dramatiq.broker.admin import queue_lengths

    config = make_config(idle_poll_ms=200, max_tasks_per_child=0)
    broker = _broker(config, SenderConnection)
    dramatiq.set_broker(broker)
    order_key = "priority-order"

    @dramatiq.actor(broker=broker, priority=10, actor_name="low_priority_call")
    def low() -> None:
        redis_client.rpush(order_key, "low")

    @dramatiq.actor(broker=broker, priority=0, actor_name="high_priority_call")
    def high() -> None:
        redis_client.rpush(order_key, "high")

    sent = []
    for _ in range(5):
        sent += [low.send(), high.send()]
    assert next(q for q in queue_lengths(broker) if q.queue == "default").ready == 10
    # When: one worker thread drains them, one message at a time
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        for message in sent:
            broker.results_backend.get_result(message, block=True, timeout=30_000)
    finally:
        worker.stop()
    # Then: every high-priority message ran before any low-priority one, and nothing is left waiting
    assert [v.decode() for v in redis_client.lrange(order_key, 0, -1)] == ["high"] * 5 + ["low"] * 5
    assert not redis_client.exists(f"{broker.namespace}:default.levels", f"{broker.namespace}:default.P10")
    broker.close()


@pytest.mark.timeout(60)
def test_a_failure_is_stored_once_and_a_result_that_is_not_json_fails_once(make_config, redis_client, redis_url):
    # Given: an actor that raises, and one that returns a set (not JSON-encodable), each counting its runs
    from jwql_dramatiq.broker.results import TaskResultFailure
    from jwql_dramatiq.broker.scripts import FINISH, STORE_RESULT

    config = make_config(idle_poll_ms=200, max_tasks_per_child=0)
    broker = _broker(config, SenderConnection)
    dramatiq.set_broker(broker)

    @dramatiq.actor(broker=broker, actor_name="raises_value_error")
    def raises() -> None:
        redis_client.incr("runs:raises")
        raise ValueError("bad slope")

    @dramatiq.actor(broker=broker, actor_name="returns_a_set")
    def returns_set() -> set:
        redis_client.incr("runs:set")
        return {1, 2}

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    monitor = Monitor(redis_url)
    try:
        # When: each is sent once and its caller waits
        failed, unencodable = raises.send(), returns_set.send()
        with pytest.raises(TaskResultFailure) as failure:
            broker.results_backend.get_result(failed, block=True, timeout=20_000)
        with pytest.raises(TaskResultFailure) as not_json:
            broker.results_backend.get_result(unencodable, block=True, timeout=20_000)
        wait_for(lambda: not redis_client.hlen(f"{broker.namespace}:default.msgs"), 10, "both messages to be settled")
    finally:
        worker.stop()
        monitor.close(redis_client)
    # Then: the failure keeps its type and was stored once (not once by the consumer and again by Results)
    assert failure.value.type_name == "ValueError" and "bad slope" in failure.value.message
    stores = [c for a, c in monitor.commands if c == "evalsha"]
    # (on its own, or as a part of a worker's finish.lua)
    stored = sum(c.count(STORE_RESULT.sha) + (c.split().count("store_result") if FINISH.sha in c else 0)
                 for a, c in monitor.raw)
    assert stores and stored == 2  # one per task
    # And the set's actor ran once, and its caller was told why there is no value
    assert not_json.value.type_name == "ResultNotEncodable" and "set" in not_json.value.message
    assert (int(redis_client.get("runs:raises")), int(redis_client.get("runs:set"))) == (1, 1)
    broker.close()


@pytest.mark.timeout(30)
def test_finish_runs_its_parts_in_order_in_one_script_and_refuses_a_script_it_cannot_run(broker, redis_client):
    # Given a worker holding one message, whose final state and result are deferred to its ack
    from jwql_dramatiq.broker import keys, states
    from jwql_dramatiq.broker.scripts import FETCH, FINISH, STORE_RESULT, TASK_STATE, finish_call

    ns, held = broker.namespace, keys.held_key(broker.namespace, "w1", "q")
    redis_client.sadd(held, "r1")
    redis_client.hset(keys.messages_key(ns, "q"), "r1", b"{}")
    state = states.state_call(ns, "m1", 60_000, state="succeeded", finished_at=1.0)
    result = ([f"{ns}:result:m1", keys.revoked_key(ns)], ["m1", '{"value": 42}', 60_000, "0", "0"])
    settle = broker.settle_call("ack", "q", ["r1"], worker_id="w1")

    # When finish.lua runs them: the state, the result, the ack
    replies = FINISH.run(redis_client, *finish_call([(TASK_STATE, *state), (STORE_RESULT, *result), settle]))

    # Then each part ran as its own script would, in order, and replied
    assert replies == [1, 1, 1]
    assert states.get_task_state("m1", redis_client, ns).state == "succeeded"
    assert redis_client.lrange(f"{ns}:result:m1", 0, -1) == [b'{"value": 42}']
    assert not redis_client.exists(held) and not redis_client.hexists(keys.messages_key(ns, "q"), "r1")
    # And run again (a retried ack), it changes nothing: the message is no longer held
    assert FINISH.run(redis_client, *finish_call([(TASK_STATE, *state), settle])) == [0, 0]
    # And a script it has no part for is refused before anything runs
    with pytest.raises(ValueError, match="fetch.lua"):
        finish_call([(FETCH, [], [])])
