"""Splitting streamed chunks to RunPod's 1 MB limit.

A worker posts one yielded value per job-stream request; the value's JSON encoding becomes
one ``/stream`` item ``{"output": value}``. When that encoding is larger than the limit:

- a **string** is split into consecutive substrings, each encoding to at most the limit,
  so a reader that concatenates the string chunks gets the original string back;
- a **list** is split into consecutive sub-lists (greedily, whole items), so concatenating
  the list chunks gives the original list; an item that alone is over the limit becomes a
  one-item list of its own;
- any other value (an object, a number) cannot be split without changing its meaning and
  is kept as one chunk.
"""

from __future__ import annotations

import msgspec

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def split_chunk(raw: bytes, limit: int) -> list[bytes]:
    """Return the JSON chunks (each ideally ``<= limit`` bytes) that ``raw`` becomes."""
    if len(raw) <= limit:
        return [raw]
    value = _decode(raw)
    if isinstance(value, str):
        return _split_str(value, limit)
    if isinstance(value, list):
        return _split_list(value, limit)
    return [raw]


def _split_str(text: str, limit: int) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    size = max(1, limit - 2)
    while i < len(text):
        n = size
        while True:
            piece = _encode(text[i:i + n])
            if len(piece) <= limit or n == 1:
                break
            n = max(1, min(n - 1, n * limit // len(piece) - 1))
        out.append(piece)
        i += n
    return out


def _split_list(items: list, limit: int) -> list[bytes]:
    out: list[bytes] = []
    current: list[bytes] = []
    size = 2  # "[]"
    for item in items:
        enc = _encode(item)
        extra = len(enc) + (1 if current else 0)
        if current and size + extra > limit:
            out.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
            extra = len(enc)
        current.append(enc)
        size += extra
    if current or not out:
        out.append(b"[" + b",".join(current) + b"]")
    return out
