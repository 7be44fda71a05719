"""The one way this package loads and runs its Lua scripts.

Every script is a ``.lua`` file shipped as package data next to the module that uses it, with a
header documenting its KEYS, ARGV and return codes (Dramatiq's and redis-py's convention).
Declare one :class:`LuaScript` per file, as a module constant; nothing is read until first use::

    SWEEP = LuaScript("jwql_dramatiq.broker.scripts", "sweep.lua")
    reply = SWEEP.run(client, keys=[...], args=[...])      # EVALSHA, loading it on NOSCRIPT
    SWEEP.queue(pipe, keys=[...], args=[...])             # EVALSHA queued on a pipeline

Code two scripts share lives in a library file of ``local function`` definitions (with its own
header), named in ``includes``: the loader prepends it, so one copy serves both::

    ENQUEUE = LuaScript("jwql_dramatiq.broker.scripts", "enqueue.lua", includes=("task_state_lib.lua",))

:meth:`LuaScript.run` sends ``EVALSHA`` and, when the server does not know the script (first
use, or after a restart or ``SCRIPT FLUSH``), loads it with ``SCRIPT LOAD`` and sends it again,
which is what redis-py's ``register_script`` does. Driver errors are raised unchanged: callers
turn connection errors into :class:`~jwql_dramatiq.errors.RedisUnavailable` with
:func:`jwql_dramatiq.connection.redis_unavailable`, like every other Redis call.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis


class LuaScript:
    """A Lua script shipped as package data, run with EVALSHA (loaded on NOSCRIPT).

    Parameters
    ----------
    package : str
        The package holding the file, e.g. ``"jwql_dramatiq.broker.scripts"``.
    filename : str
        The ``.lua`` file in it, e.g. ``"sweep.lua"``.
    includes : sequence of str
        Library files in the same package whose text is prepended, in order (shared functions).
    """

    def __init__(self, package: str, filename: str, includes: Sequence[str] = ()) -> None:
        self.package = package
        self.filename = filename
        self.includes = tuple(includes)
        self._source: str | None = None
        self._sha: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LuaScript({self.package!r}, {self.filename!r})"

    @property
    def source(self) -> str:
        """str: the script's text (read from the package on first use)."""
        if self._source is None:
            with self._lock:
                if self._source is None:
                    folder = resources.files(self.package)
                    text = "\n".join(folder.joinpath(name).read_text(encoding="utf-8")
                                      for name in (*self.includes, self.filename))
                    self._sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
                    self._source = text
        return self._source

    @property
    def sha(self) -> str:
        """str: the SHA1 that ``EVALSHA`` names the script by."""
        self.source  # noqa: B018 - reads the file and sets the sha
        assert self._sha is not None
        return self._sha

    def load(self, client: redis.Redis) -> None:
        """``SCRIPT LOAD`` the script into ``client``'s server (e.g. after a NOSCRIPT reply to :meth:`queue`).

        Raises
        ------
        redis.RedisError
            As raised by the client.
        """
        client.script_load(self.source)

    def run(self, client: redis.Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script and return its reply, loading it first if the server does not know it.

        Parameters
        ----------
        client : redis.Redis
            Where to run it.
        keys : sequence
            KEYS, as documented in the script's header.
        args : sequence
            ARGV, as documented in the script's header.

        Returns
        -------
        Any
            The script's reply, as redis-py decodes it.

        Raises
        ------
        redis.RedisError
            As raised by the client (connection errors included; see the module docstring).
        """
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.load(client)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> None:
        """Queue the script on a pipeline as ``EVALSHA``.

        A NOSCRIPT reply comes back from ``pipe.execute()`` as ``redis.exceptions.NoScriptError``;
        the caller then runs :meth:`load` and executes the pipeline again (or runs :meth:`load`
        once before building pipelines).

        Parameters
        ----------
        pipe : redis.client.Pipeline
        keys : sequence
            KEYS.
        args : sequence
            ARGV.
        """
        pipe.evalsha(self.sha, len(keys), *keys, *args)
