"""The one exit-code table of jwql_dramatiq: the worker's and every ``jwql-dramatiq`` command's.

Codes 0-4 are Dramatiq's own (``dramatiq.cli.RET_*``, restated here because that module is not
an API to import: "Don't depend on *anything* in this module"; a test checks the values). A
worker exits with them because it is Dramatiq's main process: a bad config is raised as an
``ImportError`` (2), Redis unreachable as a ``BrokerConnectionError`` (3). Every CLI command
uses the same codes for the same causes, so "bad config" is 2 and "Redis unreachable" is 3
wherever they come from, and a supervisor needs one rule (``deploy/jwql-dramatiq-worker.service``:
do not restart on 2 or 4, restart on 3). The CLI's own outcomes follow, from 5.

Importing this module imports nothing else.
"""

from __future__ import annotations

#: Done; for ``status``, Redis answers and at least one worker is alive. (Dramatiq's RET_OK.)
RET_OK = 0
#: A worker was killed (a second SIGTERM/SIGINT, or its process died). (Dramatiq's RET_KILLED.)
RET_KILLED = 1
#: Not done: ``status`` found no live worker, ``shutdown`` targets still ran after ``--wait``,
#: ``worker --detach`` did not come up. Shares 1 with :data:`RET_KILLED`: the command did not
#: succeed, and nothing about it is a configuration problem (a health check reads 1 as "unhealthy").
RET_FAIL = RET_KILLED
#: Bad configuration: the config file is missing or invalid, Redis refused the configured
#: credentials, or (Dramatiq's meaning too) an invalid command line. Restarting does not help.
#: (Dramatiq's RET_IMPORT.)
RET_IMPORT = 2
#: The config file is missing or invalid, or Redis refused its credentials.
RET_CONFIG = RET_IMPORT
#: Invalid command line, or ``purge`` not confirmed.
RET_USAGE = RET_IMPORT
#: Redis is unreachable. May pass: restart or retry. (Dramatiq's RET_CONNECT.)
RET_CONNECT = 3
#: Redis is unreachable (the CLI's name for :data:`RET_CONNECT`).
RET_REDIS = RET_CONNECT
#: ``worker``: the pid file points at a live worker, or cannot be written. (Dramatiq's RET_PIDFILE.)
RET_PIDFILE = 4
#: No such task, lock or live worker.
RET_NOT_FOUND = 5
#: ``revoke``: the task already finished; nothing changed.
RET_FINISHED = 6
#: ``locks clear``: the lock's owner is alive (give ``--force`` to remove it anyway).
RET_REFUSED = 7
#: Any other error of this package.
RET_ERROR = 8
#: Interrupted at the terminal (Ctrl+C), as shells report SIGINT.
RET_INTERRUPTED = 130

#: Dramatiq's codes, by the names ``dramatiq.cli`` gives them (checked by a test).
DRAMATIQ_CODES = {"RET_OK": RET_OK, "RET_KILLED": RET_KILLED, "RET_IMPORT": RET_IMPORT,
                  "RET_CONNECT": RET_CONNECT, "RET_PIDFILE": RET_PIDFILE}

#: Codes a supervisor must not restart on: the same start would fail the same way.
NO_RESTART = (RET_CONFIG, RET_PIDFILE)
#: Codes a supervisor should restart on (after a pause): the cause may pass.
RESTART = (RET_KILLED, RET_REDIS)

#: Exit codes and their meaning, one row per code, for ``--help``, the README and docs.
EXIT_CODES = (
    (RET_OK, "done; status: Redis answers and at least one worker is alive"),
    (RET_KILLED, "worker: killed; status: no live worker; shutdown: targets still running after --wait; "
                 "worker --detach: the worker did not come up"),
    (RET_CONFIG, "bad config (file missing or invalid, or Redis refused its credentials); invalid command "
                 "line; purge not confirmed"),
    (RET_REDIS, "Redis is unreachable"),
    (RET_PIDFILE, "worker: the pid file points at a live worker, or the pid or log file cannot be written"),
    (RET_NOT_FOUND, "no such task, lock, live worker or queue"),
    (RET_FINISHED, "revoke: the task already finished; nothing changed"),
    (RET_REFUSED, "locks clear: the owner is alive (use --force)"),
    (RET_ERROR, "any other error"),
    (RET_INTERRUPTED, "interrupted (Ctrl+C), or the reader of the output went away"),
)
