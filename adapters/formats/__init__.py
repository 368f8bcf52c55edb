"""Worker formats: one module per kind of RunPod worker, a registry by name.

``get_format(name)`` returns the format (``vllm``, ``vllm-native``, ``sglang``, ``tgi``,
``text``, and the embedding formats ``infinity``, ``infinity-native``); an unknown name
raises ``KeyError`` listing the valid ones. A format turns an
OpenAI request into a RunPod job input (``chat_input`` / ``completion_input`` →
``JobInput(input, ignored)``, raising ``UnsupportedParameter`` for what it cannot honour)
and makes a fresh ``OutputDecoder`` per job (``decoder(kind, request=req)``) that turns
output items into normalized events (``adapters.events``). An embedding format is also an
``adapters.embeddings.EmbeddingFormat`` (``embeddings_input``) and refuses chat and
completions requests (404, as OpenAI answers for a model of another kind).
"""

from __future__ import annotations

from adapters.formats.base import (
    Capabilities, JobInput, OutputDecoder, WorkerFormat, check_chat, check_completion,
)
from adapters.formats.decode import SniffingDecoder
from adapters.formats.infinity import InfinityFormat, InfinityNativeFormat
from adapters.formats.sglang import SGLangFormat
from adapters.formats.tgi import TextFormat, TGIFormat
from adapters.formats.vllm import OpenAIRouteFormat, VLLMFormat
from adapters.formats.vllm_native import VLLMNativeFormat

__all__ = [
    "FORMATS", "get_format", "format_names", "JobInput", "WorkerFormat", "OutputDecoder",
    "Capabilities", "check_chat", "check_completion", "SniffingDecoder", "OpenAIRouteFormat",
    "VLLMFormat", "VLLMNativeFormat", "SGLangFormat", "TGIFormat", "TextFormat", "InfinityFormat",
    "InfinityNativeFormat",
]

FORMATS: dict[str, WorkerFormat] = {
    f.name: f for f in (VLLMFormat(), VLLMNativeFormat(), SGLangFormat(), TGIFormat(), TextFormat(),
                        InfinityFormat(), InfinityNativeFormat())
}


def format_names() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str) -> WorkerFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown worker format {name!r}; valid formats: {', '.join(format_names())}") from None
