"""Bad input: each case reaches one real worker (jwst preloaded) through Redis.

For every case: a clear error reaches the caller at once (naming the bad thing, long before
its timeout), the worker stays alive (a ping afterwards works), and nothing is lost (the message
is dead-lettered with a failure result, never silently dropped; nothing is left queued, held
or unacked). Payloads that are not messages (not JSON, a pickle) have no caller: they are
dead-lettered with one log line. Bad config values end a worker at start with exit code 2 and
a line naming the key.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from dramatiq.message import Message
from dramatiq.results import ResultFailure

from jwql_dramatiq import synthetic
from jwql_dramatiq.actors import calwebb_detector1_save_jump, ping, run_calwebb_detector1
from jwql_dramatiq.broker import setup_broker
from jwql_dramatiq.config import load_config
from jwql_dramatiq.embedded import RedisServer, WorkerProcess
from tests import actors_for_tests as t
from tests.conftest import REPO, base_config, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

NS = "jwql_dramatiq"
SHORT = "jw09999001001_01101_00001_nrca1"
INPUT = f"{SHORT}_uncal.fits"
#: A failure must reach the caller well before this bound (seconds); callers wait up to 60 s.
PROMPT_S = 10.0
MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass
class Env:
    root: Path
    config_path: Path
    client: redis.Redis
    worker: WorkerProcess
    refs: dict[str, str]
    transfer: Path
    summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def incoming(self) -> Path:
        return self.transfer / "incoming"

    @property
    def outgoing(self) -> Path:
        return self.transfer / "outgoing"

    def cal_args(self, **overrides: Any) -> dict[str, Any]:
        return {"step_args": synthetic.offline_step_overrides(self.refs, "cal"), **overrides}


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("bad-input")
    server = RedisServer(root / "redis").start()
    transfer = root / "transfer"
    (transfer / "incoming").mkdir(parents=True)
    (transfer / "outgoing").mkdir()
    refs = synthetic.make_reference_files(root / "refs")
    synthetic.make_uncal(transfer / "incoming" / INPUT)
    from jwql_dramatiq.pipeline import write_stub_server_config

    write_stub_server_config(root / "crds")
    config = base_config(server.url(0), root, transfer_dir=str(transfer), preload=["jwst.pipeline"],
                         crds_path=str(root / "crds"), crds_offline_stub=True, max_message_bytes=MAX_MESSAGE_BYTES)
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    worker = WorkerProcess(config_path, root / "worker.log", cwd=REPO)
    client = redis.Redis.from_url(server.url(0))
    try:
        if not worker.wait_booted(120):
            pytest.fail(f"the worker did not boot:\n{worker.log()}")
        broker = setup_broker(load_config(config_path))
        yield Env(root=root, config_path=config_path, client=client, worker=worker, refs=refs, transfer=transfer)
        broker.close()
    finally:
        worker.stop()
        client.close()
        server.stop()


# -- what a case does ---------------------------------------------------------------------------


def push_raw(env: Env, payload: bytes) -> str:
    """Write a payload straight into the queue's hash and list (as a foreign producer would)."""
    redis_id = str(uuid.uuid4())
    with env.client.pipeline(transaction=True) as pipe:
        pipe.hset(f"{NS}:jwql.msgs", redis_id, payload)
        pipe.rpush(f"{NS}:jwql", redis_id)
        pipe.rpush(f"{NS}:__wake__.jwql", 1)
        pipe.execute()
    return redis_id


def raw_message(actor_name: str = "ping", **fields: Any) -> tuple[Message, bytes]:
    """A message in Dramatiq's JSON layout, with some fields replaced."""
    message = Message(queue_name="jwql", actor_name=actor_name, args=(), kwargs={}, options={})
    data = {**message.asdict(), "args": [], **fields}
    return message, json.dumps(data).encode()


@dataclass(frozen=True)
class Case:
    """One bad input: ``send(env)`` returns the message (a caller waits for it) or a raw redis id."""

    name: str
    send: Callable[[Env], Message | str]
    error_type: str
    words: tuple[str, ...]
    setup: Callable[[Env], Callable[[], None]] | None = None


def _mount(env: Env, options: str, fill_bytes: int = 0) -> Callable[[], None]:
    """Mount a tmpfs over outgoing/ (root only); return the undo."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(env.outgoing)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    if fill_bytes:  # leave (almost) no room
        with open(env.outgoing / "filler", "wb") as f:
            try:
                f.write(b"\0" * fill_bytes)
            except OSError:
                pass

    def undo() -> None:
        if subprocess.run(["umount", str(env.outgoing)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(env.outgoing)], capture_output=True)

    return undo


def _move_incoming(env: Env) -> Callable[[], None]:
    moved = env.incoming.with_name("incoming.moved")
    env.incoming.rename(moved)
    return lambda: moved.rename(env.incoming)


def _input_file(maker: Callable[[Env, Path], Any], name: str) -> Callable[[Env], Callable[[], None]]:
    def setup(env: Env) -> Callable[[], None]:
        path = env.incoming / name
        maker(env, path)
        return lambda: path.unlink(missing_ok=True)

    return setup


def _cal(input_name: str = INPUT, short: str = SHORT, ext: Any = "rate", inst: str = "nircam", **kw: Any):
    return lambda env: run_calwebb_detector1.send_with_options(
        args=(input_name, short, ext, inst), kwargs=env.cal_args(**kw))


def _enqueue_unknown(env: Env) -> Message:
    from jwql_dramatiq.broker import get_broker

    return get_broker().enqueue(Message(queue_name="jwql", actor_name="no_such_actor", args=(1,), kwargs={},
                                        options={}))


def _bad_args_field(env: Env) -> Message:
    message, payload = raw_message("ping", args="not-a-list")
    push_raw(env, payload)
    return message


CASES = [
    Case("unknown actor", _enqueue_unknown, "ActorNotFound", ("no_such_actor",)),
    Case("unexpected keyword argument (JWQL #1356)",
         lambda env: run_calwebb_detector1.send_with_options(args=(INPUT, SHORT, "rate", "nircam"),
                                                             kwargs={"output_dir": "/tmp"}),
         "TypeError", ("unexpected keyword argument", "output_dir")),
    Case("missing arguments", lambda env: run_calwebb_detector1.send(INPUT), "TypeError",
         ("missing 3 required positional arguments", "short_name")),
    Case("too many arguments", lambda env: ping.send(1, 2), "TypeError", ("takes 0 positional arguments",)),
    Case("payload not JSON", lambda env: push_raw(env, b"{this is not json"), "MessageNotDecodable", ("is not JSON",)),
    Case("pickled payload", lambda env: push_raw(env, pickle.dumps(raw_message()[0].asdict())),
         "MessageNotDecodable", ("looks like a pickle", "never unpickled")),
    Case("payload not UTF-8", lambda env: push_raw(env, b"\xff\xfe\x00garbage"), "MessageNotDecodable",
         ("not UTF-8 JSON",)),
    Case("JSON array, not a message", lambda env: push_raw(env, b"[1, 2, 3]"), "MessageNotDecodable",
         ("a JSON list, not an object",)),
    Case("message with args not a list", _bad_args_field, "MessageNotDecodable",
         ("field 'args' must be a JSON array",)),
    Case("oversize arguments", lambda env: t.record_span.send("x" * (MAX_MESSAGE_BYTES + 1000)), "MessageTooLarge",
         ("more than max_message_bytes", str(MAX_MESSAGE_BYTES))),
    Case("missing transfer directory", _cal(), "BadInput", ("incoming/", "does not exist"), setup=_move_incoming),
    Case("read-only outgoing directory", _cal(), "PipelineError", ("outgoing", "Read-only file system"),
         setup=lambda env: _mount(env, "ro,size=1m")),
    Case("full disk (1 MiB tmpfs)", _cal(ext="all"), "PipelineError", ("No space left on device",),
         setup=lambda env: _mount(env, "size=1m", fill_bytes=1024 * 1024)),
    Case("corrupt FITS file", _cal(f"{SHORT}_garbage_uncal.fits"), "BadInput", (f"{SHORT}_garbage_uncal.fits",),
         setup=_input_file(lambda env, p: synthetic.write_garbage_file(p), f"{SHORT}_garbage_uncal.fits")),
    Case("truncated FITS file", _cal(f"{SHORT}_trunc_uncal.fits"), "BadInput", (f"{SHORT}_trunc_uncal.fits",),
         setup=_input_file(lambda env, p: synthetic.write_truncated_fits(env.incoming / INPUT, p),
                           f"{SHORT}_trunc_uncal.fits")),
    Case("FITS file that is not a ramp", _cal(f"{SHORT}_image_uncal.fits"), "BadInput", ("not a ramp",),
         setup=_input_file(lambda env, p: synthetic.write_image_fits(p), f"{SHORT}_image_uncal.fits")),
    Case("missing input file", _cal(f"{SHORT}_nothere_uncal.fits"), "BadInput", (f"{SHORT}_nothere_uncal.fits",)),
    Case("file name with ..", _cal("../config.json"), "BadInput", ("'../config.json'", "would leave")),
    Case("absolute path", _cal("/etc/passwd"), "BadInput", ("'/etc/passwd'", "would leave")),
    Case("symlink pointing out", _cal(f"{SHORT}_link_uncal.fits"), "BadInput", ("points outside",),
         setup=_input_file(lambda env, p: p.symlink_to(env.root / "refs" / sorted(os.listdir(env.root / "refs"))[0]),
                           f"{SHORT}_link_uncal.fits")),
    Case("unknown instrument", _cal(inst="hubble"), "BadInput", ("'hubble'",)),
    Case("instrument not matching the file", _cal(inst="miri"), "BadInput", ("'miri'", "INSTRUME")),
    Case("unknown output extension", _cal(ext="bogus_ext"), "BadInput", ("'bogus_ext'",)),
    Case("unknown step in step_args", _cal(step_args={"warp_drive": {"skip": True}}), "BadInput", ("'warp_drive'",)),
    Case("step_args of the wrong type (list)", _cal(step_args=["jump"]), "BadInput", ("step_args must be a dict",)),
    Case("step parameter of the wrong type", _cal(step_args={"jump": {"rejection_threshold": "high"}}), "BadInput",
         ("rejection_threshold",)),
    Case("short name with a slash", _cal(short="../evil"), "BadInput", ("'../evil'",)),
    Case("save-jump flag not a bool",
         lambda env: calwebb_detector1_save_jump.send(INPUT, "nircam", ramp_fit="yes"), "BadInput",
         ("ramp_fit", "'yes'")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(env: Env, case: Case, record_figures):
    # Given: the worker, and whatever the case prepares
    undo = case.setup(env) if case.setup else None
    log_offset = len(env.worker.log())
    try:
        started = time.monotonic()
        sent = case.send(env)
        if isinstance(sent, Message):
            # Then: the caller gets a failure naming the bad thing, at once
            with pytest.raises(ResultFailure) as info:
                sent.get_result(block=True, timeout=60_000)
            elapsed = time.monotonic() - started
            error = info.value
            text = f"{error.orig_exc_type}: {error.orig_exc_msg}"
            assert error.orig_exc_type == case.error_type, text
            for word in case.words:
                assert word in text, f"{word!r} not in {text!r}"
            assert elapsed < PROMPT_S, f"the failure took {elapsed:.1f} s"
            dead_lettered = _wait_dead_lettered(env, sent.message_id)
        else:
            # Then: a payload without a caller is dead-lettered with one clear log line
            assert wait_for(lambda: env.client.zscore(f"{NS}:jwql.XQ", sent) is not None, PROMPT_S,
                            "the payload to be dead-lettered")
            elapsed = time.monotonic() - started
            line = wait_for(lambda: next((l for l in env.worker.log()[log_offset:].splitlines()
                                          if "Refused" in l and sent in l), None), 5, "the log line")
            assert case.error_type in line and all(word in line for word in case.words), line
            text = "(no caller; worker log) " + line.split("moved it to the dead-letter queue: ", 1)[-1]
            dead_lettered = True
    finally:
        if undo:
            undo()
    # Then: the worker lives, and nothing is left queued, held or unacked
    assert env.worker.proc.poll() is None, env.worker.log()[-3000:]
    assert ping.send().get_result(block=True, timeout=10_000)["pid"] > 0
    wait_for(lambda: _leftovers(env) == {"queued": 0, "payloads": 0, "unacked": 0}, 5, "an empty queue")
    assert dead_lettered
    record_figures(case=case.name, error=text[:500], seconds_to_error=round(elapsed, 3), worker_alive=True,
                   dead_lettered=True, lost=0)


def _wait_dead_lettered(env: Env, message_id: str) -> bool:
    """Whether the message with this id sits in the dead-letter queue (checked by payload)."""

    def find() -> bool:
        for payload in env.client.hvals(f"{NS}:jwql.XQ.msgs"):
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("message_id") == message_id:
                return True
        return False

    return bool(wait_for(find, 5, f"message {message_id} in the dead-letter queue"))


def _leftovers(env: Env) -> dict[str, int]:
    acks = sum(env.client.scard(k) for k in env.client.scan_iter(match=f"{NS}:__acks__.*"))
    return {"queued": env.client.llen(f"{NS}:jwql"), "payloads": env.client.hlen(f"{NS}:jwql.msgs"), "unacked": acks}


@pytest.mark.parametrize(("key", "value", "via_env", "words"), [
    ("sweep_interval_s", -1, False, ("'sweep_interval_s'", "greater than 0")),
    ("max_message_bytes", "big", False, ("'max_message_bytes'", "big")),
    ("heartbeat_timeout_s", "soon", True, ("'heartbeat_timeout_s'", "soon")),
    ("idle_poll_ms", 5, False, ("'idle_poll_ms'", "between 10 and 60000")),
], ids=["sweep_interval_s=-1", "max_message_bytes=big", "env HEARTBEAT_TIMEOUT_S=soon", "idle_poll_ms=5"])
def test_bad_config_value_stops_the_worker_with_one_line(tmp_path, redis_url, key, value, via_env, words,
                                                          record_figures):
    # Given: a config with one bad value, in the file or in the environment
    config = base_config(redis_url, tmp_path)
    env = {}
    if via_env:
        env[f"JWQL_DRAMATIQ_{key.upper()}"] = str(value)
    else:
        config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    # When: a worker starts with it
    started = time.monotonic()
    worker = WorkerProcess(path, tmp_path / "worker.log", cwd=REPO, env=env)
    try:
        code = worker.proc.wait(60)
    finally:
        worker.stop()
    # Then: it exits 2 with one line naming the file and the key
    log = worker.log()
    assert code == 2, log
    assert all(word in log for word in words) and str(path) in log, log
    assert "Traceback" not in log
    record_figures(case=f"bad config {key}={value!r}" + (" (environment)" if via_env else ""),
                   exit_code=code, seconds_to_exit=round(time.monotonic() - started, 2),
                   error=next(line for line in log.splitlines() if key in line)[-200:])
