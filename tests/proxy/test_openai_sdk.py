"""Contract tests with the real ``openai`` SDK (sync, async, streaming) through podgate →
the local endpoint → real SDK workers emitting each worker format (see conftest.MODELS
and handlers/workers.py)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.proxy.conftest import EMBED_MODELS, MODELS, PLAIN_MODELS
from tests.proxy.handlers.workers import REASONING, TEXT, TOOLS

EXPECTED = "".join(TEXT)
USER = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="anything", max_retries=0)


def collect(stream) -> dict:
    """Join a chat stream per choice: text, reasoning, tool calls, finish, usage, ids."""
    out: dict = {"text": {}, "reasoning": {}, "tools": {}, "finish": {}, "usage": None, "ids": set(),
                 "chunks": 0, "roles": {}}
    for ch in stream:
        out["chunks"] += 1
        out["ids"].add(ch.id)
        if ch.usage is not None:
            assert not ch.choices, "usage comes in its own choices: [] chunk"
            out["usage"] = ch.usage
        for c in ch.choices:
            d = c.delta
            if d.role:
                out["roles"][c.index] = d.role
            out["text"][c.index] = out["text"].get(c.index, "") + (d.content or "")
            r = getattr(d, "reasoning_content", None) or (d.model_extra or {}).get("reasoning_content")
            if r:
                out["reasoning"][c.index] = out["reasoning"].get(c.index, "") + r
            for tc in d.tool_calls or []:
                slot = out["tools"].setdefault(c.index, {}).setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    assert slot["id"] is None, "the id comes once, with the first fragment"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["args"] += tc.function.arguments
            if c.finish_reason:
                out["finish"][c.index] = c.finish_reason
    return out


@pytest.mark.parametrize("model", list(MODELS))
def test_stream_equals_nonstream(client, model):
    full = client.chat.completions.create(model=model, messages=USER)
    assert full.object == "chat.completion" and full.model == model
    assert full.choices[0].message.content == EXPECTED
    assert full.choices[0].finish_reason == "stop"
    assert full.usage.prompt_tokens > 0 and full.usage.completion_tokens > 0
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    got = collect(client.chat.completions.create(model=model, messages=USER, stream=True,
                                                  stream_options={"include_usage": True}))
    assert got["text"] == {0: EXPECTED}
    assert got["finish"] == {0: "stop"}
    assert got["roles"] == {0: "assistant"}
    assert len(got["ids"]) == 1
    assert got["usage"] is not None and got["usage"].completion_tokens > 0
    if model not in ("tgi", "text"):  # these workers report no usage: podgate estimates
        assert got["usage"].model_dump() == full.usage.model_dump()


@pytest.mark.parametrize("model", ["vllm-c", "native", "text"])
def test_no_usage_chunk_unless_asked(client, model):
    got = collect(client.chat.completions.create(model=model, messages=USER, stream=True))
    assert got["usage"] is None
    assert got["text"] == {0: EXPECTED}


@pytest.mark.parametrize("model", ["vllm-c", "sglang", "native", "tgi"])
def test_completions_stream_and_not(client, model):
    full = client.completions.create(model=model, prompt="Say hello", max_tokens=50)
    assert full.object == "text_completion"
    assert full.choices[0].text == EXPECTED and full.choices[0].finish_reason == "stop"
    parts, finish = [], None
    for ch in client.completions.create(model=model, prompt="Say hello", max_tokens=50, stream=True):
        for c in ch.choices:
            parts.append(c.text)
            finish = c.finish_reason or finish
    assert "".join(parts) == EXPECTED and finish == "stop"


async def test_async_client(stack):
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    full = await client.chat.completions.create(model="vllm-b", messages=USER)
    text = ""
    async for ch in await client.chat.completions.create(model="vllm-b", messages=USER, stream=True):
        if ch.choices:
            text += ch.choices[0].delta.content or ""
    assert full.choices[0].message.content == text == EXPECTED
    await client.close()


@pytest.mark.parametrize("model", ["vllm-c", "vllm-list", "sglang"])
@pytest.mark.parametrize("scenario", ["tools_whole", "tools_split"])
def test_tool_calls(client, model, scenario):
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for _, n, _ in TOOLS]
    msgs = [{"role": "user", "content": f"#{scenario} weather?"}]
    full = client.chat.completions.create(model=model, messages=msgs, tools=tools)
    calls = full.choices[0].message.tool_calls
    assert full.choices[0].finish_reason == "tool_calls"
    assert full.choices[0].message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == \
        [(tid, name, "".join(args)) for tid, name, args in TOOLS]
    got = collect(client.chat.completions.create(model=model, messages=msgs, tools=tools, stream=True))
    assert got["finish"] == {0: "tool_calls"}
    assert [(t["id"], t["name"], t["args"]) for _, t in sorted(got["tools"][0].items())] == \
        [(c.id, c.function.name, c.function.arguments) for c in calls]
    json.loads(calls[0].function.arguments)


@pytest.mark.parametrize("model", ["vllm-c", "vllm-b"])
def test_logprobs(client, model):
    msgs = [{"role": "user", "content": "#logprobs"}]
    full = client.chat.completions.create(model=model, messages=msgs, logprobs=True, top_logprobs=1)
    toks = [t.token for t in full.choices[0].logprobs.content]
    assert "".join(toks) == EXPECTED
    streamed = []
    for ch in client.chat.completions.create(model=model, messages=msgs, logprobs=True, stream=True):
        for c in ch.choices:
            if c.logprobs and c.logprobs.content:
                streamed += [t.token for t in c.logprobs.content]
    assert streamed == toks


@pytest.mark.parametrize("model", ["vllm-c", "sglang", "native"])
def test_n_choices(client, model):
    full = client.chat.completions.create(model=model, messages=USER, n=2)
    assert [c.index for c in full.choices] == [0, 1]
    got = collect(client.chat.completions.create(model=model, messages=USER, n=2, stream=True))
    assert got["text"] == {c.index: c.message.content for c in full.choices}
    assert got["finish"] == {0: "stop", 1: "stop"}
    if model != "native":
        assert got["text"][1] == "[1] " + EXPECTED


@pytest.mark.parametrize("model", ["vllm-c", "sglang"])
def test_reasoning(client, model):
    msgs = [{"role": "user", "content": "#reasoning"}]
    full = client.chat.completions.create(model=model, messages=msgs)
    msg = full.choices[0].message
    assert msg.content == EXPECTED
    assert (msg.model_extra or {}).get("reasoning_content") == "".join(REASONING)
    got = collect(client.chat.completions.create(model=model, messages=msgs, stream=True))
    assert got["reasoning"] == {0: "".join(REASONING)} and got["text"] == {0: EXPECTED}


def test_headers_and_ids(stack, http):
    r = http.post("/chat/completions", json={"model": "vllm-c", "messages": USER})
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    job = r.headers["x-runpod-job-id"]
    assert stack.job_status(job)["status"] == "COMPLETED"
    with http.stream("POST", "/chat/completions", json={"model": "vllm-c", "messages": USER, "stream": True}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers["x-runpod-job-id"] and s.headers["x-request-id"]
        lines = [ln for ln in s.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    # usage from the worker: no estimate header; from tiktoken: the header says so
    assert "x-podgate-usage-estimated" not in r.headers
    r = http.post("/chat/completions", json={"model": "text", "messages": USER})
    assert r.headers["x-podgate-usage-estimated"] == "true"


def test_ignored_params_header(http):
    body = {"model": "text", "messages": USER,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 200
    assert "tools" in r.headers["x-podgate-ignored-params"].split(",")
    assert r.json()["choices"][0]["message"]["content"] == EXPECTED


def test_aggregate_only_output(client):
    """A worker that streams nothing: the stream still carries the whole answer (from the
    one ``/status`` call at the end)."""
    got = collect(client.chat.completions.create(model="plain-text", messages=USER, stream=True))
    assert got["text"] == {0: EXPECTED} and got["finish"] == {0: "stop"}
    full = client.chat.completions.create(model="plain-text", messages=USER)
    assert full.choices[0].message.content == EXPECTED


def test_models(stack, client):
    ids = [m.id for m in client.models.list()]
    assert ids == [*MODELS, *PLAIN_MODELS, *EMBED_MODELS]
    m = client.models.retrieve("sglang")
    assert m.id == "sglang" and m.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


@pytest.mark.parametrize("model", ["vllm-c", "pass-c"])
def test_keepalive_while_waiting(stack, http, model):
    """A job that goes quiet (#slow: two events, then nothing) gets ``: keep-alive`` comments
    (every 0.3 s in this config), on the queue path and through the gateway (which names no
    job)."""
    body = {"model": model, "messages": [{"role": "user", "content": "#slow"}], "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as s:
        job = s.headers.get("x-runpod-job-id")
        seen = []
        for line in s.iter_lines():
            seen.append(line)
            if line.startswith(": keep-alive"):
                break
    assert any(x.startswith("data: {") for x in seen)
    if model == "pass-c":
        assert job is None
    else:
        assert stack.wait_status(job, "CANCELLED") == "CANCELLED"


def test_raw_http_stream_matches_sdk_shape(http):
    """Every chunk carries the same id/created/model; the first has the role."""
    body = {"model": "vllm-c", "messages": USER, "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as s:
        datas = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {(chunks[0]["id"], chunks[0]["created"], "vllm-c")}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in c for c in chunks)


def test_many_concurrent_streams(stack):
    """Several streams at once over one podgate process (the poller does not serialise)."""
    import concurrent.futures

    client = openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0, http_client=httpx.Client(timeout=30))

    def one(i):
        return collect(client.chat.completions.create(model="vllm-b", messages=USER, stream=True))["text"][0]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(one, range(16))) == [EXPECTED] * 16
