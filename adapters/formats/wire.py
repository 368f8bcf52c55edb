"""Permissive Structs for everything a worker may yield, so one typed decode can sniff it.

``WireItem`` has an optional field for every key that tells the shapes of
reference/worker-formats.md §8.1 apart: OpenAI objects and chunks (``object``,
``choices[].delta|message|text``, ``usage``), worker-vllm Era B/A2 native
(``choices[].tokens``, ``usage.input/output``), Era A0 (``text`` list,
``input_tokens``/``output_tokens``), TGI / Era A1 (``text`` string), SGLang ``/generate``
(``text`` + ``meta_info``) and errors (``error``, ``object == "error"``, ``message``,
``detail``, ``error_message``). Unknown keys are ignored; every vLLM extra is optional;
``reasoning`` and ``reasoning_content`` are both accepted.

JSON text is decoded with ``decode_json_item``; an already-decoded ``dict`` with
``convert_item``. Both raise ``msgspec.ValidationError`` / ``DecodeError`` on a shape
that cannot be any of these.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "WireFunction", "WireToolCall", "WireDelta", "WireChoice", "WireUsage", "WireMetaInfo",
    "WireItem", "decode_json_item", "convert_item",
]


class WireFunction(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class WireToolCall(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: WireFunction | None = None


class WireDelta(msgspec.Struct, gc=False):
    """``choices[].delta`` (chunk) or ``choices[].message`` (whole response)."""

    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[WireToolCall] | None = None
    refusal: str | None = None


class WireChoice(msgspec.Struct, gc=False):
    index: int | None = None  # absent in worker-vllm native: the position is the index
    delta: WireDelta | None = None
    message: WireDelta | None = None
    text: str | None = None  # text_completion
    tokens: list[str] | None = None  # worker-vllm native
    logprobs: Any = None
    finish_reason: str | None = None


class WireUsage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    input: int | None = None  # worker-vllm native
    output: int | None = None


class WireMetaInfo(msgspec.Struct, gc=False):
    """SGLang ``/generate`` ``meta_info``."""

    finish_reason: Any = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class WireItem(msgspec.Struct, gc=False):
    object: str | None = None
    choices: list[WireChoice] | None = None
    usage: WireUsage | None = None
    # errors
    error: Any = None
    message: str | None = None
    detail: Any = None
    error_message: str | None = None
    # older / other workers
    text: Any = None  # str (TGI, A1, SGLang /generate) or list[str] (A0)
    input_tokens: int | None = None
    output_tokens: int | None = None
    meta_info: WireMetaInfo | None = None


_json_decoder = msgspec.json.Decoder(WireItem)


def decode_json_item(text: str | bytes) -> WireItem:
    return _json_decoder.decode(text)


def convert_item(obj: dict) -> WireItem:
    return msgspec.convert(obj, WireItem)
