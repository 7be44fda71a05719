"""A first send records no state: the waiting task is "queued", read from its message, and the
worker's "running" is its first record (jwql_dramatiq.broker.waiting_messages)."""

from __future__ import annotations

import time

import dramatiq
import pytest

from jwql_dramatiq.broker import setup_broker, states
from jwql_dramatiq.broker.states import get_task_state, list_tasks
from jwql_dramatiq.config import load_config
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)

NS = "jwql_dramatiq"


def test_a_first_send_records_nothing_and_reads_as_queued_from_its_message(broker):
    # Given the monitor's broker and one task already waiting
    from tests.actors_for_tests import fail_with

    client = broker.client
    older = fail_with.send("OSError", "older")

    # When another task is sent
    now = fail_with.send("ValueError", "jw01_uncal.fits")

    # Then neither has a record or an index entry: the send wrote only the message, under its own id
    assert now.options["redis_message_id"] == now.message_id
    assert client.exists(states.task_key(NS, now.message_id), states.index_key(NS)) == 0
    # And its state is "queued", with what a record would hold, read from the message
    state = get_task_state(now.message_id, client, NS)
    assert (state.state, state.actor, state.queue) == ("queued", "fail_with", broker.jwql_config.queue_name)
    assert state.details["redis_id"] == now.message_id
    assert state.details["input_file"] == "ValueError"  # the first string argument
    assert state.details["arguments"] == states.described_arguments(now)["arguments"]
    assert float(state.details["enqueued_at"]) == state.updated_at == now.message_timestamp / 1000
    # And listings show both, newest first, under "queued" and under no filter only
    assert [t.message_id for t in list_tasks(10, client, NS)] == [now.message_id, older.message_id]
    assert [t.message_id for t in list_tasks(1, client, NS, states=["queued"])] == [now.message_id]
    assert list_tasks(10, client, NS, states=["running", "succeeded"]) == []
    # And an id that was never sent has no state
    assert get_task_state("no-such-id", client, NS) is None


def test_the_same_message_sent_twice_waits_twice_and_the_second_send_is_recorded(broker):
    # Given one message object
    from tests.actors_for_tests import fail_with

    message = fail_with.message("E", "twice")

    # When it is sent twice by the same process
    first, second = broker.enqueue(message), broker.enqueue(message)

    # Then both sends wait, the second under a fresh id, with a record of its own
    queue = broker.jwql_config.queue_name
    assert broker.client.lrange(f"{NS}:{queue}", 0, -1) == [first.message_id.encode(),
                                                            second.options["redis_message_id"].encode()]
    assert second.options["redis_message_id"] != first.message_id
    record = get_task_state(message.message_id, broker.client, NS)
    assert record.state == "queued" and record.details["redis_id"] == second.options["redis_message_id"]
    assert broker.client.exists(states.task_key(NS, message.message_id)) == 1


def test_a_first_send_repeated_by_another_process_while_it_waits_is_not_doubled(broker, make_config):
    # Given a message another process has sent, still waiting (as after a send whose reply was lost)
    from tests.actors_for_tests import fail_with

    message = fail_with.message("E", "once")
    broker.enqueue(message)
    other = setup_broker(load_config(make_config()))
    try:
        # When the other process sends the same message
        other.enqueue(message)
    finally:
        other.close()
        dramatiq.set_broker(broker)

    # Then it waits once
    assert broker.client.lrange(f"{NS}:{broker.jwql_config.queue_name}", 0, -1) == [message.message_id.encode()]


def test_the_worker_s_first_record_carries_what_the_message_told(broker):
    # Given an in-process worker and an actor that returns at once
    def quick(path: str, count: int) -> int:
        return count

    actor = dramatiq.actor(quick, broker=broker, actor_name="quick_for_waiting_states",
                           queue_name=broker.jwql_config.queue_name)
    # When a task is sent, then run
    message = actor.send("jw03_uncal.fits", 7)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert message.get_result(block=True, timeout=10_000) == 7
        final = wait_for(lambda: (s := get_task_state(message.message_id, broker.client, NS)) and
                         s.state == "succeeded" and s, 5, "the succeeded state")
    finally:
        worker.stop()

    # Then its record holds the enqueue time, the input file and the arguments, as a sent record did
    assert float(final.details["enqueued_at"]) == message.message_timestamp / 1000
    assert final.details["input_file"] == "jw03_uncal.fits"
    assert final.details["arguments"] == states.described_arguments(message)["arguments"]
    assert float(final.details["started_at"]) <= float(final.details["finished_at"]) <= time.time()
    # And it is in the listing index, and its message is gone
    assert broker.client.zscore(states.index_key(NS), message.message_id) is not None
    assert broker.client.hlen(f"{NS}:{broker.jwql_config.queue_name}.msgs") == 0


def test_a_waiting_task_revoked_or_purged_keeps_what_its_message_told(broker):
    # Given two tasks waiting since their first send
    from jwql_dramatiq.broker import admin
    from jwql_dramatiq.broker.revoke import revoke
    from tests.actors_for_tests import fail_with

    revoked, purged = fail_with.send("jw06_uncal.fits", "r"), fail_with.send("jw07_uncal.fits", "p")
    # When one is revoked and the other purged
    assert revoke(revoked.message_id, broker=broker).outcome == "revoked"
    assert [item["message_id"] for item in admin.purge(broker)] == [purged.message_id]
    # Then each has a record in its final state with its actor, queue, input file and enqueue time
    for message, state in ((revoked, "revoked"), (purged, "purged")):
        record = get_task_state(message.message_id, broker.client, NS)
        assert (record.state, record.actor, record.queue) == (state, "fail_with", broker.jwql_config.queue_name)
        assert record.details["input_file"] == message.args[0]
        assert float(record.details["enqueued_at"]) == message.message_timestamp / 1000
    # And neither waits any more
    assert broker.client.hlen(f"{NS}:{broker.jwql_config.queue_name}.msgs") == 0
