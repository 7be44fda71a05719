"""Lua scripts, one per ``.lua`` file, each with a header documenting its KEYS, ARGV and returns."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def lua_source(name: str) -> str:
    """Return the source of ``<name>.lua`` shipped in this package."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
