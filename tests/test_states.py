"""Task states: one round trip per change, final states that stay final, no stale "queued" over a
run, a trimmed index, retries that never show "failed", and the host override."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import dramatiq
import pytest
import redis
from dramatiq.message import Message

from jwql_dramatiq.broker import states
from jwql_dramatiq.config import HOSTNAME_ENV, worker_hostname
from jwql_dramatiq.broker.scripts import TASK_STATE
from jwql_dramatiq.broker.state_recorder import TaskStates
from jwql_dramatiq.broker.states import get_task_state, list_tasks, write_state
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)

NS = "jwql_dramatiq"


class CountingConnection(redis.Connection):
    """Counts round trips: every request (a command, or a whole pipeline) is one send."""

    sends = 0

    def send_packed_command(self, command, check_health=True):  # noqa: D102
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


@pytest.fixture
def counting_client(redis_url):
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    yield client
    client.close()


def a_message(**options) -> Message:
    return Message(queue_name="jwql", actor_name="some_actor", args=(), kwargs={}, options=options)


class StubControl:
    """The bits of WorkerControl the middleware uses."""

    key = f"{NS}:worker:w1"

    def __init__(self) -> None:
        self.current = None

    def record_fields(self, busy_with=None, done=False) -> dict:
        if busy_with is not None:
            return {"current_message": busy_with.message_id, "current_actor": busy_with.actor_name,
                    "current_since": time.time()}
        return {"current_message": "", "current_actor": "", "current_since": ""}


def enqueued(middleware, broker, message) -> None:
    """The state write a send makes (JwqlRedisBroker.enqueue runs it inside enqueue.lua)."""
    state_keys, state_args = middleware.enqueue_state(broker, message, None)
    TASK_STATE.run(broker.client, keys=state_keys, args=state_args)


def counted(call) -> int:
    before = CountingConnection.sends
    call()
    return CountingConnection.sends - before


def test_each_state_change_costs_one_round_trip_worker_record_included(counting_client):
    # Given a middleware as a worker has it (with the worker's record to keep up to date)
    middleware = TaskStates(NS, 60_000)
    middleware.control = StubControl()
    broker = SimpleNamespace(client=counting_client, broker_id="w1")
    ok, bad = a_message(redis_message_id="r1"), a_message(redis_message_id="r2")
    write_state(counting_client, NS, "warm-up", 1000, state="queued")  # loads the script once

    # Then every change is exactly one round trip
    assert counted(lambda: enqueued(middleware, broker, ok)) == 1
    assert counted(lambda: middleware.before_process_message(broker, ok)) == 1
    assert counted(lambda: middleware.after_process_message(broker, ok, result=1)) == 1
    assert get_task_state(ok.message_id, counting_client, NS).state == "succeeded"
    # ... and a failure is one round trip too, written when Dramatiq rejects the message
    enqueued(middleware, broker, bad)
    middleware.before_process_message(broker, bad)
    assert counted(lambda: middleware.after_process_message(broker, bad, exception=ValueError("x"))) == 0
    bad_proxy = dramatiq.broker.MessageProxy(bad)
    bad_proxy.failure = ValueError("bad slope")  # as KeepFailure sets it
    assert counted(lambda: middleware.after_nack(broker, bad_proxy)) == 1
    state = get_task_state(bad.message_id, counting_client, NS)
    assert state.state == "failed" and state.details["error"] == "ValueError: bad slope"
    record = counting_client.hgetall(StubControl.key)
    assert record[b"current_message"] == b"" and int(record[b"tasks_done"]) == 2
    assert 0 < counting_client.pttl(states.task_key(NS, ok.message_id)) <= 60_000


def test_a_final_state_is_never_left_except_by_force(redis_client):
    write_state(redis_client, NS, "m1", 60_000, state="running", redis_id="r1")
    assert write_state(redis_client, NS, "m1", 60_000, mode="force", state="revoked")
    # A revoked task that runs on does not become succeeded; a late enqueue does not requeue it.
    assert not write_state(redis_client, NS, "m1", 60_000, state="succeeded")
    assert not write_state(redis_client, NS, "m1", 60_000, mode="enqueue", state="queued", redis_id="r9")
    assert get_task_state("m1", redis_client, NS).state == "revoked"
    assert write_state(redis_client, NS, "m1", 60_000, mode="force", state="purged")
    assert get_task_state("m1", redis_client, NS).state == "purged"


def test_a_late_queued_never_overwrites_the_run_of_the_same_enqueue(redis_client):
    # Given a worker that started redis message r1 before its sender recorded "queued"
    write_state(redis_client, NS, "m1", 60_000, state="running", redis_id="r1")
    # When the sender's "queued" for r1 arrives late, it is refused
    assert not write_state(redis_client, NS, "m1", 60_000, mode="enqueue", state="queued", redis_id="r1")
    assert get_task_state("m1", redis_client, NS).state == "running"
    # But a new enqueue (a retry: a new redis id) is recorded
    assert write_state(redis_client, NS, "m1", 60_000, mode="enqueue", state="scheduled", redis_id="r2")
    assert get_task_state("m1", redis_client, NS).state == "scheduled"


def test_the_worker_record_is_updated_even_when_the_task_change_is_refused(redis_client):
    write_state(redis_client, NS, "m1", 60_000, mode="force", state="revoked")
    key = f"{NS}:worker:w1"
    assert not write_state(redis_client, NS, "m1", 60_000, also=(key, {"tasks_done": 3}), state="succeeded")
    assert redis_client.hget(key, "tasks_done") == b"3"


def test_index_is_trimmed_and_expired_records_are_dropped(redis_client, monkeypatch):
    monkeypatch.setattr(states, "INDEX_MAX", 3)
    for i in range(5):
        write_state(redis_client, NS, f"m{i}", 60_000, state="queued")
    assert redis_client.zcard(states.index_key(NS)) == 3
    assert [t.message_id for t in list_tasks(10, redis_client, NS)] == ["m4", "m3", "m2"]
    write_state(redis_client, NS, "short", 50, state="failed", error="E: x")
    wait_for(lambda: not redis_client.exists(states.task_key(NS, "short")), 5, "the short record to expire")
    assert "short" not in [t.message_id for t in list_tasks(10, redis_client, NS)]
    assert redis_client.zscore(states.index_key(NS), "short") is None
    assert [t.message_id for t in list_tasks(10, redis_client, NS, states=["queued"])][:1] == ["m4"]


def test_unknown_mode_is_refused(redis_client):
    with pytest.raises(ValueError, match="mode"):
        write_state(redis_client, NS, "m1", 1000, mode="maybe", state="queued")


def test_hostname_override(monkeypatch):
    monkeypatch.setenv(HOSTNAME_ENV, "pljwql9")
    assert worker_hostname() == "pljwql9"
    assert TaskStates(NS, 1000).host == "pljwql9"
    monkeypatch.setenv(HOSTNAME_ENV, "")
    assert worker_hostname() not in ("", "pljwql9")


def test_a_retried_task_goes_back_to_scheduled_never_through_failed(broker):
    # Given an in-process worker and an actor that fails once, then succeeds, retried after 100 ms
    calls = []

    def flaky() -> str:
        calls.append(time.time())
        time.sleep(0.3)  # long enough to be seen running
        if len(calls) == 1:
            raise ValueError("first try fails")
        return "ok"

    actor = dramatiq.actor(flaky, broker=broker, actor_name="flaky_for_states", max_retries=1, min_backoff=100,
                           max_backoff=100, queue_name=broker.jwql_config.queue_name)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        # When it runs
        message = actor.send()
        seen: list[str] = []
        done = threading.Event()

        def watch() -> None:
            while True:
                last = done.is_set()
                state = get_task_state(message.message_id, broker.client, NS)
                if state is not None and (not seen or seen[-1] != state.state):
                    seen.append(state.state)
                if last:
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            assert message.get_result(block=True, timeout=10_000) == "ok"
            wait_for(lambda: get_task_state(message.message_id, broker.client, NS).state == "succeeded", 5,
                     "the succeeded state")
        finally:
            done.set()
            watcher.join()
    finally:
        worker.stop()
    # Then the states went running -> scheduled -> ... -> succeeded, never "failed"
    assert "failed" not in seen, seen
    assert "scheduled" in seen and seen[-1] == "succeeded", seen
    assert seen.index("scheduled") > seen.index("running"), seen


@pytest.mark.timeout(90)
def test_a_retried_failure_keeps_its_attempt_figures_until_the_retry_runs(make_config, start_worker, broker):
    # Given a real worker (a fresh child per task) and an actor that fails once, retried 3 s later
    from tests.actors_for_tests import fail_first_run

    start_worker(make_config())
    # When it fails its first run
    message = fail_first_run.send("runs:fail_first_run")

    def retry_waiting():
        state = get_task_state(message.message_id, broker.client, NS)
        return state if state is not None and state.state == "scheduled" else None

    # Then while the retry waits, the state shows the failed attempt's memory peak and its method
    waiting = wait_for(retry_waiting, 30, "the retry to be scheduled")
    assert float(waiting.details["memory_peak_mib"]) > 0, waiting.details
    assert waiting.details.get("memory_method"), waiting.details
    # And the retry runs, and its own figures go with the final state
    assert message.get_result(block=True, timeout=30_000) == 2
    final = wait_for(lambda: get_task_state(message.message_id, broker.client, NS), 5, "the final state")
    assert final.state == "succeeded" and float(final.details["memory_peak_mib"]) > 0, final.details


def test_a_delayed_first_send_records_the_whole_scheduled_state_in_its_own_script(broker, monkeypatch):
    # Given the monitor's broker and an index trimmed on every first record
    from tests.actors_for_tests import fail_with

    monkeypatch.setattr(states, "INDEX_TRIM_EVERY", 1)
    monkeypatch.setattr(states, "INDEX_MAX", 2)
    client = broker.client

    # When a task is sent with a delay
    before_s = time.time()
    later = fail_with.send_with_options(args=("KeyError", "jw02_uncal.fits"), delay=60_000)

    # Then it has its full record from the send's one script, as a retried send would write it
    record = get_task_state(later.message_id, client, NS)
    assert (record.state, record.actor, record.queue) == ("scheduled", "fail_with", broker.jwql_config.queue_name)
    assert record.details["redis_id"] == later.options["redis_message_id"] != later.message_id
    assert record.details["input_file"] == later.args[0]  # the first string argument
    assert record.details["arguments"] == states.described_arguments(later)["arguments"]
    assert before_s - 1 <= float(record.details["enqueued_at"]) == record.updated_at <= time.time() + 1
    assert record.details["eta"] == str(later.options["eta"])
    assert 0 < client.pttl(states.task_key(NS, later.message_id)) <= broker.jwql_config.result_ttl_s * 1000


def test_a_delayed_first_send_trims_the_index_once_in_index_trim_every(broker, monkeypatch):
    # Given an index of at most 2 entries, trimmed by one first record in 4
    from tests.actors_for_tests import fail_with

    monkeypatch.setattr(states, "INDEX_TRIM_EVERY", 4)
    monkeypatch.setattr(states, "INDEX_MAX", 2)
    sizes = []
    for i in range(9):
        fail_with.send_with_options(args=("E", str(i)), delay=60_000)
        sizes.append(broker.client.zcard(states.index_key(NS)))
    # Then it is trimmed by the 1st, 5th and 9th, and grows by at most 3 entries in between
    assert sizes == [1, 2, 3, 4, 2, 3, 4, 5, 2]
