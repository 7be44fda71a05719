"""Dramatiq with its own defaults (RedisBroker + Results), for comparison in the benchmarks.

Started as ``dramatiq benchmarks.plain_dramatiq_app -p1 -t1`` with ``$BENCH_REDIS_URL`` set.
"""

import os
import socket

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
broker = RedisBroker(url=_url, namespace="plain")
broker.add_middleware(Results(backend=RedisBackend(url=_url, namespace="plain-results")))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, queue_name="plain")
def plain_ping():
    """Return the host and pid, like jwql_dramatiq's ping."""
    return {"host": socket.gethostname(), "pid": os.getpid()}
