"""worker-infinity-embedding (reference/worker-formats.md §5): embeddings only.

``infinity`` (OpenAI mode) sends ``{"openai_route": "/v1/embeddings", "openai_input":
body}`` and reads the one-element list the worker answers; ``infinity-native`` sends
``{"model", "input"}`` and reads the bare object. Both send text (token ids decoded with
cl100k, ``adapters.embeddings.worker_texts``) and the served model name; the answer is read
by ``adapters.embeddings.embeddings_response``. Chat and completions requests are refused
with OpenAI's 404 for a model that is not a chat / completions model.
"""

from __future__ import annotations

from typing import Any

from adapters.embeddings import WholeOutputDecoder, native_job_input, not_a_completions_model, openai_job_input, \
    worker_texts
from adapters.formats.base import JobInput
from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Kind

__all__ = ["InfinityFormat", "InfinityNativeFormat"]


class InfinityFormat:
    """worker-infinity-embedding in OpenAI mode."""

    name = "infinity"

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput:
        raise not_a_completions_model("chat")

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput:
        raise not_a_completions_model("completion")

    def decoder(self, kind: Kind, *, request: Any = None) -> WholeOutputDecoder:
        return WholeOutputDecoder()

    async def embeddings_input(self, req: EmbeddingRequest, model: str) -> dict[str, Any]:
        return openai_job_input(req, model, await worker_texts(req))


class InfinityNativeFormat(InfinityFormat):
    """worker-infinity-embedding's native input."""

    name = "infinity-native"

    async def embeddings_input(self, req: EmbeddingRequest, model: str) -> dict[str, Any]:
        return native_job_input(model, await worker_texts(req))
