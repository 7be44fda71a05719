"""The results backend: failures keep their original type, message and worker traceback.

Dramatiq's Redis backend stores only ``type(exc).__name__`` and ``str(exc)``. This one also
stores the traceback text and raises :class:`TaskResultFailure` on read, which is both
Dramatiq's ``ResultFailure`` (so existing ``except ResultFailure`` code works) and this
package's :class:`~jwql_dramatiq.errors.TaskFailed` (with ``.traceback_text``). Waits are
always bounded, and sub-second bounds are rounded up instead of meaning "forever" or "now".
A blocking wait that the master refuses with ``NOREPLICAS`` (``min-replicas-to-write``: its
``BRPOPLPUSH`` is a write) polls reads instead, until its bound.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT
from dramatiq.results.backends.redis import RedisBackend

from ..connection import BLOCKING_SLICE_S, is_auth_error, is_no_replicas, is_outage, redis_unavailable
from ..errors import TaskFailed
from ..outage import ride_through
from ..sentinel import run_durably, wait_settings
from .marks import defer_write
from .scripts import STORE_RESULT

#: How long a worker keeps trying to store a result that must reach a replica (seconds), e.g. through a failover.
DURABLE_STORE_BOUND_S = 60.0
#: Seconds between reads of a result while the master refuses the blocking wait (a write) with NOREPLICAS.
NO_REPLICAS_POLL_S = 0.1
#: Marker Dramatiq puts on stored exceptions.
_CANARY = "dramatiq.results.Result"


class TaskResultFailure(ResultFailure, TaskFailed):
    """Raised by ``message.get_result()`` when the task failed.

    Attributes
    ----------
    orig_exc_type, orig_exc_msg : str
        Dramatiq's names for the original exception's type and message.
    type_name, message, traceback_text : str
        The same, plus the worker-side traceback text.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str = "", message_id: str | None = None) -> None:
        TaskFailed.__init__(self, type_name, message, traceback_text, message_id)
        self.orig_exc_type = type_name
        self.orig_exc_msg = message
        self.args = (f"actor raised {type_name}: {message}",)

    def __str__(self) -> str:  # DramatiqError's __str__ would print only the message
        return f"{self.type_name}: {self.message}"


def describe_exception(exception: BaseException) -> dict[str, str]:
    """Return ``{"type", "msg", "traceback"}`` for an exception, keeping a remote original's details."""
    if isinstance(exception, TaskFailed):
        return {"type": exception.type_name, "msg": exception.message, "traceback": exception.traceback_text}
    tb = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    return {"type": type(exception).__name__, "msg": str(exception), "traceback": tb}


def _is_failure(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("__t") == _CANARY


class JwqlResultsBackend(RedisBackend):
    """Dramatiq's Redis backend with tracebacks, bounded waits and clear connection errors.

    Parameters
    ----------
    address : str
        ``host:port`` of Redis for error messages (no credentials).
    **kwargs
        Passed to :class:`dramatiq.results.backends.redis.RedisBackend`.
    """

    def __init__(self, *, address: str, revoked_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.address = address
        self.revoked_key = revoked_key
        #: Seconds a worker keeps trying to store a result that must reach a replica.
        self.durable_store_bound_s = DURABLE_STORE_BOUND_S

    def store_result(self, message, result: Any, ttl: int) -> None:
        """Store ``result``; one that is not JSON-encodable is stored as a failure naming its type.

        The task ran once and its caller learns why there is no value, at once (Dramatiq's own
        backend raises here, and the run's result is then missing at the ack).
        """
        try:
            call = self._store_call(message, result, ttl, force=False)  # encodes the result, once
        except (TypeError, ValueError) as e:
            text = (f"actor {message.actor_name!r} returned a {type(result).__name__}, which cannot be stored as "
                    f"a JSON result ({e}); return JSON types (str, int, float, bool, None, list, dict)")
            self.store_failure(message, {"type": "ResultNotEncodable", "msg": text, "traceback": ""}, ttl)
            return
        self._write(message, *call, force=False)

    def store_exception(self, message, exception: BaseException, ttl: int) -> None:
        """Store the failure ``exception`` (once: the consumer stores it before the nack, Results again after)."""
        if getattr(message, "failure_stored", False):
            return
        self.store_failure(message, describe_exception(exception), ttl)
        if isinstance(message, MessageProxy):
            message.failure_stored = True

    def store_failure(self, message, exn: dict[str, str], ttl: int, force: bool = False) -> None:
        """Store a failure record ``{"type", "msg", "traceback"}`` as ``message``'s result.

        Parameters
        ----------
        message : dramatiq.Message
        exn : dict
        ttl : int
            Milliseconds to keep it.
        force : bool
            Store it even if the message is revoked (used by revoke and purge themselves).
        """
        self._write(message, *self._store_call(message, {"__t": _CANARY, "exn": exn}, ttl, force), force=force)

    def failure_record(self, message, exn: dict[str, str]) -> tuple[str, str]:
        """``message``'s result key and the encoded failure ``exn`` as :meth:`store_failure` stores it
        (for a script that writes many at once: ``purge.lua``)."""
        return self.build_message_key(message), self.encoder.encode({"__t": _CANARY, "exn": exn})

    def _store_call(self, message, payload: Any, ttl: int, force: bool) -> tuple[list[Any], list[Any]]:
        # A revoked task's late result must not replace the "revoked" failure its waiter got, nor
        # a duplicate run's late failure a success (store_result.lua).
        keys = [self.build_message_key(message), self.revoked_key]
        args = [message.message_id, self.encoder.encode(payload), ttl, "1" if force else "0",
                "1" if _is_failure(payload) else "0"]
        return keys, args

    def _write(self, message, keys: list[Any], args: list[Any], force: bool) -> None:
        durable = wait_settings(self.client)[0] > 0
        if not durable and not force and defer_write(message, STORE_RESULT, keys, args):
            # Written with the ack, in its round trip (a retried ack writes it again: the script keeps one).
            message.result_stored = True
            return
        if not durable:
            STORE_RESULT.run(self.client, keys=keys, args=args)
        else:
            # Sentinel: the result must reach a replica before the message is acked; ride through a
            # failover (store_result.lua is safe to run again) rather than rerun the task.
            ride_through(lambda: run_durably(self.client, STORE_RESULT, keys, args,
                                             "the result", self.address),
                         time.monotonic() + self.durable_store_bound_s, self.address,
                         f"storing the result of {message.message_id}")
        if isinstance(message, MessageProxy):
            # Redis answered: the message has a result (ours, or one the script kept). The consumer's
            # ack reads this instead of asking Redis again (WakingConsumer._result_lost).
            message.result_stored = True

    def unwrap_result(self, res: Any) -> Any:
        if _is_failure(res):
            exn = res["exn"]
            raise TaskResultFailure(exn["type"], exn["msg"], exn.get("traceback", ""))
        return res

    def get_result(self, message, *, block: bool = False, timeout: int | None = None) -> Any:
        try:
            if not block:
                return super().get_result(message)
            # BRPOPLPUSH takes whole seconds and 0 means "forever": never let a bound vanish.
            # Long waits go in slices shorter than the socket timeout.
            total_s = max(1, math.ceil((DEFAULT_TIMEOUT if timeout is None else timeout) / 1000))
            deadline = time.monotonic() + total_s
            while True:
                slice_s = max(1, min(int(BLOCKING_SLICE_S), math.ceil(deadline - time.monotonic())))
                try:
                    return super().get_result(message, block=True, timeout=slice_s * 1000)
                except ResultTimeout:
                    if time.monotonic() >= deadline - 0.001:
                        raise
                except redis.ResponseError as e:
                    if not is_no_replicas(e):
                        raise
                    # BRPOPLPUSH is a write, refused while the master lacks replicas (min-replicas-to-write);
                    # a read is not: poll until the bound instead.
                    try:
                        return super().get_result(message)
                    except ResultMissing:
                        if time.monotonic() >= deadline - 0.001:
                            raise ResultTimeout(message) from None
                        time.sleep(min(NO_REPLICAS_POLL_S, max(0.0, deadline - time.monotonic())))
        except TaskResultFailure as e:
            e.message_id = message.message_id
            raise
        except redis.RedisError as e:  # an outage (is_outage: also a blocking read cut short by a failover)
            if not (is_outage(e) or is_auth_error(e)):
                raise
            raise redis_unavailable(e, address=self.address, client=self.client) from None
