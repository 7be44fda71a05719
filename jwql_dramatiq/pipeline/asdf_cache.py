"""Keep asdf's parsed schemas in memory, so a task child does not re-parse them on every model.

asdf builds a fresh JSON-schema resolver for each validation, and its schema loader parses
the schema's YAML again each time for schemas that come from its resource manager (most of
them). asdf already shares the parsed result of its other loader (an ``lru_cache``), so the
parsed schemas are treated as read-only; this memoizes the resource-manager path the same
way. It is applied in the fork server before the warm-up, so every child inherits a full cache.

asdf has no public way to do this (``asdf.get_config()`` offers resource mappings, which
still hand back YAML text to parse, and ``validate_on_read``, which would drop validation;
``asdf.schema.load_schema`` caches, but the resolver does not use it). So this patches the
private ``asdf.schema._make_schema_loader``, and only on the asdf versions it was tested with
(:data:`TESTED_ASDF_VERSIONS`); on any other version it stays off and logs a warning. What it
saves, measured with ``scripts/measure_asdf_cache.py`` (5 "cal" jobs on the 64x64 synthetic
NIRCam ramp, each in a child forked from a warmed parent, asdf 5.4.0): median 1.47-1.56 s per
job with the cache against 1.65 s without, about 0.1-0.2 s (6-11 %) per task.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

#: asdf versions the patch was tested with; on any other it is not applied.
TESTED_ASDF_VERSIONS = ("5.4.0",)

_applied = False


def cache_asdf_schemas(tested: tuple[str, ...] = TESTED_ASDF_VERSIONS) -> bool:
    """Memoize asdf's schema loader; return whether it was applied.

    Parameters
    ----------
    tested : tuple of str
        The asdf versions to apply it on (default :data:`TESTED_ASDF_VERSIONS`).

    Returns
    -------
    bool
        False (with a warning) on an asdf version not in ``tested``, or if the loader is gone;
        schemas are then parsed per model, as asdf does by itself.
    """
    global _applied
    try:
        import asdf
        import asdf.schema as schema
    except ImportError:
        return False
    if asdf.__version__ not in tested:
        logger.warning("asdf %s is not one the schema cache was tested with (%s); it stays off, and schemas "
                       "are parsed per model (about 0.1-0.2 s more per task)", asdf.__version__, ", ".join(tested))
        return False
    if _applied:
        return True
    try:
        original = schema._make_schema_loader  # private: allow-listed in .ci/private-names-allowed.txt
    except AttributeError:
        logger.warning("asdf's schema loader has changed; schemas will be parsed per model")
        return False

    @functools.cache
    def cached_loader():
        return functools.lru_cache(maxsize=None)(original())

    schema._make_schema_loader = cached_loader
    _applied = True
    return True
