"""worker-vllm native mode (``vllm-native``): ``messages`` / ``prompt`` + ``sampling_params``.

Input (worker-vllm 0.3.0 – v2.23.0, "Era B"): ``{"messages": [{"role", "content"}], |
"prompt": str, "sampling_params": {...}, "stream": bool}``; ``sampling_params`` is passed
to ``vllm.SamplingParams(**…)`` so only its own keys are sent (an unknown key fails the
job). ``max_tokens`` is always sent (``null`` = up to the context length when the client
set none; the worker's own default would be 100 or 16). ``developer`` messages become
``system``; text parts are joined. Streams ask for small batches (``max_batch_size`` 8)
so tokens flow smoothly.

The worker cannot return logprobs, tool calls, JSON modes, ``logit_bias`` or images:
those are rejected (or, for ``tools`` with ``tool_choice`` absent/auto/none, ignored).

Output: ``{"choices": [{"tokens": [...]}], "usage": {"input", "output"}}`` per yield (no
finish reason: synthesised on close, ``"length"`` when ``usage.output`` reached
``max_tokens``), Era A ``{"text": …}``, and — for endpoints updated to v2.24+, which answer
the same input with OpenAI JSON / SSE — every OpenAI shape, all through the sniffing
decoder.
"""

from __future__ import annotations

from typing import Any

from adapters.formats.base import (
    Capabilities, JobInput, check_chat, check_completion, single_prompt,
)
from adapters.formats.decode import SniffingDecoder
from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest, Kind

__all__ = ["VLLMNativeFormat", "sampling_params"]

STREAM_MAX_BATCH_SIZE = 8

# request field → SamplingParams keyword (same names in vLLM)
_SAMPLING_FIELDS = (
    "n", "seed", "temperature", "top_p", "presence_penalty", "frequency_penalty",
    "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos",
    "skip_special_tokens", "include_stop_str_in_output", "stop_token_ids",
)


def sampling_params(req: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """The request's sampling parameters under vLLM ``SamplingParams`` names."""
    sp: dict[str, Any] = {"max_tokens": req.max_output_tokens}
    for name in _SAMPLING_FIELDS:
        v = getattr(req, name)
        if v is not None:
            sp[name] = v
    if req.stop is not None:
        sp["stop"] = req.stop_list
    return sp


class VLLMNativeFormat:
    name = "vllm-native"
    capabilities = Capabilities(multiple_choices=True, honours=frozenset({"stop", *_SAMPLING_FIELDS}))

    def _job(self, payload: dict[str, Any], req: ChatCompletionRequest | CompletionRequest, stream: bool) -> dict[str, Any]:
        payload["sampling_params"] = sampling_params(req)
        payload["stream"] = stream
        if stream:
            payload["max_batch_size"] = STREAM_MAX_BATCH_SIZE
            payload["min_batch_size"] = 1
        return payload

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_chat(req, self.capabilities)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in req.messages
        ]
        return JobInput(self._job({"messages": messages}, req, stream), ignored)

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput:
        ignored = check_completion(req, self.capabilities)
        return JobInput(self._job({"prompt": single_prompt(req)}, req, stream), ignored)

    def decoder(
        self, kind: Kind, *, request: ChatCompletionRequest | CompletionRequest | None = None
    ) -> SniffingDecoder:
        return SniffingDecoder.for_request(kind, request)
