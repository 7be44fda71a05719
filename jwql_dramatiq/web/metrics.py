"""``/metrics``: a prometheus-client Collector that reads Redis at scrape time.

Every host's workers write their records, task states and locks to the one Redis, so one scrape
of one dashboard covers every host. Counters and histograms of finished tasks are built from the
stored task states: each scrape reads the index entries changed since the last scrape and counts
each task once when it is first seen in a final state. They start from the states still stored
when the dashboard starts (a counter reset, which ``rate()`` and ``increase()`` handle).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..broker import states
from ..broker.control import list_workers
from ..errors import JwqlDramatiqError
from . import data

#: Upper bounds of the task duration buckets, in seconds.
DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
#: Upper bounds of the peak memory buckets, in MiB.
MEMORY_BUCKETS_MIB = (64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0)
#: Seconds of overlap re-read at each scrape (a state written with a slightly older clock is still seen).
OVERLAP_S = 120.0


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts):
            running += count
            out.append((bound, running))
        return out


class TaskTally:
    """Finished tasks counted once each, by actor and final state, with their durations and peaks."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.seen: dict[str, float] = {}
        self.last_scan_s: float | None = None
        self.totals: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Histogram] = {}
        self.memory: dict[str, _Histogram] = {}
        self.created = time.time()
        self.lock = threading.Lock()

    def update(self, client: redis.Redis, namespace: str) -> None:
        """Count the tasks that reached a final state since the last update."""
        with self.lock:
            now = data.redis_now_s(client)
            since = 0.0 if self.last_scan_s is None else self.last_scan_s - OVERLAP_S
            rows = data.recent_rows(client, namespace, since, most=1_000_000)
            for message_id, row in rows:
                state = row.get("state", "")
                if state not in states.FINAL_STATES or message_id in self.seen:
                    continue
                self.seen[message_id] = now
                actor = row.get("actor", "")
                self.totals[(actor, state)] = self.totals.get((actor, state), 0) + 1
                try:
                    start, end = float(row.get("started_at") or 0), float(row.get("finished_at") or 0)
                except ValueError:
                    start = end = 0.0
                if start > 0 and end >= start:
                    self.durations.setdefault(actor, _Histogram(DURATION_BUCKETS_S)).observe(end - start)
                if row.get("memory_peak_mib"):
                    try:
                        peak = float(row["memory_peak_mib"])
                    except ValueError:
                        peak = -1
                    if peak >= 0:
                        self.memory.setdefault(actor, _Histogram(MEMORY_BUCKETS_MIB)).observe(peak)
            self.last_scan_s = now
            cutoff = now - self.keep_s - 2 * OVERLAP_S
            if len(self.seen) > 1000:
                self.seen = {k: v for k, v in self.seen.items() if v >= cutoff}


class RedisCollector(Collector):
    """Reads queues, workers, locks and task states from Redis at each scrape.

    Parameters
    ----------
    broker : JwqlRedisBroker
        The dashboard's broker (its client and config).
    """

    def __init__(self, broker) -> None:
        self.broker = broker
        self.config = broker.jwql_config
        self.tally = TaskTally(self.config.result_ttl_s)

    def describe(self) -> list:  # no describe at registration: that would read Redis
        return []

    def collect(self) -> Iterator:  # noqa: D102
        client, ns = self.broker.client, self.config.namespace
        up = GaugeMetricFamily("jwql_dramatiq_redis_up", "1 if the dashboard could read Redis at this scrape")
        try:
            families = list(self._collect(client, ns))
        except (redis.RedisError, JwqlDramatiqError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self, client: redis.Redis, ns: str) -> Iterator:
        ready = GaugeMetricFamily("jwql_dramatiq_queue_ready", "messages waiting in the queue", labels=["queue"])
        delayed = GaugeMetricFamily("jwql_dramatiq_queue_delayed", "delayed messages not yet due", labels=["queue"])
        dead = GaugeMetricFamily("jwql_dramatiq_queue_dead", "dead-lettered messages", labels=["queue"])
        oldest = GaugeMetricFamily("jwql_dramatiq_queue_oldest_message_age_seconds",
                                   "age of the oldest waiting message (0 when the queue is empty)", labels=["queue"])
        for view in data.queues(self.broker):
            q = view.lengths.queue
            ready.add_metric([q], view.lengths.ready)
            delayed.add_metric([q], view.lengths.delayed)
            dead.add_metric([q], view.lengths.dead)
            oldest.add_metric([q], view.oldest_age_s or 0.0)
        yield from (ready, delayed, dead, oldest)

        up = GaugeMetricFamily("jwql_dramatiq_worker_up", "1 if the worker's heartbeat is fresh, 0 if dead or stopped",
                               labels=["host", "worker"])
        busy = GaugeMetricFamily("jwql_dramatiq_worker_busy", "1 if the worker runs a task", labels=["host", "worker"])
        alive = 0
        for worker in self._latest_workers(client, ns):
            labels = [worker.host, worker.worker_id[:8]]
            up.add_metric(labels, 1 if worker.alive else 0)
            busy.add_metric(labels, 1 if worker.current_message else 0)
            alive += worker.alive
        count = GaugeMetricFamily("jwql_dramatiq_workers_alive", "number of live workers")
        count.add_metric([], alive)
        yield from (up, busy, count)

        held = data.locks(client, ns)
        now = time.time()
        lock_count = GaugeMetricFamily("jwql_dramatiq_locks_held", "locks held")
        lock_count.add_metric([], len(held))
        stale = GaugeMetricFamily("jwql_dramatiq_locks_stale", "locks whose owner is dead")
        stale.add_metric([], sum(1 for lock in held if not lock.alive))
        oldest_lock = GaugeMetricFamily("jwql_dramatiq_lock_oldest_age_seconds",
                                        "age of the oldest held lock (0: none)")
        oldest_lock.add_metric([], max((now - lock.acquired_at for lock in held if lock.acquired_at), default=0.0))
        yield from (lock_count, stale, oldest_lock)

        self.tally.update(client, ns)
        with self.tally.lock:
            tasks = CounterMetricFamily("jwql_dramatiq_tasks", "tasks that reached a final state, by actor and state",
                                        labels=["actor", "state"], created=self.tally.created)
            for (actor, state), value in sorted(self.tally.totals.items()):
                tasks.add_metric([actor, state], value, created=self.tally.created)
            yield tasks
            duration = HistogramMetricFamily("jwql_dramatiq_task_duration_seconds",
                                             "run time of finished tasks", labels=["actor"])
            for actor, hist in sorted(self.tally.durations.items()):
                duration.add_metric([actor], hist.buckets(), hist.total)
            yield duration
            memory = HistogramMetricFamily("jwql_dramatiq_task_memory_peak_mib",
                                           "peak memory of finished tasks' process trees, MiB", labels=["actor"])
            for actor, hist in sorted(self.tally.memory.items()):
                memory.add_metric([actor], hist.buckets(), hist.total)
            yield memory

    def _latest_workers(self, client: redis.Redis, ns: str) -> list:
        """Workers, leaving out cleanly stopped ones (a stop is not an outage)."""
        return [w for w in list_workers(client, ns, self.config.heartbeat_timeout_s) if not w.stopped]
