#!/usr/bin/env python3
"""Fail on private names of our dependencies used in jwql_dramatiq/ (issue 13, "stand on public interfaces").

Usage: ``python scripts/check_private_names.py [--allow FILE] [ROOT ...]``

Flags, in every ``.py`` file under each ROOT (default: ``jwql_dramatiq``):

- ``from <dependency>[.sub] import _name`` (a name with one leading underscore), and
  ``import <dependency>._private`` or ``from <dependency>._private import ...``;
- ``<name>._attr`` where ``<name>`` was bound by an import of a dependency, or of something
  imported from one (``from dramatiq.middleware import CurrentMessage`` then
  ``CurrentMessage._MESSAGE``); also ``<that>.<public>._attr`` chains.

- ``<anything>._attr`` (and ``getattr(x, "_attr")``, ``setattr``, ``hasattr``) where ``_attr`` is
  defined nowhere in the checked package: an inherited or foreign private name, such as
  ``self._lookup_options`` in a subclass of a Dramatiq class, or ``message._exception``.
  Attributes of the standard library's modules (``os._exit``) and namedtuple's documented
  ``_replace``/``_asdict``/``_fields``/``_make`` are not flagged.

Dunder names (``__version__``) are public. A use is allowed only by a line of the allow-list
(default ``.ci/private-names-allowed.txt``): ``path:name  # reason and the issue that removes it``,
where ``name`` is the private name (``_RedisConsumer``). Allowed uses are printed as a summary;
anything else is listed as ``file:line: what`` and the exit code is 1. An allow-list line that
matches nothing is reported too (exit 1), so the list only shrinks.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

#: Top-level import names of the dependencies whose private names we must not use.
DEPENDENCIES = frozenset({
    "dramatiq", "redis", "asdf", "configobj", "jwst", "stpipe", "stcal", "stdatamodels", "astropy", "numpy",
    "crds", "celery", "kombu", "scipy", "gwcs", "psutil", "yaml", "watchdog", "redis_lock", "jsonschema",
})

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ALLOW = REPO / ".ci" / "private-names-allowed.txt"


def is_private(name: str) -> bool:
    """One leading underscore, and not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


#: namedtuple's documented methods and attributes (public despite the underscore).
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def defined_names(paths: list[Path]) -> set[str]:
    """Every private name the checked package defines itself (functions, classes, attributes, variables)."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                if getattr(node, "level", 0) or module.startswith("jwql_dramatiq"):
                    names.update(a.name for a in node.names)
                    names.update(module.split("."))
    return {n for n in names if is_private(n)}


class _Finder(ast.NodeVisitor):
    """Collects ``(line, private name, description)`` for one module."""

    def __init__(self, ours: set[str] | None = None) -> None:
        self.ours = ours or set()  # private names the package defines itself
        self.bound: dict[str, str] = {}  # local name -> dotted origin in a dependency
        self.other_modules: set[str] = set()  # names bound by imports of anything else (os, sys)
        self.found: list[tuple[int, str, str]] = []

    def _dependency(self, module: str | None) -> bool:
        return bool(module) and module.split(".")[0] in DEPENDENCIES

    def visit_Import(self, node: ast.Import) -> None:  # noqa: D102
        for alias in node.names:
            if not self._dependency(alias.name):
                self.other_modules.add(alias.asname or alias.name.split(".")[0])
                continue
            for part in alias.name.split("."):
                if is_private(part):
                    self.found.append((node.lineno, part, f"import {alias.name}"))
            local = alias.asname or alias.name.split(".")[0]
            self.bound[local] = alias.name if alias.asname else alias.name.split(".")[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: D102
        if node.level == 0 and self._dependency(node.module):
            for part in node.module.split("."):
                if is_private(part):
                    self.found.append((node.lineno, part, f"from {node.module} import ..."))
            for alias in node.names:
                if is_private(alias.name):
                    self.found.append((node.lineno, alias.name, f"from {node.module} import {alias.name}"))
                self.bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: D102
        if is_private(node.attr):
            origin = self._origin(node.value)
            if origin is not None:
                self.found.append((node.lineno, node.attr, f"{origin}.{node.attr}"))
            elif self._foreign(node.attr, node.value):
                self.found.append((node.lineno, node.attr, f"{ast.unparse(node)} (defined nowhere in the package)"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: D102
        if (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and is_private(node.args[1].value)):
            name = node.args[1].value
            origin = self._origin(node.args[0])
            if origin is not None or self._foreign(name, node.args[0]):
                self.found.append((node.lineno, name, ast.unparse(node)))
        self.generic_visit(node)

    def _foreign(self, attr: str, base: ast.expr) -> bool:
        """A private attribute the package does not define, on something not a stdlib module."""
        if attr in self.ours or attr in NAMEDTUPLE_API:
            return False
        return not (isinstance(base, ast.Name) and base.id in self.other_modules)

    def _origin(self, node: ast.expr) -> str | None:
        """The dotted dependency path an expression names, if it is ``name`` or ``name.attr...``."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._origin(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None


def find_private_uses(path: Path, ours: set[str] | None = None) -> list[tuple[int, str, str]]:
    """``(line, private name, description)`` for each private dependency name used in ``path``.

    ``ours``: the private names the package defines (see :func:`defined_names`); without it only
    names reached through a dependency's import are found.
    """
    finder = _Finder(ours)
    finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return sorted(set(finder.found))


def read_allow_list(path: Path) -> dict[tuple[str, str], str]:
    """``{(path, name): reason}`` from the allow-list file (missing file: empty)."""
    allowed: dict[tuple[str, str], str] = {}
    if not path.exists():
        return allowed
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry, _, reason = line.partition("#")
        where, sep, name = entry.strip().rpartition(":")
        if not sep or not where or not name.strip() or not reason.strip():
            raise SystemExit(f"{path}:{number}: expected 'path:name  # reason (issue)', got {raw!r}")
        allowed[(where.strip(), name.strip())] = reason.strip()
    return allowed


def main(argv: list[str] | None = None) -> int:
    """Run the check; return 0 when every private use is allow-listed, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", default=["jwql_dramatiq"], help="directories to check (from the repo)")
    parser.add_argument("--allow", type=Path, default=DEFAULT_ALLOW, help="the allow-list file")
    args = parser.parse_args(argv)
    allowed = read_allow_list(args.allow)
    used: set[tuple[str, str]] = set()
    failures: list[str] = []
    summary: list[str] = []
    paths = []
    for root in args.roots:
        base = (REPO / root) if not Path(root).is_absolute() else Path(root)
        paths += sorted(base.rglob("*.py"))
    ours = defined_names(paths)
    for path in paths:
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        for line, name, what in find_private_uses(path, ours):
            if (rel, name) in allowed:
                used.add((rel, name))
                summary.append(f"  {rel}:{line}: {what}  ({allowed[(rel, name)]})")
            else:
                failures.append(f"{rel}:{line}: private name of a dependency: {what}")
    stale = sorted(set(allowed) - used)
    if summary:
        print(f"check_private_names: {len(summary)} allow-listed use(s) ({args.allow.name}):")
        print("\n".join(summary))
    for where, name in stale:
        failures.append(f"{args.allow}: {where}:{name} is allow-listed but not used any more: remove the line")
    if failures:
        print(f"check_private_names: {len(failures)} problem(s):", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        return 1
    print("check_private_names: no other private names of dependencies are used.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
