"""``GET /openapi.json`` (``proxy.openapi``) and a schemathesis run over it.

The document is valid OpenAPI 3.1; its request schemas refuse what podgate's decoders
refuse and accept what they accept (``AGREEMENT``: each rule, including ``REFINEMENTS``,
held against the decoder). Then schemathesis fuzzes every operation of a podgate with a
client key, in front of the shared stack's endpoint and its SDK workers, and checks every
answer: no 5xx, statuses, content types, headers and bodies (SSE events included) as
documented, valid data accepted, invalid data refused, no answer without the key.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

from adapters.errors import InvalidRequest
from adapters.openai_protocol import decode_chat_request, decode_completion_request, decode_embedding_request
from proxy.keys import hash_key
from proxy.openapi import build_document
from tests.proxy.conftest import ProxyProcess, running_proxy, write_config

KEY = "pg-fuzz-0123456789abcdef"
#: the models the fuzzed requests name (besides the names schemathesis makes up: 404)
COMPLETION_MODELS = ["vllm-c", "vllm-b", "sglang", "native", "tgi", "text", "pass-c", "pass-same"]
EMBEDDING_MODELS = ["embed", "embed-native", "embed-pass"]
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


# -- schemathesis ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzzed(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    """A podgate with one client key, every worker format on the stack's endpoints."""
    from tests.proxy.conftest import EMBED_MODELS, MODELS

    tmp = tmp_path_factory.mktemp("openapi")
    config = write_config(tmp / "fuzzed.toml", stack.endpoint.base, "ep",
                          models={m: MODELS[m] for m in COMPLETION_MODELS},
                          extra_endpoints={"emb": {m: EMBED_MODELS[m] for m in EMBEDDING_MODELS}},
                          extra=f'\n[[keys]]\nname = "fuzz"\nsha256 = "{hash_key(KEY)}"\n')
    with running_proxy(config, stack.endpoint.api_key, tmp) as proxy:
        yield proxy


#: bounded and reproducible: 40 examples an operation (besides the coverage phase's own
#: cases), one seed, no example database (each run the same, wherever it runs), every check
CONFIG = schemathesis.Config.from_dict({
    "seed": 10,
    "request-timeout": 60,
    "generation": {"mode": "all", "max-examples": 40, "database": "none"},
    "auth": {"openapi": {"bearer": {"bearer": KEY}}},
})
#: the document the fuzzed podgate serves (``test_the_fuzzed_podgate_serves_the_schema``),
#: loaded here, before the podgate runs, so that pytest collects one test per operation
#: (``schemathesis.pytest.from_fixture``, which would read it from the running podgate,
#: fails on pytest 9.2: schemathesis 4.32 sets ``_nodeid``, which pytest's nodes lost)
schema = schemathesis.openapi.from_dict(build_document(secured=True), config=CONFIG)


def _token_ids(body: dict[str, Any]) -> bool:
    inp = body.get("input")
    return isinstance(inp, list) and bool(inp) and not isinstance(inp[0], str)


def _name_a_served_model(case: schemathesis.Case) -> None:
    """A body that names a model names one the podgate serves, or keeps its own made-up one
    (404), picked by the body's hash (every phase's cases, the same on every run). A body
    whose model is not a string is left as it is: that is what is wrong with it. Token ids
    to embed never go to ``embed-pass``: its infinity worker, as the real one, takes text
    only, and the passthrough hands them to it untouched (it answers 400)."""
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return
    models = COMPLETION_MODELS
    if case.operation.path == "/v1/embeddings":
        models = [m for m in EMBEDDING_MODELS if not (m == "embed-pass" and _token_ids(body))]
    pick = zlib.crc32(repr(body).encode("utf-8", "surrogatepass")) % (len(models) + 1)
    if pick < len(models):
        body["model"] = models[pick]


@schema.hook
def filter_failure(ctx: schemathesis.HookContext, failure: Any, case: schemathesis.Case,
                   response: schemathesis.Response) -> bool:
    """Every failure counts but one: a valid request refused because the model's worker
    cannot honour one of its parameters (400 ``unsupported_parameter``, e.g. ``tools`` for a
    TGI model, ``dimensions`` for infinity). What a worker honours depends on the model's
    format, not on the request, so no request schema can say it (DESIGN.md: podgate refuses
    what would change the answer's meaning)."""
    if isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        return response.json()["error"]["code"] != "unsupported_parameter"
    return True


def test_the_fuzzed_podgate_serves_the_schema(fuzzed):
    served = httpx.get(f"http://127.0.0.1:{fuzzed.port}/openapi.json", timeout=10).json()
    assert served == build_document(secured=True)


@schema.parametrize()
def test_schemathesis_finds_nothing(case, fuzzed):
    _name_a_served_model(case)
    case.call_and_validate(base_url=f"http://127.0.0.1:{fuzzed.port}")
