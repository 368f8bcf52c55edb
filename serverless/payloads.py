"""Which JSON bodies the endpoint accepts: only what every party downstream can decode.

The routes parse bodies with msgspec, which keeps ``input``, ``s3Config`` and a worker's
``output`` as :class:`msgspec.Raw` (copied verbatim into job-take payloads and status bodies,
never re-encoded), so msgspec checks no more than their JSON syntax. Downstream, the runpod
SDK worker decodes a whole job-take batch with Python's ``json`` (through aiohttp) and drops
the *whole batch*, every job in it, when one job cannot be decoded (reference
runpod-protocol.md §2.4); Python clients decode ``/status`` the same way. Python's ``json``
refuses three things that msgspec's skipping of a raw value lets through, so
:func:`check` refuses them too:

- **invalid UTF-8**: aiohttp decodes the response text strictly (this also covers
  surrogates encoded as UTF-8 bytes; lone surrogate *escapes* such as ``"\\ud800"`` msgspec
  refuses itself);
- **integers of more than 4300 digits** (CPython's ``int`` conversion limit, which ``json``
  hits; floats have none);
- **deep nesting**: ``json`` and msgspec both stop near 1000 levels minus the caller's own
  stack (msgspec with a ``RecursionError``, which the routes must also turn into a 400), so
  the bound is a fixed :data:`MAX_JSON_DEPTH`, far below that, the same for every caller.

:func:`check` expects a body msgspec already parsed (valid JSON). It is linear in the body
and cheap where nothing is suspect (a UTF-8 decode, two bracket counts, a search for a long
run of digits): only a body with more containers than the depth bound, or with a long run
of digits somewhere, is scanned with the strings taken out (about 10 ms per MB).
"""

from __future__ import annotations

import itertools
import re
from array import array

#: the deepest nesting of arrays and objects a body may have (the body's own object counts).
MAX_JSON_DEPTH = 256
#: the most digits an integer may have (CPython's default ``sys.get_int_max_str_digits()``).
MAX_INT_DIGITS = 4300

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: an integer literal of more digits than allowed: not the fraction or exponent of a float
#: (floats of any length decode), and not the integer part of one.
_LONG_INT = re.compile(rb"(?<![\d.eE+-])-?\d{%d,}(?![\d.eE])" % (MAX_INT_DIGITS + 1))
#: every digit to "0", every other byte to " ": a run of digits then shows as a run of "0"
_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGIT_RUN = b"0" * (MAX_INT_DIGITS + 1)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: opening brackets to +1 and closing ones to -1 (0xff, as a signed byte)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class PayloadError(ValueError):
    """A body the endpoint refuses (HTTP 400); the message says why."""


def too_deep() -> PayloadError:
    """The error for a body nested deeper than :data:`MAX_JSON_DEPTH` (also what the routes
    answer when msgspec itself gives up with a ``RecursionError``)."""
    return PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def check(body: bytes) -> None:
    """Raise :class:`PayloadError` unless ``body`` (valid JSON) can be decoded by every party
    downstream (see the module docstring)."""
    try:
        str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    may_nest_too_deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    may_hold_long_int = len(body) > MAX_INT_DIGITS and _DIGIT_RUN in body.translate(_ZEROS)
    if not (may_nest_too_deep or may_hold_long_int):
        return
    bare = _STRING.sub(b'""', body)  # strings may hold anything; structure and numbers lie outside them
    if may_hold_long_int and _LONG_INT.search(bare):
        raise PayloadError(f"an integer has more than {MAX_INT_DIGITS} digits")
    if may_nest_too_deep and depth(bare.translate(None, _NOT_BRACKETS)) > MAX_JSON_DEPTH:
        raise too_deep()


def depth(brackets: bytes) -> int:
    """The nesting depth of a balanced sequence of ``[]{}`` bytes."""
    if not brackets:
        return 0
    return max(itertools.accumulate(array("b", brackets.translate(_STEPS))))
