"""``adapters.runpod_client.RunPodQueueClient`` (over ``adapters.http_upstream.HTTPUpstream``)
and ``proxy.cancel.CancelQueue`` against a mocked RunPod cloud (``httpx.MockTransport``):
request shapes, typed bodies, one error type."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from adapters.errors import KeyMask
from adapters.http_upstream import HTTPUpstream
from adapters.runpod_client import RunPodQueueClient
from adapters.upstream import RunPodError
from proxy.cancel import CancelQueue
from proxy.settings import TimingSettings

KEY = "rpa_SECRETKEY1234567890"


def client_for(handler) -> RunPodQueueClient:
    return RunPodQueueClient(HTTPUpstream(httpx.MockTransport(handler), "https://api.runpod.ai/v2", KEY, read_timeout=5))


async def test_operations_and_shapes():
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.method, req.url.path, dict(req.url.params), req.headers["authorization"],
                     req.content))
        path = req.url.path
        if path.endswith("/run"):
            return httpx.Response(200, json={"id": "j1", "status": "IN_QUEUE"})
        if path.endswith("/runsync"):
            return httpx.Response(200, json={"id": "j2", "status": "IN_PROGRESS"})
        if "/stream/" in path:
            return httpx.Response(200, json={"status": "COMPLETED", "stream": [{"output": "a"}, {"output": {"b": 1}}]})
        if "/status/" in path:
            return httpx.Response(200, json={"id": "j1", "status": "FAILED", "error": "boom", "delayTime": 3,
                                             "executionTime": 4, "workerId": "w"})
        if "/cancel/" in path:
            return httpx.Response(200, json={"id": "j1", "status": "CANCELLED"})
        return httpx.Response(200, json={"jobs": {"inQueue": 1}, "workers": {"idle": 2}})

    c = client_for(handler)
    assert (await c.run("ep", {"x": 1})).status == "IN_QUEUE"
    st = await c.runsync("ep", {"x": 1}, wait_ms=1500)
    assert not st.terminal and st.output is not None  # absent output is UNSET, not None
    poll = await c.stream("ep", "j1", wait_ms=800)
    assert poll.terminal and [i.output for i in poll.stream] == ["a", {"b": 1}]
    st = await c.status("ep", "j1")
    assert (st.error, st.delay_time, st.execution_time, st.worker_id) == ("boom", 3, 4, "w")
    assert (await c.cancel("ep", "j1")).status == "CANCELLED"
    assert (await c.health("ep")).workers == {"idle": 2}
    await c.aclose()
    assert [(m, p) for m, p, *_ in seen] == [
        ("POST", "/v2/ep/run"), ("POST", "/v2/ep/runsync"), ("GET", "/v2/ep/stream/j1"),
        ("GET", "/v2/ep/status/j1"), ("POST", "/v2/ep/cancel/j1"), ("GET", "/v2/ep/health")]
    assert seen[1][2] == {"wait": "1500"} and seen[2][2] == {"wait": "800"}
    assert all(a == f"Bearer {KEY}" for *_, a, _ in seen)
    assert json.loads(seen[0][4]) == {"input": {"x": 1}}


@pytest.mark.parametrize("status,body,retry_after", [
    (401, b'{"error": "unauthorized"}', None),
    (404, b'{"error": "endpoint not found"}', None),
    (429, b"slow down", "3"),
    (500, b"<html>oops</html>", None),
])
async def test_http_errors_are_one_type(status, body, retry_after):
    headers = {"retry-after": retry_after} if retry_after else {}
    c = client_for(lambda req: httpx.Response(status, content=body, headers=headers))
    with pytest.raises(RunPodError) as info:
        await c.run("ep", {})
    e = info.value
    assert e.status == status and e.answered and e.operation == "run"
    assert e.message and KEY not in str(e) and KEY not in e.message
    assert e.retry_after == (3.0 if retry_after else None)


@pytest.mark.parametrize("body,message", [
    (b'{"error": "endpoint not found"}', "endpoint not found"),
    (b'{"error": {"message": "no such job", "code": 4}}', "no such job"),
    (b'{"message": "slow down"}', "slow down"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b"<html>oops</html>", "<html>oops</html>"),
])
async def test_error_message_is_read_from_every_body_shape(body, message):
    """RunPod's error body is parsed once, here: ``message`` is what the client's error
    quotes (``adapters.errors.from_runpod`` does not parse it again)."""
    c = client_for(lambda req: httpx.Response(404, content=body))
    with pytest.raises(RunPodError) as info:
        await c.status("ep", "j")
    assert info.value.message == message


async def test_unreachable_and_garbage():
    def boom(req):
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(RunPodError) as info:
        await client_for(boom).status("ep", "j")
    assert (info.value.status, info.value.answered) == (502, False)
    with pytest.raises(RunPodError) as info:
        await client_for(lambda req: httpx.Response(200, content=b"[1,2]")).status("ep", "j")
    assert (info.value.status, info.value.answered) == (502, False)


async def test_cancel_queue_coalesces_and_retries():
    calls: list[str] = []
    answers = {"j1": [429, 200], "j2": [404], "j3": [500, 500, 500, 500, 500]}

    def handler(req):
        job = req.url.path.rsplit("/", 1)[1]
        calls.append(job)
        code = answers[job].pop(0)
        headers = {"retry-after": "0"} if code == 429 else {}
        return httpx.Response(code, json={"id": job, "status": "CANCELLED"} if code == 200 else {"error": "x"},
                              headers=headers)

    c = client_for(handler)
    q = CancelQueue(concurrency=2, retries=2, backoff_s=0.01)
    done: list[tuple[str, bool]] = []
    q.on_done = lambda ep, job, ok: done.append((job, ok))
    q.start()
    for job in ("j1", "j1", "j2", "j3", "j1"):
        q.submit(c, "ep", job)
    for _ in range(200):
        if len(done) == 3:
            break
        await asyncio.sleep(0.01)
    await q.close()
    assert sorted(done) == [("j1", True), ("j2", True), ("j3", False)]
    assert calls.count("j1") == 2  # one 429 retried, duplicates coalesced
    assert calls.count("j3") == 3  # first try + 2 retries, then given up


async def test_the_default_cancel_queue_rides_out_a_429_storm():
    """A job nobody cancels runs on, paid for: by default a cancel outlasts ten refusals in a row."""
    calls: list[str] = []

    def handler(req):
        calls.append(req.url.path)
        if len(calls) <= TimingSettings().cancel_retries:
            return httpx.Response(429, json={"error": "rate limited"}, headers={"retry-after": "0.01"})
        return httpx.Response(200, json={"id": "j", "status": "CANCELLED"})

    t = TimingSettings()
    q = CancelQueue(concurrency=t.cancel_concurrency, retries=t.cancel_retries)
    done: list[bool] = []
    q.on_done = lambda ep, job, ok: done.append(ok)
    q.start()
    q.submit(client_for(handler), "ep", "j")
    for _ in range(500):
        if done:
            break
        await asyncio.sleep(0.01)
    await q.close()
    assert done == [True]
    assert len(calls) == t.cancel_retries + 1


async def test_a_failed_cancels_log_line_masks_the_configured_keys(caplog: pytest.LogCaptureFixture):
    secret = "odd-shaped-secret-42"  # no known key pattern: only the mask by value catches it

    def handler(req):
        return httpx.Response(400, json={"error": f"bad key {secret}"})

    q = CancelQueue(retries=0)
    q.key_mask = KeyMask([secret])
    q.start()
    q.submit(client_for(handler), "ep", "j")
    await q.close()
    assert q.failed == 1
    assert "cancel ep/j failed" in caplog.text
    assert secret not in caplog.text


async def test_cancel_queue_cancels_a_job_once_its_id_is_known():
    cancelled = []

    def handler(req):
        cancelled.append(req.url.path)
        return httpx.Response(200, json={"id": "late", "status": "CANCELLED"})

    c = client_for(handler)
    q = CancelQueue()
    q.start()
    gate = asyncio.Event()

    async def runsync():
        await gate.wait()
        from adapters.runpod_client import JobStatus

        return JobStatus(id="late", status="IN_PROGRESS")

    q.submit_when_known(runsync(), c, "ep")
    await asyncio.sleep(0.01)
    assert cancelled == []
    gate.set()
    await q.close()
    assert cancelled == ["/v2/ep/cancel/late"]
