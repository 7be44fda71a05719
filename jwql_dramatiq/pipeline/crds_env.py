"""Set the CRDS and stpipe environment before jwst (and crds) are imported.

crds reads its environment when it is imported and caches its configuration per process
(``get_config_info`` is cached), so :func:`apply_crds_environment` must run in the worker
parent before the jwst preload. Calling it again with the same arguments changes nothing.

Offline ("stub") mode writes a one-line ``server_config`` under
``<crds_path>/config/jwst/``; with it and every reference file given as an
``override_*`` step argument, calwebb_detector1 runs with no network at all (see
``jwst-offline.md``). Without the stub and without a synced cache, every CRDS problem
arrives as ``SystemExit(-1)`` from inside crds.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Server URL that makes crds skip every JSON-RPC call (the URL contains "serverless").
SERVERLESS_URL = "https://jwst-serverless.stsci.edu"

#: Context name used by the offline stub; any ``*.pmap``-looking name works.
OFFLINE_CONTEXT = "jwst_offline.pmap"

#: Content of the stub ``server_config`` (read by crds with ``ast.literal_eval``).
STUB_SERVER_CONFIG = (
    "{'observatory': 'jwst', 'operational_context': '%(ctx)s', 'latest_context': '%(ctx)s', "
    "'edit_context': '%(ctx)s', 'force_remote_mode': False, 'bad_files_list': [], 'mappings': [], "
    "'last_synced': 'offline stub'}\n"
)


def server_config_path(crds_path: str | os.PathLike[str]) -> Path:
    """Return where crds looks for the JWST server configuration in a cache.

    Parameters
    ----------
    crds_path : path
        The CRDS cache root (``CRDS_PATH``).

    Returns
    -------
    Path
        ``<crds_path>/config/jwst/server_config``.
    """
    return Path(crds_path) / "config" / "jwst" / "server_config"


def apply_crds_environment(
    crds_path: str | os.PathLike[str],
    server_url: str | None = None,
    context: str | None = None,
    offline_stub: bool = False,
    mpl_config_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Set ``CRDS_*``, ``STPIPE_DISABLE_CRDS_STEPPARS`` and ``MPLCONFIGDIR`` for this process.

    Must be called before jwst or crds is imported (a warning is logged otherwise,
    because crds would keep its old settings). Idempotent.

    Parameters
    ----------
    crds_path : path
        CRDS cache root; created if missing. Becomes ``CRDS_PATH`` (absolute).
    server_url : str or None
        ``CRDS_SERVER_URL``. None means :data:`SERVERLESS_URL` (no RPC calls). A real URL
        lets crds contact the server; note crds' default client timeout is 3600 s.
    context : str or None
        ``CRDS_CONTEXT``, e.g. ``"jwst_1322.pmap"``. None leaves any existing value alone,
        except in offline mode where it defaults to :data:`OFFLINE_CONTEXT`.
    offline_stub : bool
        If True, write the stub ``server_config`` when the cache has none (an existing
        one is never overwritten).
    mpl_config_dir : path or None
        ``MPLCONFIGDIR`` (matplotlib writes a font cache at first import). None keeps an
        existing writable value, else uses ``<crds_path>/../mplconfig`` if it can be made,
        else a per-user directory in the temp dir.

    Returns
    -------
    dict
        The environment variables this call set, name -> value.

    Raises
    ------
    OSError
        If the cache directory or the stub cannot be written.
    """
    root = Path(crds_path).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    ctx = context if context is not None else (OFFLINE_CONTEXT if offline_stub else None)
    values = {
        "CRDS_PATH": str(root),
        "CRDS_SERVER_URL": server_url or SERVERLESS_URL,
        "STPIPE_DISABLE_CRDS_STEPPARS": "true",
        "MPLCONFIGDIR": _mpl_dir(root, mpl_config_dir),
    }
    if ctx is not None:
        values["CRDS_CONTEXT"] = ctx
    already = sorted(name for name in ("crds", "jwst", "stpipe") if name in sys.modules)
    changed = {k: v for k, v in values.items() if os.environ.get(k) != v}
    if already and changed:
        logger.warning("CRDS environment changed after %s was imported; crds may keep its old settings: %s",
                       ", ".join(already), ", ".join(sorted(changed)))
    os.environ.update(values)
    if offline_stub:
        write_stub_server_config(root, ctx or OFFLINE_CONTEXT)
    logger.debug("CRDS environment: %s", values)
    return values


def write_stub_server_config(crds_path: str | os.PathLike[str], context: str = OFFLINE_CONTEXT) -> Path:
    """Write the offline stub ``server_config`` unless one already exists.

    The file is written under a temporary name and renamed, so concurrent workers never
    read a partial file.

    Parameters
    ----------
    crds_path : path
        CRDS cache root.
    context : str
        Context name to record as operational, latest and edit context.

    Returns
    -------
    Path
        The ``server_config`` path (existing or new).
    """
    path = server_config_path(crds_path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".server_config.{os.getpid()}.tmp")
    tmp.write_text(STUB_SERVER_CONFIG % {"ctx": context})
    os.replace(tmp, path)
    logger.info("Wrote offline CRDS stub %s", path)
    return path


def _mpl_dir(root: Path, requested: str | os.PathLike[str] | None) -> str:
    if requested is not None:
        path = Path(requested).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    current = os.environ.get("MPLCONFIGDIR")
    if current and os.path.isdir(current) and os.access(current, os.W_OK):
        return current
    for candidate in (root.parent / "mplconfig", Path(os.environ.get("TMPDIR", "/tmp")) / f"mplconfig-{os.getuid()}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return str(candidate)
    raise OSError(f"no writable directory for MPLCONFIGDIR near {root}")
