"""serverless.payloads.check: what a body may hold so that every Python party downstream (the
SDK worker decoding a job-take batch, runpod clients) can decode it."""

from __future__ import annotations

import json

import pytest

from serverless.payloads import MAX_INT_DIGITS, MAX_JSON_DEPTH, PayloadError, check, depth


def arrays(n: int) -> str:
    return "[" * n + "]" * n


def python_decodes(body: bytes) -> bool:
    """What the SDK worker does with a job-take response (aiohttp: strict UTF-8, then json)."""
    try:
        json.loads(str(body, "utf-8"))
    except (ValueError, RecursionError):
        return False
    return True


@pytest.mark.parametrize("body", [
    '{"a": 1%s}' % ("2" * (MAX_INT_DIGITS - 1)),
    '{"a": [-%s]}' % ("9" * MAX_INT_DIGITS),
    '{"a": 1%s.5, "b": 2e%s1, "c": 0.%s}' % ("1" * 5000, "0" * 5000, "3" * 5000),
    '{"a": "%s"}' % ("7" * 6000),
    '{"a": "%s"}' % ("[" * 5000),
    '{"a": "\\\\", "b": %s}' % arrays(MAX_JSON_DEPTH - 1),
    '{"a": "\\"[[[[", "b": %s}' % arrays(MAX_JSON_DEPTH - 1),
    '{"a": [%s]}' % ",".join([arrays(MAX_JSON_DEPTH - 2)] * 50),
], ids=["4300 digits", "negative 4300 digits", "long floats", "digits in a string", "brackets in a string",
        "escaped backslash then deep", "escaped quote then deep", "many containers, none too deep"])
def test_accepted(body):
    raw = body.encode()
    assert python_decodes(raw)
    check(raw)


@pytest.mark.parametrize("body", [
    b'{"a": 1' + b"2" * MAX_INT_DIGITS + b"}",
    b'{"a": [0, -' + b"9" * (MAX_INT_DIGITS + 1) + b"]}",
    b'{"a": ' + arrays(MAX_JSON_DEPTH).encode() + b"}",
    b'{"a": "' + b"]" * 1000 + b'", "b": ' + arrays(MAX_JSON_DEPTH).encode() + b"}",
    b'{"a": "\xff"}',
    b'{"a": "\xed\xa0\x80"}',
], ids=["4301 digits", "negative 4301 digits", "one level too deep", "too deep behind closing brackets in a string",
        "invalid UTF-8", "UTF-8-encoded surrogate"])
def test_refused(body):
    with pytest.raises(PayloadError):
        check(body)


def test_depth_counts_nesting():
    assert depth(b"") == 0
    assert depth(b"[]{}[]") == 1
    assert depth(b"[{[]}[]]") == 3
