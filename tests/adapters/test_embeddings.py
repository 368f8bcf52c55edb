"""``adapters.embeddings``: job inputs, and upstream answers (bytes or objects) → the
client's response, as the queue path and the ``/openai/*`` passthrough both use them."""

from __future__ import annotations

import base64
import struct

import msgspec
import pytest

from adapters.embeddings import WholeOutputDecoder, embeddings_response, native_job_input, openai_job_input, \
    worker_texts
from adapters.errors import InvalidRequest, OpenAIError, UnsupportedParameter
from adapters.events import JobOutput
from adapters.formats import get_format
from adapters.openai_protocol import decode_embedding_request
from adapters.usage import encoding

VEC = [0.5, -1.25, 3.0, 1e-3]


def req(**kw):
    return decode_embedding_request({"model": "client-name", "input": "hi there", **kw})


def answer(*vectors, usage=True, model="served"):
    out = {"object": "list", "model": model,
           "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]}
    if usage:
        out["usage"] = {"prompt_tokens": 3, "total_tokens": 3}
    return out


async def respond(ans, request, **kw):
    return msgspec.json.decode(await embeddings_response(ans, request, "client-name", **kw))


async def test_floats_base64_and_model_name():
    got = await respond([answer(VEC)], req(encoding_format="float"))  # one-element list unwrapped
    assert got == {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": VEC}],
                   "model": "client-name", "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    got = await respond(msgspec.json.encode(answer(VEC)), req(encoding_format="base64"))  # bytes, as passthrough
    b64 = got["data"][0]["embedding"]
    assert base64.b64decode(b64) == struct.pack("<4f", *VEC)  # little-endian float32, as OpenAI sends
    # and back: a worker that sends base64 gives floats to a client that asked for floats
    got = await respond(answer(b64), req())
    assert got["data"][0]["embedding"] == pytest.approx(VEC, rel=1e-6)


@pytest.mark.parametrize(("body", "status"), [
    ({"object": "error", "message": "bad input", "type": "BadRequestError", "param": None, "code": 400}, 400),
    ([{"object": "error", "message": "no such model", "type": "NotFoundError", "code": 404}], 404),
    ({"error": {"message": "busy", "type": "ServiceUnavailable", "code": 503}}, 503),
    ({"error": "Invalid prompt"}, 500),
    ({"object": "list"}, 502),  # no data
    (b"not json", 502),
    (answer(VEC, VEC), 502),  # two vectors for one input
    (answer("!!notbase64"), 502),
])
async def test_error_answers(body, status):
    with pytest.raises(OpenAIError) as ei:
        await respond(body, req())
    assert ei.value.status == status


async def test_dimensions_and_estimated_usage():
    with pytest.raises(UnsupportedParameter):
        await respond(answer(VEC), req(dimensions=2))
    assert len((await respond(answer(VEC), req(dimensions=4)))["data"][0]["embedding"]) == 4
    headers: dict[str, str] = {}
    got = await respond(answer(VEC, usage=False), req(), headers=headers)
    assert headers == {"x-podgate-usage-estimated": "true"}
    assert got["usage"]["prompt_tokens"] == len(encoding().encode_ordinary("hi there"))


async def test_job_inputs_and_token_ids():
    ids = encoding().encode_ordinary("hello wörld")
    r = req(input=[ids, ids[:1]], encoding_format="base64", dimensions=8, user="u", extra_key=1)
    texts = await worker_texts(r)
    assert texts == ["hello wörld", encoding().decode(ids[:1])]
    assert openai_job_input(r, "served", texts) == {"openai_route": "/v1/embeddings", "openai_input": {
        "model": "served", "input": texts, "encoding_format": "base64", "dimensions": 8, "user": "u",
        "extra_key": 1}}
    assert native_job_input("served", "x") == {"model": "served", "input": "x"}
    assert await get_format("infinity-native").embeddings_input(req(input=ids), "m") == \
        {"model": "m", "input": "hello wörld"}
    with pytest.raises(UnsupportedParameter) as info:  # 400, as every parameter the model cannot take
        await worker_texts(req(input=[10**9]))
    assert (info.value.status, info.value.code, info.value.param) == (400, "unsupported_parameter", "input")


def test_formats_refuse_completions():
    from adapters.openai_protocol import decode_chat_request

    chat = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for name in ("infinity", "infinity-native"):
        with pytest.raises(OpenAIError) as ei:
            get_format(name).chat_input(chat, "m", stream=False)
        assert ei.value.status == 404 and ei.value.param == "model"


def test_whole_output_decoder():
    d = WholeOutputDecoder()
    assert d.feed({"a": 1}) == [] and d.close() == [JobOutput({"a": 1})]
    assert d.decode_final([1]) == [JobOutput([1])]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ""}, "input"), ({"input": [[]]}, "input"), ({"input": [True]}, "input"),
    ({"input": ["x"] * 2049}, "input"), ({"encoding_format": "bytes"}, "encoding_format"),
])
def test_request_validation(body, param):
    with pytest.raises(InvalidRequest) as ei:
        req(**body)
    assert ei.value.param == param


def test_request_accepts_openai_shapes():
    for inp in ("a", ["a", "b"], [1, 2, 3], [[1], [2, 3]], [0] * 5000, ["x"] * 2048):
        assert req(input=inp).input == inp
    assert req(input=[[1]]).token_ids and not req(input=["a"]).token_ids
    assert req(encoding_format=None).base64 is False
