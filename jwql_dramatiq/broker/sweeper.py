"""The dead-worker sweeper: a thread in every worker that requeues what dead workers had taken.

It is the one path that puts a dead worker's messages back: the ids a worker fetched are held on
the lease of its heartbeat (:mod:`jwql_dramatiq.broker.keys`), and the sweeper ends lapsed leases.
(Dramatiq's own Redis broker does this only in a maintenance pass that a command runs with
probability ``maintenance_chance``/1e6 and only for that command's queue, Dramatiq issues #64 and
#527; our broker has no such pass.) The bound is deterministic: every
``sweep_interval_s`` (default: a quarter of ``heartbeat_timeout_s``) each worker runs
``scripts/sweep.lua``, which for every worker whose heartbeat is older than
``heartbeat_timeout_s`` puts its unacked messages back on every declared queue and delay queue,
wakes an idle consumer, and removes the dead worker from the heartbeat set. A message of a
worker killed at time *t* is therefore back on its queue by *t* + ``heartbeat_timeout_s`` +
``sweep_interval_s`` (plus the time its last heartbeat was old at *t*, at most ``idle_poll_ms``),
as long as one worker lives.

A worker that was only cut off (a network partition longer than the heartbeat timeout) is
treated as dead: its message runs again elsewhere. Delivery stays at least once; the pipeline
actors' fencing (:mod:`jwql_dramatiq.actors.fenced`) keeps such a late run from publishing.

The thread survives Redis restarts and partitions: a failed pass is logged (once per outage)
and retried at the next interval.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from dramatiq.common import current_millis

from ..connection import redis_unavailable
from ..errors import RedisAuthFailed
from .keys import WAKE_LIST_MAX, heartbeats_key
from .scripts import SWEEP

logger = logging.getLogger(__name__)



def sweep_interval_s(config) -> float:
    """Seconds between sweeps: ``sweep_interval_s``, else a quarter of ``heartbeat_timeout_s``."""
    return config.sweep_interval_s if config.sweep_interval_s is not None else config.heartbeat_timeout_s / 4


@dataclass(frozen=True)
class SweepResult:
    """What one pass did.

    Attributes
    ----------
    requeued : int
        Messages put back on their queues.
    dead_workers : dict
        Worker id -> messages requeued from it, for every dead worker removed.
    """

    requeued: int
    dead_workers: dict[str, int]


class Sweeper:
    """Requeues dead workers' messages on a fixed interval (see the module docstring).

    Parameters
    ----------
    broker : JwqlRedisBroker
        The worker's broker: its client, namespace, id, heartbeat timeout and declared queues.
    interval_s : float
        Seconds between passes.
    """

    def __init__(self, broker, interval_s: float) -> None:
        self.broker = broker
        self.interval_s = interval_s
        self.passes = 0
        self.requeued_total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def queue_names(self) -> list[str]:
        """Every declared queue and delay queue, sorted."""
        return sorted(set(self.broker.get_declared_queues()) | set(self.broker.delay_queues))

    def sweep_once(self, now_ms: int | None = None) -> SweepResult:
        """Run one pass now.

        Parameters
        ----------
        now_ms : int, optional
            The clock to judge heartbeats by (default: this host's, as Dramatiq's heartbeats).

        Returns
        -------
        SweepResult

        Raises
        ------
        redis.RedisError
            Redis could not be reached.
        """
        broker = self.broker
        reply = SWEEP.run(
            broker.client,
            keys=[heartbeats_key(broker.namespace)],
            args=[broker.namespace, current_millis() if now_ms is None else now_ms, int(broker.heartbeat_timeout),
                  int(broker.dead_message_ttl), broker.broker_id, WAKE_LIST_MAX, *self.queue_names()],
        )
        dead = {(w.decode() if isinstance(w, bytes) else str(w)): int(n) for w, n in zip(reply[1::2], reply[2::2])}
        result = SweepResult(requeued=int(reply[0]), dead_workers=dead)
        self.passes += 1
        self.requeued_total += result.requeued
        if result.requeued:
            logger.warning("Sweeper: requeued %d message(s) of worker(s) silent for more than %.1f s: %s.",
                           result.requeued, broker.heartbeat_timeout / 1000,
                           ", ".join(f"{w} ({n} requeued)" for w, n in sorted(dead.items()) if n))
        elif dead:  # monitors heartbeat too when they send; one that stops sending is forgotten here
            logger.debug("Sweeper: forgot %d silent broker(s) with nothing unacked: %s", len(dead), ", ".join(dead))
        return result

    def start(self) -> "Sweeper":
        """Start the daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jwql-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop after its current pass."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep_once()
                if self._failing:
                    logger.info("Sweeper: Redis answers again; sweeping every %.2f s.", self.interval_s)
                self._failing = False
            except (redis.ConnectionError, redis.TimeoutError) as e:
                if not self._failing:  # once per outage, not once per interval
                    error = redis_unavailable(e, address=self.broker.address, client=self.broker.client)
                    reason = error if isinstance(error, RedisAuthFailed) else f"Redis unreachable ({e})"
                    logger.warning("Sweeper: %s; retrying every %.2f s.", reason, self.interval_s)
                self._failing = True
            except Exception:  # never let the thread die: a dead sweeper would go unnoticed
                logger.exception("Sweeper: pass failed; retrying in %.2f s.", self.interval_s)


def start_sweeper(broker) -> Sweeper:
    """Start the sweeper thread of a worker, with the interval from the broker's config.

    Parameters
    ----------
    broker : JwqlRedisBroker

    Returns
    -------
    Sweeper
        The running sweeper.
    """
    interval = sweep_interval_s(broker.jwql_config)
    sweeper = Sweeper(broker, interval).start()
    logger.debug("Sweeper started: every %.2f s, heartbeat timeout %.1f s.", interval, broker.heartbeat_timeout / 1000)
    return sweeper
