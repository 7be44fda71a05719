"""The broker: what a task crosses between a monitor's send and a worker's ack.

- :mod:`~jwql_dramatiq.broker.keys`: the one place that names Redis keys; the Lua scripts are in
  :mod:`~jwql_dramatiq.broker.scripts`.
- :mod:`~jwql_dramatiq.broker.redis_broker` and :mod:`~jwql_dramatiq.broker.consumer`: a
  :class:`dramatiq.Broker` and :class:`dramatiq.Consumer` of our own.
- :mod:`~jwql_dramatiq.broker.results`, :mod:`~jwql_dramatiq.broker.states`,
  :mod:`~jwql_dramatiq.broker.revoke`: results, task states, revocation.
- :mod:`~jwql_dramatiq.broker.control`, :mod:`~jwql_dramatiq.broker.admin`,
  :mod:`~jwql_dramatiq.broker.sweeper`: worker records and commands, queue administration, and
  the one path that requeues a dead worker's messages.
- :mod:`~jwql_dramatiq.broker.setup`: building the broker from the config (re-exported here).

Importing this package opens no connection and reads no config.
"""

from __future__ import annotations

from .setup import build_broker, current_broker, get_broker, get_config, setup_broker, task_states

__all__ = ["build_broker", "current_broker", "get_broker", "get_config", "setup_broker", "task_states"]
