"""The rooms' import rules (DESIGN.md): ``serverless/`` is the platform and imports nothing of
``proxy/``, ``adapters/`` or ``workers/``; ``adapters/`` imports nothing of ``proxy/``;
``supervisor/`` (the process tree, used by the endpoint and worker CLIs too) is a leaf that
imports none of podgate's other rooms.

The rule is read from the source: every ``import`` and ``from … import`` statement in every
module of a room, at any depth (inside functions, ``if TYPE_CHECKING:`` blocks, ``try``), with
relative imports resolved against the module's package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "serverless": ("proxy", "adapters", "workers"),
    "adapters": ("proxy",),
    "supervisor": ("proxy", "adapters", "serverless", "workers"),
}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file, in line order."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..pkg import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return sorted(found)


def violations(room: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / room).rglob("*.py")):
        for line, name in imported_modules(path, root):
            top = name.split(".", 1)[0]
            if top in forbidden:
                out.append(f"{path.relative_to(root)}:{line} imports {name}")
    return out


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_nothing_it_must_not(room):
    assert violations(room, FORBIDDEN[room]) == []


def test_the_rule_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The reader itself: a nested import and a relative one that climbs out of the room."""
    room = tmp_path / "serverless"
    (room / "sub").mkdir(parents=True)
    (room / "sub" / "m.py").write_text(
        "def f():\n    import proxy.app\n\nif True:\n    from ...adapters import errors\n"
        "from workers.smollm2 import handler\nfrom . import fine\n")
    assert violations("serverless", FORBIDDEN["serverless"], tmp_path) == [
        "serverless/sub/m.py:2 imports proxy.app",
        "serverless/sub/m.py:5 imports adapters",
        "serverless/sub/m.py:6 imports workers.smollm2",
    ]
