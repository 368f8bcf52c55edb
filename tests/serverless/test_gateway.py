"""The local endpoint's OpenAI gateway, ``/v2/{id}/openai/v1/*`` (``serverless.openai_gateway``):
the real ``openai`` SDK pointed straight at it, real ``runpod`` SDK workers running
``tests.proxy.handlers.workers:handler`` in each worker-vllm wire style behind it, and the
worker API driven by hand where a test needs to see or control the job itself."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.proxy.handlers.workers import SERVED, TEXT

HANDLER = "tests.proxy.handlers.workers:handler"
WIRES = ["era-c", "era-b", "chunk-list"]
EXPECTED = "".join(TEXT)
USER = [{"role": "user", "content": "Say hello"}]
JOB_HEADER = "x-runpod-job-id"


def gateway(server, endpoint: str | None = None) -> str:
    return f"{server.url(endpoint)}/openai/v1"


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def server(module_endpoint_factory, markers):
    """Endpoint ``ep`` with one SDK worker (8 jobs at once); ``bare`` has none (tests take its
    jobs by hand through the worker API); its gateway holds a request at most 3 s."""
    s = module_endpoint_factory(endpoints=("ep", "bare"), openai_hold_max_ms=3000)
    s.worker(HANDLER, concurrency=8, extra_env={"PODGATE_TEST_MARKERS": str(markers)})
    return s


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway(server), api_key=server.api_key, max_retries=0, timeout=30)


def chat_text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def job_status(server, job_id: str, endpoint: str | None = None) -> dict:
    with server.client() as c:
        return c.get(f"{server.url(endpoint)}/status/{job_id}").json()


def wait_status(server, job_id: str, want: str, timeout: float, endpoint: str | None = None) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(server, job_id, endpoint).get("status")
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def wait_for(find, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def take(server, endpoint: str = "bare", worker: str = "hand") -> dict:
    """Take the next job of ``endpoint`` as a worker would (job-take); its payload."""
    with server.client() as c:
        payload = wait_for(lambda: (r := c.get(f"{server.url(endpoint)}/job-take/{worker}")).status_code == 200
                           and r.json())
    assert payload, "no job was queued"
    return payload


def finish(server, job_id: str, body: dict, endpoint: str = "bare", worker: str = "hand") -> None:
    with server.client() as c:
        c.post(f"{server.url(endpoint)}/job-done/{worker}/{job_id}", json=body).raise_for_status()


# --- the openai SDK against real workers, in every wire style -------------------------------

@pytest.mark.parametrize("model", WIRES)
def test_chat_stream_equals_nonstream(client, model):
    whole = client.chat.completions.create(model=model, messages=USER)
    assert whole.object == "chat.completion" and whole.model == model
    assert whole.choices[0].message.content == EXPECTED
    assert chat_text(client.chat.completions.create(model=model, messages=USER, stream=True)) == EXPECTED


@pytest.mark.parametrize("model", WIRES)
def test_completions_stream_equals_nonstream(client, model):
    whole = client.completions.create(model=model, prompt="Say hello")
    assert whole.choices[0].text == EXPECTED
    stream = client.completions.create(model=model, prompt="Say hello", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == EXPECTED


@pytest.mark.parametrize("model", WIRES)
async def test_async_client(server, model):
    async with openai.AsyncOpenAI(base_url=gateway(server), api_key=server.api_key, max_retries=0, timeout=30) as c:
        whole = await c.chat.completions.create(model=model, messages=USER)
        text = "".join([ch.choices[0].delta.content or "" async for ch in
                        await c.chat.completions.create(model=model, messages=USER, stream=True) if ch.choices])
        done = await c.completions.create(model=model, prompt="Say hello")
    assert whole.choices[0].message.content == text == done.choices[0].text == EXPECTED


def test_usage_chunk_when_asked(client):
    chunks = list(client.chat.completions.create(model="era-b", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_models_list(client, server):
    assert [m.id for m in client.models.list().data] == list(SERVED)


async def test_models_list_async(server):
    async with openai.AsyncOpenAI(base_url=gateway(server), api_key=server.api_key, max_retries=0) as c:
        assert [m.id async for m in c.models.list()] == list(SERVED)


def test_the_job_is_an_ordinary_job_named_by_a_header(client, server):
    raw = client.chat.completions.with_raw_response.create(model="era-c", messages=USER)
    job_id = raw.headers[JOB_HEADER]
    assert job_id.encode() not in raw.content  # never in the body
    status = job_status(server, job_id)
    assert status["status"] == "COMPLETED" and status["output"][0]["choices"][0]["message"]["content"] == EXPECTED


# --- the job the gateway makes, and how its output becomes the answer -----------------------

def test_a_post_becomes_openai_route_and_openai_input(server):
    body = {"model": "m", "messages": USER, "temperature": 0.5, "extra": {"deep": [1, 2.5, None]}}
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(c.post, f"{gateway(server, 'bare')}/chat/completions", json=body)
        job = take(server)
        assert job["input"] == {"openai_route": "/v1/chat/completions", "openai_input": body}
        finish(server, job["id"], {"output": [{"object": "chat.completion", "id": "x"}]})
        r = answer.result(timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {"object": "chat.completion", "id": "x"}  # the one-element list unwrapped
    assert r.headers[JOB_HEADER] == job["id"]


def test_a_get_has_no_openai_input_and_a_longer_list_stays_a_list(server):
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(c.get, f"{gateway(server, 'bare')}/models")
        job = take(server)
        assert job["input"] == {"openai_route": "/v1/models"}
        finish(server, job["id"], {"output": [{"a": 1}, {"b": 2}]})
        r = answer.result(timeout=10)
    assert r.status_code == 200 and r.json() == [{"a": 1}, {"b": 2}]


def test_a_flat_error_output_is_passed_with_200(client, server):
    with server.client() as c:
        r = c.post(f"{gateway(server)}/chat/completions", json={"model": "era-c", "messages": [
            {"role": "user", "content": "#error_flat"}]})
    assert r.status_code == 200
    assert r.json() == {"object": "error", "message": "The model `nope` does not exist.", "type": "NotFoundError",
                        "param": None, "code": 404}


@pytest.mark.parametrize("scenario", ["error_nested", "error_raise"])
def test_a_failed_job_is_500(client, scenario):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="era-c", messages=[{"role": "user", "content": f"#{scenario}"}])
    assert e.value.status_code == 500
    assert ("maximum context length" if scenario == "error_nested" else "the engine crashed") in str(e.value.body)


@pytest.mark.parametrize("model", WIRES)
def test_a_stream_whose_job_fails_ends_with_an_error_event(client, server, model):
    messages = [{"role": "user", "content": "#error_nested"}]
    with pytest.raises(openai.APIError) as e:
        list(client.chat.completions.create(model=model, messages=messages, stream=True))
    assert "maximum context length" in e.value.message
    with server.client() as c:
        r = c.post(f"{gateway(server)}/chat/completions", json={"model": model, "messages": messages, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    (event,) = r.text.split("\n\n")[:-1]
    error = json.loads(event.removeprefix("data: "))["error"]
    assert error["code"] == 500 and error["type"] == "job_failed" and "maximum context length" in error["message"]


def test_a_worker_stream_error_event_passes_verbatim(client):
    with pytest.raises(openai.APIError) as e:
        list(client.chat.completions.create(model="era-c", stream=True,
                                            messages=[{"role": "user", "content": "#error_midstream"}]))
    assert "engine died" in e.value.message


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"not json", b"",
                                  b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}"])
def test_a_body_that_is_not_a_json_object_is_400(server, body):
    with server.client() as c:
        r = c.post(f"{gateway(server)}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


def test_wrong_key_is_401(server):
    bad = openai.OpenAI(base_url=gateway(server), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="era-c", messages=USER)


def test_unknown_endpoint_is_404(server):
    other = openai.OpenAI(base_url=gateway(server, "nope"), api_key=server.api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.models.list()


def test_a_cancelled_job_is_410(server):
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(c.post, f"{gateway(server, 'bare')}/completions", json={"prompt": "x"})
        job = take(server)
        c.post(f"{server.url('bare')}/cancel/{job['id']}").raise_for_status()
        r = answer.result(timeout=10)
    assert r.status_code == 410 and "cancelled" in r.json()["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_timed_out_job_is_504(endpoint_factory, stream):
    """Jobs time out after 0.5 s of running here; the worker (by hand) never answers. A stream
    cut inside an event gets its error event on an event of its own."""
    server = endpoint_factory(default_execution_timeout_ms=500)
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(c.post, f"{gateway(server)}/completions", json={"prompt": "x", "stream": stream})
        job = take(server, "ep")
        if stream:
            with server.client() as w:
                w.post(f"{server.url()}/job-stream/hand/{job['id']}", json={"output": 'data: {"par'}).raise_for_status()
        r = answer.result(timeout=10)
    if stream:
        assert r.status_code == 200 and r.text.startswith('data: {"par\n\ndata: {"error"')
        assert json.loads(r.text.split("\n\n")[1].removeprefix("data: "))["error"]["code"] == 504
    else:
        assert r.status_code == 504 and "execution timeout" in r.json()["error"]
    assert job_status(server, job["id"])["status"] == "TIMED_OUT"


@pytest.mark.parametrize("stream", [False, True])
def test_a_job_nobody_takes_is_cut_after_the_hold_and_cancelled(server, stream):
    """``bare`` has no worker: the gateway gives up after ``openai_hold_max_ms`` (3 s)."""
    with server.client() as c:
        r = c.post(f"{gateway(server, 'bare')}/chat/completions", json={"messages": USER, "stream": stream})
    job_id = r.headers[JOB_HEADER]
    if stream:
        assert r.status_code == 200
        assert json.loads(r.text.removeprefix("data: "))["error"]["code"] == 504
    else:
        assert r.status_code == 504
    assert wait_status(server, job_id, "CANCELLED", 5, "bare") == "CANCELLED"


def test_a_plain_handlers_output_is_streamed_once_it_completes(server):
    """A worker that streams nothing (a plain handler): its output, by the same rules."""
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        def read() -> httpx.Response:
            return c.post(f"{gateway(server, 'bare')}/chat/completions", json={"messages": USER, "stream": True})

        answer = pool.submit(read)
        job = take(server)
        finish(server, job["id"], {"output": ["data: {\"a\": 1}\n\n", {"b": 2}, [{"c": 3}]]})
        r = answer.result(timeout=10)
    assert r.text == 'data: {"a": 1}\n\ndata: {"b":2}\n\ndata: [{"c":3}]\n\n'


# --- disconnects --------------------------------------------------------------------------

def test_closing_a_stream_cancels_the_job(client, server, markers):
    slow = [{"role": "user", "content": "#slow"}]
    with client.chat.completions.with_streaming_response.create(model="era-c", messages=slow, stream=True) as resp:
        job_id = resp.headers[JOB_HEADER]
        first = next(iter(resp.parse()))
        assert first.choices[0].delta.role == "assistant"
    assert wait_status(server, job_id, "CANCELLED", 1.0) == "CANCELLED"
    assert wait_for(lambda: (markers / f"{job_id}.cancelled").exists()), "the handler saw no cancel"


def test_closing_a_held_request_cancels_the_job(server, markers):
    before = set(markers.glob("*.started"))
    body = json.dumps({"model": "era-c", "messages": [{"role": "user", "content": "#slow_nonstream"}]}).encode()
    head = (f"POST /v2/ep/openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        started = wait_for(lambda: set(markers.glob("*.started")) - before)
        assert started, "the handler never started"
    (marker,) = started
    job_id = marker.name.removesuffix(".started")
    assert wait_status(server, job_id, "CANCELLED", 1.0) == "CANCELLED"
    assert wait_for(lambda: (markers / f"{job_id}.cancelled").exists()), "the handler saw no cancel"


# --- limits -------------------------------------------------------------------------------

def test_the_openai_limits_answer_429_with_retry_after(endpoint_factory):
    server = endpoint_factory(limits={"openai": (3, 1)})  # 3 per window, 1 at once
    url = f"{gateway(server)}/chat/completions"
    with server.client() as c:
        with c.stream("POST", url, json={"messages": USER, "stream": True}) as held:  # no worker: held
            assert held.status_code == 200
            job_id = held.headers[JOB_HEADER]
            busy = c.post(url, json={"messages": USER})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert wait_status(server, job_id, "CANCELLED", 5) == "CANCELLED"  # the slot is free again
        assert [c.post(url, content=b"[]").status_code for _ in range(2)] == [400, 400]
        over = c.post(url, content=b"[]")
    assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
    assert "openai" in over.json()["error"]


# --- the Redis store ----------------------------------------------------------------------

def test_over_the_redis_store(endpoint_factory, tmp_path):
    """The same gateway on the Redis store: stream and not, and a closed stream cancelled."""
    server = endpoint_factory(store="redis")
    server.worker(HANDLER, concurrency=8, extra_env={"PODGATE_TEST_MARKERS": str(tmp_path)})
    c = openai.OpenAI(base_url=gateway(server), api_key=server.api_key, max_retries=0, timeout=30)
    assert c.chat.completions.create(model="era-b", messages=USER).choices[0].message.content == EXPECTED
    assert chat_text(c.chat.completions.create(model="era-c", messages=USER, stream=True)) == EXPECTED
    slow = [{"role": "user", "content": "#slow"}]
    with c.chat.completions.with_streaming_response.create(model="era-c", messages=slow, stream=True) as resp:
        job_id = resp.headers[JOB_HEADER]
        next(iter(resp.parse()))
    assert wait_status(server, job_id, "CANCELLED", 1.0) == "CANCELLED"
    assert wait_for(lambda: (tmp_path / f"{job_id}.cancelled").exists()), "the handler saw no cancel"
