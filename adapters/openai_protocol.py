"""The OpenAI protocol in one module: request and response wire shapes.

Requests (what clients send):
  ``ChatCompletionRequest`` (``POST /v1/chat/completions``), ``CompletionRequest``
  (``POST /v1/completions``) and ``EmbeddingRequest`` (``POST /v1/embeddings``). Decode
  them with ``decode_chat_request(body)`` / ``decode_completion_request(body)`` /
  ``decode_embedding_request(body)``: they validate the typed fields and raise
  ``adapters.errors.InvalidRequest`` (HTTP 400, OpenAI error shape, ``param`` naming the
  bad field) for anything malformed. Keys this module does not know (OpenAI clients send
  extras, vLLM extras go in ``extra_body``) are **not** an error: they are kept and
  available as ``req.extra_body()``; ``req.to_body()`` gives the whole body as sent, so
  a worker format can pass everything through.

Responses (what podgate sends):
  ``ChatCompletion`` / ``ChatCompletionChunk`` (``chat.completion[.chunk]``),
  ``TextCompletion`` / ``TextCompletionChunk`` (``text_completion``), ``EmbeddingList``
  (``object: "list"`` of ``Embedding``, with ``EmbeddingUsage``), ``Model`` /
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

Validation follows OpenAI's: ``temperature`` 0–2, ``top_p`` 0–1, ``n`` 1–128, and token
limits at most ``MAX_TOKENS_LIMIT`` are Struct constraints, and a value outside them is
answered as OpenAI answers it (``Invalid 'temperature': decimal above maximum value.
Expected a value <= 2, but got 3 instead.``, code ``decimal_above_max_value``, ``param``
naming the field). ``stream_options`` without ``stream: true`` is refused as OpenAI does; a
body nested deeper than ``MAX_DEPTH`` levels is refused (400) right after decoding.
``tools`` may be ``function`` or ``custom`` tools (other types pass as sent), and
``tool_choice`` a string, a named ``function`` / ``custom`` tool, or ``allowed_tools``.
An embeddings ``input`` must be one of OpenAI's four shapes, never empty, with at most
``MAX_EMBEDDING_INPUTS`` inputs; each problem is a 400 naming the item (``input[3]``).

A number with a zero fraction (``"max_tokens": 5.0``) is an integer, as JSON Schema reads
it: the body is decoded with integral floats as ints (a float field takes an int too).

Both ``max_tokens`` and ``max_completion_tokens`` are accepted, also together
(``max_output_tokens`` prefers the latter, as vLLM does). ``req._raw`` (the decoded body)
lives in the instance ``__dict__``: ``copy``/``msgspec.structs.replace`` do not keep it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from adapters.validation import read_validation_error, value_at

__all__ = [
    # requests
    "ContentPart", "ChatMessage", "MessageToolCall", "CustomToolCall", "FunctionCall",
    "FunctionDefinition", "CustomToolDefinition", "Tool", "NamedToolChoice", "NamedFunction",
    "AllowedTools", "ResponseFormat", "StreamOptions", "MAX_TOKENS_LIMIT", "MAX_DEPTH",
    "ChatCompletionRequest", "CompletionRequest", "EmbeddingRequest", "MAX_EMBEDDING_INPUTS",
    "ENCODING_FORMATS", "decode_chat_request", "decode_completion_request", "decode_embedding_request",
    # responses
    "UsageInfo", "ToolCall", "ChatMessageOut", "ChatChoice", "ChatCompletion",
    "DeltaFunction", "DeltaToolCall", "DeltaMessage", "ChatChunkChoice", "ChatCompletionChunk",
    "CompletionChoice", "TextCompletion", "CompletionChunkChoice", "TextCompletionChunk",
    "Model", "ModelList", "Embedding", "EmbeddingUsage", "EmbeddingList", "ErrorDetail", "ErrorResponse",
    "UNSET", "Kind",
]

#: The largest token limit podgate forwards: int32's maximum, the largest that every
#: worker's engine can hold (llama.cpp's ``n_predict`` is an int32, TGI's
#: ``max_new_tokens`` a u32). A larger value cannot be meaningful and would only fail
#: the job after it was queued.
MAX_TOKENS_LIMIT = 2**31 - 1
#: How deeply a request body may nest (objects and arrays). Far beyond any real request
#: (a tool's JSON schema included), and far below the interpreter's recursion limit, so
#: that every later walk of the body (convert, encode for the job) is safe.
MAX_DEPTH = 128

#: Which OpenAI completion API a request is for: ``/v1/chat/completions`` or ``/v1/completions``.
Kind = Literal["chat", "completion"]

PosInt = Annotated[int, Meta(ge=1)]
TokenLimit = Annotated[int, Meta(ge=0, le=MAX_TOKENS_LIMIT)]


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

class _Request(msgspec.Struct, omit_defaults=True, dict=True):
    """Base of the request Structs. ``dict=True`` lets the decoder attach the client's
    body as sent (``_raw``) to the instance without making it a wire field."""

    _raw: ClassVar[dict[str, Any] | None] = None

    def _check(self) -> None:
        """What the Struct's types cannot say, checked once after decoding (raise
        ``InvalidRequest``)."""

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
    """A complete function tool call (non-stream response)."""

    id: str
    function: FunctionCall
    type: str = "function"


class CustomToolCall(msgspec.Struct):
    """A custom tool call's payload: free-form ``input`` text."""

    name: str
    input: str


class MessageToolCall(msgspec.Struct, omit_defaults=True):
    """A tool call in an assistant message of the history: a ``function`` call or, for
    ``type: "custom"``, a ``custom`` one (other types are kept as sent)."""

    id: str
    type: str = "function"
    function: FunctionCall | None = None
    custom: CustomToolCall | None = None

    def __post_init__(self) -> None:
        _require_member(self, self.type, ("function", "custom"))


def _require_member(obj: msgspec.Struct, kind: str, kinds: tuple[str, ...]) -> None:
    """An object tagged ``type: kind`` must carry the member of that name (OpenAI's
    ``{"type": "function", "function": {...}}`` pattern)."""
    if kind in kinds and getattr(obj, kind) is None:
        raise ValueError(f"Object missing required field `{kind}`")


class ChatMessage(msgspec.Struct, omit_defaults=True):
    """One message of ``messages``. ``content`` is a string, a list of parts, or null
    (an assistant message with only ``tool_calls``)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
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


class CustomToolDefinition(msgspec.Struct, omit_defaults=True):
    """``tools[].custom``: a tool the model calls with free-form text (``format``: plain
    text or a grammar)."""

    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    """One of ``tools``: ``{"type": "function", "function": {...}}`` or ``{"type":
    "custom", "custom": {...}}``. Other types are accepted as sent (the worker decides)."""

    type: str = "function"
    function: FunctionDefinition | None = None
    custom: CustomToolDefinition | None = None

    def __post_init__(self) -> None:
        _require_member(self, self.type, ("function", "custom"))


class NamedFunction(msgspec.Struct):
    name: str


class AllowedTools(msgspec.Struct):
    """``tool_choice.allowed_tools``: the model may call only these ``tools``; ``mode``
    ``"required"`` obliges it to call one."""

    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class NamedToolChoice(msgspec.Struct, omit_defaults=True):
    """An object ``tool_choice``: a named tool (``{"type": "function", "function":
    {"name"}}`` or ``{"type": "custom", "custom": {"name"}}``) or ``{"type":
    "allowed_tools", "allowed_tools": {"mode", "tools"}}``. Other types are kept as sent."""

    type: str = "function"
    function: NamedFunction | None = None
    custom: NamedFunction | None = None
    allowed_tools: AllowedTools | None = None

    def __post_init__(self) -> None:
        _require_member(self, self.type, ("function", "custom", "allowed_tools"))

    @property
    def forces_call(self) -> bool:
        """Whether the model must call a tool: a named tool, ``allowed_tools`` in mode
        ``"required"``, and (to be safe) any type podgate does not know."""
        if self.type == "allowed_tools":
            return self.allowed_tools is not None and self.allowed_tools.mode == "required"
        return True


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
    max_tokens: TokenLimit | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
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
    min_tokens: TokenLimit | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    stop_token_ids: list[int] | None = None

    def _check(self) -> None:
        if self.stream_options is not None and not self.stream:
            from adapters.errors import InvalidRequest

            raise InvalidRequest(STREAM_OPTIONS_WITHOUT_STREAM, param="stream_options")

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
    max_completion_tokens: TokenLimit | None = None
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
    token ids or a list of token-id lists; never an empty list (there is nothing to
    complete)."""

    prompt: str | Annotated[list[str | int | list[int]], Meta(min_length=1)]
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: PosInt | None = None

    @property
    def max_output_tokens(self) -> int | None:
        return self.max_tokens


#: How many inputs one embeddings request may carry (OpenAI's limit).
MAX_EMBEDDING_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")


class EmbeddingRequest(_Request, kw_only=True):
    """``POST /v1/embeddings`` body. ``input`` is a string, a list of strings, a list of
    token ids (one input) or a list of token-id lists; ``_check`` refuses anything else,
    an empty input, and more than ``MAX_EMBEDDING_INPUTS`` inputs. ``encoding_format`` is
    ``"float"`` (the default; also when null) or ``"base64"``."""

    model: str
    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: PosInt | None = None
    user: str | None = None

    @property
    def base64(self) -> bool:
        return self.encoding_format == "base64"

    @property
    def token_ids(self) -> bool:
        """Whether ``input`` is token ids (one list, or a list of lists)."""
        return isinstance(self.input, list) and not isinstance(self.input[0], str)

    def _check(self) -> None:
        from adapters.errors import InvalidRequest

        fmt = self.encoding_format
        if fmt is not None and fmt not in ENCODING_FORMATS:
            raise InvalidRequest(f"Invalid value for 'encoding_format': {fmt!r}. Supported values are: 'float' and "
                                 "'base64'.", param="encoding_format", code="invalid_value")
        problem = _embedding_input_problem(self.input)
        if problem is not None:
            where, what = problem
            raise InvalidRequest(f"Invalid '{where}': {what}", param="input")


_INPUT_KINDS = ("a non-empty string, an array of non-empty strings, an array of token ids (non-negative "
                "integers) or an array of non-empty token-id arrays")


def _is_token(x: Any) -> bool:
    return type(x) is int and x >= 0


def _embedding_input_problem(inp: str | list[Any]) -> tuple[str, str] | None:
    """Where ``input`` is wrong and why, or None when it is one of the four shapes."""
    if isinstance(inp, str):
        return ("input", "empty string. The input must be " + _INPUT_KINDS + ".") if not inp else None
    if not inp:
        return "input", "empty array. The input must be " + _INPUT_KINDS + "."
    first = inp[0]
    if _is_token(first):  # one input as token ids: any length (the model's context bounds it)
        bad = next((i for i, x in enumerate(inp) if not _is_token(x)), None)
        return None if bad is None else (f"input[{bad}]", "expected a token id (a non-negative integer) like "
                                         "the array's first item.")
    if len(inp) > MAX_EMBEDDING_INPUTS:
        return "input", f"too many inputs: at most {MAX_EMBEDDING_INPUTS} are allowed, got {len(inp)}."
    for i, x in enumerate(inp):
        if isinstance(first, str):
            if not isinstance(x, str):
                return f"input[{i}]", "expected a string like the array's first item."
            if not x:
                return f"input[{i}]", "empty string. Every input must be a non-empty string."
        elif isinstance(first, list):
            if not isinstance(x, list) or not x or not all(_is_token(t) for t in x):
                return f"input[{i}]", "expected a non-empty array of token ids (non-negative integers)."
        else:
            return f"input[{i}]", "the input must be " + _INPUT_KINDS + "."
    return None


_TOO_DEEP = object()

STREAM_OPTIONS_WITHOUT_STREAM = "The 'stream_options' parameter is only allowed when 'stream' is enabled."


def _too_deep(raw: Any, limit: int, body: Any = None) -> bool:
    """Whether ``raw`` (decoded JSON) nests objects/arrays more than ``limit`` levels.
    ``body``, the JSON text it came from, lets a body with few brackets skip the walk."""
    if isinstance(body, str):
        if body.count("{") + body.count("[") <= limit:
            return False
    elif isinstance(body, bytes) and body.count(b"{") + body.count(b"[") <= limit:
        return False
    stack = [(raw, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > limit:
            return True
        items = obj.values() if isinstance(obj, dict) else obj
        for v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
    return False


def _invalid(exc: msgspec.ValidationError, raw: Any) -> Exception:
    """A msgspec validation error as OpenAI words it: a value out of range gets OpenAI's
    message and code (``integer_below_min_value`` …); any other error keeps msgspec's
    message, with ``param`` naming the field (``tools[0].function`` for a missing one)."""
    from adapters.errors import InvalidRequest

    failure = read_validation_error(exc)
    if failure.bound is not None and failure.path is not None:
        typ, op, bound = failure.bound
        param = failure.path
        kind = "integer" if typ == "int" else "decimal"
        above = op[0] == "<"
        b = float(bound)
        bound = str(int(b)) if b.is_integer() else bound
        try:
            value = value_at(raw, param)
        except (KeyError, IndexError, TypeError):
            value = None
        got = str(value) if isinstance(value, (int, float)) else "another value"
        where = "above maximum" if above else "below minimum"
        return InvalidRequest(
            f"Invalid '{param}': {kind} {where} value. Expected a value {op} {bound}, but got {got} instead.",
            param=param, code=f"{kind}_{'above_max' if above else 'below_min'}_value",
        )
    field_path = failure.path
    if failure.missing is not None:
        field_path = f"{field_path}.{failure.missing}" if field_path else failure.missing
    return InvalidRequest(failure.message, param=field_path or None)


def _number(literal: str) -> int | float:
    """A JSON number written with a fraction or exponent: an int when it is integral (``5.0``,
    ``1e3``), as JSON has one number type and JSON Schema's ``integer`` includes them (as
    pydantic, vLLM's parser, reads them), else a float."""
    value = float(literal)
    return int(value) if value.is_integer() else value


_body_decoder = msgspec.json.Decoder(float_hook=_number)


def _decode_request(body: bytes | str | dict, cls: type[_Request]) -> Any:
    from adapters.errors import InvalidRequest

    try:
        raw = _body_decoder.decode(body) if isinstance(body, (bytes, bytearray, memoryview, str)) else body
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:  # deeper than the interpreter can decode: deeper than MAX_DEPTH
        raw = _TOO_DEEP
    if raw is _TOO_DEEP or (isinstance(raw, dict) and _too_deep(raw, MAX_DEPTH, body)):
        raise InvalidRequest(f"The request body is nested too deeply: at most {MAX_DEPTH} levels of objects "
                             "and arrays are allowed.")
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        req = msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, raw) from None
    req._check()
    req._raw = raw  # type: ignore[misc]
    return req


def decode_chat_request(body: bytes | str | dict) -> ChatCompletionRequest:
    """Validate a chat completions body; raise ``InvalidRequest`` (400) if malformed."""
    return _decode_request(body, ChatCompletionRequest)


def decode_completion_request(body: bytes | str | dict) -> CompletionRequest:
    """Validate a completions body; raise ``InvalidRequest`` (400) if malformed."""
    return _decode_request(body, CompletionRequest)


def decode_embedding_request(body: bytes | str | dict) -> EmbeddingRequest:
    """Validate an embeddings body; raise ``InvalidRequest`` (400) if malformed."""
    return _decode_request(body, EmbeddingRequest)


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


class UsageInfo(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(msgspec.Struct, kw_only=True):
    """``choices[].message``. ``content`` and ``refusal`` are always written (``null``
    when empty); ``tool_calls`` and the reasoning fields only when set. The reasoning
    fields may be ``null`` in a message passed through from vLLM, which always writes them."""

    role: str = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType | None = UNSET
    reasoning: str | UnsetType | None = UNSET


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
    usage: UsageInfo | UnsetType | None = UNSET


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
    usage: UsageInfo | UnsetType | None = UNSET


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


class Embedding(msgspec.Struct, kw_only=True):
    """One of ``data`` in an embeddings response: the vector as floats, or as base64 of its
    little-endian float32 bytes (``encoding_format: "base64"``)."""

    object: str = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    """An embeddings response (``object: "list"``). ``usage`` is always written by
    podgate; it is optional only to read workers' answers."""

    object: str = "list"
    data: list[Embedding]
    model: str = ""
    usage: EmbeddingUsage | None = None


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(msgspec.Struct):
    """``{"error": {"message", "type", "param", "code"}}`` — also the body of an in-stream
    ``data: {"error": ...}`` event."""

    error: ErrorDetail
