"""The real ``runpod`` SDK on both sides: ``runpod.Endpoint`` / ``AsyncioEndpoint`` clients
against ``podgate endpoint``, with unmodified ``runpod.serverless.start`` workers in
subprocesses (``podgate worker``), on the memory and the Redis store."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

H = "tests.serverless.handlers"

#: endpoint id -> (handler, worker options); one worker each, started once per store.
WORKERS = {
    "sync": (f"{H}:echo_sync", {}),
    "async": (f"{H}:echo_async", {}),
    "gen": (f"{H}:gen_sync", {}),
    "agen": (f"{H}:gen_async", {}),
    "raise": (f"{H}:raising", {}),
    "err": (f"{H}:returns_error", {}),
    "progress": (f"{H}:progress", {}),
    "agg": (f"{H}:aggregated", {"aggregate": True}),
    "conc": ("tests.serverless.handlers_concurrent:concurrent", {}),
    "conc-flag": (f"{H}:concurrent", {"concurrency": 2}),
    "cancel": (f"{H}:long_cancellable", {}),
}
ENDPOINTS = (*WORKERS, "idle", "lost")


@pytest.fixture(scope="module", params=["memory", "redis"])
def cluster(module_endpoint_factory, request):
    server = module_endpoint_factory(endpoints=ENDPOINTS, store=request.param, worker_timeout=2.5)
    for ep, (handler, opts) in WORKERS.items():
        server.worker(handler, ep, wait=False, **opts)
    for w in server.workers:
        server.wait_for_workers(w.endpoint, timeout=60, worker=w)
    return server


def raw_status(server, ep: str, job_id: str) -> dict:
    with server.client() as c:
        return c.get(f"{server.url(ep)}/status/{job_id}").json()


def wait_status(server, ep: str, job_id: str, pred, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = raw_status(server, ep, job_id)
        if pred(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_run_sync_sync_handler_with_s3config(cluster):
    ep = cluster.sdk("sync")
    out = ep.run_sync({"input": {"a": 1}, "s3Config": {"bucketName": "b", "accessId": "x"}}, timeout=30)
    assert out["echo"] == {"a": 1} and out["s3Config"]["bucketName"] == "b"
    assert out["id"].startswith("sync-")


def test_run_status_output_async_handler(cluster):
    ep = cluster.sdk("async")
    job = ep.run({"v": "x", "sleep": 1.0})  # the SDK wraps it as {"input": ...}
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
    assert job.output(timeout=30) == {"echo": {"v": "x", "sleep": 1.0}}
    assert job.status() == "COMPLETED"
    body = raw_status(cluster, "async", job.job_id)
    assert body["executionTime"] >= 1000 and body["workerId"]


def test_run_sync_falls_back_to_status_polling(cluster):
    """runsync holds up to its wait; the SDK then polls /status (here: the job outlives wait)."""
    with cluster.client() as c:
        r = c.post(f"{cluster.url('async')}/runsync?wait=1000", json={"input": {"sleep": 1.5}})
    assert r.json()["status"] in ("IN_QUEUE", "IN_PROGRESS") and "output" not in r.json()
    ep = cluster.sdk("async")
    from runpod.endpoint.runner import Job

    assert Job("async", r.json()["id"], ep.rp_client).output(timeout=20) == {"echo": {"sleep": 1.5}}


def test_stream_sync_generator(cluster):
    job = cluster.sdk("gen").run({"n": 4})
    assert list(job.stream()) == [{"i": k} for k in range(4)]
    assert job.status() == "COMPLETED"
    assert raw_status(cluster, "gen", job.job_id)["output"] == []


def test_stream_async_generator_no_duplicates(cluster):
    job = cluster.sdk("agen").run({"n": 6, "delay": 0.15})
    assert "".join(job.stream()) == "".join(f"tok{k} " for k in range(6))


def test_raised_exception_fails_job(cluster):
    ep = cluster.sdk("raise")
    assert ep.run_sync({"msg": "bad"}, timeout=30) is None  # runpod-python drops the error
    job = ep.run({"msg": "worse"})
    body = wait_status(cluster, "raise", job.job_id, lambda b: b["status"] != "IN_QUEUE" and b["status"] != "IN_PROGRESS")
    assert body["status"] == "FAILED"
    err = json.loads(body["error"])
    assert "ValueError" in err["error_type"] and err["error_message"] == "boom: worse"


def test_returned_error_fails_job(cluster):
    job = cluster.sdk("err").run({"x": 1})
    assert job.output(timeout=30) == {"extra": 1}
    body = raw_status(cluster, "err", job.job_id)
    assert body["status"] == "FAILED" and body["error"] == "custom failure"


def test_progress_updates(cluster):
    job = cluster.sdk("progress").run({"hold": 1.5})
    body = wait_status(cluster, "progress", job.job_id, lambda b: b.get("output") == {"step": 1})
    assert body["status"] == "IN_PROGRESS" and body["output"] == {"step": 1}
    assert job.output(timeout=30) == {"done": True}


def test_return_aggregate_stream(cluster):
    ep = cluster.sdk("agg")
    assert ep.run_sync({"x": 1}, timeout=30) == [{"part": 0}, {"part": 1}, {"part": 2}]
    job = ep.run({"x": 2})
    assert list(job.stream()) == [{"part": 0}, {"part": 1}, {"part": 2}]


@pytest.mark.parametrize("ep_id,expected", [("conc", 3), ("conc-flag", 2)])
def test_concurrency_modifier(cluster, ep_id, expected):
    ep = cluster.sdk(ep_id)
    jobs = [ep.run({"sleep": 1.2}) for _ in range(expected)]
    outs = [j.output(timeout=30) for j in jobs]
    assert max(o["max_running"] for o in outs) == expected
    assert len({o["pid"] for o in outs}) == 1  # one worker process ran them at once


def test_cancel_running_async_job_cancels_handler(cluster, tmp_path: Path):
    marker = tmp_path / "cancel-marker"
    ep = cluster.sdk("cancel")
    job = ep.run({"marker": str(marker), "seconds": 60})
    deadline = time.monotonic() + 15
    while not Path(str(marker) + ".started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(str(marker) + ".started").exists()
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == f"cancelled {job.job_id}"  # the handler saw CancelledError
    # the worker is free again at once
    quick = ep.run({"marker": str(tmp_path / "quick"), "seconds": 0})
    assert quick.output(timeout=15) == {"finished": True}


def test_execution_timeout_stops_handler(cluster, tmp_path: Path):
    marker = tmp_path / "timeout-marker"
    ep = cluster.sdk("cancel")
    job = ep.run({"input": {"marker": str(marker), "seconds": 60}, "policy": {"executionTimeout": 800}})
    body = wait_status(cluster, "cancel", job.job_id, lambda b: b["status"] == "TIMED_OUT")
    assert body["status"] == "TIMED_OUT"
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == f"cancelled {job.job_id}"


def test_health_counts_jobs_and_workers(cluster):
    ep = cluster.sdk("sync")
    before = ep.health()
    ep.run_sync({"n": 1}, timeout=30)
    after = ep.health()
    assert after["jobs"]["completed"] == before["jobs"]["completed"] + 1
    assert after["workers"]["idle"] + after["workers"]["running"] == 1
    assert set(after["workers"]) == {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}


def test_purge_queue(cluster):
    ep = cluster.sdk("idle")  # no worker: jobs stay queued
    jobs = [ep.run({"k": i}) for i in range(3)]
    assert ep.health()["jobs"]["inQueue"] == 3
    assert ep.purge_queue() == {"removed": 3, "status": "completed"}
    with cluster.client() as c:
        assert c.get(f"{cluster.url('idle')}/status/{jobs[0].job_id}").status_code == 404
    assert ep.health()["jobs"]["inQueue"] == 0


async def test_asyncio_endpoint(cluster):
    import aiohttp
    import runpod

    cluster.sdk()  # sets runpod.api_key / endpoint_url_base
    async with aiohttp.ClientSession() as session:
        ep = runpod.AsyncioEndpoint("async", session)
        job = await ep.run({"z": 1})
        assert await job.output(timeout=30) == {"echo": {"z": 1}}
        assert await job.status() == "COMPLETED"
        stream_ep = runpod.AsyncioEndpoint("agen", session)
        job = await stream_ep.run({"n": 3})
        got = [x async for x in job.stream()]
        assert got == ["tok0 ", "tok1 ", "tok2 "]
        health = await ep.health()
        assert health["jobs"]["completed"] >= 1


def test_killed_worker_job_is_requeued_and_completed(cluster):
    victim = cluster.worker(f"{H}:echo_async", "lost")
    ep = cluster.sdk("lost")
    job = ep.run({"sleep": 1.0, "tag": uuid.uuid4().hex})
    wait_status(cluster, "lost", job.job_id, lambda b: b["status"] == "IN_PROGRESS")
    victim.kill()  # the worker and its heartbeat vanish mid-job
    assert raw_status(cluster, "lost", job.job_id)["status"] == "IN_PROGRESS"
    cluster.worker(f"{H}:echo_async", "lost", wait=False)
    body = wait_status(cluster, "lost", job.job_id, lambda b: b["status"] == "COMPLETED", timeout=30)
    assert body["status"] == "COMPLETED" and body["workerId"] != victim.worker_id
