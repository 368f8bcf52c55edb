"""RunPod semantics of the endpoint server, one rule per test, driving the worker API directly
over HTTP (a scripted worker) with short configurable durations, on both stores."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

KEY = "test-key"


class ScriptedWorker:
    """Speaks the worker side of the protocol the way the SDK does (raw key, form content type)."""

    def __init__(self, server, worker_id: str = "w1") -> None:
        self.url = server.url()
        self.id = worker_id
        self.http = httpx.AsyncClient(headers={"Authorization": server.api_key or ""}, timeout=30)

    async def take(self, n: int = 1) -> list[dict]:
        if n == 1:
            r = await self.http.get(f"{self.url}/job-take/{self.id}?gpu=LOCAL&job_in_progress=0")
        else:
            r = await self.http.get(f"{self.url}/job-take-batch/{self.id}?gpu=LOCAL&batch_size={n}&job_in_progress=0")
        if r.status_code == 204:
            return []
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        return body if isinstance(body, list) else [body]

    async def done(self, job_id: str, body: dict) -> int:
        r = await self.http.post(f"{self.url}/job-done/{self.id}/{job_id}?gpu=LOCAL&isStream=false",
                                 content=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"})
        return r.status_code

    async def chunk(self, job_id: str, output) -> int:
        r = await self.http.post(f"{self.url}/job-stream/{self.id}/{job_id}?gpu=LOCAL&isStream=false",
                                 content=json.dumps({"output": output}).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        return r.status_code

    async def stops(self) -> list[str]:
        r = await self.http.get(f"{self.url}/job-stop/{self.id}?gpu=LOCAL")
        return [] if r.status_code == 204 else r.json()["jobsToStop"]

    async def ping(self, job_ids: list[str] | None = None) -> None:
        q = f"&job_id={','.join(job_ids)}" if job_ids else ""
        r = await self.http.get(f"{self.url}/ping/{self.id}?gpu=LOCAL{q}&runpod_version=1.12.0")
        assert r.status_code == 200

    async def close(self) -> None:
        await self.http.aclose()


_POOL = [f"ep{i}" for i in range(40)]


class _View:
    """One endpoint of a shared server, so tests with default settings share one process."""

    def __init__(self, server, endpoint: str) -> None:
        self.server, self.endpoint, self.api_key = server, endpoint, server.api_key

    def url(self, endpoint: str | None = None) -> str:
        return self.server.url(endpoint or self.endpoint)


@pytest.fixture(scope="module", params=["memory", "redis"])
def shared(module_endpoint_factory, request):
    """A module-wide server per store; each test takes a fresh endpoint id from its pool."""
    server = module_endpoint_factory(endpoints=_POOL, store=request.param, api_key=KEY)
    server.free = list(_POOL)
    return server


@pytest.fixture
def store_kind(shared):
    return shared.store


@pytest.fixture
async def start(endpoint_factory, shared):
    """start(**settings) -> (server, caller client, scripted worker). Without settings: a fresh
    endpoint of the shared server; with settings: a dedicated server on the same store."""
    made = []

    def _start(**settings):
        if settings:
            server = endpoint_factory(store=shared.store, api_key=KEY, **settings)
        else:
            server = _View(shared, shared.free.pop())
        caller = httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        worker = ScriptedWorker(server)
        made.append((caller, worker))
        return server, caller, worker

    yield _start
    for caller, worker in made:
        await caller.aclose()
        await worker.close()


async def run(caller, server, body=None, **kw) -> str:
    r = await caller.post(f"{server.url()}/run", json=body or {"input": {"x": 1}}, **kw)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "IN_QUEUE"
    return r.json()["id"]


async def status(caller, server, job_id, query: str = "") -> httpx.Response:
    return await caller.get(f"{server.url()}/status/{job_id}{query}")


async def test_run_take_done_status(start):
    server, caller, worker = start()
    job_id = await run(caller, server, {"input": {"x": 1}, "s3Config": {"bucketName": "b"}})
    [job] = await worker.take()
    assert job == {"id": job_id, "input": {"x": 1}, "s3Config": {"bucketName": "b"}}
    body = (await status(caller, server, job_id)).json()
    assert body["status"] == "IN_PROGRESS" and body["workerId"] == "w1" and "delayTime" in body
    assert await worker.done(job_id, {"output": {"y": 2}}) == 200
    body = (await status(caller, server, job_id)).json()
    assert body["status"] == "COMPLETED" and body["output"] == {"y": 2}
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    assert await worker.done(job_id, {"output": 1}) == 404  # late job-done for a terminal job


async def test_done_shapes(start):
    server, caller, worker = start()
    ids = [await run(caller, server) for _ in range(4)]
    await worker.take(4)
    await worker.done(ids[0], {})
    await worker.done(ids[1], {"output": {"extra": 1}, "error": "custom err"})
    await worker.done(ids[2], {"error": {"nested": True}})
    await worker.done(ids[3], {"output": None, "stopPod": True})
    b = [(await status(caller, server, i)).json() for i in ids]
    assert b[0]["status"] == "COMPLETED" and "output" not in b[0]
    assert b[1]["status"] == "FAILED" and b[1]["error"] == "custom err" and b[1]["output"] == {"extra": 1}
    assert b[2]["status"] == "FAILED" and json.loads(b[2]["error"]) == {"nested": True}
    assert b[3]["status"] == "COMPLETED" and b[3]["output"] is None


async def test_progress_update_visible_while_in_progress(start):
    server, caller, worker = start()
    job_id = await run(caller, server)
    await worker.take()
    assert await worker.done(job_id, {"status": "IN_PROGRESS", "output": {"step": 1}}) == 200
    body = (await status(caller, server, job_id)).json()
    assert body["status"] == "IN_PROGRESS" and body["output"] == {"step": 1}


async def test_retention_after_run_and_runsync(start):
    server, caller, worker = start(retention_run_ms=1500, retention_runsync_ms=300)
    run_id = await run(caller, server)
    sync_task = asyncio.create_task(caller.post(f"{server.url()}/runsync?wait=5000", json={"input": {}}))
    jobs = await worker.take(2)
    while len(jobs) < 2:
        jobs += await worker.take()
    sync_id = next(j["id"] for j in jobs if j["id"] != run_id)
    assert sync_id.startswith("sync-")
    for j in jobs:
        await worker.done(j["id"], {"output": "ok"})
    sync_body = (await sync_task).json()
    assert sync_body["status"] == "COMPLETED" and sync_body["output"] == "ok"
    await asyncio.sleep(0.6)
    assert (await status(caller, server, sync_id)).status_code == 404
    assert (await status(caller, server, run_id)).status_code == 200
    await asyncio.sleep(1.2)
    assert (await status(caller, server, run_id)).status_code == 404


async def test_status_ttl_resets_retention(start):
    server, caller, worker = start(retention_run_ms=1000)
    short, long_ = await run(caller, server), await run(caller, server)
    for j in await worker.take(2):
        await worker.done(j["id"], {"output": 1})
    assert (await status(caller, server, short, "?ttl=200")).status_code == 200
    assert (await status(caller, server, long_, "?ttl=4000")).status_code == 200
    await asyncio.sleep(1.3)
    assert (await status(caller, server, short)).status_code == 404
    assert (await status(caller, server, long_)).status_code == 200  # outlived its 1 s retention


async def test_policy_ttl_deletes_running_job_and_stops_it(start):
    server, caller, worker = start()
    job_id = await run(caller, server, {"input": {}, "policy": {"ttl": 800}})
    [_job] = await worker.take()
    await worker.ping([job_id])
    assert (await status(caller, server, job_id)).status_code == 200
    stops = []
    deadline = time.monotonic() + 5
    while not stops and time.monotonic() < deadline:
        stops = await worker.stops()
    assert stops == [job_id]
    assert (await status(caller, server, job_id)).status_code == 404
    assert await worker.done(job_id, {"output": 1}) == 404


async def test_policy_ttl_expires_queued_job(start):
    server, caller, worker = start()
    job_id = await run(caller, server, {"input": {}, "policy": {"ttl": 300}})
    await asyncio.sleep(0.5)
    assert (await status(caller, server, job_id)).status_code == 404
    assert await worker.take() == []


async def test_execution_timeout(start):
    server, caller, worker = start()
    job_id = await run(caller, server, {"input": {}, "policy": {"executionTimeout": 500}})
    await worker.take()
    await worker.ping([job_id])
    stops = []
    deadline = time.monotonic() + 5
    while not stops and time.monotonic() < deadline:
        stops = await worker.stops()
    assert stops == [job_id]
    body = (await status(caller, server, job_id)).json()
    assert body["status"] == "TIMED_OUT"
    assert await worker.done(job_id, {"output": 1}) == 404


async def test_cancel_running_and_queued(start):
    server, caller, worker = start()
    running, queued = await run(caller, server), await run(caller, server)
    [job] = await worker.take()
    assert job["id"] == running
    stop_poll = asyncio.create_task(worker.stops())  # held open until a signal arrives
    await asyncio.sleep(0.2)
    r = await caller.post(f"{server.url()}/cancel/{running}")
    assert r.json() == {"id": running, "status": "CANCELLED"}
    assert await asyncio.wait_for(stop_poll, 5) == [running]
    assert (await status(caller, server, running)).json()["status"] == "CANCELLED"
    r = await caller.post(f"{server.url()}/cancel/{queued}")
    assert r.json()["status"] == "CANCELLED"
    assert await worker.take() == []  # removed from the queue
    assert (await worker.stops()) == []  # a queued job needs no stop signal
    assert await worker.done(running, {"output": 1}) == 404


async def test_runsync_returns_short_body_when_wait_ends(start):
    server, caller, _worker = start()
    r = await caller.post(f"{server.url()}/runsync?wait=1000", json={"input": {}})
    assert r.status_code == 200 and set(r.json()) == {"id", "status"} and r.json()["status"] == "IN_QUEUE"


async def test_runsync_wait_below_one_second_is_raised_to_it(start):
    """RunPod's /runsync waits 1000–300000 ms: a shorter ``wait`` still waits a second, long
    enough here for a worker to take and finish the job."""
    server, caller, worker = start()
    for wait in (0, 1, 999, -5):
        sync = asyncio.create_task(caller.post(f"{server.url()}/runsync?wait={wait}", json={"input": {"w": wait}}))
        [job] = await worker.take()
        assert await worker.done(job["id"], {"output": wait}) == 200
        body = (await sync).json()
        assert body["status"] == "COMPLETED" and body["output"] == wait


async def test_input_null_or_missing_is_accepted(start):
    """RunPod accepts ``"input": null`` and no ``input`` alike (null decodes as absent,
    runpodctl); the job reaches the worker with ``"input": null``, since the SDK drops a
    taken job without an ``input`` key."""
    server, caller, worker = start()
    ids = []
    for op, body in (("run", {"input": None}), ("run", {}), ("run", {"policy": {"ttl": 60000}}),
                     ("runsync?wait=1000", {})):
        r = await caller.post(f"{server.url()}/{op}", json=body)
        assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE", r.text
        ids.append(r.json()["id"])
    assert await worker.take(4) == [{"id": job_id, "input": None} for job_id in ids]


async def test_status_sync_waits_for_terminal(start):
    server, caller, worker = start()
    job_id = await run(caller, server)
    waiting = asyncio.create_task(caller.get(f"{server.url()}/status-sync/{job_id}?wait=5000"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await worker.take()
    await worker.done(job_id, {"output": "x"})
    body = (await asyncio.wait_for(waiting, 5)).json()
    assert body["status"] == "COMPLETED" and body["output"] == "x"
    r = await caller.post(f"{server.url()}/status-sync/{job_id}?wait=100")
    assert r.json()["status"] == "COMPLETED"


async def test_stream_only_new_chunks_and_long_poll(start):
    server, caller, worker = start()
    job_id = await run(caller, server)
    await worker.take()
    r = await caller.get(f"{server.url()}/stream/{job_id}")
    assert r.json() == {"status": "IN_PROGRESS", "stream": []}
    held = asyncio.create_task(caller.post(f"{server.url()}/stream/{job_id}?wait=5000"))
    await asyncio.sleep(0.3)
    assert not held.done()
    await worker.chunk(job_id, "a")
    assert (await asyncio.wait_for(held, 5)).json() == {"status": "IN_PROGRESS", "stream": [{"output": "a"}]}
    await worker.chunk(job_id, {"b": 1})
    await worker.chunk(job_id, [1, 2])
    r = await caller.get(f"{server.url()}/stream/{job_id}")
    assert r.json()["stream"] == [{"output": {"b": 1}}, {"output": [1, 2]}]
    await worker.done(job_id, {"output": []})
    for _ in range(2):
        r = await caller.get(f"{server.url()}/stream/{job_id}?wait=1000")
        assert r.json() == {"status": "COMPLETED", "stream": []}


async def test_stream_chunk_over_limit_is_split(start):
    server, caller, worker = start(max_chunk=1000)
    job_id = await run(caller, server)
    await worker.take()
    text = "é" * 1200 + "x" * 1500  # 2-byte characters too
    items = list(range(600))
    await worker.chunk(job_id, text)
    await worker.chunk(job_id, items)
    r = await caller.get(f"{server.url()}/stream/{job_id}")
    outputs = [c["output"] for c in r.json()["stream"]]
    strs = [o for o in outputs if isinstance(o, str)]
    lists = [o for o in outputs if isinstance(o, list)]
    assert len(strs) >= 3 and "".join(strs) == text
    assert len(lists) >= 2 and [x for part in lists for x in part] == items
    assert all(len(json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()) <= 1000 for o in outputs)


async def test_rate_limit_429_with_retry_after(start):
    server, caller, _worker = start(rate_window=30.0, limits={"status": (3, 0), "run": (2, 0)})
    job_id = await run(caller, server)
    await run(caller, server)
    r = await caller.post(f"{server.url()}/run", json={"input": {}})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "error" in r.json()
    for _ in range(3):
        assert (await status(caller, server, job_id)).status_code == 200
    r = await status(caller, server, job_id)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_concurrency_limit_429(start):
    server, caller, _worker = start(limits={"stream": (0, 1)})
    job_id = await run(caller, server)
    held = asyncio.create_task(caller.get(f"{server.url()}/stream/{job_id}?wait=1500"))
    await asyncio.sleep(0.3)
    r = await caller.get(f"{server.url()}/stream/{job_id}")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert (await held).status_code == 200
    assert (await caller.get(f"{server.url()}/stream/{job_id}")).status_code == 200


async def test_queue_cap_429(start):
    server, caller, worker = start(workers_max=0)  # cap: more than 50 queued → 429
    for _ in range(51):
        await run(caller, server)
    r = await caller.post(f"{server.url()}/run", json={"input": {}})
    assert r.status_code == 429 and "retry-after" in r.headers
    await worker.take()
    await run(caller, server)


async def test_retry_and_purge_and_health(start):
    server, caller, worker = start()
    failed = await run(caller, server)
    await worker.take()
    await worker.done(failed, {"error": "x"})
    r = await caller.post(f"{server.url()}/retry/{failed}")
    assert r.json() == {"id": failed, "status": "IN_QUEUE"}
    body = (await status(caller, server, failed)).json()
    assert body["status"] == "IN_QUEUE" and "error" not in body and "output" not in body
    r = await caller.post(f"{server.url()}/retry/{failed}")
    assert r.status_code == 400  # not FAILED/TIMED_OUT any more
    q2 = await run(caller, server)
    h = (await caller.get(f"{server.url()}/health")).json()
    assert h["jobs"] == {"completed": 0, "failed": 1, "inProgress": 0, "inQueue": 2, "retried": 1}
    r = await caller.post(f"{server.url()}/purge-queue")
    assert r.json() == {"removed": 2, "status": "completed"}
    assert (await status(caller, server, q2)).status_code == 404
    h = (await caller.get(f"{server.url()}/health")).json()
    assert h["jobs"]["inQueue"] == 0
    assert h["workers"]["idle"] == 1  # w1 took jobs earlier and holds none


async def test_health_workers_from_pings(start):
    server, caller, worker = start(worker_timeout=1.0)
    other = ScriptedWorker(server, "w2")
    await worker.ping(["j1"])
    await other.ping()
    h = (await caller.get(f"{server.url()}/health")).json()["workers"]
    assert (h["running"], h["idle"]) == (1, 1)
    await asyncio.sleep(1.2)
    h = (await caller.get(f"{server.url()}/health")).json()["workers"]
    assert (h["running"], h["idle"]) == (0, 0)
    await other.close()


async def test_lost_worker_jobs_requeued_then_failed(start):
    server, caller, worker = start(worker_timeout=0.6, max_attempts=1)
    job_id = await run(caller, server)
    await worker.take()  # w1 takes it and then goes silent
    second = ScriptedWorker(server, "w2")
    deadline = time.monotonic() + 5
    got = []
    while not got and time.monotonic() < deadline:
        got = await second.take()
    assert [j["id"] for j in got] == [job_id]  # re-queued and handed out again
    body = (await status(caller, server, job_id)).json()
    assert body["status"] == "IN_PROGRESS" and body["workerId"] == "w2"
    assert await worker.done(job_id, {"output": 1}) == 404  # the lost worker no longer owns it
    # w2 goes silent too: the retry budget (1) is spent → FAILED, never IN_PROGRESS forever
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = (await status(caller, server, job_id)).json()
        if body["status"] != "IN_PROGRESS":
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "FAILED" and body["error"]
    await second.close()


async def test_pings_keep_a_busy_worker_alive(start):
    server, caller, worker = start(worker_timeout=0.6)
    job_id = await run(caller, server)
    await worker.take()
    for _ in range(8):
        await worker.ping([job_id])
        await asyncio.sleep(0.2)
    assert (await status(caller, server, job_id)).json()["status"] == "IN_PROGRESS"
    assert await worker.done(job_id, {"output": 1}) == 200


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n))
        self.server.calls.append((time.monotonic(), body))
        code = 500 if len(self.server.calls) <= self.server.fail_first else 200
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    def make(fail_first: int = 0):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        srv.calls, srv.fail_first = [], fail_first
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, f"http://127.0.0.1:{srv.server_address[1]}/hook"
    servers: list = []
    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


async def wait_calls(srv, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(srv.calls) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_webhook_once_on_terminal(start, hook_server):
    server, caller, worker = start()
    srv, url = hook_server()
    job_id = await run(caller, server, {"input": {}, "webhook": url})
    await worker.take()
    await worker.chunk(job_id, "x")
    await worker.done(job_id, {"status": "IN_PROGRESS", "output": 1})
    await asyncio.sleep(0.3)
    assert srv.calls == []  # nothing before the terminal state
    await worker.done(job_id, {"output": {"r": 1}})
    await wait_calls(srv, 1)
    await asyncio.sleep(0.5)
    assert len(srv.calls) == 1
    body = srv.calls[0][1]
    assert body["id"] == job_id and body["status"] == "COMPLETED" and body["output"] == {"r": 1}
    # cancelled jobs fire too
    cancelled = await run(caller, server, {"input": {}, "webhook": url})
    await caller.post(f"{server.url()}/cancel/{cancelled}")
    await wait_calls(srv, 2)
    assert srv.calls[1][1]["status"] == "CANCELLED"


async def test_webhook_retried_twice(start, hook_server):
    server, caller, worker = start()
    srv, url = hook_server(fail_first=5)
    job_id = await run(caller, server, {"input": {}, "webhook": url})
    await worker.take()
    await worker.done(job_id, {"error": "bad"})
    await wait_calls(srv, 3)
    await asyncio.sleep(0.8)
    assert len(srv.calls) == 3  # once + 2 retries, then given up
    assert srv.calls[2][0] - srv.calls[0][0] >= 0.3  # FAST: 0.2 s apart
    assert all(c[1]["status"] == "FAILED" for c in srv.calls)


async def test_job_missing_from_a_live_workers_pings_is_requeued(start):
    """A worker restarted under the same id pings without the job it held: re-queued."""
    server, caller, worker = start(ping_grace=0.8)
    held, kept = await run(caller, server), await run(caller, server)
    await worker.take(2)
    await worker.ping([held, kept])
    await worker.ping([kept])  # within the grace period: nothing happens yet
    await asyncio.sleep(0.3)
    assert (await status(caller, server, held)).json()["status"] == "IN_PROGRESS"
    await asyncio.sleep(0.7)
    await worker.ping([kept])  # after the grace period, still without `held`
    deadline = time.monotonic() + 5
    while (await status(caller, server, held)).json()["status"] != "IN_QUEUE" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await status(caller, server, held)).json()["status"] == "IN_QUEUE"
    assert (await status(caller, server, kept)).json()["status"] == "IN_PROGRESS"
    [again] = await worker.take()
    assert again["id"] == held


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_refused_worker_bodies_fail_their_job(start):
    """A result or a stream chunk the endpoint cannot accept (here: nested deeper than it
    allows) is answered 400 and fails the job at once, with the reason; the SDK drops a
    refused post, so the job would otherwise run again for nothing."""
    from serverless.payloads import MAX_JSON_DEPTH

    server, caller, worker = start()
    by_done, by_stream = await run(caller, server), await run(caller, server)
    await worker.take(2)
    assert await worker.done(by_done, {"output": _nested(MAX_JSON_DEPTH)}) == 400
    assert await worker.chunk(by_stream, _nested(900)) == 400
    for job_id in (by_done, by_stream):
        body = (await status(caller, server, job_id)).json()
        assert body["status"] == "FAILED" and f"nested deeper than {MAX_JSON_DEPTH} levels" in body["error"]
    assert await worker.done(by_stream, {"output": "late"}) == 404
