"""A purge interrupted at any point loses no message: the next purge finishes it.

The purge takes the waiting ids off the queue into holding lists (``purge_take.lua``) and fails
them chunk by chunk (``purge.lua``, which pops each chunk off its holding list). These tests
interrupt it for real — a purge subprocess killed with SIGKILL after the lists are taken and
after some chunks, a Redis error inside ``purge.lua``, Ctrl-C in the command line — and check
that the next purge fails every message as purged, every waiter gets ``TaskPurged`` and nothing
(payload, holding list, registry entry) is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dramatiq
import pytest
from dramatiq.results import ResultFailure

from jwql_dramatiq.broker import admin, keys
from jwql_dramatiq.broker.scripts import PURGE
from jwql_dramatiq.broker.states import get_task_state
from jwql_dramatiq.cli import RET_OK, main
from tests import actors_for_tests as t
from tests.conftest import REPO, wait_for

NS = "jwql_dramatiq"
QUEUE = "jwql"

# Runs a purge with chunks of argv[2] messages and pauses it before its (argv[3] + 1)-th purge.lua
# chunk, printing "paused", so that the test can kill it with SIGKILL exactly there.
PAUSED_PURGE = r"""
import sys, time
from jwql_dramatiq.broker import admin, setup_broker
from jwql_dramatiq.broker.scripts import PURGE
from jwql_dramatiq.config import load_config

config, chunk, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
admin.PURGE_CHUNK = chunk
broker = setup_broker(load_config(config))
run_script, done = broker.run_script, [0]

def pausing(script, script_keys, script_args):
    if script is PURGE and done[0] == after:
        print("paused", flush=True)
        time.sleep(600)  # killed here
    reply = run_script(script, script_keys, script_args)
    done[0] += script is PURGE
    return reply

broker.run_script = pausing
admin.purge(broker)
print("finished", flush=True)
"""


def state_of(message) -> str | None:
    state = get_task_state(message.message_id)
    return state.state if state else None


def kill_purge_at(config: Path, tmp_path: Path, chunk: int, after_chunks: int) -> None:
    """Run a purge in a subprocess and SIGKILL it just before its chunk ``after_chunks + 1``."""
    out = tmp_path / "paused-purge.out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-c", PAUSED_PURGE, str(config), str(chunk), str(after_chunks)],
                                cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "paused" in out.read_text() or proc.poll() is not None, 30, "the purge to pause")
        assert proc.poll() is None, f"the purge ended before it was killed:\n{out.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def leftovers(redis_client) -> dict[str, int]:
    """What a finished purge must not leave: payloads, holding lists and the registry."""
    found = {key: redis_client.hlen(key) for key in (f"{NS}:{QUEUE}.msgs", f"{NS}:{QUEUE}.DQ.msgs")}
    found[keys.purging_key(NS)] = redis_client.hlen(keys.purging_key(NS))
    for key in redis_client.scan_iter(match=f"{keys.purging_key(NS)}*", count=1000):
        found[key.decode()] = redis_client.llen(key) if redis_client.type(key) == b"list" else -1
    return {key: n for key, n in found.items() if n}


def send_mixed(broker, ready: int, low: int, delayed: int) -> tuple[list, list, list]:
    """Queue ``ready`` messages of priority 0, ``low`` of priority 5 and ``delayed`` delayed ones."""

    def low_priority_task() -> None:
        pass

    low_actor = dramatiq.actor(low_priority_task, broker=broker, priority=5, queue_name=QUEUE,
                               actor_name="purge_interrupt_low_priority")
    return ([t.record_span.send(0.1) for _ in range(ready)], [low_actor.send() for _ in range(low)],
            [t.record_span.send_with_options(args=(0.1,), delay=600_000) for _ in range(delayed)])


class Waiters:
    """Threads blocked on messages' results, as monitors are; records what each got."""

    def __init__(self, messages, redis_client) -> None:
        self.got: dict[str, BaseException | None] = {}
        self.threads = [threading.Thread(target=self._wait, args=(m,), daemon=True) for m in messages]
        for thread in self.threads:
            thread.start()
        wait_for(lambda: sum(c["cmd"] in ("brpoplpush", "blmove") for c in redis_client.client_list())
                 >= len(self.threads), 10, "every waiter to block")

    def _wait(self, message) -> None:
        try:
            message.get_result(block=True, timeout=30_000)
            self.got[message.message_id] = None
        except BaseException as e:  # ResultFailure expected; ResultTimeout is the defect
            self.got[message.message_id] = e

    def join(self) -> dict[str, BaseException | None]:
        for thread in self.threads:
            thread.join(20)
        return self.got


def assert_all_purged(messages, got) -> None:
    assert {state_of(m) for m in messages} == {"purged"}
    for message in messages:
        error = got[message.message_id]
        assert isinstance(error, ResultFailure) and error.orig_exc_type == "TaskPurged", repr(error)


@pytest.mark.timeout(90)
def test_a_purge_killed_after_taking_the_lists_is_finished_by_the_next(broker, make_config, redis_client, tmp_path):
    # Given 5 ready messages, 2 of another priority and a delayed one (no worker), each with a waiter
    config = make_config()
    ready, low, delayed = send_mixed(broker, 5, 2, 1)
    everything = ready + low + delayed
    waiters = Waiters(everything, redis_client)

    # When a purge is killed once it has taken the lists, before its first chunk
    kill_purge_at(config, tmp_path, chunk=2, after_chunks=0)

    # Then nothing is lost: the queue's two lists are empty, but their ids are held and the
    # payloads kept (the delay queue is not taken yet), and status still counts them as ready
    assert redis_client.llen(f"{NS}:{QUEUE}") == 0 and not redis_client.exists(f"{NS}:{QUEUE}.P5")
    assert redis_client.hlen(f"{NS}:{QUEUE}.msgs") == 7 and {state_of(m) for m in ready + low} == {"queued"}
    held = redis_client.hgetall(keys.purging_key(NS))
    assert sorted(held.values()) == [b"jwql", b"jwql"]
    assert sorted(redis_client.llen(h) for h in held) == [2, 5]
    assert redis_client.llen(f"{NS}:{QUEUE}.DQ") == 1
    lengths = next(q for q in admin.queue_lengths(broker) if q.queue == QUEUE)
    assert (lengths.ready, lengths.delayed) == (7, 1)

    # When the next purge runs (the command line, as an operator would)
    code = main(["--config", str(config), "purge", "--yes"])

    # Then every message is failed as purged, every waiter told, and nothing is left behind
    assert code == RET_OK
    assert_all_purged(everything, waiters.join())
    assert leftovers(redis_client) == {}
    assert redis_client.llen(f"{NS}:{QUEUE}") == 0


@pytest.mark.timeout(90)
def test_a_purge_killed_between_chunks_leaves_exactly_the_rest_to_the_next(broker, make_config, redis_client,
                                                                             tmp_path):
    # Given 10 ready messages, 2 of another priority and 2 delayed ones, each with a waiter
    config = make_config()
    ready, low, delayed = send_mixed(broker, 10, 2, 2)
    everything = ready + low + delayed
    waiters = Waiters(everything, redis_client)

    # When a purge in chunks of 3 is killed after its second chunk
    kill_purge_at(config, tmp_path, chunk=3, after_chunks=2)

    # Then the first 6 are purged and their payloads gone; the other 6 taken are still held (the
    # delayed ones not taken yet)
    assert [state_of(m) for m in ready] == ["purged"] * 6 + ["queued"] * 4
    assert redis_client.hlen(f"{NS}:{QUEUE}.msgs") == 6
    assert sorted(redis_client.llen(h) for h in redis_client.hkeys(keys.purging_key(NS))) == [2, 4]
    assert redis_client.llen(f"{NS}:{QUEUE}.DQ") == 2

    # When the next purge runs
    report = admin.purge(broker)

    # Then it fails exactly those 8, once each, and every message ends purged with its waiter told
    assert sorted(item["message_id"] for item in report) == sorted(m.message_id for m in ready[6:] + low + delayed)
    assert sorted(item["was"] for item in report) == ["queued"] * 6 + ["scheduled"] * 2
    assert_all_purged(everything, waiters.join())
    assert leftovers(redis_client) == {}


@pytest.mark.timeout(90)
def test_a_purge_killed_in_the_delay_queue_leaves_the_rest_to_the_next(broker, make_config, redis_client, tmp_path):
    # Given a ready message and 3 delayed ones, each with a waiter
    config = make_config()
    ready, _, delayed = send_mixed(broker, 1, 0, 3)
    waiters = Waiters(ready + delayed, redis_client)

    # When a purge one message at a time is killed after the ready one and the first delayed one
    kill_purge_at(config, tmp_path, chunk=1, after_chunks=2)

    # Then the other two delayed ones are held, with their payloads, as scheduled
    assert [state_of(m) for m in ready + delayed] == ["purged", "purged", "scheduled", "scheduled"]
    assert redis_client.hlen(f"{NS}:{QUEUE}.DQ.msgs") == 2 and redis_client.llen(f"{NS}:{QUEUE}.DQ") == 0
    assert list(redis_client.hgetall(keys.purging_key(NS)).values()) == [b"jwql.DQ"]

    # When the next purge runs, for this queue only
    report = admin.purge(broker, queue=QUEUE)

    # Then it fails those two, reported as delayed, and nothing is left behind
    assert sorted((item["message_id"], item["was"]) for item in report) == sorted(
        (m.message_id, "scheduled") for m in delayed[1:])
    assert_all_purged(ready + delayed, waiters.join())
    assert leftovers(redis_client) == {}


@pytest.mark.timeout(90)
def test_two_purges_finishing_the_same_interrupted_purge_fail_each_message_once(broker, make_config, redis_client,
                                                                               tmp_path, monkeypatch):
    # Given a purge killed after taking 8 messages
    config = make_config()
    ready, _, _ = send_mixed(broker, 8, 0, 0)
    kill_purge_at(config, tmp_path, chunk=2, after_chunks=0)
    monkeypatch.setattr(admin, "PURGE_CHUNK", 2)

    # When a second purge, about to run its first chunk, is overtaken by a third that finishes everything
    inner: list[dict[str, str]] = []
    run_script = broker.run_script

    def overtaken(script, script_keys, script_args):
        if script is PURGE and not inner:
            monkeypatch.setattr(broker, "run_script", run_script)
            inner.extend(admin.purge(broker))
        return run_script(script, script_keys, script_args)

    monkeypatch.setattr(broker, "run_script", overtaken)
    outer = admin.purge(broker)

    # Then each message is failed by exactly one of them, and nothing is left behind
    assert len(inner) == 8 and outer == []
    assert sorted(item["message_id"] for item in inner) == sorted(m.message_id for m in ready)
    assert {state_of(m) for m in ready} == {"purged"}
    assert leftovers(redis_client) == {}


@pytest.mark.timeout(60)
def test_a_redis_error_inside_a_chunk_loses_nothing(broker, make_config, redis_client):
    # Given 5 ready messages (first sends: no state record, no index yet), and the task index made
    # a string so that purge.lua's first chunk fails half-way (WRONGTYPE) after its first message's
    # result is written
    ready, _, _ = send_mixed(broker, 5, 0, 0)
    index = f"{NS}:tasks"
    redis_client.set(index, "not an index")

    # When a purge runs, it fails with that error
    with pytest.raises(Exception, match="WRONGTYPE"):
        admin.purge(broker)
    assert redis_client.llen(f"{NS}:{QUEUE}") == 0 and redis_client.hlen(f"{NS}:{QUEUE}.msgs") == 5

    # When the error is gone and the next purge runs
    redis_client.delete(index)
    report = admin.purge(broker)

    # Then every message is failed as purged, and nothing is left behind
    assert sorted(item["message_id"] for item in report) == sorted(m.message_id for m in ready)
    assert {state_of(m) for m in ready} == {"purged"}
    for message in ready:
        with pytest.raises(ResultFailure, match="purged"):
            message.get_result(block=False)
    assert leftovers(redis_client) == {}


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_purge_command_loses_nothing(broker, make_config, redis_client, capsys, monkeypatch):
    # Given 3 ready messages, and a purge command interrupted by Ctrl-C before its first chunk
    config = make_config()
    ready, _, _ = send_mixed(broker, 3, 0, 0)
    run_script = broker.run_script

    def interrupted(script, script_keys, script_args):
        if script is PURGE:
            raise KeyboardInterrupt
        return run_script(script, script_keys, script_args)

    monkeypatch.setattr(broker, "run_script", interrupted)
    with pytest.raises(KeyboardInterrupt):
        admin.purge(broker)
    monkeypatch.setattr(broker, "run_script", run_script)
    assert redis_client.llen(f"{NS}:{QUEUE}") == 0 and redis_client.hlen(f"{NS}:{QUEUE}.msgs") == 3
    capsys.readouterr()

    # When purge --yes runs again
    code = main(["--config", str(config), "purge", "--yes"])

    # Then it reports and fails all 3
    assert code == RET_OK and "Purged 3 message(s): 3 ready, 0 delayed" in capsys.readouterr().out
    assert {state_of(m) for m in ready} == {"purged"}
    assert leftovers(redis_client) == {}
