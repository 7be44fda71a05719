"""Counts a real worker's Redis requests, for tests/test_round_trips.py.

Python imports ``sitecustomize`` at start-up from the first folder on its path that holds one. A
test that puts this folder on ``PYTHONPATH`` and names a file in ``$JWQL_TEST_REQUEST_LOG`` makes
every process of the worker (the dramatiq parent, its worker process, the fork server and the
task children) append one line, its ``CLOCK_MONOTONIC`` time in s, per request it sends to Redis: a
command, or a whole pipeline, as redis-py sends each in one ``send_packed_command``. The call then
goes on unchanged. Without the variable, nothing is patched.
"""

import os
import time

_LOG_PATH = os.environ.get("JWQL_TEST_REQUEST_LOG")

if _LOG_PATH:
    import redis.connection

    _send_packed_command = redis.connection.AbstractConnection.send_packed_command

    def _counting_send_packed_command(self, command, check_health=True):
        with open(_LOG_PATH, "a") as log:  # one short append per request: lines never interleave
            log.write(f"{time.monotonic()}\n")
        return _send_packed_command(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = _counting_send_packed_command
