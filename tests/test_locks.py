"""Tests of jwql_dramatiq.locks against a real private Redis and real processes.

Processes are forked with multiprocessing's ``fork`` context (children build their own client from the
test's URL) and always reaped; waits poll with a deadline.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.middleware import CurrentMessage
from redis.backoff import NoBackoff
from redis.retry import Retry

import jwql_dramatiq.locks as locks_pkg
from jwql_dramatiq.errors import JwqlDramatiqError, LockError, LockNotAcquired, LockNotOwned
from jwql_dramatiq.locks import (
    REDIS_CLIENT,
    Lock,
    LockingRedis,
    _redis,
    _scripts,
    clear_lock,
    clear_stale_locks,
    get_lock_info,
    holder_fencing_token,
    list_locks,
    lock,
    locks,
    only_one,
)
from tests.conftest import wait_for

NS = "jdtest"
REPO = Path(__file__).resolve().parent.parent
FORK = multiprocessing.get_context("fork")


# -- helpers --------------------------------------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes started by a test; all are killed (if still running) and reaped at teardown."""
    started: list[Any] = []
    yield started
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def start(procs: list[Any], target: Callable[..., None], *args: Any) -> Any:
    proc = FORK.Process(target=target, args=args, daemon=True)
    proc.start()
    procs.append(proc)
    return proc


def join_all(processes: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    stuck = [p.pid for p in processes if p.is_alive()]
    assert not stuck, f"processes still running after {timeout_s} s: {stuck}"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def mk(client: redis.Redis, name: str, **kwargs: Any) -> locks_pkg.RedisLock:
    kwargs.setdefault("lease_s", 5.0)
    return lock(name, client=client, namespace=NS, **kwargs)


# -- child process bodies (forked) ----------------------------------------------------------------------


def child_hold(url: str, name: str, lease_s: float, hold_s: float) -> None:
    client = redis.Redis.from_url(url)
    lk = lock(name, client=client, namespace=NS, lease_s=lease_s)
    assert lk.acquire(blocking_timeout=10)
    client.set(f"held:{name}", f"{os.getpid()}:{lk.fencing_token}")
    time.sleep(hold_s)
    ok = lk.owned() and lk.held
    lk.release()
    os._exit(0 if ok else 3)


def child_wait_then_record(url: str, name: str, lease_s: float) -> None:
    client = redis.Redis.from_url(url)
    lk = lock(name, client=client, namespace=NS, lease_s=lease_s)
    got = lk.acquire(blocking_timeout=15)
    client.set(f"got:{name}", repr(time.monotonic()) if got else "no")
    if got:
        lk.release()
    os._exit(0 if got else 4)


def child_sections(url: str, rounds: int, go: Any) -> None:
    client = redis.Redis.from_url(url)
    client.incr("ready")
    go.wait(30)
    for _ in range(rounds):
        with lock("mutex", client=client, namespace=NS, lease_s=5, blocking_timeout=60):
            if client.incr("inside") != 1:
                client.incr("violations")
            client.incr("sections")
            client.decr("inside")
    os._exit(0)


def child_pairs(url: str, order: list[str], rounds: int, go: Any) -> None:
    client = redis.Redis.from_url(url)
    client.incr("ready")
    go.wait(30)
    for _ in range(rounds):
        with locks(order, client=client, namespace=NS, lease_s=5, blocking_timeout=10):
            if client.incr("inside") != 1:
                client.incr("violations")
            client.incr("rounds")
            client.decr("inside")
    os._exit(0)


# -- basics ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_import_reads_no_config_and_opens_no_connection(tmp_path: Path) -> None:
    # Given a process in which any connection attempt fails loudly and the config file does not exist
    code = """
import socket, sys
def refuse(*a, **k):
    raise AssertionError("connection attempted at import")
socket.socket.connect = refuse
import jwql_dramatiq.locks as L
lk = L.REDIS_CLIENT.lock("x", timeout=5)
@L.only_one(key="k")
def f(): pass
@L.lock("y")
def g(): pass
m = L.locks(["a", "b"])
assert "jwql_dramatiq.broker" not in sys.modules, "the broker (and its config) was loaded"
print("ok")
"""
    env = {**os.environ, "JWQL_DRAMATIQ_CONFIG": str(tmp_path / "missing.json")}
    # When the package is imported and locks are created and used as decorators
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=25)
    # Then nothing was read or connected
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.timeout(20)
def test_owner_record_fencing_token_and_release(redis_client: redis.Redis) -> None:
    lk = mk(redis_client, "rec")
    tokens = []
    for _ in range(3):
        assert lk.acquire()
        info = get_lock_info("rec", redis_client, NS)
        assert info is not None and info.alive
        assert (info.host, info.pid, info.thread) == (os.uname().nodename, os.getpid(), "MainThread")
        assert info.pid_start_ticks == locks_pkg.owner.process_start_ticks(os.getpid())
        assert abs(info.acquired_at - time.time()) < 5 and info.lease_s == 5.0 and 0 < (info.ttl_s or 0) <= 5.0
        assert info.fencing_token == lk.fencing_token
        tokens.append(lk.fencing_token)
        lk.release()
        assert get_lock_info("rec", redis_client, NS) is None
    assert tokens == sorted(set(tokens)) and len(tokens) == 3  # strictly growing
    # The key layout: one prefix, only the namespace's one fence counter survives, no waiter keys are left
    assert sorted(k.decode() for k in redis_client.scan_iter("*")) == [f"{NS}:lock-fence"]


@pytest.mark.timeout(20)
def test_taken_lock_nonblocking_and_bounded_wait(redis_client: redis.Redis) -> None:
    holder = mk(redis_client, "t")
    assert holder.acquire()
    other = mk(redis_client, "t")
    assert other.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert other.acquire(blocking_timeout=0.3) is False
    assert 0.25 <= time.monotonic() - t0 < 2.0
    with pytest.raises(LockNotAcquired) as err:
        with mk(redis_client, "t", blocking=False):
            pass
    assert f"pid {os.getpid()}" in str(err.value) and err.value.lock_name == "t"
    # A waiter that gave up left the queue and its wake-up list
    assert sorted(redis_client.scan_iter(f"{NS}:lock-*")) == [f"{NS}:lock-fence".encode(), f"{NS}:lock-owner:t".encode()]
    holder.release()


@pytest.mark.timeout(20)
def test_release_from_another_thread(redis_client: redis.Redis) -> None:
    lk = mk(redis_client, "xthread")
    assert lk.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lk.release()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=release)
    thread.start()
    thread.join(10)
    assert not errors and not lk.locked()


@pytest.mark.timeout(20)
def test_late_release_raises_lock_not_owned_and_keeps_new_holder(redis_client: redis.Redis) -> None:
    # Given a holder whose maximum hold time runs out
    late = mk(redis_client, "late", timeout=0.3, lease_s=5)
    assert late.acquire()
    wait_for(lambda: not late.locked(), 5, "the lock to expire")
    new = mk(redis_client, "late")
    assert new.acquire(blocking=False)
    # When the first holder releases late
    with pytest.raises(LockNotOwned):
        late.release()
    # Then the new holder's lock is intact
    assert new.owned()
    info = get_lock_info("late", redis_client, NS)
    assert info is not None and info.fencing_token == new.fencing_token
    assert (new.fencing_token or 0) > (late.fencing_token or 0)
    new.release()


@pytest.mark.timeout(20)
def test_max_hold_time_ends_renewal(redis_client: redis.Redis) -> None:
    lk = mk(redis_client, "maxhold", timeout=1.0, lease_s=0.3)
    t0 = time.monotonic()
    assert lk.acquire()
    wait_for(lambda: not lk.locked(), 5, "the lock to reach its maximum hold time")
    assert 0.8 <= time.monotonic() - t0 < 2.0
    with pytest.raises(LockNotOwned):
        lk.release()


@pytest.mark.timeout(20)
def test_unknown_script_code_raises(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scripts.TRY_ACQUIRE, "run", lambda *a, **k: -7)
    with pytest.raises(LockError, match="try_acquire.lua returned unknown code -7"):
        mk(redis_client, "weird").acquire()
    monkeypatch.setattr(_scripts.TRY_ACQUIRE, "run", lambda *a, **k: 0)
    monkeypatch.setattr(_scripts.ACQUIRE, "run", lambda *a, **k: [7, 0])
    with pytest.raises(LockError, match="acquire.lua returned unknown code 7"):
        mk(redis_client, "weird").acquire()
    monkeypatch.undo()
    lk = mk(redis_client, "weird")
    assert lk.acquire()
    monkeypatch.setattr(_scripts.RELEASE, "run", lambda *a, **k: 9)
    with pytest.raises(LockError, match="release.lua returned unknown code 9"):
        lk.release()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("single_connection", [False, True], ids=["pooled", "single-connection"])
def test_scripts_are_reloaded_after_script_flush(redis_url: str, single_connection: bool) -> None:
    client = redis.Redis.from_url(redis_url, single_connection_client=single_connection)
    try:
        for _ in range(2):
            client.script_flush()
            with lock("flushed", client=client, namespace=NS, lease_s=5) as lk:
                assert lk.owned()
    finally:
        client.close()


def test_lua_files_document_keys_argv_and_returns() -> None:
    for path in (REPO / "jwql_dramatiq" / "locks").glob("*.lua"):
        header = path.read_text().split("\n\n")[0]
        assert "KEYS[1]" in header and "ARGV[1]" in header and "Returns" in header, path.name


# -- liveness -------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_crashed_holder_lock_is_free_within_one_lease(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    lease_s = 1.0
    # Given a holder process and a waiter process queued behind it
    holder = start(procs, child_hold, redis_url, "crash", lease_s, 60.0)
    wait_for(lambda: redis_client.get("held:crash"), 10, "the holder to acquire")
    waiter = start(procs, child_wait_then_record, redis_url, "crash", lease_s)
    wait_for(lambda: redis_client.exists(f"{NS}:lock-queue:crash"), 10, "the waiter to queue")
    # When the holder is killed with SIGKILL
    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    # Then the waiter gets the lock within lease + 1 s
    got = wait_for(lambda: redis_client.get("got:crash"), 10, "the waiter to acquire")
    assert got != b"no"
    assert 0 < float(got) - killed_at <= lease_s + 1.0
    join_all([waiter], 10)


@pytest.mark.timeout(40)
def test_live_holder_keeps_lock_through_ten_leases(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    lease_s, hold_s = 0.6, 6.0
    holder = start(procs, child_hold, redis_url, "live", lease_s, hold_s)
    first = wait_for(lambda: get_lock_info("live", redis_client, NS), 10, "the holder to acquire")
    seen_at = time.monotonic()
    contender = mk(redis_client, "live")
    while True:
        info = get_lock_info("live", redis_client, NS)
        if info is None:  # released by the holder at the end of its hold
            break
        assert info.fencing_token == first.fencing_token and info.pid == holder.pid
        if contender.acquire(blocking=False):  # only possible once the holder has released
            contender.release()
            break
        time.sleep(0.05)
    assert time.monotonic() - seen_at >= hold_s - 0.5
    join_all([holder], 10)  # exit code 0: the holder still owned the lock after 10 leases


@pytest.mark.timeout(30)
def test_dead_waiter_loses_its_place(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    holder = mk(redis_client, "dw", lease_s=1.0)
    assert holder.acquire()
    dead = start(procs, child_wait_then_record, redis_url, "dw", 1.0)
    wait_for(lambda: redis_client.zcard(f"{NS}:lock-queue:dw") == 1, 10, "the first waiter to queue")
    second = start(procs, child_wait_then_record, redis_url, "dw", 1.0)
    wait_for(lambda: redis_client.zcard(f"{NS}:lock-queue:dw") == 2, 10, "the second waiter to queue")
    os.kill(dead.pid, signal.SIGKILL)
    dead.join(5)
    released_at = time.monotonic()
    holder.release()  # wakes the dead head waiter; the live one must still get the lock
    got = wait_for(lambda: redis_client.get("got:dw"), 10, "the live waiter to acquire")
    assert float(got) - released_at < 1.0 + _redis.WAITER_GRACE_MS / 1000 + 1.0
    join_all([second], 10)


# -- contention -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_mutual_exclusion_50_processes(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    go = FORK.Event()
    children = [start(procs, child_sections, redis_url, 20, go) for _ in range(50)]
    wait_for(lambda: int(redis_client.get("ready") or 0) == 50, 30, "the children to start")
    go.set()  # all at once, for maximum contention
    deepest_queue, deadline = 0, time.monotonic() + 100
    while any(p.is_alive() for p in children) and time.monotonic() < deadline:
        deepest_queue = max(deepest_queue, redis_client.zcard(f"{NS}:lock-queue:mutex"))
        time.sleep(0.005)
    join_all(children, 10)
    assert deepest_queue >= 10  # the processes really did contend
    assert redis_client.get("sections") == b"1000"
    assert redis_client.get("violations") is None  # every INCR inside the section returned 1


@pytest.mark.timeout(90)
def test_locks_in_opposite_orders_never_deadlock(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    go = FORK.Event()
    children = [start(procs, child_pairs, redis_url, ["A", "B"], 1000, go),
                start(procs, child_pairs, redis_url, ["B", "A"], 1000, go)]
    wait_for(lambda: int(redis_client.get("ready") or 0) == 2, 30, "the children to start")
    go.set()
    join_all(children, 80)
    assert redis_client.get("rounds") == b"2000"
    assert redis_client.get("violations") is None


@pytest.mark.timeout(20)
def test_locks_all_or_nothing(redis_client: redis.Redis) -> None:
    blocker = mk(redis_client, "b2")
    assert blocker.acquire()
    group = locks(["b2", "a2"], client=redis_client, namespace=NS, lease_s=5, blocking_timeout=0.2)
    assert group.names == ["a2", "b2"]
    assert group.acquire() is False
    assert not mk(redis_client, "a2").locked()  # the first lock was given back
    blocker.release()
    with group:
        assert all(lk.owned() for lk in group.locks)
        assert set(group.fencing_tokens) == {"a2", "b2"}
    assert not any(lk.locked() for lk in group.locks)


@pytest.mark.timeout(30)
def test_waiters_are_woken_on_release_in_arrival_order(redis_client: redis.Redis) -> None:
    # The lease is long, so a waiter that got the lock promptly was woken by the release, not by polling
    holder = mk(redis_client, "fifo", lease_s=30)
    assert holder.acquire()
    order: list[tuple[int, float]] = []

    def wait(i: int) -> None:
        lk = mk(redis_client, "fifo", lease_s=30)
        assert lk.acquire(blocking_timeout=20)
        order.append((i, time.monotonic()))
        lk.release()

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        queued = i + 1
        wait_for(lambda: redis_client.zcard(f"{NS}:lock-queue:fifo") == queued, 10, f"waiter {i} to queue")  # noqa: B023
    released_at = time.monotonic()
    holder.release()
    for thread in threads:
        thread.join(20)
    assert [i for i, _ in order] == [0, 1, 2, 3, 4]
    assert order[-1][1] - released_at < 1.0


@pytest.mark.timeout(20)
def test_decorator_serialises_calls_across_threads(redis_client: redis.Redis) -> None:
    inside, overlaps = [0], []

    @mk(redis_client, "deco", blocking_timeout=10)
    def critical(x: int) -> int:
        """Docstring kept."""
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.01)
        inside[0] -= 1
        return x * 2

    threads = [threading.Thread(target=critical, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert overlaps == [1] * 8
    assert critical(4) == 8 and critical.__name__ == "critical" and critical.__doc__ == "Docstring kept."


# -- only_one and REDIS_CLIENT --------------------------------------------------------------------------


@pytest.fixture
def default_redis(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """Point the package defaults (get_redis(), the config's namespace and lease) at the test database."""
    monkeypatch.setattr(_redis, "default_client", lambda: redis_client)
    monkeypatch.setattr(_redis, "default_settings", lambda: (NS, 5.0))
    return redis_client


@pytest.mark.timeout(20)
def test_only_one_skip_returns_none_and_logs_holder(default_redis: redis.Redis,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    @only_one(key="monitor")
    def run() -> str:
        calls.append(1)
        return "ran"

    holder = mk(default_redis, "monitor")
    assert holder.acquire()
    with caplog.at_level(logging.WARNING, logger="jwql_dramatiq.locks"):
        assert run() is None
    assert calls == []
    message = caplog.records[-1].getMessage()
    assert "'monitor'" in message and f"host {os.uname().nodename} pid {os.getpid()} since " in message
    holder.release()
    assert run() == "ran" and calls == [1]


@pytest.mark.timeout(20)
def test_only_one_raise_or_wait(default_redis: redis.Redis) -> None:
    holder = mk(default_redis, "k")
    assert holder.acquire()

    @only_one(key="k", on_taken="raise")
    def strict() -> None: ...

    @only_one(key="k", on_taken=0.2)
    def patient() -> str:
        return "ran"

    with pytest.raises(LockNotAcquired, match=f"pid {os.getpid()}"):
        strict()
    t0 = time.monotonic()
    with pytest.raises(LockNotAcquired):
        patient()
    assert time.monotonic() - t0 >= 0.15
    threading.Timer(0.2, holder.release).start()
    assert only_one(key="k", on_taken=10)(lambda: "waited")() == "waited"
    with pytest.raises(ValueError):
        only_one(key="k", on_taken="sometimes")


@pytest.mark.timeout(20)
def test_only_one_keeps_metadata_and_defaults_key_to_qualname(default_redis: redis.Redis) -> None:
    seen = []

    @only_one
    def job(a: int, b: int = 2) -> int:
        """Job docs."""
        seen.append(list(default_redis.scan_iter(f"{NS}:lock:*")))
        return a + b

    assert job(1) == 3 and job.__name__ == "job" and job.__doc__ == "Job docs." and job.__wrapped__
    assert seen == [[f"{NS}:lock:{__name__}.{job.__qualname__}".encode()]]


@pytest.mark.timeout(20)
def test_jwql_only_one_pattern_runs_unchanged(default_redis: redis.Redis) -> None:
    # The runbook's code, verbatim apart from the import line
    key, value = "key", 60

    @only_one(key='key', timeout=value)
    def function(args):
        return args, get_lock_info(key)

    result, info = function("x")
    assert result == "x" and info is not None and info.timeout_s == 60.0 and info.alive


@pytest.mark.timeout(30)
def test_jwql_redis_client_pattern_runs_unchanged(broker: Any, redis_client: redis.Redis) -> None:
    # Given the production defaults: get_redis() and the namespace come from the broker's (test) config
    lock_name, value, ran = "jw01068001001_02101_00001_nrcb2", 600, []

    # The runbook's code, verbatim apart from the import line
    def some_function(args):
        my_lock = REDIS_CLIENT.lock(lock_name, timeout=value)
        have_lock = my_lock.acquire(blocking=True)
        if have_lock:
            try:
                ran.append(get_lock_info(lock_name))
            finally:
                my_lock.release()

    some_function(None)
    assert ran and ran[0] is not None and ran[0].alive and ran[0].timeout_s == 600.0
    namespace = broker.jwql_config.namespace
    assert redis_client.exists(f"{namespace}:lock-fence")  # it ran on the configured Redis
    assert not redis_client.exists(f"{namespace}:lock:{lock_name}")
    # REDIS_CLIENT is still a redis client for everything else
    REDIS_CLIENT.set("plain", "value")
    assert REDIS_CLIENT.get("plain") == b"value"


@pytest.mark.timeout(20)
def test_locking_redis_with_explicit_client(redis_client: redis.Redis) -> None:
    client = LockingRedis(redis_client, namespace=NS, lease_s=2.0)
    my_lock = client.lock("explicit", timeout=30, blocking_timeout=1)
    assert my_lock.acquire(blocking=True)
    assert client.lock("explicit").acquire(blocking=False) is False
    assert client.exists(f"{NS}:lock:explicit") == 1
    my_lock.release()


# -- operator view ---------------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_list_locks_shows_owner_and_alive(redis_client: redis.Redis) -> None:
    held = [mk(redis_client, name) for name in ("b", "a", "weird*[name]")]
    for lk in held:
        assert lk.acquire()
    redis_client.set(f"{NS}:lock-other", "not a lock")  # same prefix, not a lock key
    redis_client.set(f"{NS}x:lock-owner:y", "not ours")  # another namespace that shares a prefix
    redis_client.config_resetstat()
    infos = list_locks(redis_client, NS)
    assert [i.name for i in infos] == ["a", "b", "weird*[name]"]
    assert all(i.alive and i.pid == os.getpid() and i.host == os.uname().nodename for i in infos)
    # one counter for the namespace: acquired in the order b, a, weird
    assert [i.fencing_token for i in infos] == [2, 1, 3] and all(0 < (i.ttl_s or 0) <= 5 for i in infos)
    assert "cmdstat_keys" not in redis_client.info("commandstats")  # SCAN, never KEYS
    for lk in held:
        lk.release()
    assert list_locks(redis_client, NS) == []


@pytest.mark.timeout(30)
def test_clear_refuses_live_and_clears_stale(redis_url: str, redis_client: redis.Redis, procs: list) -> None:
    # Given a live holder here, and a holder process killed with a long lease still running
    live = mk(redis_client, "live")
    assert live.acquire()
    holder = start(procs, child_hold, redis_url, "stale", 60.0, 60.0)
    wait_for(lambda: redis_client.get("held:stale"), 10, "the holder to acquire")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    # Then list_locks tells them apart
    alive = {i.name: i.alive for i in list_locks(redis_client, NS)}
    assert alive == {"live": True, "stale": False}
    # And clear refuses the live lock, but clears the stale one and says what it removed
    with pytest.raises(LockError, match="live owner"):
        clear_lock("live", client=redis_client, namespace=NS)
    removed = clear_lock("stale", client=redis_client, namespace=NS)
    assert removed is not None and removed.pid == holder.pid and not removed.alive
    assert clear_lock("stale", client=redis_client, namespace=NS) is None
    assert clear_stale_locks(redis_client, NS) == []
    assert live.owned()
    # force clears a live lock; its holder finds out at release
    forced = clear_lock("live", force=True, client=redis_client, namespace=NS)
    assert forced is not None and forced.alive
    with pytest.raises(LockNotOwned):
        live.release()


@pytest.mark.timeout(30)
def test_clear_stale_locks_and_lost_lock_is_reported(redis_url: str, redis_client: redis.Redis, procs: list,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    holder = start(procs, child_hold, redis_url, "gone", 60.0, 60.0)
    wait_for(lambda: redis_client.get("held:gone"), 10, "the holder to acquire")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    kept = mk(redis_client, "kept", lease_s=0.3)
    assert kept.acquire()
    assert [i.name for i in clear_stale_locks(redis_client, NS)] == ["gone"]
    # A holder whose lock is cleared by force learns it at its next renewal
    with caplog.at_level(logging.ERROR, logger="jwql_dramatiq.locks"):
        clear_lock("kept", force=True, client=redis_client, namespace=NS)
        wait_for(lambda: not kept.held, 5, "the renewal thread to notice the loss")
    assert "was lost while held" in caplog.text
    with pytest.raises(LockNotOwned):
        kept.release()


@pytest.mark.timeout(20)
def test_owner_record_names_the_dramatiq_message(redis_client: redis.Redis) -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="jwql", actor_name="run_calwebb_detector1", args=(), kwargs={}, options={}
    )

    def in_task() -> Any:
        CurrentMessage().before_process_message(None, message)
        with mk(redis_client, "task"):
            return get_lock_info("task", redis_client, NS)

    info = contextvars.copy_context().run(in_task)
    assert (info.message_id, info.actor_name) == (message.message_id, "run_calwebb_detector1")
    assert f"actor run_calwebb_detector1, message {message.message_id}" in info.describe()
    with mk(redis_client, "plain"):
        plain = get_lock_info("plain", redis_client, NS)
    assert plain is not None and plain.message_id is None and plain.actor_name is None


@pytest.mark.timeout(20)
def test_errors_share_the_package_root(redis_client: redis.Redis) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(JwqlDramatiqError) as err:
        lock("x", client=dead, namespace=NS, lease_s=1).acquire()
    assert type(err.value).__name__ == "RedisUnavailable" and "127.0.0.1:1" in str(err.value)


# -- no key outlives a lock; redis-py drop-in ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_ten_thousand_names_leave_no_lock_or_fence_key(redis_client: redis.Redis) -> None:
    # Given 10,000 file names, each locked and released (some with a waiter that gave up)
    fences = []
    for i in range(10_000):
        name = f"jw01068001001_02101_{i:05d}_nrcb2_uncal.fits"
        lk = mk(redis_client, name)
        assert lk.acquire(blocking=False)
        if i % 1000 == 0:
            assert mk(redis_client, name).acquire(blocking_timeout=0.01) is False
        fences.append(lk.fencing_token)
        lk.release()
    # Then the fencing tokens grew strictly, and only the namespace's one counter is left
    assert fences == list(range(1, 10_001))
    assert sorted(redis_client.scan_iter("*", count=1000)) == [f"{NS}:lock-fence".encode()]


@pytest.mark.timeout(20)
def test_holder_fencing_token_comes_from_the_owner_record(redis_client: redis.Redis) -> None:
    assert holder_fencing_token("f", redis_client, NS) is None
    first, second = mk(redis_client, "f"), mk(redis_client, "g")
    assert first.acquire() and second.acquire()
    assert holder_fencing_token("f", redis_client, NS) == first.fencing_token
    assert holder_fencing_token("g", redis_client, NS) == second.fencing_token > first.fencing_token
    first.release()
    assert holder_fencing_token("f", redis_client, NS) is None
    second.release()


@pytest.mark.timeout(20)
def test_errors_are_redis_py_lock_errors(redis_client: redis.Redis) -> None:
    lk = mk(redis_client, "e")
    with pytest.raises(redis.exceptions.LockError) as err:
        lk.release()
    assert isinstance(err.value, JwqlDramatiqError) and err.value.lock_name == "e"
    assert lk.acquire()
    redis_client.set(lk.key, "someone else")
    with pytest.raises(redis.exceptions.LockNotOwnedError) as lost:
        lk.release()
    assert isinstance(lost.value, LockNotOwned) and lk.local.token is None
    holder = mk(redis_client, "e2")
    assert holder.acquire()
    with pytest.raises(redis.exceptions.LockError):
        with mk(redis_client, "e2", blocking_timeout=0.05):
            pass
    holder.release()


@pytest.mark.timeout(20)
def test_redis_py_token_extend_reacquire(redis_client: redis.Redis) -> None:
    # A redis-py Lock's own calls, against our lock class: the token is the key's value
    lk = redis_client.lock("foo", timeout=10, lock_class=functools.partial(Lock, namespace=NS, lease_s=30))
    assert lk.acquire(blocking=False, token="test")
    assert redis_client.get("foo") == b"test" == lk.local.token and lk.owned() and lk.locked()
    assert 8000 < redis_client.pttl("foo") <= 10000
    assert lk.extend(10) is True and 18000 < redis_client.pttl("foo") <= 20000
    assert lk.extend(5, replace_ttl=True) is True and 4000 < redis_client.pttl("foo") <= 5000
    assert redis_client.pttl(lk.owner_key) == pytest.approx(redis_client.pttl("foo"), abs=100)
    assert lk.reacquire() is True and 9000 < redis_client.pttl("foo") <= 10000
    redis_client.set("foo", "a")
    for call in (lambda: lk.extend(1), lk.reacquire, lk.release):
        with pytest.raises(redis.exceptions.LockNotOwnedError):
            call()
    assert lk.local.token is None
    with pytest.raises(redis.exceptions.LockError, match="unlocked"):
        lk.extend(1)
    no_timeout = Lock(redis_client, "bar", namespace=NS, lease_s=5)
    assert no_timeout.acquire()
    with pytest.raises(redis.exceptions.LockError, match="no timeout"):
        no_timeout.reacquire()
    no_timeout.release()


@pytest.mark.timeout(20)
def test_extend_beyond_the_lease_is_renewed(redis_client: redis.Redis) -> None:
    lk = mk(redis_client, "ext", timeout=0.5, lease_s=0.3)
    assert lk.acquire()
    assert lk.extend(1.5)  # now held for about 2 s, on a renewed 0.3 s lease
    time.sleep(1.2)
    assert lk.owned()
    wait_for(lambda: not lk.locked(), 5, "the extended maximum hold time to pass")
    with pytest.raises(LockNotOwned):
        lk.release()


@pytest.mark.timeout(20)
def test_thread_local_token_as_redis_py(redis_client: redis.Redis) -> None:
    lk = Lock(redis_client, "tl", namespace=NS, lease_s=5)  # thread_local=True, redis-py's default
    assert lk.acquire()
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.extend([lk.local.token, lk.owned()]))
    thread.start()
    thread.join(10)
    assert seen == [None, False] and lk.owned()
    lk.release()
