"""msgspec's validation errors, read: the one place that parses their text.

msgspec reports a ``ValidationError`` as one line, ``<problem> - at `$.<path>``` (no
location when the problem is at the top level), e.g.
``Expected `int` >= 1 - at `$.items[0].n``` or
``Object missing required field `name` - at `$.items[0]```. ``read_validation_error``
splits it into a ``ValidationFailure``; ``value_at`` finds the value a path points to in the
decoded document, for a message that repeats it, and ``type_at`` the type (with its ``Meta``
constraints: ``ge``, ``le`` …) that the path's value was checked against. Users:
``adapters.openai_protocol`` (request bodies, in OpenAI's words) and ``proxy.settings`` (the
settings file, naming the key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

__all__ = ["Bound", "ValidationFailure", "read_validation_error", "type_at", "value_at"]

_LOCATED_RE = re.compile(r" - at `\$\.?(.*)`$")
_MISSING_RE = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN_RE = re.compile(r"unknown field `([^`]*)`")
_BOUND_RE = re.compile(r"^Expected `(int|float)` (<=|>=|<|>) (\S+)$")
_STEP_RE = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


class Bound(NamedTuple):
    """The constraint a value broke: ``Bound("int", ">=", "1")``."""

    type: str
    """``int`` or ``float``."""
    op: str
    """``<=``, ``>=``, ``<`` or ``>``: what the value must be, against ``limit``."""
    limit: str
    """The bound as msgspec writes it (``1``, ``0.0``)."""


@dataclass(frozen=True, slots=True)
class ValidationFailure:
    message: str
    """msgspec's whole message."""
    problem: str
    """The message without its location."""
    path: str | None
    """Where: ``items[0].n`` (``""`` for the document itself); None when msgspec gave no
    location (a problem at the top level, such as an unknown top-level field)."""
    missing: str | None
    """The field a "missing required field" problem names, else None."""
    unknown: str | None
    """The field an "unknown field" problem names, else None."""
    bound: Bound | None
    """The range constraint a located value broke, else None."""


def read_validation_error(exc: msgspec.ValidationError) -> ValidationFailure:
    message = str(exc)
    located = _LOCATED_RE.search(message)
    problem = message[: located.start()] if located else message
    path = located.group(1) if located else None
    missing, unknown = _MISSING_RE.search(problem), _UNKNOWN_RE.search(problem)
    bound = _BOUND_RE.match(problem) if located else None
    return ValidationFailure(message, problem, path, missing.group(1) if missing else None,
                             unknown.group(1) if unknown else None, Bound(*bound.groups()) if bound else None)


def value_at(raw: Any, path: str) -> Any:
    """The value at a failure's ``path`` (``messages[0].role``) in the decoded document;
    raises ``KeyError`` / ``IndexError`` / ``TypeError`` when there is none."""
    obj = raw
    for key, index in _STEP_RE.findall(path):
        obj = obj[int(index)] if index else obj[key]
    return obj


def type_at(cls: Any, path: str) -> msgspec.inspect.Type:
    """The type (``msgspec.inspect``) that ``cls`` expects at a failure's ``path``: through
    Struct fields and list items, and of an optional field (``T | None``) its ``T``; raises
    ``LookupError`` for a path that ``cls`` has not."""
    info = msgspec.inspect.type_info(cls)
    for key, index in _STEP_RE.findall(path):
        if index and isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.TupleType)):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.item_types[int(index)]
        elif not index and isinstance(info, msgspec.inspect.StructType):
            field = next((f for f in info.fields if f.encode_name == key), None)
            if field is None:
                raise LookupError(path)
            info = field.type
        else:
            raise LookupError(path)
    if isinstance(info, msgspec.inspect.UnionType):
        types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(types) == 1:
            info = types[0]
    return info
