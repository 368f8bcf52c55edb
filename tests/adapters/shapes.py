"""Worker output shapes exactly as reference/worker-formats.md documents them, for tests.

Each builder returns what a RunPod worker of that kind/era yields (the ``output`` of one
``/stream`` item, or the aggregated ``/status`` output). Reusable by contract tests that
run real ``runpod`` workers emitting these shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CREATED = 1760000000
SERVED = "served-model"


def chat_chunk(
    content: str | None = None,
    *,
    index: int = 0,
    role: str | None = None,
    finish: str | None = None,
    tool_calls: list | None = None,
    reasoning: str | None = None,
    reasoning_key: str = "reasoning",
    logprobs: Any = None,
) -> dict:
    """A vLLM ``chat.completion.chunk`` with one choice (vLLM writes its null extras)."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[reasoning_key] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": CREATED, "model": SERVED,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None}],
    }


def usage_chunk(prompt: int, completion: int) -> dict:
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": CREATED, "model": SERVED,
        "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def completion_chunk(text: str, *, index: int = 0, finish: str | None = None, logprobs: Any = None) -> dict:
    return {
        "id": "cmpl-upstream", "object": "text_completion", "created": CREATED, "model": SERVED,
        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None}],
        "usage": None,
    }


def sse_event(obj: Any) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n\n"


def sse_text(chunks: Iterable[dict], *, done: bool = True) -> str:
    """vLLM's SSE body for these chunks (what Era C slices and Era B batches carry)."""
    return "".join(sse_event(c) for c in chunks) + ("data: [DONE]\n\n" if done else "")


def era_c_slices(body: str, sizes: Iterable[int]) -> list[str]:
    """Era C: arbitrary byte slices of vLLM's SSE body, each decoded with errors="replace"
    (a UTF-8 character split between slices becomes U+FFFD, as in worker-vllm HEAD)."""
    raw = body.encode()
    out, i, sizes = [], 0, list(sizes)
    k = 0
    while i < len(raw):
        n = sizes[k % len(sizes)]
        out.append(raw[i:i + n].decode("utf-8", errors="replace"))
        i += n
        k += 1
    return out


def era_b_batches(chunks: list[dict], growth: int = 3, max_batch: int = 50) -> list[str]:
    """Era B RAW_OPENAI_OUTPUT=1: strings of k whole SSE events, k = 1, 3, 9, 27, 50...;
    the last one ends with [DONE]."""
    out, i, k = [], 0, 1
    while i < len(chunks):
        out.append("".join(sse_event(c) for c in chunks[i:i + k]))
        i += k
        k = min(k * growth, max_batch)
    out[-1] += "data: [DONE]\n\n"
    return out


def era_b_chunk_lists(chunks: list[dict], growth: int = 3) -> list[list[dict]]:
    """Era B RAW_OPENAI_OUTPUT=0: lists of parsed chunk dicts; no [DONE]."""
    out, i, k = [], 0, 1
    while i < len(chunks):
        out.append(chunks[i:i + k])
        i += k
        k *= growth
    return out


def sglang_event(obj: Any) -> str:
    """worker-sglang: json.dumps(indent=4), every line prefixed with "data: "."""
    lines = json.dumps(obj, indent=4).split("\n")
    return "".join(f"data: {line}\n" for line in lines) + "\n"


def chat_completion(content: str | None, *, tool_calls: list | None = None, reasoning: str | None = None,
                    reasoning_key: str = "reasoning", finish: str = "stop", usage=(23, 8), n: int = 1,
                    logprobs: Any = None) -> dict:
    """vLLM ``ChatCompletionResponse.model_dump()`` (nulls included)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": tool_calls or [], reasoning_key: reasoning}
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": CREATED, "model": SERVED,
        "choices": [{"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None} for i in range(n)],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage), "prompt_tokens_details": None},
        "system_fingerprint": None, "prompt_logprobs": None, "kv_transfer_params": None,
    }


def native_item(tokens_per_choice: list[list[str]], inp: int, out: int) -> dict:
    """worker-vllm Era B native yield."""
    return {"choices": [{"tokens": t} for t in tokens_per_choice], "usage": {"input": inp, "output": out}}


def tool_call(index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None) -> dict:
    tc: dict[str, Any] = {"index": index}
    if id is not None:
        tc["id"] = id
        tc["type"] = "function"
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if arguments is not None:
        fn["arguments"] = arguments
    tc["function"] = fn
    return tc


HELLO_TEXT = "Héllo 世界🎉 — done"
HELLO_PIECES = ["Hé", "llo", " 世界", "🎉", " — ", "done"]


def hello_chunks(*, usage: bool = True) -> list[dict]:
    chunks = [chat_chunk("", role="assistant")]
    chunks += [chat_chunk(p) for p in HELLO_PIECES]
    chunks.append(chat_chunk("", finish="stop"))
    if usage:
        chunks.append(usage_chunk(5, len(HELLO_PIECES)))
    return chunks
