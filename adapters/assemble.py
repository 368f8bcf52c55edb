"""Normalized events → OpenAI objects: stream chunks, or one aggregated response.

``StreamAssembler(kind, id=, model=, include_usage=)`` — for SSE. ``feed(events)``
returns the chunks to send now (``ChatCompletionChunk`` / ``TextCompletionChunk``).
``finish(usage=None)`` returns the closing chunks:
a finish chunk for any choice still open, and the ``choices: []`` usage chunk when the
client asked for ``include_usage`` (the worker's usage, else the ``usage`` passed in,
e.g. a tiktoken estimate); ``reasons`` (choice → finish reason) closes choices the worker
gave no finish reason (see ``open_choices()``), the default being ``"stop"`` (or
``"tool_calls"``). Rules (reference/peers-and-clients.md §d):
  * ``id``, ``created``, ``model`` are the same on every chunk;
  * the first chunk of each choice carries ``role: "assistant"`` (with ``content: ""``
    unless it carries text or tool calls);
  * one chunk per upstream delta: text, reasoning, logprobs and finish of one choice are
    merged into one chunk while they fit, each tool-call fragment gets its own chunk;
  * a tool call's first fragment always has ``index``, ``id`` (generated if the worker
    sent none), ``type: "function"``, ``function.name`` and ``function.arguments``
    (possibly ``""``); later fragments only ``index`` and ``arguments``;
  * ``usage`` is absent from chunks unless ``include_usage``; then ``null`` on all but
    the final usage chunk.

``Aggregator(kind, id=, model=, n=)`` — for non-stream answers. ``feed(events)``; then
``result(usage=None, reasons=None)`` returns ``ChatCompletion`` / ``TextCompletion`` (text concatenated
exactly as streamed, tool calls merged by index, reasoning, logprobs joined,
finish_reason, usage). ``aggregate(events, ...)`` does both at once.

Neither is fed errors: the proxy splits a job's ``ErrorEvent`` off before its events
reach an assembler (``proxy.streaming`` renders it in the stream, ``proxy.nonstream``
answers with it instead of a completion), and both ignore one.

Both expose ``usage`` (the worker's last ``Usage`` event, or None),
``completion_texts()`` (per choice, for a tiktoken estimate when usage is None) and
``open_choices()`` (the choices with text but no finish reason yet, no tool calls: those
whose reason ``reasons`` may set).

``reasoning_field`` chooses where reasoning goes: ``"reasoning_content"`` (default, what
most clients read), ``"reasoning"`` (vLLM ≥ 0.11) or ``"none"`` (dropped — LibreChat
breaks on unexpected fields).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any, Literal

from adapters.events import Event, Finish, LogprobsDelta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.openai_protocol import (
    UNSET, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatMessageOut,
    CompletionChoice, CompletionChunkChoice, DeltaFunction, DeltaMessage, DeltaToolCall,
    FunctionCall, Kind, TextCompletion, TextCompletionChunk, ToolCall,
    UsageInfo,
)

__all__ = ["StreamAssembler", "Aggregator", "aggregate", "usage_info", "new_tool_call_id"]

ReasoningField = Literal["reasoning_content", "reasoning", "none"]


def usage_info(u: Usage) -> UsageInfo:
    return UsageInfo(u.prompt_tokens, u.completion_tokens, u.prompt_tokens + u.completion_tokens)


def new_tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class _Pending:
    """The chunk being built for one choice."""

    __slots__ = ("index", "content", "reasoning", "tool", "logprobs", "finish")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content: str | None = None
        self.reasoning: str | None = None
        self.tool: ToolCallDelta | None = None
        self.logprobs: Any = None
        self.finish: str | None = None


class StreamAssembler:
    """Events → stream chunks for one response (see the module docstring)."""

    def __init__(
        self,
        kind: Kind = "chat",
        *,
        id: str,
        model: str,
        created: int | None = None,
        include_usage: bool = False,
        reasoning_field: ReasoningField = "reasoning_content",
        system_fingerprint: str | None = None,
    ) -> None:
        self.kind = kind
        self.id = id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self.reasoning_field = reasoning_field
        self.system_fingerprint = system_fingerprint
        self.usage: Usage | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_ids: dict[tuple[int, int], str] = {}
        self._tool_named: set[tuple[int, int]] = set()
        self._texts: dict[int, list[str]] = {}
        self._tools: set[int] = set()
        self._chunk_usage = None if include_usage else UNSET

    # -- public -----------------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> list[ChatCompletionChunk | TextCompletionChunk]:
        out: list = []
        cur: _Pending | None = None
        for ev in events:
            if type(ev) is TextDelta:
                if not ev.text:
                    continue
                self._texts.setdefault(ev.index, []).append(ev.text)
                if cur is None or cur.index != ev.index or cur.content is not None or cur.tool is not None \
                        or cur.logprobs is not None or cur.finish is not None:
                    cur = self._flush(cur, out, ev.index)
                cur.content = ev.text
            elif type(ev) is ReasoningDelta:
                if not ev.text or self.kind != "chat" or self.reasoning_field == "none":
                    continue
                if cur is None or cur.index != ev.index or cur.reasoning is not None or cur.content is not None \
                        or cur.tool is not None or cur.logprobs is not None or cur.finish is not None:
                    cur = self._flush(cur, out, ev.index)
                cur.reasoning = ev.text
            elif type(ev) is ToolCallDelta:
                if self.kind != "chat":
                    continue
                cur = self._flush(cur, out, ev.index)
                cur.tool = ev
            elif type(ev) is LogprobsDelta:
                if cur is None or cur.index != ev.index or cur.logprobs is not None or cur.finish is not None:
                    cur = self._flush(cur, out, ev.index)
                cur.logprobs = ev.logprobs
            elif type(ev) is Finish:
                if ev.index in self._finished:
                    continue
                if cur is None or cur.index != ev.index or cur.finish is not None:
                    cur = self._flush(cur, out, ev.index)
                cur.finish = ev.reason
                self._finished.add(ev.index)
            elif type(ev) is Usage:
                self.usage = ev
        if cur is not None:
            self._flush(cur, out, None)
        return out

    def finish(
        self, usage: Usage | None = None, reasons: dict[int, str] | None = None
    ) -> list[ChatCompletionChunk | TextCompletionChunk]:
        """Closing chunks: finish for open choices (``reasons``, else the default), then
        the usage chunk if asked for."""
        out: list = []
        for i in sorted(self._started - self._finished):
            self._finished.add(i)
            reason = "tool_calls" if i in self._tools else (reasons or {}).get(i, "stop")
            out.append(self._chunk([self._choice(_pending(i, finish=reason))]))
        u = self.usage or usage
        if self.include_usage and u is not None:
            out.append(self._chunk([], usage=usage_info(u)))
        return out

    def completion_texts(self) -> list[str]:
        n = max(self._texts) + 1 if self._texts else 0
        return ["".join(self._texts.get(i, ())) for i in range(n)]

    def open_choices(self) -> list[int]:
        return sorted(i for i in self._started - self._finished if i not in self._tools and i in self._texts)

    # -- building ---------------------------------------------------------------------

    def _flush(self, cur: _Pending | None, out: list, next_index: int | None) -> _Pending:
        if cur is not None:
            out.append(self._chunk([self._choice(cur)]))
        return _Pending(next_index) if next_index is not None else None  # type: ignore[return-value]

    def _chunk(self, choices: list, usage: Any = None) -> ChatCompletionChunk | TextCompletionChunk:
        cls = ChatCompletionChunk if self.kind == "chat" else TextCompletionChunk
        return cls(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            system_fingerprint=self.system_fingerprint,
            usage=usage if usage is not None else self._chunk_usage,
        )

    def _choice(self, p: _Pending) -> ChatChunkChoice | CompletionChunkChoice:
        first = p.index not in self._started
        if first:
            self._started.add(p.index)
        if self.kind == "completion":
            return CompletionChunkChoice(p.index, p.content or "", p.logprobs, p.finish)
        delta = DeltaMessage()
        if first:
            delta.role = "assistant"
            if p.content is None and p.tool is None:
                delta.content = ""
        if p.content is not None:
            delta.content = p.content
        if p.reasoning is not None:
            setattr(delta, self.reasoning_field, p.reasoning)
        if p.tool is not None:
            delta.tool_calls = [self._tool_delta(p.index, p.tool)]
        return ChatChunkChoice(p.index, delta, p.logprobs, p.finish)

    def _tool_delta(self, choice: int, tc: ToolCallDelta) -> DeltaToolCall:
        self._tools.add(choice)
        key = (choice, tc.tool_index)
        fn = DeltaFunction(arguments=tc.arguments or "")
        if key not in self._tool_ids:
            call_id = tc.id or new_tool_call_id()
            self._tool_ids[key] = call_id
            if tc.name is not None:
                fn.name = tc.name
                self._tool_named.add(key)
            return DeltaToolCall(index=tc.tool_index, id=call_id, type="function", function=fn)
        if tc.name is not None and key not in self._tool_named:  # a name that came late
            fn.name = tc.name
            self._tool_named.add(key)
        return DeltaToolCall(index=tc.tool_index, function=fn)


def _pending(index: int, *, finish: str) -> _Pending:
    p = _Pending(index)
    p.finish = finish
    return p


class _ToolAcc:
    __slots__ = ("id", "name", "args")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.args: list[str] = []


class _ChoiceAcc:
    __slots__ = ("text", "reasoning", "tools", "logprobs", "finish")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, _ToolAcc] = {}
        self.logprobs: Any = None
        self.finish: str | None = None


def _merge_logprobs(acc: Any, new: Any) -> Any:
    """Join logprobs pieces: chat ``{"content": [...]}``, completions ``{"tokens": [...],
    "token_logprobs": [...], "top_logprobs": [...], "text_offset": [...]}``."""
    if acc is None:
        return new
    if isinstance(acc, dict) and isinstance(new, dict):
        merged = dict(acc)
        for k, v in new.items():
            if isinstance(v, list) and isinstance(merged.get(k), list):
                merged[k] = merged[k] + v
            elif merged.get(k) is None:
                merged[k] = v
        return merged
    return new


class Aggregator:
    """Events → one ``ChatCompletion`` / ``TextCompletion`` (see the module docstring)."""

    def __init__(
        self,
        kind: Kind = "chat",
        *,
        id: str,
        model: str,
        created: int | None = None,
        n: int = 1,
        reasoning_field: ReasoningField = "reasoning_content",
        system_fingerprint: str | None = None,
    ) -> None:
        self.kind = kind
        self.id = id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.n = n
        self.reasoning_field = reasoning_field
        self.system_fingerprint = system_fingerprint
        self.usage: Usage | None = None
        self._choices: dict[int, _ChoiceAcc] = {}

    def _c(self, i: int) -> _ChoiceAcc:
        c = self._choices.get(i)
        if c is None:
            c = self._choices[i] = _ChoiceAcc()
        return c

    def feed(self, events: Iterable[Event]) -> None:
        for ev in events:
            if type(ev) is TextDelta:
                self._c(ev.index).text.append(ev.text)
            elif type(ev) is ReasoningDelta:
                self._c(ev.index).reasoning.append(ev.text)
            elif type(ev) is ToolCallDelta:
                tools = self._c(ev.index).tools
                acc = tools.get(ev.tool_index)
                if acc is None:
                    acc = tools[ev.tool_index] = _ToolAcc()
                if acc.id is None and ev.id:
                    acc.id = ev.id
                if acc.name is None and ev.name:
                    acc.name = ev.name
                if ev.arguments:
                    acc.args.append(ev.arguments)
            elif type(ev) is LogprobsDelta:
                c = self._c(ev.index)
                c.logprobs = _merge_logprobs(c.logprobs, ev.logprobs)
            elif type(ev) is Finish:
                c = self._c(ev.index)
                if c.finish is None:
                    c.finish = ev.reason
            elif type(ev) is Usage:
                self.usage = ev

    def completion_texts(self) -> list[str]:
        n = max([self.n - 1, *self._choices]) + 1
        return ["".join(self._choices[i].text) if i in self._choices else "" for i in range(n)]

    def open_choices(self) -> list[int]:
        return sorted(i for i, c in self._choices.items() if c.finish is None and not c.tools and c.text)

    def result(self, usage: Usage | None = None, reasons: dict[int, str] | None = None) -> ChatCompletion | TextCompletion:
        reasons = reasons or {}
        u = self.usage or usage
        info = usage_info(u) if u is not None else None
        n = max([self.n - 1, *self._choices]) + 1
        if self.kind == "completion":
            choices = []
            for i in range(n):
                c = self._choices.get(i) or _ChoiceAcc()
                choices.append(CompletionChoice(i, "".join(c.text), c.logprobs, c.finish or reasons.get(i, "stop")))
            return TextCompletion(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=info,
                system_fingerprint=self.system_fingerprint,
            )
        chat_choices = []
        for i in range(n):
            c = self._choices.get(i) or _ChoiceAcc()
            text = "".join(c.text)
            msg = ChatMessageOut(content=text)
            if c.tools:
                msg.tool_calls = [
                    ToolCall(acc.id or new_tool_call_id(), FunctionCall(acc.name or "", "".join(acc.args)))
                    for _, acc in sorted(c.tools.items())
                ]
                if not text:
                    msg.content = None
            if c.reasoning and self.reasoning_field != "none":
                setattr(msg, self.reasoning_field, "".join(c.reasoning))
            finish = c.finish or ("tool_calls" if c.tools else reasons.get(i, "stop"))
            chat_choices.append(ChatChoice(i, msg, c.logprobs, finish))
        return ChatCompletion(
            id=self.id, created=self.created, model=self.model, choices=chat_choices, usage=info,
            system_fingerprint=self.system_fingerprint,
        )


def aggregate(events: Iterable[Event], kind: Kind = "chat", *, usage: Usage | None = None,
              **kw: Any) -> ChatCompletion | TextCompletion:
    """``Aggregator(kind, **kw)``, fed ``events``, ``.result(usage)``."""
    agg = Aggregator(kind, **kw)
    agg.feed(events)
    return agg.result(usage)
