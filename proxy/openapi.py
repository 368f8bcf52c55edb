"""podgate's OpenAPI 3.1 document, served open at ``GET /openapi.json``.

The schemas are podgate's own: ``msgspec.json.schema_components`` turns the request and
response Structs of ``adapters.openai_protocol`` into ``components.schemas``, so the
document cannot drift from what the decoders accept and the encoders write. Litestar's own
OpenAPI plugin cannot do this (the completion routes are plain ASGI handlers whose bodies it
never sees), so ``proxy.app`` keeps it off and this module writes the ``paths`` itself.

What the Structs' types cannot say, the decoders check in code (``_check``,
``__post_init__``); ``REFINEMENTS`` states the same rules in JSON Schema on top of the
generated components, so the document refuses what podgate refuses (``tests/proxy/
test_openapi.py`` holds each rule against the decoder).

Streams (``stream: true``) answer ``text/event-stream``; as OpenAPI 3.1 has no item schema
for sequential media types, the schema of that media type describes one event, as
OpenAPI 3.2 reads it: its ``data`` is ``[DONE]`` or JSON (``contentSchema``) of a chunk or,
for an error after the first byte, an ``ErrorResponse``.

Every error is an ``ErrorResponse`` with the status podgate answers with; an error a
model's worker reports keeps the status the worker gave it (most often one of these).
With client keys configured the ``/v1/`` operations need a bearer key (401 otherwise);
without, the document says so by requiring none. The app builds the document once, at
start, and serves its bytes.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import msgspec
from litestar import Request, Response, get

from adapters.openai_protocol import (
    MAX_EMBEDDING_INPUTS, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest,
    EmbeddingList, EmbeddingRequest, ErrorResponse, Model, ModelList, TextCompletion, TextCompletionChunk,
)

__all__ = ["REFINEMENTS", "build_document", "document_bytes", "openapi_json"]

_SCHEMAS = "#/components/schemas/"
_STRUCTS = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ChatCompletion, ChatCompletionChunk,
            TextCompletion, TextCompletionChunk, EmbeddingList, ModelList, Model, ErrorResponse)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _member_required(kinds: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``_require_member``: an object tagged ``type: kind`` (``"function"`` when absent)
    carries the member of that name, not null."""
    def tagged(kind: str) -> dict[str, Any]:
        is_kind = {"properties": {"type": {"const": kind}}}
        return is_kind if kind == "function" else {**is_kind, "required": ["type"]}

    return {"allOf": [{"if": tagged(kind), "then": {"required": [kind], "properties": {kind: _ref(schema)}}}
                      for kind, schema in kinds]}


_STREAM_OPTIONS_NEED_STREAM = {"allOf": [{
    "if": {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}]}
_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}

REFINEMENTS: dict[str, dict[str, Any]] = {
    "ChatCompletionRequest": _STREAM_OPTIONS_NEED_STREAM,
    "CompletionRequest": _STREAM_OPTIONS_NEED_STREAM,
    "Tool": _member_required((("function", "FunctionDefinition"), ("custom", "CustomToolDefinition"))),
    "MessageToolCall": _member_required((("function", "FunctionCall"), ("custom", "CustomToolCall"))),
    "NamedToolChoice": _member_required((("function", "NamedFunction"), ("custom", "NamedFunction"),
                                         ("allowed_tools", "AllowedTools"))),
    "EmbeddingRequest": {"properties": {
        "input": {"anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": {"type": "string", "minLength": 1}},
            _TOKENS,
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": _TOKENS},
        ]},
        "encoding_format": {"enum": ["float", "base64", None], "default": None},
    }},
}
"""Component name → JSON Schema merged into the generated one (``properties`` replaced one
by one, other keys added): the rules the decoders check in code (module docstring)."""


def _components() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(_STRUCTS, ref_template=_SCHEMAS + "{name}")
    for name, extra in REFINEMENTS.items():
        schema = schemas[name]
        for key, value in extra.items():
            if key == "properties":
                schema["properties"].update(value)
            else:
                schema[key] = value
    return schemas


_HEADERS = {
    "x-request-id": {"description": "podgate's id of the request (also in its log line).", "required": True,
                     "schema": {"type": "string"}},
    "x-runpod-job-id": {"description": "The RunPod job that answered.", "schema": {"type": "string"}},
    "x-podgate-ignored-params": {"description": "Parameters the model's worker cannot honour and podgate "
                                 "ignored, comma-separated.", "schema": {"type": "string"}},
    "x-podgate-usage-estimated": {"description": "`true` when podgate counted the usage (tiktoken) because the "
                                  "worker reported none.", "schema": {"type": "string"}},
    "x-podgate-served-by": {"description": "The model that served the request: the one asked for, or one of its "
                            "`fallbacks`.", "schema": {"type": "string"}},
    "retry-after": {"description": "Seconds to wait before a retry (429).", "schema": {"type": "string"}},
    "x-should-retry": {"description": "Whether a retry may succeed (the OpenAI SDKs obey it).",
                       "schema": {"type": "string", "enum": ["true", "false"]}},
}
_ANSWER_HEADERS = ("x-request-id", "x-runpod-job-id", "x-podgate-ignored-params", "x-podgate-usage-estimated",
                   "x-podgate-served-by")
_ERROR_HEADERS = ("x-request-id", "x-runpod-job-id", "retry-after", "x-should-retry", "x-podgate-served-by")

_ERRORS = {
    400: "The request is malformed, or asks what the model's worker cannot honour (`param` names the field).",
    401: "No valid client key (`Authorization: Bearer <key>`).",
    403: "The model does not make embeddings.",
    404: "No such model (or not one the key may use).",
    413: "The request body is larger than podgate accepts.",
    429: "RunPod's (or the key's) rate limit was reached: retry after `Retry-After` seconds.",
    500: "podgate failed, its RunPod key was refused, or the worker failed.",
    502: "RunPod or the worker answered badly, or the job was lost or cancelled.",
    503: "podgate is shutting down: the request was still waiting when its drain ended (retry after `Retry-After`).",
    504: "RunPod or the job timed out (the job was cancelled).",
}


def _response(description: str, content: dict[str, Any], headers: tuple[str, ...]) -> dict[str, Any]:
    return {"description": description, "headers": {h: {"$ref": "#/components/headers/" + h} for h in headers},
            "content": content}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _sse_event(chunk: str) -> dict[str, Any]:
    """One event of a stream (see the module docstring): ``[DONE]`` or JSON of ``chunk``
    or of an ``ErrorResponse``."""
    payload = {"contentMediaType": "application/json", "contentSchema": {"anyOf": [_ref(chunk), _ref("ErrorResponse")]}}
    return {"type": "object", "required": ["data"], "properties": {
        "data": {"type": "string", "if": {"const": "[DONE]"}, "else": payload},
    }}


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {str(s): _response(_ERRORS[s], _json(_ref("ErrorResponse")), _ERROR_HEADERS) for s in statuses}


def _completions(summary: str, request: str, answer: str, chunk: str, secured: bool) -> dict[str, Any]:
    ok = _response(f"The {answer} (`application/json`), or with `stream: true` its chunks as server-sent "
                   "events (`text/event-stream`), ended by `data: [DONE]`; an error after the first byte is a "
                   "`data: {\"error\": …}` event before it.",
                   {**_json(_ref(answer)), "text/event-stream": {"schema": _sse_event(chunk)}}, _ANSWER_HEADERS)
    return {"post": {
        "summary": summary, "operationId": summary.replace(" ", ""),
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": ok, **_errors(_with_401((400, 404, 413, 429, 500, 502, 503, 504), secured))},
    }}


def _with_401(statuses: tuple[int, ...], secured: bool) -> tuple[int, ...]:
    return tuple(sorted((*statuses, 401))) if secured else statuses


def _probe(summary: str, schema: dict[str, Any], *, not_ready: bool = False) -> dict[str, Any]:
    responses = {"200": _response("Alive." if not not_ready else "Ready.", _json(schema), ("x-request-id",))}
    if not_ready:
        responses["503"] = _response("Not ready (starting, or draining at shutdown).", _json(schema), ("x-request-id",))
    return {"get": {"summary": summary, "operationId": summary.replace(" ", ""), "security": [],
                    "responses": responses}}


def build_document(*, secured: bool) -> dict[str, Any]:
    """The OpenAPI document; ``secured``: client keys are configured (bearer key required)."""
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/chat/completions": _completions("Create chat completion", "ChatCompletionRequest", "ChatCompletion",
                                             "ChatCompletionChunk", secured),
        "/v1/completions": _completions("Create completion", "CompletionRequest", "TextCompletion",
                                        "TextCompletionChunk", secured),
        "/v1/embeddings": {"post": {
            "summary": "Create embeddings", "operationId": "CreateEmbeddings",
            "requestBody": {"required": True, "content": _json(_ref("EmbeddingRequest"))},
            "responses": {"200": _response("The embeddings.", _json(_ref("EmbeddingList")), _ANSWER_HEADERS),
                          **_errors(_with_401((400, 403, 404, 413, 429, 500, 502, 503, 504), secured))},
        }},
        "/v1/models": {"get": {
            "summary": "List models", "operationId": "ListModels",
            "responses": {"200": _response("The models (those the key may use).", _json(_ref("ModelList")),
                                           ("x-request-id",)), **_errors(_with_401((), secured))},
        }},
        "/v1/models/{model_id}": {"get": {
            "summary": "Retrieve model", "operationId": "RetrieveModel", "parameters": [model_id],
            "responses": {"200": _response("The model.", _json(_ref("Model")), ("x-request-id",)),
                          **_errors(_with_401((404,), secured))},
        }},
        "/healthz": _probe("Alive", {"type": "object", "required": ["status"],
                                     "properties": {"status": {"const": "ok"}}}),
        "/readyz": _probe("Ready", {"type": "object", "required": ["ready"],
                                    "properties": {"ready": {"type": "boolean"}}}, not_ready=True),
    }
    components: dict[str, Any] = {"schemas": _components(), "headers": _HEADERS}
    if secured:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                    "description": "A podgate client key (`[[keys]]`)."}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "podgate", "version": importlib.metadata.version("podgate"),
                 "description": "An OpenAI-compatible gateway for RunPod Serverless."},
        "paths": paths,
        "components": components,
        "security": [{"bearer": []}] if secured else [],
    }


def document_bytes(*, secured: bool) -> bytes:
    """``build_document`` as JSON: ``proxy.app`` builds it once, at app start, into
    ``app.state.openapi``."""
    return msgspec.json.encode(build_document(secured=secured))


@get("/openapi.json")
async def openapi_json(request: Request) -> Response:
    return Response(content=request.app.state.openapi, media_type="application/json")
