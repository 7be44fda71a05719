"""Fenced publishing: how a pipeline actor's run takes its job lock, stages its products and
publishes them at most once per message.

Dramatiq on Redis delivers at least once: a worker that is killed, or cut off from Redis for
longer than the heartbeat timeout, has its message run again elsewhere, and a cut-off worker may
still finish its run. So a run never writes into ``outgoing/`` directly:

1. it takes the job lock ``job:<short_name>`` (:func:`jwql_dramatiq.locks.lock`; a lease renewed
   while it lives, and a fencing token that grows with every acquisition);
2. if an earlier run of the same message already published (the marker
   ``<ns>:job-published:<message_id>``), it returns that run's result without running again;
3. it runs the pipeline with a private staging directory ``outgoing/.staging.<short_name>.*`` as
   its output directory;
4. it publishes in one Redis transaction (WATCH/MULTI): only if the lock's owner record still
   carries its own fencing token (nobody acquired the lock since), and no run of its message has
   published, it extends the lease over the renames and records the marker; then it renames the
   staged products into ``outgoing/`` (same file system: atomic, milliseconds);
5. a run whose token is no longer the newest (its lease lapsed while it was cut off, and the
   message ran elsewhere) waits for the lock, then returns the published result of its message
   if there is one; it publishes only if no newer run published anything for that name.

While Redis cannot be reached, taking the lock and publishing wait for it (up to
:data:`PUBLISH_REDIS_WAIT_S`, and always within the task's time limit) rather than guess or
fail: a failure stored late would replace the result of the run that completed elsewhere
meanwhile. A late run therefore neither overwrites nor duplicates products, and its result is
the same as that of the run that published.

Each run's staging directory and its scratch directory (``<working>/calibrated_data/task.*``)
are announced to the worker before they are created (:func:`jwql_dramatiq.executor.task.track_dir`),
and the worker removes them when the task ends, however it ends (a SIGKILL, the time limit, a
revoke). Staging directories left by a worker that died itself are removed by the next run of the
same name once they are older than the time limit (no run can still be writing there), and by
the monitor's :func:`jwql_dramatiq.transfer.remove_transfer_files`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable

import redis

from ..errors import BadInput, LockError, LockNotOwned, PipelineError, RedisUnavailable
from ..transfer import STAGING_PREFIX as _TRANSFER_STAGING_PREFIX

logger = logging.getLogger(__name__)

#: Prefix of the job lock names (``job:<short_name>``).
JOB_LOCK_PREFIX = "job:"
#: Prefix of the per-run staging directories inside ``outgoing/`` (hidden; not a product name).
STAGING_PREFIX = _TRANSFER_STAGING_PREFIX
#: Longest the publish step waits for Redis to answer, in seconds (the time limit bounds it too).
PUBLISH_REDIS_WAIT_S = 600.0
#: Lease held over the renames of a publish, in seconds (at least the configured lease).
PUBLISH_HOLD_S = 60.0


class JobSuperseded(PipelineError):
    """A newer run of the same job name published its products; this run's were discarded."""


def published_key(namespace: str, message_id: str) -> str:
    """The marker of a published message: JSON ``{"fence", "host", "pid", "at", "result"}``."""
    return f"{namespace}:job-published:{message_id}"


def name_fence_key(namespace: str, short_name: str) -> str:
    """The fencing token of the last publish for a job name."""
    return f"{namespace}:job-published-fence:{short_name}"


def _dirs(input_file_name: str) -> tuple[Any, Path, Path, Path]:
    from ..broker import get_config
    from ..transfer import incoming_dir, outgoing_dir, resolve_inside

    config = get_config()
    incoming = incoming_dir(config.transfer_dir)
    if not incoming.is_dir():
        raise BadInput(f"the transfer directory has no incoming/ directory: {incoming} does not exist "
                       f"(transfer_dir in {config.path})")
    input_path = resolve_inside(incoming, input_file_name)
    work_dir = Path(config.working_dir) / "calibrated_data"
    return config, input_path, work_dir, outgoing_dir(config.transfer_dir)

def _make_tracked_dir(parent: Path, prefix: str) -> Path:
    """Create ``parent/<prefix><random>``, announced to the worker first (it removes it when the task ends)."""
    from ..executor import task

    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = task.track_dir(parent / f"{prefix}{secrets.token_hex(4)}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue


def _make_staging(outgoing: Path, short_name: str) -> Path:
    """Create this run's staging directory inside ``outgoing/`` (so publishing is a rename)."""
    try:
        return _make_tracked_dir(outgoing, f"{STAGING_PREFIX}{short_name}.{int(time.time())}.")
    except OSError as e:
        raise PipelineError(f"cannot write to the outgoing directory {outgoing}: {e.strerror or e}") from e


def _remove_stale_staging(outgoing: Path, short_name: str, older_than_s: float) -> None:
    """Remove staging directories of runs that cannot be alive any more (older than the time limit)."""
    now = time.time()
    for path in outgoing.glob(f"{STAGING_PREFIX}{glob.escape(short_name)}.*"):
        try:
            created = int(path.name[len(STAGING_PREFIX) + len(short_name) + 1:].split(".")[0])
        except ValueError:
            continue
        if now - created > older_than_s:
            logger.warning("Removing %s, left by a run that ended without cleaning up", path)
            shutil.rmtree(path, ignore_errors=True)


def _current_message_id() -> str | None:
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    return None if message is None else str(message.message_id)


class FencedJob:
    """One run's job lock, staging directory and fenced publish (see the module docstring)."""

    def __init__(self, actor_name: str, short_name: str, outgoing: Path, input_path: Path | None = None) -> None:
        from ..broker import get_broker

        broker = get_broker()
        config = broker.jwql_config
        self.config = config
        self.short_name = short_name
        self.outgoing = outgoing
        self.time_limit_s = config.time_limit_for(actor_name)
        self.deadline = time.monotonic() + self.time_limit_s
        self.message_id = _current_message_id()
        self.client: redis.Redis = broker.client
        self.namespace = config.namespace
        self.lock = self._new_lock(JOB_LOCK_PREFIX + short_name)
        self.first_fence: int | None = None
        self.staging: Path | None = None
        #: The input whose removal from ``incoming/`` means the caller gave up (None: not checked).
        self.input_path = input_path

    def _new_lock(self, name: str):
        from ..locks import lock

        return lock(name, blocking_timeout=self.time_limit_s, raise_on_release_error=False, client=self.client,
                    namespace=self.namespace)

    # -- life cycle ----------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the job lock (waiting while another run of the name holds it)."""
        remaining = max(0.0, self.deadline - time.monotonic())
        if not self.lock.acquire(blocking=True, blocking_timeout=remaining):
            raise PipelineError(f"the job lock {self.lock.name!r} stayed taken for {remaining:.0f} s")
        if self.first_fence is None:
            self.first_fence = self.lock.fencing_token
        logger.info("Job lock %r acquired (fencing token %s)", self.lock.name, self.lock.fencing_token)

    def release(self) -> None:
        """Release the job lock if still held; a lost lock is only logged."""
        try:
            if self.lock.held:
                self.lock.release()
        except LockNotOwned:
            logger.info("Job lock %r had lapsed before its release (this run was cut off from Redis)", self.lock.name)
        except (LockError, RedisUnavailable, redis.RedisError) as e:
            logger.warning("Job lock %r not released cleanly: %s", self.lock.name, e)

    def make_staging(self) -> Path:
        """Create the staging directory (and clear stale ones of this name)."""
        _remove_stale_staging(self.outgoing, self.short_name, self.time_limit_s + 60)
        self.staging = _make_staging(self.outgoing, self.short_name)
        return self.staging

    def remove_staging(self) -> None:
        """Remove this run's staging directory, whatever it holds."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    # -- publishing ----------------------------------------------------------------------------

    def already_published(self) -> dict | None:
        """The marker of this message's earlier publish, if any."""
        if self.message_id is None:
            return None
        raw = self._with_redis(lambda: self.client.get(published_key(self.namespace, self.message_id)))
        return None if raw is None else json.loads(raw)

    def _with_redis(self, call: Callable[[], Any]) -> Any:
        """Run a Redis call, waiting out an outage (bounded) instead of guessing."""
        from ..outage import ride_through

        limit = min(self.deadline, time.monotonic() + PUBLISH_REDIS_WAIT_S)
        return ride_through(call, limit, self.config.redis_address, f"checking the job lock of {self.short_name}")

    def _claim(self, result: dict) -> tuple[str, Any]:
        """One WATCH/MULTI attempt: ``("claimed", None)``, ``("published", marker)`` or ``("superseded", fence)``."""
        from ..locks import holder_fencing_token

        marker_key = published_key(self.namespace, self.message_id) if self.message_id else None
        # The owner record carries the holder's fencing token and changes with every acquisition.
        watched = [self.lock.key, self.lock.owner_key, *([marker_key] if marker_key else [])]
        hold_ms = int(max(PUBLISH_HOLD_S, self.config.lock_lease_s) * 1000)
        if self.input_path is not None and not self.input_path.exists():
            return "withdrawn", self.input_path.name
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    fence = holder_fencing_token(self.lock.name, client=pipe, namespace=self.namespace)
                    published = pipe.get(marker_key) if marker_key else None
                    if published is not None:
                        marker = json.loads(published)
                        if not self._is_own(marker):
                            return "published", marker
                        pipe.reset()  # this run's own claim, made before a WAIT that timed out
                        self._confirm_durable(ttl_ms=int(self.config.result_ttl_s * 1000))
                        return "claimed", None
                    # owned(): the (watched) lock key still holds this run's token
                    if fence is None or fence != self.lock.fencing_token or not self.lock.owned():
                        return "superseded", fence or 0
                    published_fence = int(pipe.get(name_fence_key(self.namespace, self.short_name)) or 0)
                    if published_fence > (self.first_fence or 0):
                        return "newer", published_fence
                    marker = json.dumps({"fence": fence, "host": socket.gethostname(), "pid": os.getpid(),
                                         "at": time.time(), "result": result})
                    ttl_ms = int(self.config.result_ttl_s * 1000)
                    pipe.multi()
                    pipe.pexpire(self.lock.key, hold_ms)  # the renames below happen inside this lease
                    pipe.pexpire(self.lock.owner_key, hold_ms)
                    pipe.set(name_fence_key(self.namespace, self.short_name), fence, px=ttl_ms)
                    if marker_key:
                        pipe.set(marker_key, marker, px=ttl_ms)
                    pipe.execute()
                    self._confirm_durable(ttl_ms)
                    return "claimed", None
                except redis.WatchError:
                    continue

    def _is_own(self, marker: dict) -> bool:
        """Whether a published marker records this very run's claim."""
        return (marker.get("fence") == self.lock.fencing_token and marker.get("host") == socket.gethostname()
                and marker.get("pid") == os.getpid())

    def _confirm_durable(self, ttl_ms: int) -> None:
        """With replicas to wait for (Sentinel), make sure a replica has the claim before any rename.

        ``WAIT`` counts the writes of its own connection and replication is one ordered stream, so a
        write after the claim, on the connection that waits, covers the claim too. An isolated old
        master gets no acknowledgement: the claim is not durable, nothing is renamed, and the
        caller waits Redis out (:func:`jwql_dramatiq.outage.ride_through`) or gives up.

        Raises
        ------
        ReplicaTimeout
            No replica acknowledged the claim in time, or the claim is gone (lost in a failover).
        """
        from ..sentinel import ReplicaTimeout, wait_settings

        replicas, wait_ms = wait_settings(self.client)
        if replicas <= 0:
            return
        with self.client.pipeline(transaction=False) as pipe:
            pipe.pexpire(name_fence_key(self.namespace, self.short_name), ttl_ms)  # 0: the claim is gone
            pipe.execute_command("WAIT", replicas, wait_ms)
            exists, acked = pipe.execute()
        if not exists or int(acked) < replicas:
            raise ReplicaTimeout(self.config.redis_address, f"publish claim of {self.short_name}", replicas,
                                 int(acked) if exists else 0, wait_ms)

    def publish(self, staged: dict[str, str | None]) -> dict[str, str | None]:
        """Publish the staged products if this run still holds the newest token (see the module docstring).

        Parameters
        ----------
        staged : dict
            Extension -> path of the product in the staging directory (or None, not asked for).

        Returns
        -------
        dict
            Extension -> path in ``outgoing/`` (None kept): this run's, or the publishing run's.
        """
        final = {ext: (None if p is None else str(self.outgoing / Path(p).name)) for ext, p in staged.items()}
        while True:
            verdict, detail = self._with_redis(lambda: self._claim(final))
            if verdict == "claimed":
                for path in staged.values():
                    if path is not None:
                        os.replace(path, self.outgoing / Path(path).name)
                logger.info("Published %s (fencing token %s): %s", self.short_name, self.lock.fencing_token,
                            ", ".join(sorted(Path(p).name for p in final.values() if p)))
                return final
            if verdict == "published":
                logger.warning("Not publishing %s: this message's products were already published by a run with "
                               "fencing token %s on %s; returning that run's result", self.short_name,
                               detail.get("fence"), detail.get("host"))
                return detail["result"]
            if verdict == "withdrawn":
                # The caller gave up (a bound that ran out while Redis was down, so it could not
                # revoke) and removed its input: publishing would leave products nobody collects.
                raise PipelineError(f"the input {detail} was withdrawn from incoming/ before its products were "
                                    f"published (its caller gave up); they were discarded")
            if verdict == "newer":
                raise JobSuperseded(f"products for {self.short_name} were published by a newer run (fencing token "
                                    f"{detail}) than this one (token {self.first_fence}); this run's are discarded")
            # superseded: the lease lapsed (cut off from Redis?) and the lock may have moved on.
            logger.warning("Not publishing %s yet: this run's fencing token %s is no longer the newest (%s); "
                           "waiting for the job lock to see what was published", self.short_name,
                           self.lock.fencing_token, detail)
            self.release()
            self.lock = self._new_lock(self.lock.name)
            self._with_redis(self.acquire)


def run_fenced(actor_name: str, input_file_name: str, short_name: str,
               run: Callable[[Any, Path, Path], dict[str, str | None]],
               publish_only_if_input_remains: bool = False) -> dict[str, str | None]:
    """Run ``run(input_path, work_dir, staging)`` under the job lock and publish its products fenced.

    With ``publish_only_if_input_remains``, a run whose input left ``incoming/`` meanwhile (its
    caller gave up) discards its products instead of publishing them.
    """
    _config, input_path, work_dir, outgoing = _dirs(input_file_name)
    job = FencedJob(actor_name, short_name, outgoing, input_path if publish_only_if_input_remains else None)
    # A run cut off from Redis waits for it rather than fail: its failure would be stored late
    # over the result of the run that completed elsewhere meanwhile.
    job._with_redis(job.acquire)
    try:
        done = job.already_published()
        if done is not None:
            logger.warning("Not running %s: this message's products were already published by a run with fencing "
                           "token %s on %s (a redelivery); returning that run's result", short_name, done.get("fence"),
                           done.get("host"))
            return done["result"]
        staging = job.make_staging()
        scratch = _make_tracked_dir(work_dir, "task.")  # this run's own: the worker removes it after a kill
        try:
            staged = run(input_path, scratch, staging)
            return job.publish(staged)
        finally:
            job.remove_staging()
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        job.release()
