"""Waiting on many messages with one overall bound, results in completion order.

:func:`iter_results` yields each message's outcome as soon as it is stored, whatever order
the messages were sent in, and calls an optional callback for each in the caller's own
process (the runbook's "execute callback functions on the calling processes").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from dramatiq.message import Message
from dramatiq.results import ResultMissing

from .connection import is_auth_error, redis_unavailable
from .errors import TaskTimeout
from .outage import is_outage

#: First and longest pause between two checks of the pending results, in seconds.
POLL_FIRST_S, POLL_MAX_S = 0.002, 0.05
#: Pause between two checks while Redis does not answer, in seconds.
OUTAGE_PAUSE_S = 0.25


@dataclass(frozen=True)
class Outcome:
    """One message's outcome: ``value`` when it succeeded, else ``error`` (a TaskResultFailure)."""

    message: Message
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.error is None


def iter_results(messages: Iterable[Message], timeout_s: float,
                 callback: Callable[[Outcome], None] | None = None) -> Iterator[Outcome]:
    """Yield each message's :class:`Outcome` as it completes, within one overall bound.

    Parameters
    ----------
    messages : iterable of dramatiq.Message
        Messages sent with this package's broker (results are stored for every actor).
    timeout_s : float
        The bound for all of them together.
    callback : callable, optional
        Called with each outcome, in this process, before it is yielded.

    Raises
    ------
    TaskTimeout
        Some results were not in when the bound ran out; ``.pending`` lists their messages.
    RedisUnavailable
        Redis did not answer when the bound ran out (an outage is waited out until then).
    """
    from .broker import get_broker

    backend = get_broker().results_backend
    pending = {m.message_id: m for m in messages}
    started = time.monotonic()
    deadline = started + timeout_s
    pause_s = POLL_FIRST_S
    outage_since: float | None = None
    while pending:
        keys = {mid: backend.build_message_key(m) for mid, m in pending.items()}
        try:
            with backend.client.pipeline(transaction=False) as pipe:
                for key in keys.values():
                    pipe.lindex(key, 0)
                raws = dict(zip(keys, pipe.execute()))
            outage_since = None
        except Exception as e:  # an outage is waited out within the bound, like a slow task
            if not is_outage(e):
                if is_auth_error(e):
                    raise redis_unavailable(e, address=backend.address, client=backend.client) from None
                raise
            now = time.monotonic()
            outage_since = outage_since or now
            if now >= deadline:
                raise redis_unavailable(e, address=backend.address, client=backend.client,
                                        what=f"waiting for {len(pending)} result(s): no answer for "
                                             f"{now - outage_since:.1f} s, until the bound of {timeout_s:g} s ran "
                                             f"out; last error") from None
            time.sleep(min(OUTAGE_PAUSE_S, deadline - now))
            continue
        found = [mid for mid, raw in raws.items() if raw is not None]
        for mid in found:
            message = pending.pop(mid)
            try:
                outcome = Outcome(message, value=backend.unwrap_result(backend.encoder.decode(raws[mid])))
            except ResultMissing:  # pragma: no cover - raced with expiry
                continue
            except Exception as e:  # the task's failure, as TaskResultFailure
                outcome = Outcome(message, error=e)
            if callback is not None:
                callback(outcome)
            yield outcome
        if not pending:
            return
        if found:
            pause_s = POLL_FIRST_S
        if time.monotonic() + pause_s > deadline:
            error = TaskTimeout(f"{len(pending)} of the results were not in after {timeout_s:g} s")
            error.pending = list(pending.values())  # type: ignore[attr-defined]
            raise error
        time.sleep(pause_s)
        pause_s = min(POLL_MAX_S, pause_s * 2)
