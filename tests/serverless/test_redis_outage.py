"""The endpoint server through a Redis outage: its store reaches Redis through a TCP forwarder
that the test cuts and restores. While Redis is out, the caller and the worker APIs answer
503 with ``Retry-After: 1`` (a client may retry, nothing is lost), and the whole outage is
one warning and its end one more line, however many requests and sweeps failed meanwhile;
afterwards a job taken before the outage finishes as if nothing happened. A real ``runpod``
SDK worker, which polls again at once after an error, is paced by the held poll's late 503
rather than spinning, and its job that spans the outage completes.
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
from tests.proxy.test_budgets_shared import Forwarder

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


@pytest.fixture
async def endpoint(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Endpoint]:
    caplog.set_level(logging.WARNING)
    redis = Forwarder()
    await redis.start()
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    store = RedisStore(redis_url, prefix=f"podgate-test:{uuid.uuid4().hex}:")
    settings = EndpointSettings(endpoints=["ep"], port=0, redis_url=redis_url,
                                **{**{k: v for k, v in FAST.items() if k != "ping_grace"}, "worker_timeout": 30.0})
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


def _store_log(caplog: pytest.LogCaptureFixture, redis_url: str) -> None:
    """The outage was one warning and its end one line, and nothing logged an error."""
    store_lines = [r.getMessage() for r in caplog.records if r.name == "serverless.store.redis"]
    assert len(store_lines) == 2, store_lines
    assert store_lines[0].startswith(f"Redis store at {redis_url} is unreachable (")
    assert store_lines[0].endswith("); answering 503 with Retry-After until it is back")
    assert store_lines[1] == f"Redis store at {redis_url} is back"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback anywhere


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
