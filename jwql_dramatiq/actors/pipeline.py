"""The JWST pipeline actors, keeping the names and arguments of JWQL's Celery tasks.

Both read ``<transfer_dir>/incoming/<input_file_name>``, work in the worker's own
``<working>/calibrated_data``, and publish ``<short_name>_<ext>.fits`` into
``<transfer_dir>/outgoing``. The steps run in this process, which is the task's fresh child;
there is no shell subprocess.

Each run goes through :func:`jwql_dramatiq.actors.fenced.run_fenced`: under the job lock
``job:<short_name>``, in a private staging directory, published at most once per message
(see that module). The steps' scratch directory and staging directory are removed when the
task ends, however it ends.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ..registry import actor
from .fenced import run_fenced


def _check_short_name(short_name: object) -> str:
    if not isinstance(short_name, str) or not short_name or short_name.startswith(".") or "/" in short_name \
            or "\\" in short_name or short_name in ("..",):
        raise BadInput(f"invalid short_name {short_name!r}: must be a non-empty file-name prefix without '/'")
    return short_name


def _max_cores(input_path) -> str:
    """The ``maximum_cores`` for this attempt: the worker's override after an out-of-memory kill, else
    the config's ``max_cores`` resolved for this input. Announced to the worker, which backs off from it."""
    from ..broker import get_config
    from ..executor import task
    from ..pipeline.guard import resolve_max_cores

    cores = task.attempt_max_cores() or resolve_max_cores(get_config().max_cores, input_path)
    task.announce_max_cores(cores)
    return cores


def _pool_starts(cores: str, step_args: object):
    """Fast starts for stcal's process pools (:mod:`..executor.spawn_zygote`) where a task child may use them.

    Only in a task child (forking a multi-threaded in-process worker is not safe), only if pools
    may start (``maximum_cores`` other than ``none``, here or in a step's arguments), and unless the
    config's ``pool_start`` is ``spawn``.
    """
    from ..broker import get_config
    from ..executor import task
    from ..executor.spawn_zygote import fast_pool_starts

    per_step = step_args.values() if isinstance(step_args, dict) else ()
    may_pool = cores != "none" or any(isinstance(a, dict) and "maximum_cores" in a for a in per_step)
    return fast_pool_starts(enabled=task.in_child() and may_pool and get_config().pool_start == "zygote")


def _with_deployment_step_args(instrument: str, pipeline: str, step_args: object, input_path: Path) -> dict:
    """The call's ``step_args`` merged over the config's deployment-level ones (the call wins)."""
    from ..broker import get_config
    from ..pipeline.deployment import input_subarray, with_deployment_defaults

    deployment = get_config().step_args
    subarray = input_subarray(input_path) if any("/" in key for key in deployment) else None
    return with_deployment_defaults(deployment, instrument, pipeline, step_args, subarray)


@actor(actor_name="run_calwebb_detector1")
def run_calwebb_detector1(input_file_name: str, short_name: str, ext_or_exts, instrument: str,
                          step_args: dict | None = None) -> dict[str, str]:
    """Run calwebb_detector1 step by step on an incoming file and publish the requested products.

    Parameters
    ----------
    input_file_name : str
        Bare name of the file in ``<transfer_dir>/incoming``.
    short_name : str
        Prefix of the product names (and the job lock's name).
    ext_or_exts : str or list of str
        Products wanted (jwql step names, ``"rateints"``, or ``"all"``).
    instrument : str
        ``nircam``, ``niriss``, ``fgs``, ``nirspec`` or ``miri``.
    step_args : dict, optional
        ``{step: {parameter: value}}`` with real JSON types.

    Returns
    -------
    dict
        Extension -> path of the published product in ``<transfer_dir>/outgoing``.
    """
    from ..pipeline import run_calwebb_detector1 as run

    _check_short_name(short_name)

    def in_staging(input_path, work_dir, staging):
        args, cores = _with_deployment_step_args(instrument, "cal", step_args, input_path), _max_cores(input_path)
        with _pool_starts(cores, args):
            return run(input_path, short_name, ext_or_exts, instrument, str(work_dir), str(staging),
                       step_args=args, max_cores=cores)

    return run_fenced("run_calwebb_detector1", input_file_name, short_name, in_staging,
                      publish_only_if_input_remains=True)


@actor(actor_name="calwebb_detector1_save_jump")
def calwebb_detector1_save_jump(input_file_name: str, instrument: str, ramp_fit: bool = True,
                                save_fitopt: bool = True, step_args: dict | None = None) -> dict[str, str | None]:
    """Run Detector1Pipeline on an incoming file, publishing the jump and ramp-fit products.

    Parameters
    ----------
    input_file_name : str
        Bare name of the file in ``<transfer_dir>/incoming``.
    instrument : str
        Instrument name.
    ramp_fit, save_fitopt : bool
        Also publish ``0_ramp_fit``/``1_ramp_fit``, and ``fitopt``.
    step_args : dict, optional
        ``{detector1_alias: {parameter: value}}``.

    Returns
    -------
    dict
        ``jump``, ``0_ramp_fit``, ``1_ramp_fit``, ``fitopt`` -> published path, or None if not asked for.
    """
    from ..pipeline import calwebb_detector1_save_jump as run
    from ..pipeline import short_name_from_path

    if not isinstance(input_file_name, str):
        raise BadInput(f"input file name {input_file_name!r} is not a file name")
    short_name = short_name_from_path(input_file_name)

    def in_staging(input_path, work_dir, staging):
        args, cores = _with_deployment_step_args(instrument, "jump", step_args, input_path), _max_cores(input_path)
        with _pool_starts(cores, args):
            return run(input_path, instrument, str(work_dir), str(staging), ramp_fit=ramp_fit,
                       save_fitopt=save_fitopt, step_args=args, max_cores=cores)

    return run_fenced("calwebb_detector1_save_jump", input_file_name, short_name, in_staging,
                      publish_only_if_input_remains=True)
