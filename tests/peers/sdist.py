"""The installed version's sdist of a peer project, whose tests the peer suites run against our code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Where sdists are kept between runs (beside the venv they match).
CACHE = Path(__file__).resolve().parents[2] / ".venv" / "peer-sdists"


def peer_sdist(project: str, version: str) -> Path:
    """``<project>-<version>.tar.gz``, downloaded once into :data:`CACHE` with ``pip download``.

    Skips the calling test when it cannot be downloaded (offline), and fails it under ``CI``.
    """
    found = sorted(CACHE.glob(f"{project}-{version}.tar.gz"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", f"{project}=={version}",
         "-d", str(CACHE), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    found = sorted(CACHE.glob(f"{project}-{version}.tar.gz"))
    if out.returncode != 0 or not found:
        message = f"could not download the {project}=={version} sdist: {out.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[0]
