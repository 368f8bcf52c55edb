"""The endpoint server through a Redis outage: its store reaches Redis through a TCP forwarder
that the test cuts and restores. While Redis is out, the caller and the worker APIs answer
503 with ``Retry-After: 1`` (a client may retry, nothing is lost), and the whole outage is
one warning and its end one more line, however many requests and sweeps failed meanwhile;
afterwards a job taken before the outage finishes as if nothing happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import pytest

from serverless.app import create_app
from serverless.service import EndpointService
from serverless.settings import EndpointSettings
from serverless.store.redis import RedisStore
from supervisor.server import AppServer
from tests.conftest import FAST
from tests.proxy.test_budgets_shared import Forwarder

pytestmark = pytest.mark.usefixtures("redis_required")

WORKER = {"Content-Type": "application/x-www-form-urlencoded"}
ROUNDS = 10  # rounds of caller and worker requests during the outage


async def test_a_redis_outage_answers_503_with_retry_after_and_logs_once(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    redis = Forwarder()
    await redis.start()
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    store = RedisStore(redis_url, prefix=f"podgate-test:{uuid.uuid4().hex}:")
    settings = EndpointSettings(endpoints=["ep"], port=0, redis_url=redis_url,
                                **{k: v for k, v in FAST.items() if k != "ping_grace"})
    app = create_app(settings, store)
    service: EndpointService = app.state.service
    server = AppServer(app, host="127.0.0.1", port=0, signals=False, on_shutdown=service.begin_shutdown)
    port = await server.start()
    base = f"http://127.0.0.1:{port}/v2/ep"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
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
                    http.get("/job-take/w2"),
                    http.get("/ping/w1", params={"job_id": job_id}),
                    http.post(f"/job-stream/w1/{job_id}", content=b'{"output": "x"}', headers=WORKER))
                await asyncio.sleep(0.05)  # the sweeper runs every 50 ms meanwhile
            assert [(r.status_code, r.headers.get("retry-after")) for r in answers] == [(503, "1")] * len(answers)
            assert all("error" in r.json() for r in answers)
            assert store.out

            await redis.start()  # back on the same port
            deadline = time.monotonic() + 10
            while (await http.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, "the endpoint did not recover"
                await asyncio.sleep(0.1)
            done = await http.post(f"/job-done/w1/{job_id}", content=b'{"output": {"ok": true}}', headers=WORKER)
            assert done.status_code == 200, done.text
            status = (await http.get(f"/status/{job_id}")).json()
            assert status["status"] == "COMPLETED" and status["output"] == {"ok": True}
    finally:
        await server.stop(5)
        cleanup = RedisStore("redis://127.0.0.1:6379/0", prefix=store.prefix)
        await cleanup.delete_all()
        await cleanup.close()
        await redis.cut()

    store_lines = [r.getMessage() for r in caplog.records if r.name == "serverless.store.redis"]
    assert len(store_lines) == 2, store_lines  # the outage, and its end
    assert store_lines[0].startswith(f"Redis store at {redis_url} is unreachable (")
    assert store_lines[0].endswith("); answering 503 with Retry-After until it is back")
    assert store_lines[1] == f"Redis store at {redis_url} is back"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback anywhere
