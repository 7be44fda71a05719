"""Drop-in for ``jwql.shared_tasks.shared_tasks``: port a monitor by changing one import.

    from jwql_dramatiq.shared_tasks import only_one, run_pipeline, run_parallel_pipeline

Same names, signatures and return shapes as the original, with its known bugs fixed: every wait
has a bound (``timeout``, default the config's ``wait_timeout_s``), ``step_args`` keep their JSON
types, results are collected as they finish, per-file locks are always released, a failure
leaves nothing in the transfer directory, and an interrupt (Ctrl-C) revokes what was sent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dramatiq.message import Message

from .actors.pipeline import calwebb_detector1_save_jump, run_calwebb_detector1
from .config import check_transfer_dir
from .errors import BadInput, JwqlDramatiqError, LockNotAcquired, TaskTimeout
from .locks import REDIS_CLIENT, only_one
from .outage import ride_through
from .redis_errors import is_outage
from .transfer import copy_atomically, ensure_dirs, incoming_dir, outgoing_dir, remove_transfer_files
from .waiting import iter_results

__all__ = ["REDIS_CLIENT", "PipelineOutputs", "only_one", "prep_file", "retrieve_files", "run_parallel_pipeline",
           "run_pipeline", "start_pipeline"]

logger = logging.getLogger(__name__)


def _config():
    from .broker import get_config

    return get_config()


def _bound_s(timeout: float | None) -> float:
    return float(_config().wait_timeout_s if timeout is None else timeout)


def short_name_for(input_file: str, in_ext: str) -> str:
    """JWQL's short name: the base name without ``_<in_ext>`` and ``.fits``.

    Raises
    ------
    BadInput
        ``in_ext`` is not a non-empty string.
    """
    if not isinstance(in_ext, str) or not in_ext:
        raise BadInput(f"in_ext {in_ext!r} is not a file-name suffix such as 'uncal'")
    return os.path.basename(input_file).replace(f"_{in_ext}", "").replace(".fits", "")


def prep_file(input_file: str, in_ext: str, timeout: float | None = None):
    """Lock the file's short name and copy the file into ``<transfer_dir>/incoming``.

    Parameters
    ----------
    input_file : str
        Path of the file on the monitor host.
    in_ext : str
        Its suffix, e.g. ``"uncal"``.
    timeout : float, optional
        Seconds to wait for the file's lock, and for Redis through an outage (default the
        config's ``wait_timeout_s``).

    Returns
    -------
    (short_name, lock, path in incoming/)

    Raises
    ------
    FileNotFoundError
        The input is not a file.
    ConfigError
        ``transfer_dir`` exists but is not a directory.
    LockNotAcquired
        Another process held the file's lock for the whole wait.
    RedisUnavailable
        Redis did not answer within the bound.
    """
    bound_s = _bound_s(timeout)
    deadline = time.monotonic() + bound_s
    config = _config()
    check_transfer_dir(config)
    ensure_dirs(config.transfer_dir)
    if not os.path.isfile(input_file):
        raise FileNotFoundError(f"input file {input_file} does not exist or is not a file")
    short_name = short_name_for(input_file, in_ext)
    cal_lock = REDIS_CLIENT.lock(short_name)
    acquired = ride_through(lambda: cal_lock.acquire(blocking=True, blocking_timeout=_left_s(deadline)),
                            deadline, config.redis_address, f"locking {short_name}")
    if not acquired:
        raise LockNotAcquired(short_name, f"the lock for {short_name} stayed taken for {bound_s:g} s")
    try:
        send_path = copy_atomically(input_file, incoming_dir(config.transfer_dir) / os.path.basename(input_file))
    except BaseException:
        _release(cal_lock, short_name)
        raise
    return short_name, cal_lock, str(send_path)


def _left_s(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _release(cal_lock, short_name: str) -> bool:
    """Release a file's lock; if Redis is gone, its renewal has stopped and it lapses within one lease.

    Returns False when Redis did not answer.
    """
    try:
        cal_lock.release()
    except JwqlDramatiqError as e:
        logger.warning("Could not release the lock for %s: %s", short_name, e)
        return not is_outage(e)
    return True


def _exts(ext_or_exts, short_name: str) -> list[str]:
    """The products asked for ``short_name``, as a list (a dict is keyed by short name, as in the original)."""
    asked = ext_or_exts
    if isinstance(asked, Mapping):
        try:
            asked = asked[short_name]
        except KeyError:
            raise BadInput(f"ext_or_exts is a dict with no entry for {short_name!r}") from None
    try:
        exts = [asked] if isinstance(asked, str) else list(asked)  # any iterable, as the original took
    except TypeError:
        exts = []
    if not exts or not all(isinstance(e, str) and e for e in exts):
        raise BadInput(f"ext_or_exts for {short_name!r} is {asked!r}: give a product name such as 'rate', "
                       f"a list of them, or 'all'")
    return exts


def _check_sendable(step_args: dict | None) -> None:
    """Refuse ``step_args`` that cannot travel as JSON, naming the step and parameter (before any copy)."""
    if step_args is None:
        return
    if not isinstance(step_args, Mapping):
        raise BadInput(f"step_args is {type(step_args).__name__}, not a dict of {{step: {{parameter: value}}}}")
    for step, params in step_args.items():
        for name, value in (params.items() if isinstance(params, Mapping) else [(None, params)]):
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                where = f"step_args[{step!r}]" + ("" if name is None else f"[{name!r}]")
                raise BadInput(f"{where} = {value!r} ({type(value).__name__}) cannot be sent as JSON: give a "
                               f"plain int, float, str, bool, list or dict") from None


def _check_jump_name(input_file: str, short_name: str) -> None:
    """The save-jump task names its products after the exposure's first four fields: refuse a file whose
    short name differs, since its products could not be found (and could collide with another file's)."""
    from .pipeline.files import short_name_from_path

    products_as = short_name_from_path(os.path.basename(input_file))
    if products_as != short_name:
        raise BadInput(f"{os.path.basename(input_file)}: with jump_pipe=True its products are named after "
                       f"{products_as!r} (the name's first four '_' fields), not its short name {short_name!r}; "
                       f"rename the file to <exposure>_<in_ext>.fits")


def start_pipeline(input_file: str, short_name: str, ext_or_exts, instrument: str, jump_pipe: bool = False,
                   step_args: dict | None = None, timeout: float | None = None) -> Message:
    """Send the file to a worker; return the message (``.get_result(block=True, timeout=ms)`` waits).

    ``input_file`` is the file's name in ``incoming/`` (a path is reduced to its base name).
    Through a Redis outage the send is retried for up to ``timeout`` seconds (default the
    config's ``wait_timeout_s``), then :class:`~jwql_dramatiq.errors.RedisUnavailable` is raised.
    """
    name = os.path.basename(input_file)
    exts = _exts(ext_or_exts, short_name)
    _check_sendable(step_args)
    if jump_pipe:
        everything = "all" in exts  # the original looked for "<short>_all.fits"; give every product
        ramp_fit = everything or any("ramp" in e for e in exts)
        save_fitopt = everything or any("fitopt" in e for e in exts)

        def send() -> Message:
            return calwebb_detector1_save_jump.send(name, instrument, ramp_fit=ramp_fit, save_fitopt=save_fitopt,
                                                    step_args=step_args or {})
    else:
        def send() -> Message:
            return run_calwebb_detector1.send(name, short_name, ext_or_exts if isinstance(ext_or_exts, str) else exts,
                                              instrument, step_args=step_args or {})
    deadline = time.monotonic() + _bound_s(timeout)
    return ride_through(send, deadline, _config().redis_address, f"sending {name}")


def retrieve_files(short_name: str, ext_or_exts, dest_dir: str):
    """Copy ``outgoing/<short_name>_<ext>.fits`` to ``dest_dir`` and clear the transfer files.

    Returns
    -------
    str or list of str
        One path for one extension, else a list in the order asked for.
    """
    return _retrieve_to(short_name, _exts(ext_or_exts, short_name), [dest_dir])[dest_dir]


def _retrieve_to(short_name: str, exts: list[str], dest_dirs: list[str]) -> dict[str, Any]:
    """Copy the products into each of ``dest_dirs``, then clear the transfer files (whatever happens)."""
    transfer_dir = _config().transfer_dir
    copied: dict[str, Any] = {}
    try:
        for dest_dir in dest_dirs:
            paths = []
            for ext in exts:
                name = f"{short_name}_{ext}.fits"
                paths.append(str(copy_atomically(outgoing_dir(transfer_dir) / name, Path(dest_dir) / name)))
            copied[dest_dir] = paths[0] if len(paths) == 1 else paths
    finally:
        remove_transfer_files(transfer_dir, short_name)
    return copied


class PipelineOutputs(dict):
    """The dict of successes ``{input_file: product path(s)}``, plus ``.failures``:
    ``{input_file: reason}`` for each file that did not come back."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, str] = {}


def run_pipeline(input_file: str, in_ext: str, ext_or_exts, instrument: str, jump_pipe: bool = False,
                 step_args: dict | None = None, timeout: float | None = None):
    """Calibrate one file and wait for it (bounded); return its product path(s) beside the input.

    Raises
    ------
    TaskResultFailure
        The task failed (its type, message and worker traceback are on the exception).
    TaskTimeout
        No result within ``timeout`` seconds (default the config's ``wait_timeout_s``).
    OSError
        The products could not be copied back beside the input.
    BadInput, FileNotFoundError, LockNotAcquired
        As :func:`run_parallel_pipeline`.
    RedisUnavailable
        Redis did not answer when the bound ran out.
    """
    outputs = run_parallel_pipeline([input_file], in_ext, ext_or_exts, instrument, jump_pipe=jump_pipe,
                                    step_args=step_args, timeout=timeout, _raise=True)
    return outputs[input_file]


@dataclass
class _Job:
    """One short name's lock and the input files (one, or repeats of the same name) waiting on it."""

    lock: Any
    input_files: list[str] = field(default_factory=list)

    def dest_dirs(self) -> list[str]:
        """Each input's own directory, once."""
        return list(dict.fromkeys(os.path.dirname(os.path.abspath(f)) for f in self.input_files))


def run_parallel_pipeline(input_files, in_ext: str, ext_or_exts, instrument: str, jump_pipe: bool = False,
                          step_args: dict | None = None, timeout: float | None = None, _raise: bool = False):
    """Calibrate several files on the workers and collect the products as they finish.

    A name listed more than once is calibrated once, and every entry gets its products. A
    Redis outage is waited out within the bound.

    Parameters
    ----------
    input_files : list of str
    in_ext : str
    ext_or_exts : str, list, or dict keyed by short name
    instrument : str
    jump_pipe : bool
        Use the save-jump path (``jump``, ``0_ramp_fit``, ``1_ramp_fit``, ``fitopt``).
    step_args : dict, optional
    timeout : float, optional
        One bound, in seconds, for the whole batch (default the config's ``wait_timeout_s``).

    Returns
    -------
    PipelineOutputs
        ``{input_file: path or list of paths}`` for the files that succeeded, with
        ``.failures`` giving each failed file's reason (also logged): its task failed, its
        products could not be copied back, or its result was not in when the bound ran out (it
        is then revoked). As in the original, one file's failure does not stop the others.

    Raises
    ------
    BadInput
        ``in_ext``, ``ext_or_exts`` or ``step_args`` is unusable, or (``jump_pipe``) a file's
        name does not start with its exposure's four fields; raised before anything is locked,
        copied or sent.
    FileNotFoundError, LockNotAcquired
        As :func:`prep_file`; what was already sent is revoked.
    RedisUnavailable
        Redis did not answer when the bound ran out; nothing sent keeps a lock or a transfer file.
    """
    bound_s = _bound_s(timeout)
    deadline = time.monotonic() + bound_s
    transfer_dir = _config().transfer_dir
    for input_file in input_files:  # bad input is refused before anything is locked, copied or sent
        short_name = short_name_for(input_file, in_ext)
        _exts(ext_or_exts, short_name)
        if jump_pipe:
            _check_jump_name(input_file, short_name)
    _check_sendable(step_args)
    outputs = PipelineOutputs()
    jobs: dict[str, _Job] = {}  # short_name -> its lock and inputs
    sent: dict[str, str] = {}  # message_id -> short_name, until its outcome is handled
    settled: set[str] = set()  # short names whose transfer files are already cleared
    redis_silent = False  # clean-up then skips Redis calls that would each wait a socket timeout
    messages: list[Message] = []
    try:
        for input_file in input_files:
            short_name = short_name_for(input_file, in_ext)
            if short_name in jobs:  # a repeat: its own lock is ours already; wait for the one job
                jobs[short_name].input_files.append(input_file)
                continue
            short_name, cal_lock, _ = prep_file(input_file, in_ext, timeout=_left_s(deadline))
            jobs[short_name] = _Job(cal_lock, [input_file])
            message = start_pipeline(input_file, short_name, ext_or_exts, instrument, jump_pipe, step_args,
                                     timeout=_left_s(deadline))
            sent[message.message_id] = short_name
            messages.append(message)
        try:
            for outcome in iter_results(messages, _left_s(deadline)):
                short_name = sent.pop(outcome.message.message_id)
                job = jobs[short_name]
                settled.add(short_name)
                if not outcome.ok:
                    remove_transfer_files(transfer_dir, short_name)
                    _fail(outputs, job, str(outcome.error))
                    if _raise:
                        raise outcome.error
                    continue
                try:
                    exts = _retrieved_exts(ext_or_exts, short_name, outcome.value)
                    copied = _retrieve_to(short_name, exts, job.dest_dirs())
                except OSError as e:  # this file's products could not be copied back: its failure alone
                    _fail(outputs, job, f"its products could not be copied back: {e}")
                    if _raise:
                        raise
                    continue
                for input_file in job.input_files:
                    outputs[input_file] = copied[os.path.dirname(os.path.abspath(input_file))]
        except TaskTimeout:
            if _raise:
                raise
            # The bound ran out: the files not back fail alone (revoked), the successes are returned.
            redis_silent = not _revoke_all(list(sent))
            for short_name in sent.values():
                _fail(outputs, jobs[short_name], f"no result within the bound of {bound_s:g} s; revoked")
            sent.clear()
    except BaseException as e:
        redis_silent = is_outage(e)
        if sent and not redis_silent:  # interrupted or timed out: nothing we sent may keep running
            redis_silent = not _revoke_all(list(sent))
        raise
    finally:
        for short_name, job in jobs.items():
            if short_name not in settled:  # sent and not back, or never sent: no transfer file stays
                remove_transfer_files(transfer_dir, short_name)
            if redis_silent:
                job.lock.abandon()  # it lapses within its lease
            else:
                redis_silent = not _release(job.lock, short_name)
    return outputs


def _fail(outputs: PipelineOutputs, job: _Job, reason: str) -> None:
    """Record and log the failure of one job's input files."""
    for input_file in job.input_files:
        outputs.failures[input_file] = reason
    logger.warning("Pipeline processing failed for %s: %s", ", ".join(job.input_files), reason)


def _retrieved_exts(ext_or_exts, short_name: str, value: Any):
    """The products to copy back: those asked for, or, with "all" among them, every one the task published."""
    exts = _exts(ext_or_exts, short_name)
    if "all" in exts and isinstance(value, Mapping):  # the task's value lists them, "all" expanded
        return [ext for ext, path in value.items() if path]
    return exts


def _revoke_all(message_ids: list[str]) -> bool:
    """Revoke each message (killing it where it runs); stop at the first Redis outage. Returns False then."""
    from .broker.revoke import revoke

    for done, message_id in enumerate(message_ids):
        try:
            revoke(message_id, terminate=True)
        except Exception as e:  # keep revoking the rest, unless Redis does not answer
            if is_outage(e):
                logger.warning("Could not revoke %s, nor the %d other(s) after it: Redis did not answer (%s)",
                               message_id, len(message_ids) - done - 1, e)
                return False
            logger.warning("Could not revoke %s: %s", message_id, e)
    return True
