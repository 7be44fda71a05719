"""The operator command line, ``jwql-dramatiq`` (placeholder until the CLI issue lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jwql-dramatiq``; returns the exit code."""
    print("jwql-dramatiq: no commands yet", file=sys.stderr)
    return 2
