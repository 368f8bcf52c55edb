"""The OpenAI protocol in one module: request and response wire shapes.

Requests (what clients send):
  ``ChatCompletionRequest`` (``POST /v1/chat/completions``) and ``CompletionRequest``
  (``POST /v1/completions``). Decode them with ``decode_chat_request(body)`` /
  ``decode_completion_request(body)``: they validate the typed fields and raise
  ``adapters.errors.InvalidRequest`` (HTTP 400, OpenAI error shape, ``param`` naming the
  bad field) for anything malformed. Keys this module does not know (OpenAI clients send
  extras, vLLM extras go in ``extra_body``) are **not** an error: they are kept and
  available as ``req.extra_body()``; ``req.to_body()`` gives the whole body as sent, so
  a worker format can pass everything through.

Responses (what podgate sends):
  ``ChatCompletion`` / ``ChatCompletionChunk`` (``chat.completion[.chunk]``),
  ``TextCompletion`` / ``TextCompletionChunk`` (``text_completion``), ``Model`` /
  ``ModelList``, ``UsageInfo`` and ``ErrorResponse`` (``{"error": {message, type, param,
  code}}``). Encode them with ``msgspec.json.encode``. Every field OpenAI always sends
  is always written (``null`` when empty: ``logprobs``, ``finish_reason``,
  ``system_fingerprint``, ``message.content``, ``message.refusal``); fields OpenAI omits
  when absent default to ``UNSET`` and are then not written (delta fields, tool-call
  fragments, ``message.tool_calls``, reasoning). Top-level response Structs are
  keyword-only, with fields in OpenAI's order (``id, object, created, model, ...``).
  A chunk's ``usage`` is ``UNSET`` (absent) unless the client asked for
  ``stream_options.include_usage``, in which case it is ``None`` on every chunk but the
  final ``choices: []`` one.

Both ``max_tokens`` and ``max_completion_tokens`` are accepted, also together
(``max_output_tokens`` prefers the latter, as vLLM does). ``req._raw`` (the decoded body)
lives in the instance ``__dict__``: ``copy``/``msgspec.structs.replace`` do not keep it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    # requests
    "ContentPart", "ChatMessage", "ToolCall", "FunctionCall", "FunctionDefinition", "Tool",
    "NamedToolChoice", "NamedFunction", "ResponseFormat", "StreamOptions",
    "ChatCompletionRequest", "CompletionRequest",
    "decode_chat_request", "decode_completion_request",
    # responses
    "UsageInfo", "ChatMessageOut", "ChatChoice", "ChatCompletion",
    "DeltaFunction", "DeltaToolCall", "DeltaMessage", "ChatChunkChoice", "ChatCompletionChunk",
    "CompletionChoice", "TextCompletion", "CompletionChunkChoice", "TextCompletionChunk",
    "Model", "ModelList", "ErrorDetail", "ErrorResponse",
    "UNSET",
]

NonNegInt = Annotated[int, Meta(ge=0)]
PosInt = Annotated[int, Meta(ge=1)]


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

class _Request(msgspec.Struct, omit_defaults=True, dict=True):
    """Base of the request Structs. ``dict=True`` lets the decoder attach the client's
    body as sent (``_raw``) to the instance without making it a wire field."""

    _raw: ClassVar[dict[str, Any] | None] = None

    def extra_body(self) -> dict[str, Any]:
        """The client's top-level keys that this module has no field for, as sent."""
        raw = self._raw
        if not raw:
            return {}
        fields = self.__struct_fields__
        return {k: v for k, v in raw.items() if k not in fields}

    def to_body(self) -> dict[str, Any]:
        """The request as a JSON-able dict to forward to an OpenAI-compatible server: a
        shallow copy of the client's body as sent (unknown keys included) when the
        request was decoded from one, else the typed fields that are set."""
        if self._raw is not None:
            return dict(self._raw)
        return msgspec.to_builtins(self)


class ContentPart(msgspec.Struct, omit_defaults=True):
    """One part of a message's ``content`` list. Permissive: any ``type`` is accepted
    (``text``, ``image_url``, ``input_audio``, ``file``, ``refusal``, ...)."""

    type: str
    text: str | None = None
    image_url: Any = None
    input_audio: Any = None
    file: Any = None
    refusal: str | None = None


class FunctionCall(msgspec.Struct):
    """A function call inside a tool call: ``arguments`` is a JSON *string*."""

    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    """A complete tool call (assistant message history, non-stream response)."""

    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(msgspec.Struct, omit_defaults=True):
    """One message of ``messages``. ``content`` is a string, a list of parts, or null
    (an assistant message with only ``tool_calls``)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None

    def text(self) -> str:
        """The message's text: ``content`` as a string, or its text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class FunctionDefinition(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct):
    function: FunctionDefinition
    type: str = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    function: NamedFunction
    type: str = "function"


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    """``{"type": "text" | "json_object" | "json_schema", "json_schema"?: {...}}``."""

    type: str
    json_schema: dict[str, Any] | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _SamplingFields(_Request):
    """Parameters shared by chat and completions (OpenAI's and vLLM's extras)."""

    model: str
    max_tokens: NonNegInt | None = None
    n: PosInt | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    # vLLM extras (sent via the SDKs' ``extra_body``)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: NonNegInt | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    stop_token_ids: list[int] | None = None

    @property
    def is_stream(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        """True when the client asked for the final usage chunk (stream only)."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def choices(self) -> int:
        return self.n or 1


class ChatCompletionRequest(_SamplingFields, kw_only=True):
    """``POST /v1/chat/completions`` body."""

    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: NonNegInt | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    # vLLM extras
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None

    @property
    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` if given, else ``max_tokens`` (as vLLM does)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_SamplingFields, kw_only=True):
    """``POST /v1/completions`` body. ``prompt`` is a string, a list of strings, a list of
    token ids or a list of token-id lists."""

    prompt: str | list[str | int | list[int]]
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: PosInt | None = None

    @property
    def max_output_tokens(self) -> int | None:
        return self.max_tokens


_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")


def _decode_request(body: bytes | str | dict, cls: type[_Request]) -> Any:
    from adapters.errors import InvalidRequest

    try:
        raw = msgspec.json.decode(body) if isinstance(body, (bytes, bytearray, memoryview, str)) else body
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        req = msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = _PATH_RE.search(msg)
        param = m.group(1) if m else None
        if param is None and "missing required field" in msg:
            f = re.search(r"field `([^`]+)`", msg)
            param = f.group(1) if f else None
        raise InvalidRequest(msg, param=param or None) from None
    req._raw = raw  # type: ignore[misc]
    return req


def decode_chat_request(body: bytes | str | dict) -> ChatCompletionRequest:
    """Validate a chat completions body; raise ``InvalidRequest`` (400) if malformed."""
    return _decode_request(body, ChatCompletionRequest)


def decode_completion_request(body: bytes | str | dict) -> CompletionRequest:
    """Validate a completions body; raise ``InvalidRequest`` (400) if malformed."""
    return _decode_request(body, CompletionRequest)


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


class UsageInfo(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(msgspec.Struct, kw_only=True):
    """``choices[].message``. ``content`` and ``refusal`` are always written (``null``
    when empty); ``tool_calls`` and the reasoning fields only when set."""

    role: str = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessageOut
    logprobs: Any
    finish_reason: str | None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo | None
    system_fingerprint: str | None = None


class DeltaFunction(msgspec.Struct):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class DeltaToolCall(msgspec.Struct):
    """A streamed tool-call fragment. The first one of a call carries ``id``,
    ``type: "function"``, ``function.name`` and ``function.arguments`` (possibly ``""``)."""

    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: DeltaFunction | UnsetType = UNSET


class DeltaMessage(msgspec.Struct):
    """``choices[].delta``: always an object, ``{}`` on a finish chunk; only the fields
    that are set are written."""

    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    tool_calls: list[DeltaToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: DeltaMessage
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    system_fingerprint: str | None = None
    usage: UsageInfo | None | UnsetType = UNSET


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    logprobs: Any
    finish_reason: str | None


class TextCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None
    system_fingerprint: str | None = None


class CompletionChunkChoice(msgspec.Struct):
    index: int
    text: str
    logprobs: Any = None
    finish_reason: str | None = None


class TextCompletionChunk(msgspec.Struct, kw_only=True):
    """A streamed ``/v1/completions`` event (OpenAI calls it ``text_completion`` too)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    system_fingerprint: str | None = None
    usage: UsageInfo | None | UnsetType = UNSET


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(msgspec.Struct):
    """``{"error": {"message", "type", "param", "code"}}`` — also the body of an in-stream
    ``data: {"error": ...}`` event."""

    error: ErrorDetail
# PROTOCOL READY
