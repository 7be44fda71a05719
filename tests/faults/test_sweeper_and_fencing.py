"""The two mechanisms behind the fault tests, checked directly against a real Redis.

- The sweeper's Lua pass (:mod:`jwql_dramatiq.broker.sweeper`): which messages it requeues, whose, and
  what it leaves alone.
- The pipeline actors' fenced publish (:mod:`jwql_dramatiq.actors.fenced`), with the other
  run of a message simulated at each point where it can overtake this one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from dramatiq.common import current_millis
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage

from jwql_dramatiq.actors import fenced
from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.locks import lock
from jwql_dramatiq.broker.sweeper import Sweeper, sweep_interval_s
from tests.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

NS = "jwql_dramatiq"


def test_sweep_requeues_dead_workers_messages_on_every_queue_and_nothing_else(broker, redis_client):
    # Given: a dead worker holding messages on the queue and its delay queue (one payload gone
    # already), a live worker, and the sweeping worker itself with a stale heartbeat
    now = current_millis()
    timeout = broker.heartbeat_timeout
    redis_client.zadd(f"{NS}:__heartbeats__", {"dead-1": now - timeout - 1000, "live-1": now,
                                               broker.broker_id: now - timeout - 1000})
    for worker, queue, ids in [("dead-1", "jwql", ["a", "b"]), ("dead-1", "jwql.DQ", ["c"]),
                               ("live-1", "jwql", ["d"]), (broker.broker_id, "jwql", ["e"])]:
        redis_client.sadd(f"{NS}:__acks__.{worker}.{queue}", *ids)
    redis_client.hset(f"{NS}:jwql.msgs", mapping={"a": "A", "d": "D", "e": "E"})
    redis_client.hset(f"{NS}:jwql.DQ.msgs", mapping={"c": "C"})
    week = 7 * 86_400_000
    redis_client.zadd(f"{NS}:jwql.XQ", {"old": now - week - 1000, "recent": now - 1000})
    redis_client.hset(f"{NS}:jwql.XQ.msgs", mapping={"old": "O", "recent": "R"})
    # When: one pass runs
    result = Sweeper(broker, 1.0).sweep_once(now)
    # Then: the dead worker's held messages are back on their queues, with a wake-up each
    assert result.requeued == 2 and result.dead_workers == {"dead-1": 2}
    assert redis_client.lrange(f"{NS}:jwql", 0, -1) == [b"a"]
    assert redis_client.lrange(f"{NS}:jwql.DQ", 0, -1) == [b"c"]
    assert not redis_client.exists(f"{NS}:__acks__.dead-1.jwql", f"{NS}:__acks__.dead-1.jwql.DQ")
    assert redis_client.llen(f"{NS}:__wake__.jwql") == 1 and redis_client.llen(f"{NS}:__wake__.jwql.DQ") == 1
    beats = {k.decode() for k in redis_client.zrange(f"{NS}:__heartbeats__", 0, -1)}
    assert beats == {"live-1", broker.broker_id}
    # ... the live worker's and its own are untouched, and week-old dead letters are dropped
    assert redis_client.smembers(f"{NS}:__acks__.live-1.jwql") == {b"d"}
    assert redis_client.smembers(f"{NS}:__acks__.{broker.broker_id}.jwql") == {b"e"}
    assert redis_client.zrange(f"{NS}:jwql.XQ", 0, -1) == [b"recent"]
    assert redis_client.hkeys(f"{NS}:jwql.XQ.msgs") == [b"recent"]
    # A second pass finds nothing.
    assert Sweeper(broker, 1.0).sweep_once(now).requeued == 0


def test_a_worker_the_sweeper_forgot_is_back_in_the_heartbeat_set_before_it_holds_a_message(broker, redis_client):
    from tests import actors_for_tests as t

    # Given: a consumer that has just fetched (and so beaten), then was swept while it was silent
    consumer = broker.consume("jwql")
    t.record_span.send(0)
    first = wait_for(lambda: next(consumer), 5, "the first message")
    redis_client.zrem(f"{NS}:__heartbeats__", broker.broker_id)
    consumer.ack(first)
    # When: it fetches the next message at once (well inside its heartbeat interval)
    t.record_span.send(0)
    second = wait_for(lambda: next(consumer), 5, "the second message")
    # Then: it is in the heartbeat set again, so a sweep after its death would find what it holds
    assert redis_client.zscore(f"{NS}:__heartbeats__", broker.broker_id) is not None
    assert redis_client.smembers(f"{NS}:__acks__.{broker.broker_id}.jwql") == {
        second.options["redis_message_id"].encode()}
    consumer.ack(second)
    consumer.close()


def test_sweep_interval_defaults_to_a_quarter_of_the_heartbeat_timeout(make_config):
    assert sweep_interval_s(load_config(make_config(heartbeat_timeout_s=60))) == 15
    assert sweep_interval_s(load_config(make_config(heartbeat_timeout_s=60, sweep_interval_s=2))) == 2


# -- fenced publishing ----------------------------------------------------------------------------

SHORT = "jw01234001001_01101_00001_nrca1"


@pytest.fixture
def job(make_config, tmp_path):
    """The in-process setting of a pipeline run: the broker, a current message, transfer dirs."""
    broker = setup_broker(load_config(make_config(lock_lease_s=1)))
    transfer = Path(broker.jwql_config.transfer_dir)
    (transfer / "incoming").mkdir(parents=True)
    (transfer / "incoming" / f"{SHORT}_uncal.fits").write_bytes(b"input")
    message = Message(queue_name="jwql", actor_name="run_calwebb_detector1", args=(), kwargs={}, options={})
    token = CurrentMessage._MESSAGE.set(message)
    yield broker, message, transfer / "outgoing"
    CurrentMessage._MESSAGE.reset(token)
    broker.close()


def _product_run(text: str, during=None):
    """A stand-in pipeline: writes ``<short>_rate.fits`` into the staging directory; ``during()`` runs first."""

    def run(input_path, work_dir, staging):
        if during is not None:
            during()
        path = Path(staging) / f"{SHORT}_rate.fits"
        path.write_text(text)
        return {"rate": str(path)}

    return run


def _other_run(broker, message_id: str | None, text: str, outgoing: Path) -> int:
    """What another worker's run does once this run's lease lapsed: take the lock, publish, record."""
    broker.client.delete(f"{NS}:lock:job:{SHORT}")  # this run's lease lapsed
    other = lock(f"job:{SHORT}", client=broker.client, namespace=NS)
    assert other.acquire(blocking=False)
    (outgoing / f"{SHORT}_rate.fits").write_text(text)
    result = {"rate": str(outgoing / f"{SHORT}_rate.fits")}
    broker.client.set(fenced.name_fence_key(NS, SHORT), other.fencing_token)
    if message_id is not None:
        broker.client.set(fenced.published_key(NS, message_id),
                          json.dumps({"fence": other.fencing_token, "host": "other", "result": result}))
    other.release()
    return other.fencing_token


def test_a_run_publishes_once_and_a_redelivery_returns_its_result(job):
    broker, message, outgoing = job
    result = fenced.run_fenced("run_calwebb_detector1", f"{SHORT}_uncal.fits", SHORT, _product_run("first"))
    assert result == {"rate": str(outgoing / f"{SHORT}_rate.fits")}
    assert (outgoing / f"{SHORT}_rate.fits").read_text() == "first"
    assert [p.name for p in outgoing.iterdir()] == [f"{SHORT}_rate.fits"]  # no staging left
    marker = json.loads(broker.client.get(fenced.published_key(NS, message.message_id)))
    assert marker["result"] == result and marker["fence"] >= 1

    def must_not_run(*args):
        raise AssertionError("a redelivered, already published message ran again")

    assert fenced.run_fenced("run_calwebb_detector1", f"{SHORT}_uncal.fits", SHORT, must_not_run) == result
    assert (outgoing / f"{SHORT}_rate.fits").read_text() == "first"


def test_a_run_overtaken_by_a_redelivery_of_its_message_publishes_nothing(job):
    broker, message, outgoing = job
    fences = []
    run = _product_run("late", during=lambda: fences.append(_other_run(broker, message.message_id, "winner", outgoing)))
    result = fenced.run_fenced("run_calwebb_detector1", f"{SHORT}_uncal.fits", SHORT, run)
    assert (outgoing / f"{SHORT}_rate.fits").read_text() == "winner"
    assert result == {"rate": str(outgoing / f"{SHORT}_rate.fits")}
    assert [p.name for p in outgoing.iterdir()] == [f"{SHORT}_rate.fits"]
    assert json.loads(broker.client.get(fenced.published_key(NS, message.message_id)))["fence"] == fences[0]


def test_a_run_whose_lease_lapsed_with_nobody_else_publishes_under_a_new_token(job):
    broker, message, outgoing = job
    run = _product_run("mine", during=lambda: broker.client.delete(f"{NS}:lock:job:{SHORT}"))
    fenced.run_fenced("run_calwebb_detector1", f"{SHORT}_uncal.fits", SHORT, run)
    assert (outgoing / f"{SHORT}_rate.fits").read_text() == "mine"
    assert json.loads(broker.client.get(fenced.published_key(NS, message.message_id)))["fence"] == 2


def test_a_run_overtaken_by_a_newer_job_of_the_same_name_is_superseded(job):
    broker, message, outgoing = job
    run = _product_run("older", during=lambda: _other_run(broker, None, "newer job", outgoing))
    with pytest.raises(fenced.JobSuperseded, match="published by a newer run"):
        fenced.run_fenced("run_calwebb_detector1", f"{SHORT}_uncal.fits", SHORT, run)
    assert (outgoing / f"{SHORT}_rate.fits").read_text() == "newer job"
    assert [p.name for p in outgoing.iterdir()] == [f"{SHORT}_rate.fits"]
    assert broker.client.get(fenced.published_key(NS, message.message_id)) is None


def test_stale_staging_directories_are_removed_only_past_the_time_limit(tmp_path):
    outgoing = tmp_path / "outgoing"
    old = outgoing / f".staging.{SHORT}.{int(time.time()) - 1000}.abc"
    new = outgoing / f".staging.{SHORT}.{int(time.time())}.def"
    old.mkdir(parents=True)
    new.mkdir()
    fenced._remove_stale_staging(outgoing, SHORT, older_than_s=500)
    assert not old.exists() and new.exists()
