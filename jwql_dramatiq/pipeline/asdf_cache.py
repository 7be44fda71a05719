"""Keep asdf's parsed schemas in memory, so a task child does not re-parse them on every model.

asdf builds a fresh JSON-schema resolver for each validation, and its schema loader parses
the schema's YAML again each time for schemas that come from its resource manager (most of
them). On a 64x64 Detector1 job that is about 260 YAML parses and over a second of a ~3 s
job. asdf already shares the parsed result of its other loader (an ``lru_cache``), so the
parsed schemas are treated as read-only; this memoizes the resource-manager path the same
way. It is applied in the fork server before the warm-up, so every child inherits a full cache.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

_applied = False


def cache_asdf_schemas() -> bool:
    """Memoize asdf's schema loader; return whether it was applied (False if asdf has changed)."""
    global _applied
    if _applied:
        return True
    try:
        import asdf.schema as schema

        original = schema._make_schema_loader
    except (ImportError, AttributeError):
        logger.warning("asdf's schema loader has changed; schemas will be parsed per model")
        return False

    @functools.cache
    def cached_loader():
        return functools.lru_cache(maxsize=None)(original())

    schema._make_schema_loader = cached_loader
    _applied = True
    return True
