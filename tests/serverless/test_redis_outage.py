"""The endpoint server through a Redis outage: its store reaches Redis through a TCP forwarder
that the test cuts and restores. A request that can wait rides out a short outage and is
answered as usual once Redis is back (``serverless.outage``). Past its outage budget (0 in
the first test) the caller and the worker APIs answer 503 with ``Retry-After: 1`` (a client
may retry, nothing is lost), the ``/openai/v1`` gateway too (or, once its stream started, an
error event), and ``/metrics`` still answers, without the store's gauges; the whole outage
is one warning and its end one more line, however many requests and sweeps failed
meanwhile; afterwards a job taken before the outage finishes as if nothing happened. A real
``runpod`` SDK worker, which polls again at once after an error, is paced by the held poll's
late 503 rather than spinning, and its job that spans the outage completes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serverless.app import create_app
from serverless.service import EndpointService
from serverless.settings import EndpointSettings
from serverless.store.redis import RedisStore
from supervisor.server import AppServer
from tests.conftest import FAST, EndpointServer
from tests.redis_forwarder import Forwarder

pytestmark = pytest.mark.usefixtures("redis_required")

WORKER = {"Content-Type": "application/x-www-form-urlencoded"}
ROUNDS = 10  # rounds of caller and worker requests during the outage


@dataclass
class Endpoint:
    """The endpoint app served in this process, its store reaching Redis through ``redis``."""

    base: str
    redis: Forwarder
    redis_url: str
    store: RedisStore


#: no outage budget: every request that meets the outage answers 503 at once
IMPATIENT = {"store_outage_wait": 0.0, "worker_outage_wait": 0.0}


@pytest.fixture
async def endpoint(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> AsyncIterator[Endpoint]:
    """The endpoint app; ``indirect`` parametrization gives it more settings."""
    caplog.set_level(logging.WARNING)
    redis = Forwarder()
    await redis.start()
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    store = RedisStore(redis_url, prefix=f"podgate-test:{uuid.uuid4().hex}:")
    fast = {k: v for k, v in FAST.items() if k != "ping_grace"}
    settings = EndpointSettings(endpoints=["ep"], port=0, redis_url=redis_url,
                                **{**fast, "worker_timeout": 30.0, **getattr(request, "param", {})})
    app = create_app(settings, store)
    service: EndpointService = app.state.service
    server = AppServer(app, host="127.0.0.1", port=0, signals=False, on_shutdown=service.begin_shutdown)
    port = await server.start()
    try:
        yield Endpoint(f"http://127.0.0.1:{port}/v2/ep", redis, redis_url, store)
    finally:
        await server.stop(5)
        cleanup = RedisStore("redis://127.0.0.1:6379/0", prefix=store.prefix)
        await cleanup.delete_all()
        await cleanup.close()
        await redis.cut()


async def _recovered(http: httpx.AsyncClient) -> None:
    """Once Redis is back: wait (bounded) until the endpoint answers again."""
    deadline = time.monotonic() + 10
    while (await http.get("/health")).status_code != 200:
        assert time.monotonic() < deadline, "the endpoint did not recover"
        await asyncio.sleep(0.1)


def _store_log(caplog: pytest.LogCaptureFixture, redis_url: str, outages: int = 1) -> None:
    """Each outage was one warning and its end one line, and nothing else warned or logged
    an error (no traceback anywhere)."""
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2 * outages, lines
    for went, back in zip(lines[::2], lines[1::2], strict=True):
        assert went.startswith(f"Redis store at {redis_url} is unreachable ("), lines
        assert went.endswith("); answering 503 with Retry-After until it is back"), lines
        assert back == f"Redis store at {redis_url} is back", lines


@pytest.mark.parametrize("endpoint", [IMPATIENT], indirect=True)
async def test_a_redis_outage_answers_503_with_retry_after_and_logs_once(endpoint: Endpoint,
                                                                        caplog: pytest.LogCaptureFixture):
    redis = endpoint.redis
    async with httpx.AsyncClient(base_url=endpoint.base, timeout=10) as http:
        job_id = (await http.post("/run", json={"input": {"n": 1}})).raise_for_status().json()["id"]
        taken = await http.get("/job-take/w1")
        assert taken.status_code == 200 and taken.json()["id"] == job_id

        await redis.cut()
        answers: list[httpx.Response] = []
        for _ in range(ROUNDS):
            answers += await asyncio.gather(
                http.post("/run", json={"input": {"n": 2}}),
                http.get(f"/status/{job_id}"),
                http.get(f"/stream/{job_id}"),
                http.post(f"/cancel/{job_id}"),
                http.get("/health"),
                http.get("/ping/w1", params={"job_id": job_id}),
                http.post(f"/job-stream/w1/{job_id}", content=b'{"output": "x"}', headers=WORKER))
            await asyncio.sleep(0.05)  # the sweeper runs every 50 ms meanwhile
        answers.append(await http.get("/job-take/w2"))  # held, then 503 (see the SDK test below)
        assert [(r.status_code, r.headers.get("retry-after")) for r in answers] == [(503, "1")] * len(answers)
        assert all("error" in r.json() for r in answers)
        assert endpoint.store.out

        await redis.start()  # back on the same port
        await _recovered(http)
        done = await http.post(f"/job-done/w1/{job_id}", content=b'{"output": {"ok": true}}', headers=WORKER)
        assert done.status_code == 200, done.text
        status = (await http.get(f"/status/{job_id}")).json()
        assert status["status"] == "COMPLETED" and status["output"] == {"ok": True}
    assert endpoint.store.out is False
    _store_log(caplog, endpoint.redis_url)


OUTAGE = 2.0  # seconds without Redis while the SDK worker runs


def _count(metrics: str, operation: str, status: int) -> int:
    pattern = (rf'^podgate_endpoint_worker_requests_total{{endpoint="ep",operation="{operation}",'
               rf'status="{status}"}} (\S+)$')
    found = re.search(pattern, metrics, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


async def test_an_sdk_worker_is_paced_through_an_outage_and_its_job_completes(endpoint: Endpoint,
                                                                              caplog: pytest.LogCaptureFixture,
                                                                              tmp_path: Path):
    host = EndpointServer(None, 0, ("ep",), None, "redis", tmp_path)  # type: ignore[arg-type]
    host.base = endpoint.base.rsplit("/", 1)[0]
    worker = host.worker("tests.serverless.handlers:echo_async", concurrency=2, wait=False)
    try:
        async with httpx.AsyncClient(base_url=endpoint.base, timeout=10) as http:
            job_id = (await http.post("/run", json={"input": {"sleep": OUTAGE + 1.5}})).json()["id"]
            deadline = time.monotonic() + 30
            while (await http.get(f"/status/{job_id}")).json()["status"] != "IN_PROGRESS":
                assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-3000:]
                await asyncio.sleep(0.05)

            await endpoint.redis.cut()  # the worker runs its job and polls for another meanwhile
            await asyncio.sleep(OUTAGE)
            await endpoint.redis.start()
            await _recovered(http)

            deadline = time.monotonic() + 30
            while (status := (await http.get(f"/status/{job_id}")).json())["status"] == "IN_PROGRESS":
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.1)
            assert status["status"] == "COMPLETED" and status["output"] == {"echo": {"sleep": OUTAGE + 1.5}}
            metrics = (await http.get(f"{endpoint.base.split('/v2/')[0]}/metrics")).text
    finally:
        worker.kill()
    # each held poll refused in the outage took a second: a handful, not the thousands of
    # polls an immediate 503 brings from the SDK's loop (it polls again at once after an error)
    refused = _count(metrics, "job-take", 503) + _count(metrics, "job-take-batch", 503)
    assert 1 <= refused <= 2 * (OUTAGE + 2), metrics
    _store_log(caplog, endpoint.redis_url)


async def test_requests_that_can_wait_ride_out_a_short_outage(endpoint: Endpoint, caplog: pytest.LogCaptureFixture):
    redis = endpoint.redis
    async with httpx.AsyncClient(base_url=endpoint.base, timeout=30) as http:
        job_id = (await http.post("/run", json={"input": {"n": 1}})).raise_for_status().json()["id"]
        assert (await http.get("/job-take/w1")).json()["id"] == job_id

        await redis.cut()
        held = [asyncio.create_task(request) for request in (
            http.post("/run", json={"input": {"n": 2}}),
            http.post("/runsync", params={"wait": 1000}, json={"input": {"n": 3}}),
            http.get(f"/status/{job_id}"),
            http.post(f"/job-stream/w1/{job_id}", content=b'{"output": "x"}', headers=WORKER))]
        await asyncio.sleep(1.0)  # well within the 10 s that a request waits for the store
        assert not any(task.done() for task in held), [task.result() for task in held if task.done()]
        await redis.start()
        answers = await asyncio.gather(*held)
        assert [r.status_code for r in answers] == [200] * len(held), [r.text for r in answers]
        assert answers[1].json()["status"] == "IN_QUEUE"  # nobody took it: its wait ended, it is queued

        await redis.cut()  # the worker's result, posted while Redis is out, is kept
        done = asyncio.create_task(http.post(f"/job-done/w1/{job_id}", content=b'{"output": {"ok": true}}',
                                             headers=WORKER))
        await asyncio.sleep(0.5)
        assert not done.done()
        await redis.start()
        assert (await done).status_code == 200
        status = (await http.get(f"/status/{job_id}")).json()
        assert status["status"] == "COMPLETED" and status["output"] == {"ok": True}
        streamed = (await http.get(f"/stream/{job_id}")).json()
        assert streamed == {"status": "COMPLETED", "stream": [{"output": "x"}]}
    _store_log(caplog, endpoint.redis_url, 2)


GATEWAY = "/openai/v1/chat/completions"


@pytest.mark.parametrize("endpoint", [{"store_outage_wait": 0.3}], indirect=True)
async def test_the_gateway_and_metrics_answer_cleanly_in_an_outage(endpoint: Endpoint,
                                                                  caplog: pytest.LogCaptureFixture):
    redis = endpoint.redis
    metrics_url = f"{endpoint.base.split('/v2/')[0]}/metrics"
    async with httpx.AsyncClient(base_url=endpoint.base, timeout=30) as http:
        async with http.stream("POST", GATEWAY, json={"stream": True, "messages": []}) as streaming:
            assert streaming.status_code == 200
            job_id = (await http.get("/job-take/w1")).json()["id"]
            posted = await http.post(f"/job-stream/w1/{job_id}", json={"output": 'data: {"a": 1}\n\n'},
                                     headers=WORKER)
            assert posted.status_code == 200
            body = streaming.aiter_bytes()
            received = b""
            while b"\n\n" not in received:
                received += await anext(body)
            assert received == b'data: {"a": 1}\n\n'
            await redis.cut()
            async for more in body:  # the stream ends: one error event
                received += more
        assert received == (b'data: {"a": 1}\n\n' + b'data: {"error":{"message":"the job store is unavailable; '
                            b'retry shortly","type":"store_unavailable","param":null,"code":503}}\n\n'), received

        answers = [await http.post(GATEWAY, json={"messages": []}) for _ in range(ROUNDS)]
        assert [(r.status_code, r.headers.get("retry-after")) for r in answers] == [(503, "1")] * ROUNDS
        assert all("error" in r.json() for r in answers)
        for _ in range(ROUNDS):
            scrape = await http.get(metrics_url)
            assert scrape.status_code == 200
            assert "podgate_endpoint_store_up 0.0" in scrape.text and "process_cpu_seconds_total" in scrape.text
            assert "podgate_endpoint_jobs_in_queue{" not in scrape.text  # no stale or made-up gauge

        await redis.start()
        await _recovered(http)
        assert "podgate_endpoint_store_up 1.0" in (await http.get(metrics_url)).text
    _store_log(caplog, endpoint.redis_url)
