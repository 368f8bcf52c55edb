"""Text-only workers: worker-tgi (``tgi``) and custom text handlers (``text``).

``tgi``: input ``{"prompt", "sampling_params": {max_new_tokens, temperature, top_p,
top_k, repetition_penalty, stop_sequences, seed, do_sample}}`` (TGI's generate
parameters). TGI takes a prompt, not messages, so chat messages are rendered with a
ChatML template (``<|im_start|>role\\ncontent<|im_end|>``); models with another template
should use a ``text`` or ``vllm`` worker instead.

``text``: for custom handlers. The job input is the client's OpenAI body (``model`` set to
the served name, ``stream`` as asked, unknown keys kept), and the handler yields text:
plain strings or ``{"text": delta}`` dicts.

Both yield text only: no finish reason (synthesised ``"stop"``), no usage (podgate counts
it), one choice, no tool calls, no logprobs — those parameters are rejected or, for
``tools`` with ``tool_choice`` absent/auto/none, ignored. Output is decoded with strings
taken as text, not SSE.
"""

from __future__ import annotations

from typing import Any

from adapters.formats.base import (
    Capabilities, JobInput, Kind, check_chat, check_completion, single_prompt,
)
from adapters.formats.decode import SniffingDecoder
from adapters.openai_protocol import ChatCompletionRequest, ChatMessage, CompletionRequest

__all__ = ["TGIFormat", "TextFormat", "render_chatml"]


def render_chatml(messages: list[ChatMessage]) -> str:
    parts = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        parts.append(f"<|im_start|>{role}\n{m.text()}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class _TextOutput:
    """Decoder side shared by text-only formats."""

    def decoder(
        self, kind: Kind, *, request: ChatCompletionRequest | CompletionRequest | None = None
    ) -> SniffingDecoder:
        max_tokens = request.max_output_tokens if request is not None else None
        return SniffingDecoder(kind, strings="text", max_tokens=max_tokens)


class TGIFormat(_TextOutput):
    name = "tgi"
    capabilities = Capabilities()

    @staticmethod
    def _params(req: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
        sp: dict[str, Any] = {}
        if req.max_output_tokens is not None:
            sp["max_new_tokens"] = req.max_output_tokens
        if req.temperature is not None:
            if req.temperature > 0:
                sp["temperature"] = req.temperature
            sp["do_sample"] = req.temperature > 0
        for src, dst in (("top_p", "top_p"), ("top_k", "top_k"), ("repetition_penalty", "repetition_penalty"), ("seed", "seed")):
            v = getattr(req, src)
            if v is not None:
                sp[dst] = v
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
