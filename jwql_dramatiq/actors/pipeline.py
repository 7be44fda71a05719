"""The JWST pipeline actors, keeping the names and arguments of JWQL's Celery tasks.

Both read ``<transfer_dir>/incoming/<input_file_name>``, work in the worker's own
``<working>/calibrated_data``, and publish ``<short_name>_<ext>.fits`` into
``<transfer_dir>/outgoing`` atomically (a temporary name, then a rename). The steps run in this
process, which is the task's fresh child; there is no shell subprocess.
"""

from __future__ import annotations

import os
from typing import Any

from ..registry import actor


def _dirs(input_file_name: str) -> tuple[Any, str, str]:
    from ..broker import get_config
    from ..transfer import incoming_dir, outgoing_dir, resolve_inside

    config = get_config()
    input_path = resolve_inside(incoming_dir(config.transfer_dir), input_file_name)
    work_dir = os.path.join(config.working_dir, "calibrated_data")
    return input_path, work_dir, str(outgoing_dir(config.transfer_dir))


@actor(actor_name="run_calwebb_detector1")
def run_calwebb_detector1(input_file_name: str, short_name: str, ext_or_exts, instrument: str,
                          step_args: dict | None = None) -> dict[str, str]:
    """Run calwebb_detector1 step by step on an incoming file and publish the requested products.

    Parameters
    ----------
    input_file_name : str
        Bare name of the file in ``<transfer_dir>/incoming``.
    short_name : str
        Prefix of the product names.
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

    input_path, work_dir, output_dir = _dirs(input_file_name)
    return run(input_path, short_name, ext_or_exts, instrument, work_dir, output_dir, step_args=step_args)


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

    input_path, work_dir, output_dir = _dirs(input_file_name)
    return run(input_path, instrument, work_dir, output_dir, ramp_fit=ramp_fit, save_fitopt=save_fitopt,
               step_args=step_args)
