"""Graceful shutdown of ``podgate serve --config`` (``proxy.drain``), for real: a proxy
process in front of a local endpoint with real SDK workers, SIGTERM sent while requests run.

- a stream that ends within ``[server] drain_s`` completes normally, with ``[DONE]``;
  meanwhile the proxy takes no new connection;
- streams that outlive the drain (the queue path and the ``/openai`` passthrough) end with
  an in-stream ``server_shutting_down`` error and ``[DONE]``, a non-streaming request still
  waiting gets 503 with ``Retry-After``, their jobs end CANCELLED on the endpoint, and the
  process exits;
- ``/readyz`` answers 503 from the moment the drain begins (in-process: from outside, the
  listeners are closed by then).

Each test starts its own proxy (it is stopped by the test); the endpoint and its workers
are shared by the module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from litestar.testing import AsyncTestClient

from proxy.app import create_app
from proxy.settings import ModelSettings, ProxySettings, ServerSettings, SettingsError, parse_settings
from tests.proxy.conftest import HANDLER, start_proxy, write_config
from tests.proxy.sse_reader import SSEReader

PACED = "tests.proxy.handlers.paced:handler"
#: models: "paced" (text format, tests.proxy.handlers.paced) on endpoint "paced"; "pass-c" (the
#: /openai passthrough, tests.proxy.handlers.workers) on endpoint "ep"
MODELS = {"paced": ("text", None)}
EP_MODELS = {"pass-c": ("openai", "era-c")}
EXIT_S = 30.0
"""A generous bound on the proxy's exit after SIGTERM (drain + cut + cancels: far less)."""


class Endpoint:
    def __init__(self, server, markers: Path):
        self.server, self.markers = server, markers

    def status(self, job_id: str, endpoint: str = "paced") -> str:
        with self.server.client() as c:
            return c.get(f"{self.server.url(endpoint)}/status/{job_id}").json()["status"]

    def wait_marker(self, name: str, timeout: float = 15.0) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = sorted(self.markers.glob(name))
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no marker {name} in {self.markers}")


@pytest.fixture(scope="module")
def endpoint(module_endpoint_factory, tmp_path_factory) -> Endpoint:
    server = module_endpoint_factory(endpoints=("paced", "ep"))
    markers = tmp_path_factory.mktemp("markers")
    env = {"PODGATE_TEST_MARKERS": str(markers)}
    server.worker(PACED, endpoint="paced", concurrency=8, wait=False, extra_env=env)
    server.worker(HANDLER, endpoint="ep", concurrency=8, wait=False, extra_env=env)
    server.wait_for_workers("paced", count=1)
    server.wait_for_workers("ep", count=1)
    return Endpoint(server, markers)


@pytest.fixture
def proxy_with(endpoint, tmp_path):
    """``proxy_with(drain_s)``: a ``podgate serve --config`` process (stopped afterwards)."""
    started = []

    def start(drain_s: float):
        config = write_config(tmp_path / "podgate.toml", endpoint.server.base, "paced", models=MODELS,
                              extra_endpoints={"ep": EP_MODELS})
        config.write_text(config.read_text().replace("port = 0\n", f"port = 0\ndrain_s = {drain_s}\n", 1))
        proxy = start_proxy(config, endpoint.server.api_key, tmp_path)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _chat(model: str, content: str, stream: bool = True) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}


def _exits(proxy, timeout: float = EXIT_S) -> int:
    try:
        code = proxy.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"podgate serve still running {timeout} s after SIGTERM:\n{proxy.output()[-3000:]}") from None
    assert code in (0, -signal.SIGTERM), proxy.output()[-3000:]  # uvicorn re-raises the signal it handled
    return code


def test_a_stream_running_at_sigterm_completes_within_the_drain(proxy_with, endpoint):
    proxy = proxy_with(drain_s=20.0)
    stream = SSEReader(proxy.base_url, _chat("paced", "6"))  # longer than uvicorn's usual grace (5 s)
    stream.start()
    assert stream.first.wait(15) and stream.error is None, stream.error
    proxy.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):  # no new connection during the drain
        httpx.get(f"http://127.0.0.1:{proxy.port}/healthz", timeout=2)
    data = stream.result()
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert not any("error" in c for c in chunks), chunks
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith(" word") and len(text.split()) >= 50  # the whole answer (6 s at 0.1 s a word)
    assert endpoint.status(stream.headers["x-runpod-job-id"]) == "COMPLETED"
    _exits(proxy)


def test_what_outlives_the_drain_ends_with_an_error_and_its_jobs_are_cancelled(proxy_with, endpoint):
    proxy = proxy_with(drain_s=2.0)
    before = set(endpoint.markers.glob("*.started"))
    client = openai.OpenAI(base_url=proxy.base_url, api_key="none", max_retries=0, timeout=60)

    # the queue path through the openai SDK, as an application sees it
    raw = client.chat.completions.with_raw_response.create(model="paced", messages=[{"role": "user", "content": "60"}],
                                                           stream=True)
    queue_job = raw.headers["x-runpod-job-id"]
    sdk_stream = raw.parse()
    first = next(iter(sdk_stream))
    assert first.choices[0].delta.content == " word"
    # the passthrough path, raw (the endpoint's /openai gateway runs the job; no job id)
    passed = SSEReader(proxy.base_url, _chat("pass-c", "#slow"))
    passed.start()
    # a non-streaming request still waiting
    waiting: dict[str, httpx.Response] = {}

    def post() -> None:
        waiting["r"] = httpx.post(f"{proxy.base_url}/chat/completions", json=_chat("paced", "60", stream=False),
                                  timeout=60)

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    assert passed.first.wait(15) and passed.error is None, passed.error
    deadline = time.monotonic() + 15
    while len(set(endpoint.markers.glob("*.started")) - before) < 3:  # all three jobs run
        assert time.monotonic() < deadline, "the jobs did not all start"
        time.sleep(0.05)

    proxy.proc.send_signal(signal.SIGTERM)

    with pytest.raises(openai.APIError) as caught:  # the SDK raises on the in-stream error
        for _ in sdk_stream:
            pass
    assert caught.value.code == "server_shutting_down" and caught.value.type == "server_error"
    data = passed.result()
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    poster.join(EXIT_S)
    answer = waiting["r"]
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "server_shutting_down"
    nonstream_job = answer.headers["x-runpod-job-id"]

    _exits(proxy)
    # the proxy sent the cancels before it exited
    assert endpoint.status(queue_job) == "CANCELLED"
    assert endpoint.status(nonstream_job) == "CANCELLED"
    for job_id in (queue_job, nonstream_job):
        endpoint.wait_marker(f"{job_id}.cancelled")  # the worker stopped it
    started = {p.name.removesuffix(".started") for p in set(endpoint.markers.glob("*.started")) - before}
    (passed_job,) = started - {queue_job, nonstream_job}
    endpoint.wait_marker(f"{passed_job}.cancelled")  # the closed /openai request stopped it
    assert endpoint.status(passed_job, endpoint="ep") == "CANCELLED"


async def test_readyz_answers_503_once_the_drain_begins():
    settings = ProxySettings(server=ServerSettings(drain_s=5.0), api_key="k",
                             models=[ModelSettings(name="m", endpoint="ep", format="vllm")])
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/readyz")).status_code == 200
        app.state.gateway.drain.begin()
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False}
        assert (await client.get("/healthz")).status_code == 200  # alive all the same


def test_drain_s_is_read_from_the_server_section():
    base = '[[models]]\nname = "m"\nendpoint = "ep"\nformat = "vllm"\n'
    env = {"RUNPOD_API_KEY": "k"}
    assert parse_settings(base, env).server.drain_s == 20.0
    assert parse_settings("[server]\ndrain_s = 2.5\n" + base, env).server.drain_s == 2.5
    with pytest.raises(SettingsError, match=r"server\.drain_s: must not be negative"):
        parse_settings("[server]\ndrain_s = -1\n" + base, env)
