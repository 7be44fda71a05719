"""Check step arguments against the jwst step classes' own parameter specs.

stpipe validates parameters with configobj, which turns the string ``"False"`` into a
bool and ``"4"`` into a float, and reports an unknown key as ``ValidationError: Extra
value 'foo' in root`` without naming the step. Here every key must exist in the step's
spec and every value must already have the spec's type; the error names step and key.
jwst is imported inside the functions only.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from jwql_dramatiq.errors import BadInput
from jwql_dramatiq.pipeline.steps import PIPELINE_STEP_MAPPING, STEP_MODULES, known_step_names

logger = logging.getLogger(__name__)

#: Spec parameters a caller may not set: the tasks own where files go and how steps chain.
RESERVED_PARAMETERS: frozenset[str] = frozenset(
    {"output_dir", "output_file", "pre_hooks", "post_hooks", "input_dir", "search_output_file"}
)


def step_class(step: str, pipeline: str = "cal") -> type:
    """Import and return the jwst step class for a step name.

    Parameters
    ----------
    step : str
        jwql step name (``pipeline="cal"``) or Detector1 alias (``pipeline="jump"``).
    pipeline : {"cal", "jump"}
        Which naming ``step`` uses.

    Returns
    -------
    type
        A ``stpipe.Step`` subclass.

    Raises
    ------
    BadInput
        If the step is unknown for the pipeline.
    """
    if step not in known_step_names(pipeline):
        raise BadInput(f"unknown step {step!r} for the {pipeline} pipeline")
    if pipeline == "cal":
        module = importlib.import_module(STEP_MODULES[step])
        return getattr(module, PIPELINE_STEP_MAPPING[step])
    from jwst.pipeline.calwebb_detector1 import Detector1Pipeline

    return Detector1Pipeline.step_defs[step]


def check_step_args_against_specs(step_args: Mapping[str, Mapping[str, Any]], pipeline: str = "cal") -> None:
    """Check parameter names and value types against each step's jwst spec.

    Type rules (JSON types, no string conversion): ``boolean`` needs a bool;
    ``integer`` an int; ``float`` an int or float; ``string``, ``output_file`` and
    ``is_string_or_datamodel`` a str; ``option(...)`` one of the listed strings;
    ``list``/``int_list``/``float_list`` a list (of ints / numbers). ``None`` is accepted
    only where the spec's default is None. Directory and hook parameters
    (:data:`RESERVED_PARAMETERS`) are refused because the tasks set them.

    Parameters
    ----------
    step_args : dict
        Output of :func:`jwql_dramatiq.pipeline.steps.validate_step_args`.
    pipeline : {"cal", "jump"}
        Naming of the step keys.

    Raises
    ------
    BadInput
        Naming the step and the parameter.
    """
    for step, params in step_args.items():
        spec = step_class(step, pipeline).load_spec_file()
        for key, value in params.items():
            where = f"step_args[{step!r}][{key!r}]"
            if key in RESERVED_PARAMETERS:
                raise BadInput(f"{where} is set by the task and cannot be given")
            if key not in spec:
                raise BadInput(f"unknown parameter {key!r} for step {step!r}; known: {', '.join(sorted(spec))}")
            fun_name, fun_args, default = parse_check(spec[key])
            _check_value(where, value, fun_name, fun_args, default)


def _check_value(where: str, value: object, fun_name: str, fun_args: list[Any], default: object) -> None:
    if value is None:
        if default in (None, "None"):
            return
        raise BadInput(f"{where} may not be None")
    ok: bool
    expected: str
    if fun_name == "boolean":
        ok, expected = isinstance(value, bool), "a bool"
    elif fun_name == "integer":
        ok, expected = _is_int(value), "an integer"
    elif fun_name == "float":
        ok, expected = _is_number(value), "a number"
    elif fun_name in ("string", "output_file", "is_string_or_datamodel", "input_file"):
        ok, expected = isinstance(value, str), "a string"
    elif fun_name == "option":
        ok, expected = isinstance(value, str) and value in fun_args, f"one of {fun_args}"
    elif fun_name == "int_list":
        ok, expected = isinstance(value, list | tuple) and all(_is_int(v) for v in value), "a list of integers"
    elif fun_name == "float_list":
        ok, expected = isinstance(value, list | tuple) and all(_is_number(v) for v in value), "a list of numbers"
    elif fun_name in ("list", "force_list"):
        ok, expected = isinstance(value, list | tuple), "a list"
    else:
        logger.debug("No type rule for spec check %r of %s; accepting %r", fun_name, where, value)
        return
    if not ok:
        raise BadInput(f"{where} must be {expected}, not {value!r} ({type(value).__name__})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def skipped_by_default(step: str, pipeline: str = "cal") -> bool:
    """Return True when jwst's own spec for the step says ``skip = boolean(default=True)``.

    ``Step.call`` runs a standalone step even then (stpipe resets ``skip`` to False), so
    the step-by-step path asks this to keep jwst's default, as ``Detector1Pipeline`` does.

    Parameters
    ----------
    step : str
        jwql step name (``pipeline="cal"``) or Detector1 alias (``pipeline="jump"``).
    pipeline : {"cal", "jump"}
        Which naming ``step`` uses.

    Returns
    -------
    bool

    Raises
    ------
    BadInput
        If the step is unknown for the pipeline.
    """
    spec = step_class(step, pipeline).load_spec_file()
    if "skip" not in spec:
        return False
    _name, _args, default = parse_check(spec["skip"])
    return str(default).strip().lower() == "true"


class _CheckRecorder(dict):
    """configobj check functions that, instead of checking, return how they were called.

    Handed to configobj's public ``Validator.check`` (as the validator's ``functions``), it
    gives the check's name, positional arguments and raw default as configobj itself parses
    them, for every check name (jwst's own, such as ``is_string_or_datamodel``, included).
    """

    def __missing__(self, name: str):
        def record(value: Any, *args: Any, **_kwargs: Any) -> tuple[str, list[Any], Any]:
            return name, list(args), value

        return record


def parse_check(check: str) -> tuple[str, list[Any], Any]:
    """Split a configobj check (``"option('a', 'b', default='a')"``) with configobj's public API.

    Parameters
    ----------
    check : str
        One value of a step's spec.

    Returns
    -------
    tuple
        ``(name, positional arguments, default)``; the default is configobj's raw text
        (``"True"``, ``"None"``), or None when the check has none.
    """
    from configobj.validate import Validator, VdtMissingValue

    validator = Validator()
    validator.functions = _CheckRecorder()
    name, args, _ = validator.check(check, "")
    try:
        recorded = validator.check(check, None, missing=True)
    except VdtMissingValue:
        return name, args, None  # no default
    if recorded is None:  # configobj turns default=None into None before calling the check
        return name, args, "None"
    return name, args, recorded[2]
