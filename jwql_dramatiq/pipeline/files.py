"""Files of a pipeline job: input checks, the private work directory, atomic publication.

Each job works in its own directory ``<work_dir>/<short_name>.<random>/`` and removes it
when it ends, whether it succeeded or failed, so concurrent jobs on the same exposure
cannot trample each other and nothing named ``<short_name>*`` is left behind. Outputs
reach ``output_dir`` only whole: written under a hidden temporary name in ``output_dir``
and renamed with :func:`os.replace`; a redelivered job replaces them the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from jwql_dramatiq.errors import BadInput, PipelineError
from jwql_dramatiq.pipeline.steps import completed_steps

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputInfo:
    """What :func:`inspect_input` learned from an input file's headers.

    Attributes
    ----------
    path : Path
        The checked file.
    instrument : str or None
        ``INSTRUME`` from the primary header, lower case, if present.
    sci_shape : tuple of int
        Shape of the SCI data, (nints, ngroups, ny, nx) for a ramp.
    completed : set of str
        jwql step names whose ``S_*`` keyword is ``COMPLETE``.
    """

    path: Path
    instrument: str | None
    sci_shape: tuple[int, ...]
    completed: set[str] = field(default_factory=set)


def short_name_from_path(input_path: str | os.PathLike[str]) -> str:
    """Return jwql's short name: the first four ``_``-separated fields of the file name.

    ``jw09999001001_01101_00001_nrca1_uncal.fits`` -> ``jw09999001001_01101_00001_nrca1``.

    Parameters
    ----------
    input_path : path
        The input file.

    Returns
    -------
    str

    Raises
    ------
    BadInput
        If the name has fewer than five ``_``-separated fields (four plus a suffix).
    """
    name = Path(input_path).name
    parts = name.split("_")
    if len(parts) < 5 or not all(parts[:4]):
        raise BadInput(f"input file name {name!r} is not a JWST exposure name like 'jw..._..._..._<det>_uncal.fits'")
    return "_".join(parts[:4])


def inspect_input(input_path: str | os.PathLike[str]) -> InputInfo:
    """Check that a file exists, is a whole FITS file, and holds a 4-D ramp in SCI.

    Only headers are read; a truncated file is recognised by astropy's "File may have
    been truncated" warning, which compares the file length with the headers' sizes.

    Parameters
    ----------
    input_path : path
        The file to check.

    Returns
    -------
    InputInfo

    Raises
    ------
    BadInput
        If the file is missing, not FITS, truncated, has no SCI extension, or its SCI data
        are not 4-D (not a ramp), naming the file.
    """
    from astropy.io import fits

    path = Path(input_path)
    if not path.is_file():
        raise BadInput(f"input file {str(path)!r} does not exist or is not a regular file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                primary = hdul[0].header
                if "SCI" not in hdul:
                    raise BadInput(f"input file {path.name!r} has no SCI extension; not a JWST ramp")
                sci = hdul["SCI"].header
                shape = tuple(int(sci.get(f"NAXIS{i}", 0)) for i in range(int(sci.get("NAXIS", 0)), 0, -1))
                instrument = primary.get("INSTRUME")
                done = completed_steps(primary)
        except BadInput:
            raise
        except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
            raise BadInput(f"input file {path.name!r} is not a readable FITS file: {e}") from e
    for w in caught:
        if "truncated" in str(w.message):
            raise BadInput(f"input file {path.name!r} is truncated: {w.message}")
    if len(shape) != 4:
        raise BadInput(f"input file {path.name!r} is not a ramp: SCI data are {len(shape)}-D {shape}, expected 4-D "
                       "(nints, ngroups, ny, nx)")
    return InputInfo(path=path, instrument=instrument.strip().lower() if isinstance(instrument, str) else None,
                     sci_shape=shape, completed=done)


def make_job_dir(work_dir: str | os.PathLike[str], short_name: str) -> Path:
    """Create the job's private directory ``<work_dir>/<short_name>.<random>``.

    Parameters
    ----------
    work_dir : path
        Worker-local scratch directory; created if missing.
    short_name : str
        The exposure's short name.

    Returns
    -------
    Path
    """
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{short_name}.", dir=work_dir))


def remove_job_files(work_dir: str | os.PathLike[str], job_dir: Path | None) -> None:
    """Remove the job directory; never raises (failures are logged).

    Parameters
    ----------
    work_dir : path
        The scratch directory the job directory lives in (a guard: nothing outside it is removed).
    job_dir : Path or None
        From :func:`make_job_dir`; None does nothing.
    """
    if job_dir is None:
        return
    if Path(job_dir).resolve().parent != Path(work_dir).resolve():
        logger.error("Refusing to remove %s: not directly inside %s", job_dir, work_dir)
        return
    shutil.rmtree(job_dir, onerror=_log_rm_error)


def _log_rm_error(func: object, path: str, exc_info: object) -> None:
    logger.warning("Could not remove %s during cleanup: %s", path, exc_info)


def copy_input(input_path: Path, job_dir: Path) -> Path:
    """Copy the input into the job directory, keeping its name.

    Parameters
    ----------
    input_path : Path
        Checked input file.
    job_dir : Path
        From :func:`make_job_dir`.

    Returns
    -------
    Path
        The copy.

    Raises
    ------
    PipelineError
        If the copy fails (disk full, permissions).
    """
    target = job_dir / input_path.name
    try:
        shutil.copyfile(input_path, target)
    except OSError as e:
        raise PipelineError(f"could not copy input {input_path} to {job_dir}: {e}") from e
    return target


def publish(source: Path, output_dir: str | os.PathLike[str], name: str) -> Path:
    """Move a finished product into ``output_dir`` atomically.

    The file is renamed when source and target share a file system, else copied to a
    hidden temporary name inside ``output_dir`` and renamed there; readers never see a
    partial file, and an existing file of the same name is replaced.

    Parameters
    ----------
    source : Path
        The product in the job directory.
    output_dir : path
        Destination directory; created if missing.
    name : str
        Final file name.

    Returns
    -------
    Path
        The published file.

    Raises
    ------
    PipelineError
        If the move fails.
    """
    out = Path(output_dir)
    target = out / name
    tmp = out / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
            return target
        except OSError:
            pass  # different file system: copy, then rename
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PipelineError(f"could not move {source.name} to {out}: {e}") from e
    return target
