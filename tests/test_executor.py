"""The fresh-process executor against real workers: recycling, hard limits, dying children,
no double delivery while a child holds the GIL, and a parent that does not grow."""

from __future__ import annotations

import time

import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.actors import ping
from jwql_dramatiq.executor import rss_mib
from tests import actors_for_tests as t
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def failure_of(message, timeout_ms=20_000) -> ResultFailure:
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=timeout_ms)
    return info.value


def test_five_pings_run_in_five_children_of_one_parent(broker, make_config, start_worker):
    start_worker(make_config())
    results = [ping.send().get_result(block=True, timeout=10_000) for _ in range(5)]
    assert len({r["pid"] for r in results}) == 5
    assert len({r["ppid"] for r in results}) == 1


def test_max_tasks_per_child_three_uses_two_children_for_five_tasks(broker, make_config, start_worker):
    start_worker(make_config(max_tasks_per_child=3))
    pids = [ping.send().get_result(block=True, timeout=10_000)["pid"] for _ in range(5)]
    assert len(set(pids)) == 2
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4]


def test_zero_means_in_process(broker, make_config, start_worker):
    worker = start_worker(make_config(max_tasks_per_child=0))
    pids = {ping.send().get_result(block=True, timeout=10_000)["pid"] for _ in range(3)}
    assert len(pids) == 1 and pids != {worker.pid}


def test_time_limit_kills_a_task_sleeping_in_c_and_the_next_task_runs(broker, make_config, start_worker):
    start_worker(make_config(actor_time_limits_s={"sleep_in_c": 1}))
    started = time.monotonic()
    error = failure_of(t.sleep_in_c.send(30))
    elapsed = time.monotonic() - started
    assert error.orig_exc_type == "TimeLimitExceeded"
    assert "time limit of 1 s" in error.orig_exc_msg and "killed after 1.0" in error.orig_exc_msg
    assert elapsed < 1.5 + 0.5  # killed within 1.5 s of starting, plus send and result round trips
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0


@pytest.mark.parametrize("method", ["auto", "poll"])
def test_memory_limit_stops_the_task_and_the_worker_survives(broker, make_config, start_worker, method):
    start_worker(make_config(memory_limit_mib=300, memory_method=method))
    error = failure_of(t.allocate_mib.send(2000))
    assert error.orig_exc_type == "MemoryLimitExceeded"
    assert "past its memory limit of 300 MiB" in error.orig_exc_msg
    assert "announced no maximum_cores" in error.orig_exc_msg  # so it is not run again
    peak = float(error.orig_exc_msg.split("peak ")[1].split(" MiB")[0])
    assert peak >= 0.95 * 300, error.orig_exc_msg
    assert ("by poll-pss" in error.orig_exc_msg) == (method == "poll")
    assert t.allocate_mib.send(64).get_result(block=True, timeout=10_000) == 2


@pytest.mark.parametrize(
    ("how", "code", "words"),
    [("sigkill", 0, "killed by SIGKILL"), ("segfault", 0, "killed by SIGSEGV"), ("os_exit", 7, "exited with code 7")],
)
def test_a_dying_child_gives_a_failure_and_the_worker_survives(broker, make_config, start_worker, how, code, words):
    start_worker(make_config())
    error = failure_of(t.die.send(how, code))
    assert error.orig_exc_type == "ChildDied"
    assert words in error.orig_exc_msg
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0


def test_system_exit_from_library_code_is_a_failure_not_a_dead_worker(broker, make_config, start_worker):
    start_worker(make_config())
    error = failure_of(t.die.send("system_exit", -1))
    assert error.orig_exc_type == "SystemExit" and error.orig_exc_msg == "-1"
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0


def test_nothing_is_lost_failed_message_is_dead_lettered(broker, make_config, start_worker, redis_client):
    start_worker(make_config())
    message = t.die.send("sigkill")
    failure_of(message)
    # The failure is stored before the message is nacked into the dead-letter queue: poll for it.
    wait_for(lambda: [payload for payload in redis_client.hvals(f"{broker.namespace}:{message.queue_name}.XQ.msgs")
                      if message.message_id.encode() in payload], 5, "the failed message to be dead-lettered")


def test_child_log_lines_reach_the_worker_log_with_task_id_and_actor(broker, make_config, start_worker):
    worker = start_worker(make_config())
    message = t.log_lines.send(3)
    assert message.get_result(block=True, timeout=10_000) == 3
    # The worker process hands its log lines to the dramatiq parent, which writes the file: poll for all three.
    wait_for(lambda: len([line for line in worker.log().splitlines() if "task log line" in line]) >= 3, 10,
             "the child's three log lines")
    lines = [line for line in worker.log().splitlines() if "task log line" in line]
    assert len(lines) == 3
    assert all(message.message_id in line and "log_lines" in line for line in lines)


def test_no_double_delivery_while_a_child_holds_the_gil(broker, make_config, start_worker, redis_client):
    """A 6 s GIL-holding C call, a 2 s heartbeat timeout, maintenance on every command, two workers."""
    config = make_config(heartbeat_timeout_s=2, maintenance_chance=1_000_000, idle_poll_ms=100)
    start_worker(config)
    start_worker(config)
    message = t.count_then_sleep_in_c.send("runs", 6)
    assert message.get_result(block=True, timeout=30_000) == 1
    # Had the first worker's heartbeat lapsed, the idle second worker's maintenance would have
    # requeued and run the message again: give such a second run time to start.
    time.sleep(1.5)
    assert int(redis_client.get("runs")) == 1


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_parent_memory_is_flat_over_200_tasks(broker, make_config, start_worker):
    worker = start_worker(make_config())
    (worker_process,) = _children(worker.pid)
    for _ in range(10):
        ping.send().get_result(block=True, timeout=10_000)
    after_10 = rss_mib(worker_process)
    messages = [ping.send() for _ in range(190)]
    for message in messages:
        message.get_result(block=True, timeout=30_000)
    after_200 = rss_mib(worker_process)
    assert abs(after_200 - after_10) <= 0.05 * after_10, (after_10, after_200)


def _voluntary_switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))


#: Seconds an idle fork server is watched; it used to wake 50 times a second to poll for exits.
IDLE_WINDOW_S = 3.0


def test_an_idle_fork_server_sleeps_until_a_child_exits(broker, make_config, start_worker):
    start_worker(make_config())
    server_pid = ping.send().get_result(block=True, timeout=10_000)["ppid"]
    before = _voluntary_switches(server_pid)
    time.sleep(IDLE_WINDOW_S)  # a measurement window, not a wait for a condition
    woken = _voluntary_switches(server_pid) - before
    assert woken <= 3 * IDLE_WINDOW_S, f"the idle fork server woke {woken} times in {IDLE_WINDOW_S} s"
    # ... and an exit is still reported at once: the next child's task runs, and the one after it.
    pids = [ping.send().get_result(block=True, timeout=10_000)["pid"] for _ in range(3)]
    assert len(set(pids)) == 3
