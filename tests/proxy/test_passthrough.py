"""The ``/openai/*`` passthrough (``format = "openai"``): podgate → the local endpoint's
``/openai/v1`` gateway → real SDK workers, through the real ``openai`` SDK and raw HTTP.

The contract shared with the queue path (stream equals non-stream, usage, the client's model
name) runs for the ``pass-*`` models in test_openai_sdk.py and test_frameworks.py; here are
what only the passthrough has: RunPod's errors with HTTP 200 or 500, errors inside a stream,
disconnects (no job id: the job is found by its handler's marker), and the queue
fallback for long requests.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.proxy.handlers.workers import TEXT

EXPECTED = "".join(TEXT)


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="anything", max_retries=0)


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("scenario,error,status", [
    ("error_flat", openai.NotFoundError, 404),  # COMPLETED with {"object":"error"}: the gateway's 200
    ("error_nested", openai.BadRequestError, 400),  # FAILED: the gateway's 500 holds a 400
    ("error_vllm_http", openai.BadRequestError, 400),  # FAILED, "vLLM returned HTTP 400: …"
    ("error_raise", openai.InternalServerError, 500),  # the handler raised
])
@pytest.mark.parametrize("stream", [False, True])
def test_errors_get_their_real_status(client, scenario, error, status, stream):
    with pytest.raises(error) as info:
        answer = client.chat.completions.create(model="pass-c", messages=say(f"#{scenario}"), stream=stream)
        if stream:
            list(answer)
    assert info.value.status_code == status
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert "traceback" not in info.value.message.lower()


def test_error_mid_stream_ends_the_stream_with_an_error_event(stack, http):
    body = {"model": "pass-b", "messages": say("#error_midstream"), "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as s:
        assert s.status_code == 200
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2] and "engine died" in lines[-2]
    assert all('"model":"pass-b"' in ln.replace(" ", "") for ln in lines[:-2])


def test_no_usage_chunk_unless_asked_and_the_clients_model_name(http):
    body = {"model": "pass-c", "messages": say("hi"), "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as s:
        datas = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    assert all('"usage"' not in d for d in datas)
    assert all('"era-c"' not in d for d in datas) and all('"pass-c"' in d for d in datas[:-1])


def _started_job(stack, before: set, timeout: float = 15.0) -> str:
    """The job whose handler started since ``before`` (the gateway names no job: its handler's
    marker does)."""
    deadline = time.monotonic() + timeout
    started: list = []
    while not started and time.monotonic() < deadline:
        started = [p for p in stack.markers.glob("*.started") if p not in before]
        time.sleep(0.02)
    assert len(started) == 1, started
    return started[0].name.removesuffix(".started")


def test_stream_closed_by_the_client_cancels_the_job(stack, client):
    before = set(stack.markers.glob("*.started"))
    stream = client.chat.completions.create(model="pass-c", messages=say("#slow"), stream=True)
    first = next(iter(stream))
    assert first.model == "pass-c"
    job = _started_job(stack, before)
    stream.close()
    assert stack.wait_status(job, "CANCELLED", timeout=1.0) == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled"), "the handler did not see its cancellation"


def test_abandoned_nonstream_request_cancels_the_job(stack):
    before = set(stack.markers.glob("*.started"))
    body = {"model": "pass-c", "messages": say("#slow_nonstream")}

    def request():
        try:
            with httpx.Client(base_url=stack.base_url, timeout=2.0) as c:
                c.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            pass  # the client gives up: it closes the connection

    t = threading.Thread(target=request)
    t.start()
    job = _started_job(stack, before)
    t.join(10)
    assert stack.wait_status(job, "CANCELLED", timeout=1.0) == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled")


def test_long_requests_take_the_queue_when_a_queue_format_is_set(http):
    """``pass-queue`` passes through requests for at most 100 tokens; the rest go through
    ``/run`` (a job id in the headers) — both answer the same."""
    short = http.post("/chat/completions", json={"model": "pass-queue", "messages": say("hi"), "max_tokens": 100})
    long = http.post("/chat/completions", json={"model": "pass-queue", "messages": say("hi")})
    assert short.status_code == long.status_code == 200
    assert "x-runpod-job-id" not in short.headers and long.headers["x-runpod-job-id"]
    for answer in (short.json(), long.json()):
        assert answer["model"] == "pass-queue" and answer["choices"][0]["message"]["content"] == EXPECTED


def test_completions_stream_and_not(client):
    full = client.completions.create(model="pass-b", prompt="Say hello", max_tokens=50)
    assert full.model == "pass-b" and full.choices[0].text == EXPECTED
    parts = [c.text for ch in client.completions.create(model="pass-b", prompt="Say hello", max_tokens=50,
                                                         stream=True) for c in ch.choices]
    assert "".join(parts) == EXPECTED


async def test_async_client(stack):
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    full = await client.chat.completions.create(model="pass-b", messages=say("hi"))
    text = ""
    async for ch in await client.chat.completions.create(model="pass-b", messages=say("hi"), stream=True):
        if ch.choices:
            text += ch.choices[0].delta.content or ""
    assert full.choices[0].message.content == text == EXPECTED
    await client.close()
