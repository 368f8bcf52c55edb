"""``adapters.validation``: msgspec's validation errors, read in one place (the request
validation of ``adapters.openai_protocol`` and the settings file of ``proxy.settings`` both
use it)."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from adapters.validation import Bound, read_validation_error, type_at, value_at


class Inner(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    n: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    t: Annotated[float, msgspec.Meta(gt=0)] = 1.0


class Outer(msgspec.Struct, forbid_unknown_fields=True):
    items: list[Inner] = []


def _failure(raw):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(raw, Outer)
    return read_validation_error(info.value)


def test_a_type_error_and_its_path():
    f = _failure({"items": [{"name": 1}]})
    assert (f.problem, f.path, f.missing, f.unknown, f.bound) == ("Expected `str`, got `int`", "items[0].name",
                                                            None, None, None)
    assert f.message == "Expected `str`, got `int` - at `$.items[0].name`"


def test_a_missing_or_unknown_field_is_named():
    f = _failure({"items": [{}]})
    assert (f.problem, f.path, f.missing, f.unknown) == ("Object missing required field `name`", "items[0]", "name", None)
    f = _failure({"items": [{"name": "a", "mystery": 1}]})
    assert (f.problem, f.path, f.missing, f.unknown) == ("Object contains unknown field `mystery`", "items[0]", None,
                                                      "mystery")


def test_a_field_unknown_at_the_top_has_no_path():
    f = _failure({"mystery": 1})
    assert (f.problem, f.path, f.unknown) == ("Object contains unknown field `mystery`", None, "mystery")


@pytest.mark.parametrize("raw,bound,path", [
    ({"items": [{"name": "a", "n": 9}]}, Bound("int", "<=", "5"), "items[0].n"),
    ({"items": [{"name": "a", "n": 0}]}, Bound("int", ">=", "1"), "items[0].n"),
    ({"items": [{"name": "a", "t": 0}]}, Bound("float", ">", "0.0"), "items[0].t"),
])
def test_a_value_out_of_range_gives_its_bound(raw, bound, path):
    f = _failure(raw)
    assert (f.bound, f.path) == (bound, path)
    assert value_at(raw, f.path) == raw["items"][0]["n" if path.endswith("n") else "t"]


def test_value_at_walks_keys_and_indices():
    raw = {"a": [{"b": 1}, {"b": [2, 3]}]}
    assert value_at(raw, "a[1].b[1]") == 3
    with pytest.raises(KeyError):
        value_at(raw, "a[0].c")


def test_type_at_gives_the_constraints_a_path_was_checked_against():
    n = type_at(Outer, "items[3].n")
    assert isinstance(n, msgspec.inspect.IntType) and (n.ge, n.le) == (1, 5)
    assert type_at(Outer, "items[0].t").gt == 0
    with pytest.raises(LookupError):
        type_at(Outer, "items[0].nothing")
