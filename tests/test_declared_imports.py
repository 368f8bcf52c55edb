"""Every third-party module the packages import is declared in pyproject.toml.

Reads the import statements of the installable packages (pyproject's
``[tool.setuptools.packages.find] include``) and maps each top-level module to the
distribution that provides it; that distribution must be named in ``dependencies`` or in an
optional extra other than ``test`` (the packages run without the test clients). A module
that works today only because something else happens to pull it in fails here.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _normalise(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0])


def _first_party() -> set[str]:
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in include}


def _imported_modules(packages: set[str]) -> dict[str, str]:
    """Top-level module -> one file that imports it, for every package that exists."""
    found: dict[str, str] = {}
    for package in sorted(packages):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared() -> None:
    project = _pyproject()["project"]
    declared = {_requirement_name(s) for s in project["dependencies"]}
    for extra, specs in project.get("optional-dependencies", {}).items():
        if extra != "test":
            declared |= {_requirement_name(s) for s in specs}
    providers = importlib.metadata.packages_distributions()
    first_party = _first_party()

    undeclared = []
    for module, where in sorted(_imported_modules(first_party).items()):
        if module in sys.stdlib_module_names or module in first_party or module == "__future__":
            continue
        dists = {_normalise(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported in {where}) is not installed"
        if not dists & declared:
            undeclared.append(f"{module} ({where}; from {', '.join(sorted(dists))})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)
