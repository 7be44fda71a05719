"""The shared transfer directory: ``<transfer_dir>/incoming`` and ``<transfer_dir>/outgoing``.

Monitors copy inputs into ``incoming/``; workers publish products into ``outgoing/``; both are
coordinated by file name only. A name sent in a message must stay inside its directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BadInput


def incoming_dir(transfer_dir: str | os.PathLike[str]) -> Path:
    """``<transfer_dir>/incoming``."""
    return Path(transfer_dir) / "incoming"


def outgoing_dir(transfer_dir: str | os.PathLike[str]) -> Path:
    """``<transfer_dir>/outgoing``."""
    return Path(transfer_dir) / "outgoing"


def ensure_dirs(transfer_dir: str | os.PathLike[str]) -> None:
    """Create ``incoming/`` and ``outgoing/`` if missing."""
    incoming_dir(transfer_dir).mkdir(parents=True, exist_ok=True)
    outgoing_dir(transfer_dir).mkdir(parents=True, exist_ok=True)


def resolve_inside(directory: Path, name: object) -> Path:
    """Return ``directory/name``, refusing any name that would leave ``directory``.

    Refused: non-strings, empty names, absolute paths, ``..``, path separators, and symlinks
    whose target lies outside ``directory``.

    Raises
    ------
    BadInput
        Naming the file and why.
    """
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise BadInput(f"input file name {name!r} is not a file name")
    if os.path.isabs(name) or "/" in name or "\\" in name or ".." in Path(name).parts:
        raise BadInput(f"input file name {name!r} would leave {directory}: give a bare file name")
    path = directory / name
    real_dir = directory.resolve()
    if not path.resolve().is_relative_to(real_dir):
        raise BadInput(f"input file {name!r} is a link that points outside {directory}")
    return path


def copy_atomically(source: str | os.PathLike[str], destination: Path) -> Path:
    """Copy ``source`` to ``destination`` through a temporary name, so readers never see half a file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(fd)
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return destination


#: Prefix of a worker's per-run staging directories in ``outgoing/`` (``.staging.<short_name>.<time>.<random>``).
STAGING_PREFIX = ".staging."


def remove_transfer_files(transfer_dir: str | os.PathLike[str], short_name: str) -> list[Path]:
    """Delete everything a job named ``short_name`` can leave in the transfer directory.

    That is ``incoming/<short_name>*`` and ``outgoing/<short_name>*`` (inputs and products),
    ``.<short_name>*`` (temporary names of unfinished copies), and the worker's staging
    directories ``outgoing/.staging.<short_name>.*`` (a run killed before its worker cleaned up).

    Returns
    -------
    list of Path
        The inputs and products removed (temporary files and staging directories are not listed).
    """
    removed = []
    escaped = glob.escape(short_name)
    for directory in (incoming_dir(transfer_dir), outgoing_dir(transfer_dir)):
        for path in directory.glob(f"{escaped}*"):
            _remove(path)
            removed.append(path)
        for path in directory.glob(f".{escaped}*"):  # temporary names of unfinished copies
            _remove(path)
        for path in directory.glob(f"{STAGING_PREFIX}{escaped}.*"):
            _remove(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
