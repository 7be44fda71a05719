"""Delayed tasks, revoking, and waiting on many results in completion order (real workers)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.broker import states
from jwql_dramatiq.actors import ping
from jwql_dramatiq.broker.revoke import revoke
from jwql_dramatiq.waiting import iter_results
from tests import actors_for_tests as t
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)


def runs(redis_client, key: str) -> int:
    return int(redis_client.get(key) or 0)


def test_delayed_task_runs_no_sooner_than_due_and_within_1_s(broker, make_config, start_worker):
    # An idle poll longer than the bound: the worker must wake at the due time, not poll for it.
    start_worker(make_config(idle_poll_ms=5_000))
    ping.send().get_result(block=True, timeout=10_000)  # the worker is idle and warm
    sent = time.time()
    message = t.record_span.send_with_options(args=(0,), delay=2_000)
    assert states.get_task_state(message.message_id).state == states.SCHEDULED
    span = message.get_result(block=True, timeout=15_000)
    due = sent + 2.0
    assert span["start"] >= due - 0.01, span["start"] - due
    assert span["start"] - due < 1.0, span["start"] - due


def test_delayed_task_survives_kill_9_of_its_worker_and_runs_once(broker, make_config, start_worker, redis_client):
    config = make_config(heartbeat_timeout_s=2, maintenance_chance=1_000_000)
    first = start_worker(config)
    message = t.count_then_sleep_in_c.send_with_options(args=("delayed-runs", 0), delay=6_000)
    dq = f"{broker.namespace}:{message.queue_name}"
    wait_for(lambda: redis_client.llen(dq) == 0, 10, "the first worker to take the delayed message")
    os.killpg(first.pid, signal.SIGKILL)
    first.stop()
    start_worker(config)
    assert message.get_result(block=True, timeout=30_000) == 1
    time.sleep(1.0)  # a second run, had there been one, would have counted by now
    assert runs(redis_client, "delayed-runs") == 1


def test_revoked_queued_task_never_runs_and_its_waiter_returns_at_once(broker, make_config, start_worker, redis_client):
    message = t.count_then_sleep_in_c.send("queued-runs", 0)  # no worker yet: it waits in the queue
    outcome = revoke(message.message_id)
    assert outcome.outcome == "revoked" and outcome.state == states.QUEUED
    started = time.monotonic()
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=10_000)
    assert time.monotonic() - started < 1.0
    assert info.value.orig_exc_type == "TaskRevoked"
    start_worker(make_config())  # the revocation outlives a worker (re)start
    ping.send().get_result(block=True, timeout=10_000)
    assert runs(redis_client, "queued-runs") == 0
    assert states.get_task_state(message.message_id).state == states.REVOKED


def test_revoked_delayed_task_held_by_a_worker_is_skipped(broker, make_config, start_worker, redis_client):
    start_worker(make_config())
    message = t.count_then_sleep_in_c.send_with_options(args=("delayed-revoked", 0), delay=2_000)
    wait_for(lambda: redis_client.llen(f"{broker.namespace}:{message.queue_name}") == 0, 10,
             "the worker to hold the delayed message")
    assert revoke(message.message_id).outcome == "revoked"
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=5_000)
    time.sleep(2.5)  # past its due time
    assert runs(redis_client, "delayed-revoked") == 0
    assert states.get_task_state(message.message_id).state == states.REVOKED


def test_revoke_terminate_kills_a_task_sleeping_in_c_within_1_s(broker, make_config, start_worker):
    start_worker(make_config())
    message = t.sleep_in_c.send(60)
    wait_for(lambda: (states.get_task_state(message.message_id) or states.TaskState("", "")).state == states.RUNNING,
             10, "the task to start")
    started = time.monotonic()
    assert revoke(message.message_id, terminate=True).outcome == "terminating"
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=10_000)
    assert info.value.orig_exc_type == "TaskRevoked"
    # With one thread and a prefetch of one, the worker can serve the next task only once the
    # sleeping child is gone.
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
    assert time.monotonic() - started < 1.0  # revoke -> child killed -> the next task served
    wait_for(lambda: states.get_task_state(message.message_id).state == states.REVOKED, 5, "the revoked state")


def test_a_task_revoked_without_terminate_can_still_be_terminated(broker, make_config, start_worker):
    # Given: a running task revoked without --terminate (it keeps running, its result discarded)
    start_worker(make_config())
    message = t.sleep_in_c.send(60)
    wait_for(lambda: (states.get_task_state(message.message_id) or states.TaskState("", "")).state == states.RUNNING,
             10, "the task to start")
    assert revoke(message.message_id).outcome == "revoked"
    # When: it is revoked again, with terminate
    outcome = revoke(message.message_id, terminate=True)
    # Then: its worker is told to kill it, and serves the next task well before the 60 s sleep ends
    assert outcome.outcome == "terminating" and outcome.state == states.REVOKED, outcome
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
    # ... and once nothing runs it, terminating again changes nothing
    assert revoke(message.message_id, terminate=True).outcome == "finished"


def test_revoking_unknown_or_finished_ids_changes_nothing(broker, make_config, start_worker):
    start_worker(make_config())
    message = ping.send()
    result = message.get_result(block=True, timeout=10_000)
    wait_for(lambda: states.get_task_state(message.message_id).state == states.SUCCEEDED, 5, "success")
    assert revoke(message.message_id).outcome == "finished"
    assert message.get_result(block=True, timeout=1_000) == result
    assert revoke("no-such-message").outcome == "unknown"


def test_iter_results_yields_in_completion_order_and_calls_back(broker, make_config, start_worker):
    config = make_config()
    start_worker(config)
    start_worker(config)
    slow, fast = t.record_span.send(3.0), t.record_span.send(1.0)
    seen = []
    outcomes = list(iter_results([slow, fast], timeout_s=20, callback=lambda o: seen.append(o.message.message_id)))
    assert [o.message.message_id for o in outcomes] == [fast.message_id, slow.message_id]
    assert seen == [fast.message_id, slow.message_id]
    assert all(o.ok for o in outcomes)
