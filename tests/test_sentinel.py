"""Sentinel clients against real processes: a master, one replica and three sentinels on loopback.

The client finds the master through the sentinels; ``status`` shows master, replica and the
sentinels' view; durable writes (send, result, lock acquisition with its fencing increment)
succeed with a replica and fail with :class:`~jwql_dramatiq.sentinel.ReplicaTimeout` without one.
"""

from __future__ import annotations

import json

import pytest

from jwql_dramatiq.cli import main
from jwql_dramatiq.config import load_config
from jwql_dramatiq.connection import make_redis
from jwql_dramatiq.errors import RedisUnavailable
from jwql_dramatiq.sentinel import ReplicaTimeout
from tests.conftest import base_config, wait_for
from tests.faults.sentinels import Cluster

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.close()


def sentinel_config(tmp_path, cluster: Cluster, **overrides):
    raw = base_config("redis://unused", tmp_path, **overrides)
    del raw["redis_url"]
    raw["redis_sentinels"] = cluster.sentinel_addresses
    path = tmp_path / "sentinel-config.json"
    path.write_text(json.dumps(raw))
    return path


def test_status_shows_master_replica_lag_and_each_sentinels_view(tmp_path, cluster, capsys):
    config = sentinel_config(tmp_path, cluster)
    master, replica = cluster.nodes["redis0"], cluster.nodes["redis1"]
    wait_for(lambda: cluster.in_sync(master), 10, "the replica to sync")
    wait_for(lambda: all(v.get("replicas") == 1 and v.get("other_sentinels") == 2 for v in _views(config)), 20,
             "every sentinel to see the replica and the other sentinels", interval_s=0.2)
    code = main(["--config", str(config), "status", "--json"])
    report = json.loads(capsys.readouterr().out)
    rep = report["replication"]
    assert code == 1 and rep["master"] == master.address and rep["role"] == "master" and rep["wait"] == [1, 1000]
    assert [r["address"].split(":")[1] for r in rep["replicas"]] == [str(replica.port)]
    assert rep["replicas"][0]["state"] == "online" and rep["replicas"][0]["lag_bytes"] >= 0
    assert {v["address"] for v in rep["sentinels"]} == set(cluster.sentinel_addresses)
    assert all(v["master"] == master.address and "master" in v["flags"] for v in rep["sentinels"])
    main(["--config", str(config), "status"])
    out = capsys.readouterr().out
    assert f"Master {master.address} (role master), 1 replica(s); durable writes WAIT 1 1000" in out
    assert "SENTINEL" in out and "LAG (BYTES)" in out and all(a in out for a in cluster.sentinel_addresses)


def _views(config):
    from jwql_dramatiq.sentinel import topology

    client = make_redis(load_config(config))
    try:
        return topology(client)["sentinels"]
    finally:
        client.close()


def test_durable_writes_need_a_replica_and_an_unconfirmed_lock_is_given_back(tmp_path, cluster):
    import tests.actors_for_tests  # noqa: F401  (declares record_span)
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.locks import RedisLock

    # A bound a loaded CI machine's replica meets (300 ms once did not); each write without a replica costs it.
    config = load_config(sentinel_config(tmp_path, cluster, redis_wait_ms=1500))
    broker = build_broker(config)
    try:
        wait_for(lambda: cluster.in_sync(cluster.nodes["redis0"]), 10, "the replica to sync")
        # With the replica: a send, a lock and its fencing token all reach it
        message = broker.get_actor("record_span").message(0.0)
        broker.enqueue(message)
        lock = RedisLock("sentinel-test", client=broker.client, namespace=config.namespace, lease_s=5)
        assert lock.acquire(blocking=False)
        replica = cluster.nodes["redis1"].client()
        fence = int(replica.get(f"{config.namespace}:lock-fence"))
        assert fence == lock.fencing_token and replica.exists(f"{config.namespace}:lock:sentinel-test")
        assert replica.llen(f"{config.namespace}:jwql") == 1
        lock.release()
        # Without it: each durable write raises, and the lock is not left held
        cluster.nodes["redis1"].kill()
        with pytest.raises(ReplicaTimeout, match="0 of 1 replica"):
            broker.enqueue(broker.get_actor("record_span").message(0.0))
        with pytest.raises(ReplicaTimeout, match="lock acquisition"):
            RedisLock("sentinel-test", client=broker.client, namespace=config.namespace, lease_s=5).acquire(blocking=False)
        assert not broker.client.exists(f"{config.namespace}:lock:sentinel-test")
        broker.results_backend.durable_store_bound_s = 1.0
        with pytest.raises(RedisUnavailable, match="storing the result .*0 of 1 replica"):
            broker.results_backend.store_result(message, "a result", 60_000)  # rides through, then gives up
    finally:
        broker.close()


def test_a_publish_claim_no_replica_confirms_renames_nothing(tmp_path, cluster):
    # Given a pipeline run holding its job lock, whose replica dies while it runs
    from pathlib import Path

    from dramatiq.message import Message
    from dramatiq.middleware import CurrentMessage

    from jwql_dramatiq.actors import fenced
    from jwql_dramatiq.broker import setup_broker

    short = "jw01234001001_01101_00001_nrca1"
    broker = setup_broker(load_config(sentinel_config(tmp_path, cluster, redis_wait_ms=1500, time_limit_s=6)))
    transfer = Path(broker.jwql_config.transfer_dir)
    (transfer / "incoming").mkdir(parents=True)
    (transfer / "incoming" / f"{short}_uncal.fits").write_bytes(b"input")
    wait_for(lambda: cluster.in_sync(cluster.nodes["redis0"]), 10, "the replica to sync")
    message = Message(queue_name="jwql", actor_name="run_calwebb_detector1", args=(), kwargs={}, options={})
    current = CurrentMessage()
    current.before_process_message(broker, message)

    def run(input_path, work_dir, staging):
        cluster.nodes["redis1"].kill()
        product = Path(staging) / f"{short}_rate.fits"
        product.write_text("unconfirmed")
        return {"rate": str(product)}

    try:
        # When it publishes: no replica confirms its claim
        with pytest.raises(RedisUnavailable, match="publish claim"):
            fenced.run_fenced("run_calwebb_detector1", f"{short}_uncal.fits", short, run)
    finally:
        current.after_process_message(broker, message)
        broker.close()
    # Then nothing reached outgoing/, and its staging directory is gone
    assert list((transfer / "outgoing").iterdir()) == []


#: Data nodes that refuse writes (``NOREPLICAS``) while no replica is connected, as docs/sentinel.md deploys them.
MIN_REPLICAS = ["min-replicas-to-write 1", "min-replicas-max-lag 10"]


@pytest.fixture
def strict_cluster(tmp_path):
    cluster = Cluster(tmp_path / "cluster", data_conf=MIN_REPLICAS)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def _refusals(node) -> int:
    """How many commands ``node`` refused with NOREPLICAS so far."""
    stats = node.client().info("errorstats")
    return int(stats.get("errorstat_NOREPLICAS", {}).get("count", 0))


def test_noreplicas_is_an_outage_for_sends_and_locks(tmp_path, strict_cluster):
    import threading
    import time

    import tests.actors_for_tests  # noqa: F401  (declares record_span)
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.locks import RedisLock
    from jwql_dramatiq.outage import ride_through
    from jwql_dramatiq.sentinel import ReplicasRefused

    cluster = strict_cluster
    master, replica = cluster.nodes["redis0"], cluster.nodes["redis1"]
    config = load_config(sentinel_config(tmp_path, cluster, redis_wait_ms=1500))
    broker = build_broker(config)
    try:
        wait_for(lambda: cluster.in_sync(master), 10, "the replica to sync")
        held = RedisLock("noreplicas-held", client=broker.client, namespace=config.namespace, lease_s=30)
        assert held.acquire(blocking=False)
        done, unsent = broker.get_actor("record_span").message(0.0), broker.get_actor("record_span").message(0.0)
        broker.results_backend.store_result(done, "done", 60_000)
        # Given the master refusing writes: its only replica is gone
        replica.kill()
        wait_for(lambda: not _try_write(master), 10, "the master to refuse writes")
        # Then a send and a lock acquisition are a ReplicaTimeout (an outage), not a plain Redis error
        with pytest.raises(ReplicasRefused, match="NOREPLICAS") as refused:
            broker.enqueue(broker.get_actor("record_span").message(0.0))
        assert isinstance(refused.value, ReplicaTimeout)
        with pytest.raises(ReplicaTimeout, match="lock acquisition.*NOREPLICAS"):
            RedisLock("noreplicas", client=broker.client, namespace=config.namespace, lease_s=5).acquire(blocking=False)
        # ... a release too (the lease lapses on its own)
        with pytest.raises(RedisUnavailable, match="NOREPLICAS"):
            held.release()
        # ... while a caller's blocking wait for a result (BRPOPLPUSH, a write) reads instead, within its bound
        from dramatiq.results import ResultTimeout

        assert broker.results_backend.get_result(done, block=True, timeout=5_000) == "done"
        with pytest.raises(ResultTimeout):
            broker.results_backend.get_result(unsent, block=True, timeout=1_000)
        # ... and a monitor's send rides it through within its bound, once the replica is back
        restart = threading.Thread(target=lambda: (time.sleep(1.0), cluster.restart_as_replica(replica, master)))
        restart.start()
        try:
            message = ride_through(lambda: broker.enqueue(broker.get_actor("record_span").message(0.0)),
                                   time.monotonic() + 30, config.redis_address, "sending record_span")
        finally:
            restart.join(30)
        assert replica.client().hexists(f"{config.namespace}:jwql.msgs", message.options["redis_message_id"])
    finally:
        broker.close()


def _try_write(node) -> bool:
    import redis

    try:
        node.client().set("jwql_dramatiq:probe", "1")
        return True
    except redis.ResponseError:
        return False


def test_noreplicas_strands_no_result(tmp_path, strict_cluster, start_worker):
    # Given a worker running a task on a master whose replica then goes away (min-replicas-to-write 1)
    import tests.actors_for_tests  # noqa: F401
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.broker.states import get_task_state

    cluster = strict_cluster
    master, replica = cluster.nodes["redis0"], cluster.nodes["redis1"]
    config_path = sentinel_config(tmp_path, cluster, redis_wait_ms=1500)
    config = load_config(config_path)
    wait_for(lambda: cluster.in_sync(master), 10, "the replica to sync")
    worker = start_worker(config_path)
    broker = build_broker(config)
    try:
        message = broker.enqueue(broker.get_actor("record_span").message(1.5))
        wait_for(lambda: (s := get_task_state(message.message_id, broker.client, broker.namespace)) is not None
                 and s.state == "running", 20, "the task to start", interval_s=0.05)
        refused_before = _refusals(master)
        replica.kill()
        # When the task ends, the master refuses its result (and the worker's other writes) for a while
        wait_for(lambda: _refusals(master) > refused_before + 2, 20, "the master to refuse the worker's writes",
                 interval_s=0.1)
        refused_during = _refusals(master) - refused_before
        cluster.restart_as_replica(replica, master)
        # Then the result arrives once the replica is back, and nothing is left in an ack set
        result = broker.results_backend.get_result(message, block=True, timeout=30_000)
        assert result["end"] - result["start"] >= 1.5
        acks = f"{config.namespace}:__acks__.*"
        wait_for(lambda: not any(broker.client.scard(k) for k in broker.client.scan_iter(match=acks))
                 and not broker.client.hlen(f"{config.namespace}:jwql.msgs"), 20, "the message to be acked",
                 interval_s=0.1)
        assert refused_during > 0 and "Unhandled error" not in worker.log(), worker.log()[-3000:]
    finally:
        broker.close()


def test_redis_sentinels_from_the_environment(tmp_path):
    from jwql_dramatiq.errors import ConfigError

    # Given a config file naming one server, and one naming sentinels
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({k: v for k, v in base_config("redis://unused", tmp_path).items() if k != "redis_url"}
                                | {"redis_host": "localhost"}))
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps({k: v for k, v in base_config("redis://unused", tmp_path).items() if k != "redis_url"}
                                 | {"redis_sentinels": ["file:26379"]}))
    env = {"JWQL_DRAMATIQ_REDIS_SENTINELS": "a.example:26379, b.example:26380,[::1]:26381,"}
    # Then JWQL_DRAMATIQ_REDIS_SENTINELS (comma-separated host:port) sets the list, or replaces the file's
    for path in (plain, listed):
        config = load_config(path, environ=env)
        assert config.redis_sentinels == ("a.example:26379", "b.example:26380", "[::1]:26381")
        assert config.wait_replicas == 1 and config.redis_address.startswith("sentinels a.example:26379,")
    # ... an empty value means none; a bad entry is named; beside a redis_url both keys are named
    none = {"JWQL_DRAMATIQ_REDIS_SENTINELS": "", "JWQL_DRAMATIQ_REDIS_HOST": "h", "JWQL_DRAMATIQ_REDIS_PORT": "6379"}
    assert load_config(listed, environ=none).redis_sentinels == ()
    with pytest.raises(ConfigError, match="redis_sentinels.*'a.example' is not host:port"):
        load_config(plain, environ={"JWQL_DRAMATIQ_REDIS_SENTINELS": "a.example"})
    with pytest.raises(ConfigError, match="redis_sentinels.*redis_url"):
        load_config(plain, environ={**env, "JWQL_DRAMATIQ_REDIS_URL": "redis://h:6379/0"})


#: redis-py 8.2 turns UNBLOCKED on a Sentinel-managed master connection into this ConnectionError itself.
REDIS_PY_DEMOTED_MASTER = "The previous master is now a slave"


def _redis_py_converts_unblocked() -> bool:
    import redis.sentinel

    return hasattr(redis.sentinel, "DEMOTED_MASTER_UNBLOCKED_ERROR")


def _demoted_outage(error: object, before_8_2: type) -> bool:
    """Whether ``error`` is the outage a caller blocked on a demoted master must get: with redis-py < 8.2,
    a ``before_8_2`` naming UNBLOCKED (our conversion); with 8.2 on, a RedisUnavailable naming
    redis-py's conversion."""
    if _redis_py_converts_unblocked():
        return type(error) is RedisUnavailable and REDIS_PY_DEMOTED_MASTER in str(error)
    return isinstance(error, before_8_2) and "UNBLOCKED" in str(error)


def test_a_master_demoted_while_a_durable_write_waits_is_an_outage(tmp_path, cluster):
    # Given a master whose replica is gone, so each WAIT blocks for its whole bound (as on a cut-off master)
    import threading
    import time

    import tests.actors_for_tests  # noqa: F401
    from jwql_dramatiq.broker import build_broker
    from jwql_dramatiq.embedded import free_port
    from jwql_dramatiq.locks import RedisLock

    master, replica = cluster.nodes["redis0"], cluster.nodes["redis1"]
    config = load_config(sentinel_config(tmp_path, cluster, redis_wait_ms=4000))
    broker = build_broker(config)
    outcome: dict = {}

    def acquire() -> None:
        try:
            outcome["acquired"] = RedisLock("demoted", client=broker.client, namespace=config.namespace,
                                            lease_s=30).acquire(blocking=False)
        except Exception as e:  # noqa: BLE001 - what the caller gets is the point
            outcome["error"] = e

    def store() -> None:
        try:
            broker.results_backend.store_result(message, "stored", 60_000)
            outcome["stored_at"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            outcome["store_error"] = e

    def wait_result() -> None:
        try:
            broker.results_backend.get_result(unsent, block=True, timeout=20_000)
        except Exception as e:  # noqa: BLE001
            outcome["wait_error"] = e

    message, unsent = broker.get_actor("record_span").message(0.0), broker.get_actor("record_span").message(0.0)
    threads = [threading.Thread(target=acquire), threading.Thread(target=store), threading.Thread(target=wait_result)]
    try:
        wait_for(lambda: cluster.in_sync(master), 10, "the replica to sync")
        # (the scripts loaded first, so each write's first WAIT is the one that waits)
        warm = RedisLock("warm", client=broker.client, namespace=config.namespace, lease_s=30)
        assert warm.acquire(blocking=False)
        warm.release()
        broker.results_backend.store_result(broker.get_actor("record_span").message(0.0), "warm", 60_000)
        replica.kill()
        broker.results_backend.durable_store_bound_s = 30.0
        for thread in threads:
            thread.start()
        wait_for(lambda: [c.get("cmd") for c in master.client().client_list()].count("wait") >= 2
                 and "brpoplpush" in [c.get("cmd") for c in master.client().client_list()], 10,
                 "both writes to block in WAIT, and a caller in its wait for a result")
        # When the master is made a replica while they wait (what a failover does to the old master)
        master.client().execute_command("REPLICAOF", "127.0.0.1", free_port())
        threads[0].join(10)
        # Then the lock acquisition is an outage (RedisUnavailable), not a plain Redis error ("UNBLOCKED"):
        # a ReplicaTimeout naming UNBLOCKED where redis-py passes the error through (< 8.2), or the
        # ConnectionError redis-py >= 8.2 makes of it on a Sentinel-managed master connection.
        assert _demoted_outage(outcome.get("error"), ReplicaTimeout), outcome
        assert "acquired" not in outcome
        # ... as is a caller's wait for a result, cut short the same way (not a ResponseError)
        threads[2].join(10)
        assert type(outcome.get("wait_error")) is RedisUnavailable, outcome
        assert _demoted_outage(outcome["wait_error"], RedisUnavailable), outcome
        # ... and the result store rides it through, until a master with a replica takes it
        time.sleep(0.5)  # a pause in the outage that the store rides through (no condition to poll: it retries)
        assert "store_error" not in outcome and "stored_at" not in outcome, outcome
        master.client().execute_command("REPLICAOF", "NO", "ONE")
        cluster.restart_as_replica(replica, master)
        threads[1].join(30)
        assert "stored_at" in outcome, outcome
        assert broker.results_backend.get_result(message) == "stored"
    finally:
        for thread in threads:
            thread.join(30)
        broker.close()
