"""Every error form → OpenAI's error shape with a real status → the SDK's exception class.

Worker errors come from the test handler's ``#error_*`` scenarios (the shapes of
reference/worker-formats.md §2, §8.6); RunPod's HTTP errors from a proxy pointed at a
wrong key, an unknown endpoint, or a closed port.
"""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.proxy.conftest import HANDLER, start_proxy, write_config


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0)


def ask(client, scenario, *, model="vllm-c", stream=False):
    msgs = [{"role": "user", "content": f"#{scenario}"}]
    if not stream:
        return client.chat.completions.create(model=model, messages=msgs)
    for _ in client.chat.completions.create(model=model, messages=msgs, stream=True):
        pass


WORKER_ERRORS = [
    # scenario, exception, status, text in the message
    ("error_nested", openai.BadRequestError, 400, "maximum context length"),  # FAILED, repr of a nested error
    ("error_flat", openai.NotFoundError, 404, "does not exist"),  # COMPLETED with {"object": "error"}
    ("error_vllm_http", openai.BadRequestError, 400, "top_p"),  # Era C "vLLM returned HTTP 400: …"
    ("error_raise", openai.InternalServerError, None, "engine crashed"),  # handler raised (traceback dropped)
    ("error_string", openai.InternalServerError, None, "Invalid prompt"),  # {"error": "<str>"}
]


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
@pytest.mark.parametrize("scenario,exc,status,text", WORKER_ERRORS, ids=[w[0] for w in WORKER_ERRORS])
def test_worker_error_forms(client, scenario, exc, status, text, stream):
    """Errors known before the first byte get a real HTTP status, streaming or not."""
    with pytest.raises(exc) as info:
        ask(client, scenario, stream=stream)
    if status is not None:
        assert info.value.status_code == status
    assert text in info.value.message
    assert "traceback" not in info.value.message.lower()
    body = info.value.body
    assert isinstance(body, dict) and {"message", "type"} <= set(body)


@pytest.mark.parametrize("model", ["vllm-c", "sglang"])
def test_error_after_first_byte_is_an_sse_error(client, model):
    """An error mid-stream: ``data: {"error": …}`` then ``[DONE]`` → ``openai.APIError``."""
    with pytest.raises(openai.APIError) as info:
        ask(client, "error_midstream", model=model, stream=True)
    assert "engine died" in str(info.value)


def test_error_after_first_byte_raw(http):
    body = {"model": "vllm-c", "messages": [{"role": "user", "content": "#error_midstream"}], "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as s:
        assert s.status_code == 200
        datas = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert datas[-1] == "data: [DONE]"
    assert datas[-2].startswith('data: {"error":')


def test_bad_json_and_bad_params(http):
    r = http.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post("/chat/completions", json={"model": "vllm-c", "messages": [{"role": "user", "content": "x"}], "n": "two"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = http.post("/chat/completions", json={"model": "vllm-c"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = http.post("/chat/completions", json=[1, 2])
    assert r.status_code == 400
    r = http.get("/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    r = http.get("/nope")
    assert r.status_code == 404 and "error" in r.json()
    assert r.headers["x-request-id"]


def test_sdk_classes_for_client_errors(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:  # a text worker cannot return logprobs
        client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert info.value.body["param"] == "logprobs"
    with pytest.raises(openai.BadRequestError) as info:  # nor honour a required tool call
        client.chat.completions.create(
            model="text", messages=[{"role": "user", "content": "x"}], tool_choice="required",
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert info.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="vllm-c", messages=[{"role": "user", "content": "x"}], temperature=-1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["wrong-key", "unknown-endpoint", "unreachable"])
def test_runpod_http_errors(stack, tmp_path, case):
    base, endpoint, key = stack.endpoint.base, "ep", stack.endpoint.api_key
    if case == "wrong-key":
        key = "not-the-key"
    elif case == "unknown-endpoint":
        endpoint = "nope"
    else:
        base = f"http://127.0.0.1:{_free_port()}/v2"
    proxy = start_proxy(write_config(tmp_path / f"{case}.toml", base, endpoint, models={"m": ("vllm", "era-c")}),
                        key, tmp_path)
    try:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as info:
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=stream)
                for _ in r if stream else ():
                    pass
            assert info.value.status_code in (500, 502)
            assert key not in info.value.message
            # only a job RunPod never got is safe to retry
            assert info.value.response.headers.get("x-should-retry") == ("true" if case == "unreachable" else "false")
    finally:
        proxy.stop()


def test_rate_limited_by_runpod_is_429(stack, tmp_path, module_endpoint_factory):
    server = module_endpoint_factory(endpoints=("rl",), limits={"run": (1, 0), "runsync": (1, 0)}, rate_window=60)
    proxy = start_proxy(write_config(tmp_path / "rl.toml", server.base, "rl", models={"m": ("vllm", "era-c")}),
                        server.api_key, tmp_path)
    try:
        with httpx.Client(base_url=proxy.base_url, timeout=10) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            statuses = []
            for _ in range(3):
                with c.stream("POST", "/chat/completions", json=body) as s:  # closed unread
                    statuses.append((s.status_code, s.headers.get("retry-after")))
        assert statuses[-1][0] == 429 and statuses[-1][1] is not None
    finally:
        proxy.stop()


def test_stream_survives_rate_limited_polls(stack, tmp_path, module_endpoint_factory):
    """/stream polls refused with 429 mid-stream are retried after Retry-After: the client
    gets the whole answer, the same text as without limits, and no in-stream error."""
    server = module_endpoint_factory(endpoints=("slowpoll",), limits={"stream": (3, 0)}, rate_window=1)
    server.worker(HANDLER, endpoint="slowpoll", concurrency=2)
    proxy = start_proxy(write_config(tmp_path / "sp.toml", server.base, "slowpoll", models={"m": ("vllm", "era-c")}),
                        server.api_key, tmp_path)
    try:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "hi #dribble"}]
        expected = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
        stream = client.chat.completions.create(model="m", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == expected and text
    finally:
        proxy.stop()
