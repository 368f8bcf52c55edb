"""Text-only workers: worker-tgi (``tgi``) and custom text handlers (``text``).

``tgi``: input ``{"prompt", "sampling_params": {max_new_tokens, temperature, top_p,
top_k, repetition_penalty, stop_sequences, seed, do_sample}}`` (TGI's generate
parameters). TGI takes a prompt, not messages, so chat messages are rendered with a
ChatML template (``<|im_start|>role\\ncontent<|im_end|>``); models with another template
should use a ``text`` or ``vllm`` worker instead.

``text``: for custom handlers. The job input is the client's OpenAI body (``model`` set to
the served name, ``stream`` as asked, unknown keys kept), and the handler yields text:
plain strings or ``{"text": delta}`` dicts.

Both yield text only: no finish reason, no usage (podgate counts it), one choice, no tool
calls, no logprobs — those parameters are rejected or, for ``tools`` with ``tool_choice``
absent/auto/none, ignored; sampling parameters TGI has no name for (``presence_penalty``,
``min_p`` …) are named as ignored. Output is decoded with strings taken as text, not SSE.

Finish reasons (``TextOutputDecoder``), when the worker reports none: ``"length"`` if the
completion reached the request's token limit, else ``"stop"``. worker-tgi yields one item
per generated token, so its items are counted. A ``text`` handler's items can be any size,
so its count is podgate's own (tiktoken, ``adapters.usage``), which is CPU work for the
OpenAI side to do off the event loop: the decoder leaves such a choice's finish reason
open (no ``Finish`` event) when its text may hold that many tokens (at least one byte per
token), and the OpenAI side closes it with ``finish_for_count``.
"""

from __future__ import annotations

from typing import Any

from adapters.events import Event, Finish, TextDelta, Usage
from adapters.formats.base import (
    Capabilities, JobInput, check_chat, check_completion, finish_for_count, single_prompt,
)
from adapters.formats.decode import SniffingDecoder
from adapters.openai_protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, Kind

__all__ = ["TGIFormat", "TextFormat", "TextOutputDecoder", "render_chatml"]


def render_chatml(messages: list[ChatMessage]) -> str:
    parts = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        parts.append(f"<|im_start|>{role}\n{m.text()}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class TextOutputDecoder(SniffingDecoder):
    """The sniffing decoder, with strings taken as text, and finish reasons for a worker
    that reports none (see the module docstring). ``items_are_tokens``: the worker yields
    one item per token (worker-tgi), so counting items counts tokens. Whatever the worker
    does report (a finish reason, usage: sniffed shapes) is kept as it is."""

    def __init__(self, kind: Kind = "chat", *, max_tokens: int | None = None, items_are_tokens: bool = False):
        super().__init__(kind, strings="text", max_tokens=max_tokens)
        self._limit = max_tokens
        self._items_are_tokens = items_are_tokens
        self._items = 0
        self._bytes: dict[int, int] = {}  # choice → UTF-8 bytes of its text
        self._worker_usage = False

    def feed(self, item: Any) -> list[Event]:
        if isinstance(item, str) or (isinstance(item, dict) and isinstance(item.get("text"), str)):
            self._items += 1
        events = super().feed(item)  # lists come back here item by item
        for ev in events:
            if type(ev) is TextDelta:
                self._bytes[ev.index] = self._bytes.get(ev.index, 0) + len(ev.text.encode())
            elif type(ev) is Usage:
                self._worker_usage = True
        return events

    def close(self) -> list[Event]:
        events = super().close()  # in text mode: only finish reasons the worker did not give
        if not self._limit or self._worker_usage:
            return events  # no limit, or the worker's own count decided
        out: list[Event] = []
        for ev in events:
            if type(ev) is Finish and ev.reason == "stop":
                if self._items_are_tokens:
                    ev = Finish(finish_for_count(self._items, self._limit), ev.index)
                elif self._bytes.get(ev.index, 0) >= self._limit:
                    continue  # may have reached the limit: the OpenAI side counts
            out.append(ev)
        return out


class _TextOutput:
    """Decoder side shared by text-only formats."""

    items_are_tokens = False

    def decoder(
        self, kind: Kind, *, request: ChatCompletionRequest | CompletionRequest | None = None
    ) -> TextOutputDecoder:
        max_tokens = request.max_output_tokens if request is not None else None
        return TextOutputDecoder(kind, max_tokens=max_tokens, items_are_tokens=self.items_are_tokens)


#: request fields TGI's generate parameters take under the same name
_TGI_SAME_NAME = ("top_p", "top_k", "repetition_penalty", "seed")


class TGIFormat(_TextOutput):
    name = "tgi"
    items_are_tokens = True  # worker-tgi yields {"text": …} per generated token
    capabilities = Capabilities(honours=frozenset({"temperature", "stop", *_TGI_SAME_NAME}))

    @staticmethod
    def _params(req: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
        sp: dict[str, Any] = {}
        if req.max_output_tokens is not None:
            sp["max_new_tokens"] = req.max_output_tokens
        if req.temperature is not None:
            if req.temperature > 0:
                sp["temperature"] = req.temperature
            sp["do_sample"] = req.temperature > 0
        for name in _TGI_SAME_NAME:
            v = getattr(req, name)
            if v is not None:
                sp[name] = v
        if req.stop is not None:
            sp["stop_sequences"] = req.stop_list
        return sp

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_chat(req, self.capabilities)
        return JobInput({"prompt": render_chatml(req.messages), "sampling_params": self._params(req)}, ignored)

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_completion(req, self.capabilities)
        return JobInput({"prompt": single_prompt(req), "sampling_params": self._params(req)}, ignored)


class TextFormat(_TextOutput):
    name = "text"
    capabilities = Capabilities(response_format=True, logit_bias=True, extra_params=True, non_text_content=True, tool_messages=True, chat_template_kwargs=True)

    def _input(self, req: ChatCompletionRequest | CompletionRequest, model: str, stream: bool, ignored: list[str]) -> dict[str, Any]:
        body = req.to_body()
        body["model"] = model
        body["stream"] = stream
        body.pop("stream_options", None)
        for name in ignored:
            body.pop(name, None)
        return body

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_chat(req, self.capabilities)
        return JobInput(self._input(req, model, stream, ignored), ignored)

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_completion(req, self.capabilities)
        return JobInput(self._input(req, model, stream, ignored), ignored)
