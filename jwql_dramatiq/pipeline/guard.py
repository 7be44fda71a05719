"""Turn what jwst raises into this package's errors; retry with fewer cores when out of memory.

crds reports fatal problems with ``sys.exit(-1)`` from inside library code, so a
``SystemExit`` escapes every ``except Exception``; :func:`jwst_call` catches it around
jwst calls only and raises :class:`~jwql_dramatiq.errors.CrdsError` instead. Ordinary
crds exceptions (``CrdsDownloadError`` when an override is missing and the stub is
present) also become ``CrdsError``; anything else becomes ``PipelineError`` with the
original chained as ``__cause__``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from jwql_dramatiq.errors import BadInput, CrdsError, PipelineError

logger = logging.getLogger(__name__)

#: Values ``maximum_cores`` accepts besides a string of digits.
MAX_CORES_WORDS: tuple[str, ...] = ("all", "half", "quarter", "none", "one")

_T = TypeVar("_T")

#: Hint appended to every CRDS error message.
CRDS_HINT = ("check CRDS_PATH (a synced cache, or the offline stub server_config), CRDS_SERVER_URL, "
             "and that every reference file is available or given as an override_* step argument")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Return True if an exception, or one it was raised from, means "out of memory".

    Matches ``MemoryError``, ``OSError`` with ``errno.ENOMEM``, and any message with
    "Cannot allocate memory" (how a failed fork or mmap in a worker pool reports it).

    Parameters
    ----------
    exc : BaseException or None
        The exception to inspect; its ``__cause__``/``__context__`` chain is followed.

    Returns
    -------
    bool
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            return True
        if "Cannot allocate memory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_crds_exception(exc: BaseException) -> bool:
    """Return True for exceptions defined by the crds package.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    bool
    """
    return any(cls.__module__.split(".")[0] == "crds" for cls in type(exc).__mro__)


@contextmanager
def jwst_call(what: str) -> Iterator[None]:
    """Run a block of jwst calls, converting its failures.

    Parameters
    ----------
    what : str
        What is being run, for messages, e.g. ``"step jump on jw..._uncal.fits"``.

    Yields
    ------
    None

    Raises
    ------
    CrdsError
        For ``SystemExit`` (crds' fatal errors) and crds exceptions.
    BadInput
        For stpipe's ``ValidationError`` (step parameters it refuses).
    PipelineError
        For any other ``Exception``; out-of-memory errors keep their cause so callers
        can test :func:`is_out_of_memory` on ``err.__cause__``.
    """
    try:
        yield
    except PipelineError:
        raise
    except SystemExit as e:
        logger.error("%s: CRDS exited fatally (SystemExit %r)", what, e.code)
        raise CrdsError(f"{what}: CRDS failed fatally (SystemExit {e.code!r}); {CRDS_HINT}") from e
    except Exception as e:
        if is_crds_exception(e):
            raise CrdsError(f"{what}: CRDS error {type(e).__name__}: {e}; {CRDS_HINT}") from e
        if type(e).__name__ == "ValidationError" and type(e).__module__.startswith("stpipe"):
            raise BadInput(f"{what}: invalid step parameters: {e}") from e
        if is_out_of_memory(e):
            raise PipelineError(f"{what}: out of memory ({type(e).__name__}: {e})") from e
        raise PipelineError(f"{what} failed: {type(e).__name__}: {e}") from e


def validate_max_cores(max_cores: object) -> str:
    """Check a ``maximum_cores`` value for the jump and ramp-fit steps.

    Parameters
    ----------
    max_cores : str or int
        ``"all"``, ``"half"``, ``"quarter"``, ``"none"``, ``"one"`` or a positive count.

    Returns
    -------
    str
        The value as jwst wants it (a string).

    Raises
    ------
    BadInput
        For any other value.
    """
    if isinstance(max_cores, int) and not isinstance(max_cores, bool) and max_cores > 0:
        return str(max_cores)
    if isinstance(max_cores, str) and (max_cores in MAX_CORES_WORDS or (max_cores.isdigit() and int(max_cores) > 0)):
        return max_cores
    raise BadInput(f"invalid max_cores {max_cores!r}; "
                   f"expected a positive integer or one of {', '.join(MAX_CORES_WORDS)}")


def next_max_cores(max_cores: str) -> str | None:
    """Return the next, smaller ``maximum_cores`` to try after running out of memory.

    ``all`` -> ``half`` -> ``none``; anything else -> ``none``; ``none``/``one`` -> None.

    Parameters
    ----------
    max_cores : str
        The value that just failed.

    Returns
    -------
    str or None
        None when there is nothing smaller to try.
    """
    if max_cores in ("none", "one", "1"):
        return None
    if max_cores == "all":
        return "half"
    return "none"


def run_with_core_backoff(run: Callable[[str], _T], max_cores: str, what: str) -> _T:
    """Call ``run(cores)``, retrying with fewer cores while it fails for lack of memory.

    The sequence is :func:`next_max_cores`: ``all`` -> ``half`` -> ``none``, as jwql did on
    ``[Errno 12] Cannot allocate memory``. Other failures are raised at once.

    Parameters
    ----------
    run : callable
        Runs the job with a ``maximum_cores`` value; raises ``PipelineError`` on failure
        (as :func:`jwst_call` does, keeping the memory error as the cause).
    max_cores : str
        First value to try (already validated).
    what : str
        The job, for messages.

    Returns
    -------
    object
        What ``run`` returned.

    Raises
    ------
    PipelineError
        The first failure that is not out-of-memory, or "out of memory even with
        maximum_cores=..." when nothing smaller is left.
    """
    current = max_cores
    while True:
        try:
            return run(current)
        except PipelineError as e:
            if not is_out_of_memory(e):
                raise
            smaller = next_max_cores(current)
            if smaller is None:
                raise PipelineError(f"{what}: out of memory even with maximum_cores={current!r}") from e
            logger.warning("%s ran out of memory with maximum_cores=%r; retrying with %r", what, current, smaller)
            current = smaller


#: Frames of at least this many pixels use every core for jump and ramp fitting under ``auto``.
AUTO_ALL_CORES_PIXELS = 1024 * 1024


def resolve_max_cores(max_cores: str, input_path: str | os.PathLike[str]) -> str:
    """Turn the config's ``max_cores`` into a ``maximum_cores`` value for this input.

    ``auto`` is ``none`` for frames smaller than 1024x1024 pixels and ``all`` above: stcal's
    process pools start fresh interpreters (about 1 s), which only pays off on large frames.
    Any other value is returned as it is.
    """
    if max_cores != "auto":
        return max_cores
    try:
        from astropy.io import fits

        header = fits.getheader(input_path, "SCI")
        pixels = int(header.get("NAXIS1", 0)) * int(header.get("NAXIS2", 0))
    except (OSError, KeyError, ValueError):
        return "none"  # a bad file is reported by the pipeline itself
    return "all" if pixels >= AUTO_ALL_CORES_PIXELS else "none"
