"""worker-vllm in OpenAI mode (``vllm``): the client's request goes through
``{"openai_route": "/v1/chat/completions" | "/v1/completions", "openai_input": body}``.

Input: the client's body as sent (vLLM extras and unknown keys included, so vLLM
decides), with ``model`` set to the served model name and ``stream`` set as asked; a
streaming request always gets ``stream_options.include_usage: true`` upstream (the client's
own wish is honoured downstream by the assembler); a non-streaming one gets no
``stream_options`` (vLLM rejects them without ``stream``). Nothing is rejected: vLLM
answers for itself.

Output: every era — SSE text in arbitrary slices (v2.24+), strings of whole events
(0.3–2.23), lists of chunk dicts (``RAW_OPENAI_OUTPUT=0``), JSON objects (non-stream),
and the older native shapes — through the sniffing decoder.
"""

from __future__ import annotations

from typing import Any

from adapters.formats.base import Capabilities, JobInput, check_chat, check_completion
from adapters.formats.decode import SniffingDecoder
from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest, Kind

__all__ = ["OpenAIRouteFormat", "VLLMFormat"]

CHAT_ROUTE = "/v1/chat/completions"
COMPLETION_ROUTE = "/v1/completions"

_ALL = Capabilities(
    tools=True, logprobs=True, multiple_choices=True, response_format=True, logit_bias=True,
    non_text_content=True, tool_messages=True, chat_template_kwargs=True, extra_params=True,
    echo=True, suffix=True, best_of=True, prompt_lists=True,
)


class OpenAIRouteFormat:
    """A worker that serves OpenAI's API behind ``openai_route`` / ``openai_input``."""

    name = "openai-route"
    capabilities = _ALL

    def _input(self, route: str, req: ChatCompletionRequest | CompletionRequest, model: str, stream: bool) -> dict[str, Any]:
        body = req.to_body()
        body["model"] = model
        body["stream"] = stream
        if stream:
            so = body.get("stream_options")
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return {"openai_route": route, "openai_input": body}

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_chat(req, self.capabilities)
        return JobInput(self._input(CHAT_ROUTE, req, model, stream), ignored)

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_completion(req, self.capabilities)
        return JobInput(self._input(COMPLETION_ROUTE, req, model, stream), ignored)

    def decoder(
        self, kind: Kind, *, request: ChatCompletionRequest | CompletionRequest | None = None
    ) -> SniffingDecoder:
        return SniffingDecoder.for_request(kind, request)


class VLLMFormat(OpenAIRouteFormat):
    name = "vllm"
