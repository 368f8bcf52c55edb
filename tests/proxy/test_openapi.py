"""``GET /openapi.json`` (``proxy.openapi``).

The document is valid OpenAPI 3.1; its request schemas refuse what podgate's decoders
refuse and accept what they accept (``AGREEMENT``: each rule, including ``REFINEMENTS``,
held against the decoder).
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
import schemathesis

from adapters.errors import InvalidRequest
from adapters.openai_protocol import decode_chat_request, decode_completion_request, decode_embedding_request
from proxy.openapi import build_document

USER = [{"role": "user", "content": "Say hello"}]


# -- the document ------------------------------------------------------------------------

def _validator(document: dict[str, Any], component: str) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator of one component, its references resolved in ``document``."""
    return jsonschema_rs.Draft202012Validator({**document, "$ref": f"#/components/schemas/{component}"})


def _accepts(decode: Any, body: dict[str, Any]) -> bool:
    try:
        decode(msgspec.json.encode(body))  # as a client sends it
    except InvalidRequest:
        return False
    return True


CHAT = ("ChatCompletionRequest", decode_chat_request)
COMPLETION = ("CompletionRequest", decode_completion_request)
EMBEDDING = ("EmbeddingRequest", decode_embedding_request)
FN = {"name": "f", "parameters": {"type": "object"}}
#: (request, body, accepted): the schema and the decoder must both agree with ``accepted``
AGREEMENT = [
    (CHAT, {"model": "m", "messages": USER}, True),
    (CHAT, {"model": "m"}, False),
    (CHAT, {"messages": USER}, False),
    (CHAT, {"model": "m", "messages": []}, False),
    (CHAT, {"model": "m", "messages": [{"role": "robot", "content": "x"}]}, False),
    (CHAT, {"model": "m", "messages": USER, "temperature": 2.5}, False),
    (CHAT, {"model": "m", "messages": USER, "n": 0}, False),
    (CHAT, {"model": "m", "messages": USER, "n": 1.5}, False),
    (CHAT, {"model": "m", "messages": USER, "n": 2.0, "max_tokens": 5.0, "seed": -1e3}, True),  # integers
    (CHAT, {"model": "m", "messages": USER, "vendor_extra": {"a": 1}}, True),  # unknown keys are kept
    (CHAT, {"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, False),
    (CHAT, {"model": "m", "messages": USER, "stream": False, "stream_options": {"include_usage": True}}, False),
    (CHAT, {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}, True),
    (CHAT, {"model": "m", "messages": USER, "stream_options": None}, True),
    (CHAT, {"model": "m", "messages": USER, "tools": [{"type": "function", "function": FN}]}, True),
    (CHAT, {"model": "m", "messages": USER, "tools": [{"function": FN}]}, True),
    (CHAT, {"model": "m", "messages": USER, "tools": [{"type": "function"}]}, False),
    (CHAT, {"model": "m", "messages": USER, "tools": [{}]}, False),
    (CHAT, {"model": "m", "messages": USER, "tools": [{"type": "custom", "function": FN}]}, False),
    (CHAT, {"model": "m", "messages": USER, "tools": [{"type": "web_search"}]}, True),
    (CHAT, {"model": "m", "messages": USER, "tool_choice": {"type": "function", "function": {"name": "f"}}}, True),
    (CHAT, {"model": "m", "messages": USER, "tool_choice": {"type": "allowed_tools"}}, False),
    (CHAT, {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
     False),
    (COMPLETION, {"model": "m", "prompt": "Say hello"}, True),
    (COMPLETION, {"model": "m", "prompt": [[1, 2], [3]]}, True),
    (COMPLETION, {"model": "m"}, False),
    (COMPLETION, {"model": "m", "prompt": []}, False),
    (COMPLETION, {"model": "m", "prompt": "x", "best_of": 0}, False),
    (COMPLETION, {"model": "m", "prompt": "x", "stream_options": {}}, False),
    (EMBEDDING, {"model": "m", "input": "hello"}, True),
    (EMBEDDING, {"model": "m", "input": ["a", "b"]}, True),
    (EMBEDDING, {"model": "m", "input": [1, 2, 3]}, True),
    (EMBEDDING, {"model": "m", "input": [[1, 2], [3]]}, True),
    (EMBEDDING, {"model": "m", "input": ""}, False),
    (EMBEDDING, {"model": "m", "input": []}, False),
    (EMBEDDING, {"model": "m", "input": ["a", ""]}, False),
    (EMBEDDING, {"model": "m", "input": ["a", 1]}, False),
    (EMBEDDING, {"model": "m", "input": [1, -1]}, False),
    (EMBEDDING, {"model": "m", "input": [1, 2.0]}, True),
    (EMBEDDING, {"model": "m", "input": [1, 2.5]}, False),
    (EMBEDDING, {"model": "m", "input": [[1], []]}, False),
    (EMBEDDING, {"model": "m", "input": ["a"] * 2049}, False),
    (EMBEDDING, {"model": "m", "input": "a", "encoding_format": "base64"}, True),
    (EMBEDDING, {"model": "m", "input": "a", "encoding_format": None}, True),
    (EMBEDDING, {"model": "m", "input": "a", "encoding_format": "int8"}, False),
    (EMBEDDING, {"model": "m", "input": "a", "dimensions": 0}, False),
]


def test_the_document_is_valid_openapi_31(stack):
    answer = httpx.get(f"http://127.0.0.1:{stack.proxy.port}/openapi.json", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["openapi"] == "3.1.0" and document == build_document(secured=False)
    schemathesis.openapi.from_dict(document).validate()  # OpenAPI 3.1's own schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # each a valid JSON Schema 2020-12
    assert set(document["paths"]) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                                      "/v1/models/{model_id}", "/healthz", "/readyz"}
    assert document["security"] == [] and "securitySchemes" not in document["components"]  # open podgate
    broken = {**document, "paths": {"/healthz": {"get": {"responses": "none"}}}}
    with pytest.raises(jsonschema_rs.ValidationError):  # the validation above can fail
        schemathesis.openapi.from_dict(broken).validate()


def test_with_client_keys_the_v1_operations_need_a_bearer_key():
    document = build_document(secured=True)
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "A podgate client key (`[[keys]]`)."}
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in document["paths"]["/v1/chat/completions"]["post"]["responses"]


@pytest.mark.parametrize(("request_kind", "body", "accepted"), AGREEMENT,
                         ids=[f"{r[0]}-{i}" for i, (r, _, _) in enumerate(AGREEMENT)])
def test_the_request_schemas_refuse_what_podgate_refuses(request_kind, body, accepted):
    component, decode = request_kind
    document = build_document(secured=False)
    assert _accepts(decode, body) is accepted, "the decoder"
    assert _validator(document, component).is_valid(body) is accepted, "the schema"


@pytest.mark.parametrize("scenario", ["hello", "reasoning", "tools_whole", "length"])
def test_answers_as_vllm_writes_them_conform(scenario):
    """A passed-through answer is the worker's own: the test workers write vLLM's shapes
    (``reasoning: null`` and extra fields included)."""
    from tests.proxy.handlers.workers import _chat_chunks, _chat_response, _completion_response, _plan

    document = build_document(secured=False)
    plan = _plan(scenario, {"n": 2, "logprobs": True})
    _validator(document, "ChatCompletion").validate(_chat_response(plan, "m"))
    _validator(document, "TextCompletion").validate(_completion_response(plan, "m"))
    for chunk in _chat_chunks(plan, "m", include_usage=True):
        _validator(document, "ChatCompletionChunk").validate(chunk)


def test_the_schemas_are_the_structs_own():
    """Generated from the Structs: a field added to one shows in the document."""
    document = build_document(secured=False)
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"] and "max_completion_tokens" in chat["properties"]
    assert chat["properties"]["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 2}
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"message", "type", "param", "code"}
