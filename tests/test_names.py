"""Names that mean one thing: a public class or type alias is defined in one module of
podgate's rooms, and every other module imports it from there (two ``Settings``, two
``Health`` or three ``Kind`` make a reader ask which one a module means).

Read from the source: every top-level ``class`` and every top-level ``Name = …`` whose name
is CapWords (a type alias such as ``Kind = Literal[...]``) in ``proxy/``, ``adapters/``,
``serverless/``, ``workers/`` and ``supervisor/``. Private names (``_Pending``) are the
module's own business and may repeat."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("proxy", "adapters", "serverless", "workers", "supervisor")


def _is_type_name(name: str) -> bool:
    return name[:1].isupper() and not name.isupper() and "_" not in name


def defined_types(path: Path) -> list[str]:
    """The public classes and CapWords aliases a module defines at its top level."""
    names = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("_") and _is_type_name(n)]


def homes(root: Path = ROOT) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for room in ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            for name in defined_types(path):
                found[name].append(str(path.relative_to(root)))
    return found


def test_every_public_type_has_one_home():
    twice = {name: where for name, where in homes().items() if len(where) > 1}
    assert twice == {}


def test_the_rule_sees_a_second_definition(tmp_path):
    for room, text in (("proxy", "Kind = int\nclass Settings: ...\n"),
                       ("adapters", "from typing import Literal\nKind = Literal['a']\n"),
                       ("serverless", "class Settings:\n    pass\nclass _Own: ...\n"),
                       ("workers", "class _Own: ...\nSETTINGS = 1\n")):
        (tmp_path / room).mkdir()
        (tmp_path / room / "m.py").write_text(text)
    (tmp_path / "supervisor").mkdir()
    twice = {n: w for n, w in homes(tmp_path).items() if len(w) > 1}
    assert twice == {"Kind": ["proxy/m.py", "adapters/m.py"], "Settings": ["proxy/m.py", "serverless/m.py"]}
