"""Server-sent events: the incremental parser for worker output, and the encoder for
what podgate writes to clients.

``SSEParser`` follows the WHATWG "event stream interpretation" rules: ``field: value``
lines (one optional space after the colon is dropped), ``data`` lines of one event joined
with ``\\n``, ``event`` / ``id`` fields, ``retry`` and unknown fields ignored, ``:``
comment lines ignored, lines ended by CRLF, LF or CR, an event dispatched at each blank
line (and only when it has data), a leading BOM dropped. Input may be split anywhere —
mid-line, mid-event, between the CR and LF of a CRLF, and (for ``bytes`` input) inside a
UTF-8 character: an incremental UTF-8 decoder (invalid bytes → U+FFFD) keeps the partial
character for the next feed. ``str`` and ``bytes`` feeds may both be used.

One deliberate leniency: ``close()`` dispatches a last event that has data but no final
blank line (workers cut off mid-stream), where the spec would discard it; pass
``flush=False`` for the strict behaviour.

``encode_event(payload)`` / ``DONE`` / ``comment(text)`` build the bytes podgate writes.
"""

from __future__ import annotations

import codecs

import msgspec

__all__ = ["SSEEvent", "SSEParser", "encode_event", "encode_data", "comment", "DONE"]

DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.encode


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event. ``event`` is ``"message"`` unless an ``event:`` field set it;
    ``id`` is the last event id seen (``None`` if none)."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Incremental SSE parser: ``feed(chunk) -> list[SSEEvent]``, ``close() -> list``."""

    __slots__ = ("_line", "_data", "_event", "_last_id", "_cr", "_bom", "_decoder")

    def __init__(self) -> None:
        self._line = ""  # incomplete last line
        self._data: list[str] = []  # data lines of the event being built
        self._event = ""  # event type of the event being built
        self._last_id: str | None = None
        self._cr = False  # the last feed ended with CR (its LF may come next)
        self._bom = True  # still at the start of the stream
        self._decoder: codecs.IncrementalDecoder | None = None  # UTF-8, made on the first bytes feed

    @property
    def idle(self) -> bool:
        """True when nothing is buffered: no partial line, no partial event."""
        return not self._line and not self._data and not self._event

    def feed(self, chunk: str | bytes | bytearray | memoryview) -> list[SSEEvent]:
        if not isinstance(chunk, str):
            if self._decoder is None:
                self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
            chunk = self._decoder.decode(chunk)
        if not chunk:
            return []
        if self._bom:
            self._bom = False
            if chunk[0] == "\ufeff":
                chunk = chunk[1:]
        if "\r" in chunk or self._cr:
            if self._cr and chunk.startswith("\n"):
                chunk = chunk[1:]
            self._cr = chunk.endswith("\r")
            chunk = chunk.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in chunk:
            self._line += chunk
            return []
        lines = (self._line + chunk).split("\n")
        self._line = lines.pop()
        return self._lines(lines)

    def close(self, *, flush: bool = True) -> list[SSEEvent]:
        """End of stream. Feeds any bytes held by the UTF-8 decoder, then (``flush``)
        dispatches an unterminated last event; otherwise discards it, as the spec says."""
        out: list[SSEEvent] = []
        if self._decoder is not None:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                out.extend(self.feed(tail))
        if flush:
            pending = [self._line] if self._line else []
            pending.append("")
            out.extend(self._lines(pending))
        self._line = ""
        self._data = []
        self._event = ""
        return out

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    out.append(SSEEvent("\n".join(data), self._event or "message", self._last_id))
                    data = self._data = []
                self._event = ""
                continue
            if line[0] == ":":
                continue
            # fast path: "data: ..." / "data:..."
            if line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
                continue
            colon = line.find(":")
            if colon < 0:
                field, value = line, ""
            else:
                field = line[:colon]
                value = line[colon + 2:] if line[colon + 1:colon + 2] == " " else line[colon + 1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                self._event = value
            elif field == "id":
                if "\x00" not in value:
                    self._last_id = value
            # "retry" and unknown fields are ignored
        return out


def encode_data(payload: bytes) -> bytes:
    """``data: <payload>\\n\\n`` for an already-encoded JSON payload (single line)."""
    return b"data: " + payload + b"\n\n"


def encode_event(obj: object) -> bytes:
    """``data: <json>\\n\\n`` for a Struct or any JSON-able value."""
    return b"data: " + _encode(obj) + b"\n\n"


def comment(text: str = "ping") -> bytes:
    """A keep-alive comment line (clients ignore lines starting with ``:``)."""
    return b": " + text.encode() + b"\n\n"
