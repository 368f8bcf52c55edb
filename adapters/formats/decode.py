"""The output decoder every worker format uses: one job's output items → normalized events.

Worker images get updated under us (worker-vllm Era B → C changed the native output
without an input change), so the decoder sniffs each item's shape
(reference/worker-formats.md §8.1) instead of trusting the configured format:

* ``str`` / ``bytes`` — SSE text fed to one incremental ``SSEParser`` kept across items
  and polls (Era C arbitrary slices, Era B batches of whole events, SGLang multi-line
  ``data:`` events); a string that starts with ``{`` while no SSE event is pending is one
  JSON object (SGLang non-stream). With ``strings="text"`` (TGI / text workers) a string
  is a text delta.
* ``list`` — several items (Era B ``RAW_OPENAI_OUTPUT=0`` chunk lists, aggregate lists).
* ``dict`` — an error (``error`` key, ``object == "error"``), an OpenAI chunk or response,
  worker-vllm native ``choices[].tokens`` (+ ``usage.input/output``), Era A0 ``text`` list,
  TGI / Era A1 ``{"text": delta}``, SGLang ``/generate`` ``text`` + ``meta_info``.

Formats with no finish reason (native, A0, TGI, text) get one synthesised on ``close()``:
``"length"`` when the worker's token count reached the request's limit (n = 1), else
``"stop"``; every choice that ended without a finish reason gets one too (``"tool_calls"``
if it made tool calls).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from adapters.errors import find_output_error, from_worker_error
from adapters.events import (
    ErrorEvent, Event, Finish, LogprobsDelta, ReasoningDelta, TextDelta, ToolCallDelta, Usage,
)
from adapters.formats.wire import WireItem, convert_item, decode_json_item
from adapters.sse import SSEParser

__all__ = ["SniffingDecoder"]

_DecodeErrors = (msgspec.DecodeError, msgspec.ValidationError)


def _unreadable(what: Any) -> ErrorEvent:
    snippet = what if isinstance(what, str) else repr(what)
    if len(snippet) > 200:
        snippet = snippet[:200] + "…"
    return from_worker_error(f"The worker returned output podgate cannot read: {snippet}", default=502)


class SniffingDecoder:
    """Decoder for one job (see the module docstring). Not thread-safe; one per job."""

    def __init__(
        self,
        kind: Literal["chat", "completion"] = "chat",
        *,
        strings: Literal["sse", "text"] = "sse",
        n: int = 1,
        max_tokens: int | None = None,
    ) -> None:
        self.kind = kind
        self._strings = strings
        self._n = n
        self._max_tokens = max_tokens
        self._sse = SSEParser()
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tools: set[int] = set()  # choices with tool calls
        self._synth = False  # saw a shape without finish reasons
        self._usage: Usage | None = None
        self._a0_input = 0
        self._recognized = False
        self._unknown: Any = None
        self.done = False  # saw "data: [DONE]"

    @classmethod
    def for_request(cls, kind: Literal["chat", "completion"], request: Any = None) -> SniffingDecoder:
        """A decoder that knows the request's ``n`` and token limit (to synthesise finish
        reasons for shapes that carry none); without a request, the defaults."""
        if request is None:
            return cls(kind)
        return cls(kind, n=request.choices, max_tokens=request.max_output_tokens)

    # -- public -----------------------------------------------------------------------

    def feed(self, item: Any) -> list[Event]:
        if isinstance(item, str):
            if self._strings == "text":
                return self._text(item)
            if self._sse.idle and item.lstrip()[:1] == "{":
                return self._json_text(item)
            return self._sse_events(self._sse.feed(item))
        if isinstance(item, dict):
            err = find_output_error(item)
            if err is not None:
                self._recognized = True
                return [err]
            try:
                wire = convert_item(item)
            except msgspec.ValidationError:
                return [_unreadable(item)]
            return self._wire(wire, item)
        if isinstance(item, list):
            out: list[Event] = []
            for x in item:
                out.extend(self.feed(x))
            return out
        if isinstance(item, (bytes, bytearray, memoryview)):
            if self._strings == "text":
                return self._text(bytes(item).decode("utf-8", "replace"))
            return self._sse_events(self._sse.feed(item))
        if item is not None and self._unknown is None:
            self._unknown = item
        return []

    def close(self) -> list[Event]:
        out: list[Event] = []
        if self._strings == "sse":
            out.extend(self._sse_events(self._sse.close()))
        choices = set(self._started)
        if self._synth or choices:
            choices.update(range(self._n))
        for i in sorted(choices - self._finished):
            out.append(Finish(self._default_reason(i), i))
            self._finished.add(i)
        return out

    def decode_final(self, output: Any) -> list[Event]:
        if output is None or output == [] or output == "":
            return [from_worker_error("The job completed without output.", default=502)]
        out = self.feed(output)
        out.extend(self.close())
        if not self._recognized and not any(isinstance(e, ErrorEvent) for e in out):
            return [_unreadable(self._unknown if self._unknown is not None else output)]
        return out

    # -- shapes -----------------------------------------------------------------------

    def _text(self, text: str) -> list[Event]:
        self._recognized = True
        self._synth = True
        if not text:
            return []
        self._started.add(0)
        return [TextDelta(text, 0)]

    def _json_text(self, text: str) -> list[Event]:
        try:
            obj = msgspec.json.decode(text)
        except msgspec.DecodeError:
            if self._unknown is None:
                self._unknown = text
            return []
        return self.feed(obj)

    def _sse_events(self, events: list) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            data = ev.data
            if data[:6] == "[DONE]":
                self.done = True
                self._recognized = True
                continue
            try:
                wire = decode_json_item(data)
            except _DecodeErrors:
                out.append(_unreadable(data))
                continue
            if wire.error or wire.object == "error":
                self._recognized = True
                try:
                    out.append(from_worker_error(msgspec.json.decode(data)))
                except msgspec.DecodeError:  # pragma: no cover - decoded once already
                    out.append(from_worker_error(data))
                continue
            out.extend(self._wire(wire, data))
        return out

    def _wire(self, w: WireItem, raw: Any) -> list[Event]:
        """One output item, by its shape: OpenAI-style ``choices`` (vLLM, sglang's OpenAI
        mode), Era A0's list of texts, a single ``text`` (TGI, Era A1, sglang native), or a
        usage-only object; anything else is remembered as the first unknown item."""
        if w.choices is not None:
            return self._choices_item(w)
        if isinstance(w.text, list):
            return self._text_list_item(w, w.text)
        if isinstance(w.text, str):
            return self._text_item(w, w.text)
        if w.usage is not None:  # a usage-only object
            self._recognized = True
            u = w.usage
            self._usage = Usage(
                u.prompt_tokens if u.prompt_tokens is not None else (u.input or 0),
                u.completion_tokens if u.completion_tokens is not None else (u.output or 0),
            )
            return [self._usage]
        if self._unknown is None:
            self._unknown = raw
        return []

    def _choices_item(self, w: WireItem) -> list[Event]:
        self._recognized = True
        out: list[Event] = []
        for pos, c in enumerate(w.choices or ()):
            i = c.index if c.index is not None else pos
            if c.tokens is not None:  # worker-vllm native
                self._synth = True
                self._started.add(i)
                for t in c.tokens:
                    if t:
                        out.append(TextDelta(t, i))
            d = c.delta if c.delta is not None else c.message
            if d is not None:
                self._started.add(i)
                r = d.reasoning if d.reasoning is not None else d.reasoning_content
                if r:
                    out.append(ReasoningDelta(r, i))
                if d.content:
                    out.append(TextDelta(d.content, i))
                if d.tool_calls:
                    self._tools.add(i)
                    for k, tc in enumerate(d.tool_calls):
                        fn = tc.function
                        out.append(ToolCallDelta(
                            tool_index=tc.index if tc.index is not None else k,
                            id=tc.id or None,
                            name=(fn.name or None) if fn is not None else None,
                            arguments=(fn.arguments or "") if fn is not None else "",
                            index=i,
                        ))
            if c.text is not None:
                self._started.add(i)
                if c.text:
                    out.append(TextDelta(c.text, i))
            if c.logprobs is not None:
                out.append(LogprobsDelta(c.logprobs, i))
            if c.finish_reason:
                self._started.add(i)
                self._finished.add(i)
                out.append(Finish(c.finish_reason, i))
        if w.usage is not None:
            u = w.usage
            if u.prompt_tokens is not None or u.completion_tokens is not None:
                usage = Usage(u.prompt_tokens or 0, u.completion_tokens or 0)
            else:
                usage = Usage(u.input or 0, u.output or 0)
            self._usage = usage
            out.append(usage)
        return out

    def _text_list_item(self, w: WireItem, texts: list) -> list[Event]:
        """Era A0: one text per choice, and token counts."""
        self._recognized = True
        self._synth = True
        out: list[Event] = []
        for i, t in enumerate(texts):
            self._started.add(i)
            if isinstance(t, str) and t:
                out.append(TextDelta(t, i))
        if w.input_tokens:
            self._a0_input = max(self._a0_input, w.input_tokens)
        if w.input_tokens is not None or w.output_tokens is not None:
            self._usage = Usage(self._a0_input, w.output_tokens or 0)
            out.append(self._usage)
        return out

    def _text_item(self, w: WireItem, text: str) -> list[Event]:
        """One text: a TGI / Era A1 token (no ``meta_info``), or sglang's native item."""
        self._recognized = True
        self._started.add(0)
        out: list[Event] = [TextDelta(text, 0)] if text else []
        mi = w.meta_info
        if mi is None:
            self._synth = True
            return out
        reason = mi.finish_reason
        if isinstance(reason, dict):
            reason = reason.get("type")
        if isinstance(reason, str) and reason:
            self._finished.add(0)
            out.append(Finish(reason, 0))
        else:
            self._synth = True
        if mi.prompt_tokens is not None or mi.completion_tokens is not None:
            self._usage = Usage(mi.prompt_tokens or 0, mi.completion_tokens or 0)
            out.append(self._usage)
        return out

    def _default_reason(self, i: int) -> str:
        if i in self._tools:
            return "tool_calls"
        if (
            self._synth
            and self._max_tokens
            and self._n == 1
            and self._usage is not None
            and self._usage.completion_tokens >= self._max_tokens
        ):
            return "length"
        return "stop"
