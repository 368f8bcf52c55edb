"""``GET /metrics`` of ``podgate endpoint``: a real server on loopback, real ``runpod`` SDK
workers and clients; the counters move as jobs run, fail, stream, are cancelled and time out
and as 429s are sent; the store gauges show the queue with no worker, shared by replicas on
one Redis while the request counters stay per replica; the text parses with
``prometheus_client.parser`` and holds no key."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from serverless.jobs import EndpointHealth, JobCounts, WorkerCounts
from serverless.metrics import UNKNOWN_ENDPOINT, EndpointMetrics

H = "tests.serverless.handlers"
KEY = f"ep-secret-{uuid.uuid4().hex}"
WORKERS = {"ok": f"{H}:echo_async", "gen": f"{H}:gen_async", "bad": f"{H}:raising",
           "slow": f"{H}:long_cancellable"}
ENDPOINTS = (*WORKERS, "idle", "lim")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(module_endpoint_factory):
    s = module_endpoint_factory(endpoints=ENDPOINTS, api_key=KEY,
                                workers_max=0, limits={"purge-queue": (1, 0), "status-sync": (0, 1)})
    for ep, handler in WORKERS.items():
        s.worker(handler, ep, wait=False)
    for w in s.workers:
        s.wait_for_workers(w.endpoint, timeout=60, worker=w)
    return s


def metrics_text(server) -> httpx.Response:
    """``/metrics`` as a scraper gets it: no key."""
    r = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return r


def scrape(server) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics_text(server).text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(server, done: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``done`` holds (a worker's post is counted once its response has been
    sent, just after the client saw the job end); the last scrape either way."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


class Delta:
    """Differences between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def wait_file(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def wait_status(server, ep: str, job_id: str, status: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while True:
            body = c.get(f"{server.url(ep)}/status/{job_id}").json()
            if body["status"] == status or time.monotonic() > deadline:
                return body
            time.sleep(0.1)


# --- the exposition ------------------------------------------------------------------------

def test_metrics_open_parsed_and_free_of_keys(server):
    with server.client() as c:  # a caller with the key, one with a wrong key, a worker with the key
        assert c.get(f"{server.url('idle')}/health").status_code == 200
    assert httpx.get(f"{server.url('idle')}/health", headers={"Authorization": "Bearer wrong-secret-0xdead"}
                     ).status_code == 401
    r = metrics_text(server)
    assert r.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("podgate_endpoint_requests", "podgate_endpoint_worker_requests", "podgate_endpoint_rate_limited",
                 "podgate_endpoint_jobs", "podgate_endpoint_job_delay_seconds",
                 "podgate_endpoint_job_execution_seconds", "podgate_endpoint_jobs_in_queue",
                 "podgate_endpoint_jobs_in_progress", "podgate_endpoint_workers", "podgate_endpoint_store_up"):
        assert name in families, name
    assert "Per replica" in families["podgate_endpoint_requests"].documentation
    assert "Shared" in families["podgate_endpoint_jobs_in_queue"].documentation
    samples = scrape(server)
    assert value(samples, "podgate_endpoint_store_up") == 1
    assert value(samples, "podgate_endpoint_requests_total", endpoint="idle", operation="health", status="401") == 1
    assert value(samples, "podgate_endpoint_requests_total", endpoint="idle", operation="health", status="200") >= 1
    # every live worker is counted where it runs
    for ep in WORKERS:
        assert sum(value(samples, "podgate_endpoint_workers", endpoint=ep, state=st)
                   for st in ("idle", "running", "unhealthy")) == 1, ep
    assert value(samples, "podgate_endpoint_worker_requests_total", endpoint="ok", operation="ping", status="200") >= 1
    for secret in (KEY, "wrong-secret-0xdead"):
        assert secret not in r.text


def test_unknown_endpoints_share_one_label(server):
    before = scrape(server)
    with server.client() as c:
        for ep in ("nope-1", "nope-2", "nope-3"):
            assert c.get(f"{server.url(ep)}/health").status_code == 404
    r = metrics_text(server)
    after = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(r.text) for s in f.samples}
    assert Delta(before, after)("podgate_endpoint_requests_total", endpoint=UNKNOWN_ENDPOINT,
                                operation="health", status="404") == 3
    assert "nope-" not in r.text


# --- jobs ------------------------------------------------------------------------------------

def test_completed_failed_and_streamed_jobs(server):
    before = scrape(server)
    assert server.sdk("ok").run_sync({"x": 1}, timeout=30) == {"echo": {"x": 1}}
    bad = server.sdk("bad").run({"msg": "no"})
    assert wait_status(server, "bad", bad.job_id, "FAILED")["status"] == "FAILED"
    gen = server.sdk("gen").run({"n": 4})
    assert list(gen.stream()) == [f"tok{k} " for k in range(4)]
    after = scrape_until(server, lambda s: all(
        Delta(before, s)("podgate_endpoint_worker_requests_total", endpoint=ep, operation="job-done", status="200")
        for ep in ("ok", "bad", "gen")))
    d = Delta(before, after)
    assert d("podgate_endpoint_requests_total", endpoint="ok", operation="runsync", status="200") == 1
    assert d("podgate_endpoint_requests_total", endpoint="bad", operation="run", status="200") == 1
    assert d("podgate_endpoint_requests_total", endpoint="gen", operation="stream", status="200") >= 1
    assert d("podgate_endpoint_jobs_total", endpoint="ok", status="COMPLETED") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="bad", status="FAILED") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="gen", status="COMPLETED") == 1
    for ep in ("ok", "bad", "gen"):
        assert d("podgate_endpoint_worker_requests_total", endpoint=ep, operation="job-take", status="200") == 1
        assert d("podgate_endpoint_worker_requests_total", endpoint=ep, operation="job-done", status="200") == 1
        assert d("podgate_endpoint_job_delay_seconds_count", endpoint=ep) == 1
        assert d("podgate_endpoint_job_execution_seconds_count", endpoint=ep) == 1
    assert d("podgate_endpoint_worker_requests_total", endpoint="gen", operation="job-stream", status="200") == 4
    assert d("podgate_endpoint_jobs_total", endpoint="ok", status="FAILED") == 0


def test_cancelled_and_timed_out_jobs_and_queue_wait(server, tmp_path):
    """Job A runs until cancelled while job B waits behind it (the worker runs one job at a
    time): B's queue wait and A's run are at least the second A was held; then job C runs
    past its execution timeout."""
    ep = server.sdk("slow")
    before = scrape(server)
    a = ep.run({"marker": str(tmp_path / "a"), "seconds": 60})
    wait_file(tmp_path / "a.started")
    b = ep.run({"marker": str(tmp_path / "b"), "seconds": 0})
    time.sleep(1.0)
    assert b.status() == "IN_QUEUE"
    a.cancel()
    assert b.output(timeout=30) == {"finished": True}
    assert wait_status(server, "slow", a.job_id, "CANCELLED")["status"] == "CANCELLED"
    with server.client() as c:
        c_id = c.post(f"{server.url('slow')}/run", json={"input": {"marker": str(tmp_path / "c"), "seconds": 60},
                                                          "policy": {"executionTimeout": 500}}).json()["id"]
    assert wait_status(server, "slow", c_id, "TIMED_OUT")["status"] == "TIMED_OUT"
    d = Delta(before, scrape(server))
    assert d("podgate_endpoint_requests_total", endpoint="slow", operation="cancel", status="200") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="slow", status="CANCELLED") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="slow", status="COMPLETED") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="slow", status="TIMED_OUT") == 1
    assert d("podgate_endpoint_job_delay_seconds_count", endpoint="slow") == 3
    assert d("podgate_endpoint_job_delay_seconds_sum", endpoint="slow") >= 1.0  # B waited behind A
    assert d("podgate_endpoint_job_execution_seconds_count", endpoint="slow") == 3
    assert d("podgate_endpoint_job_execution_seconds_sum", endpoint="slow") >= 1.0 + 0.5  # A, then C's timeout


def test_openai_gateway_requests(server):
    before = scrape(server)
    with server.client() as c:
        r = c.post(f"{server.url('ok')}/openai/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 200 and r.json() == {"echo": {"openai_route": "/v1/chat/completions",
                                                          "openai_input": {"model": "m", "messages": []}}}
    d = Delta(before, scrape(server))
    assert d("podgate_endpoint_requests_total", endpoint="ok", operation="openai", status="200") == 1
    assert d("podgate_endpoint_jobs_total", endpoint="ok", status="COMPLETED") == 1


# --- 429s and the queue --------------------------------------------------------------------

def test_rate_and_concurrency_limits(server):
    before = scrape(server)
    with server.client() as c:
        assert c.post(f"{server.url('lim')}/purge-queue").status_code == 200
        refused = c.post(f"{server.url('lim')}/purge-queue")
        assert refused.status_code == 429 and refused.headers["retry-after"]
        job_id = c.post(f"{server.url('lim')}/run", json={"input": {}}).json()["id"]

        held: list[int] = []

        def hold() -> None:  # takes the one status-sync slot and holds it for 2 s
            with server.client() as own:
                while not held or held[-1] == 429:  # refused while a probe below had the slot
                    held.append(own.get(f"{server.url('lim')}/status-sync/{job_id}?wait=2000").status_code)

        holder = threading.Thread(target=hold)
        holder.start()
        probes: list[int] = []
        while holder.is_alive() and 429 not in probes:
            probes.append(c.get(f"{server.url('lim')}/status-sync/{job_id}?wait=0").status_code)
        holder.join()
    assert probes[-1] == 429 and held[-1] == 200
    refusals = probes.count(429) + held.count(429)
    d = Delta(before, scrape(server))
    assert d("podgate_endpoint_rate_limited_total", endpoint="lim", limit="purge-queue", kind="rate") == 1
    assert d("podgate_endpoint_requests_total", endpoint="lim", operation="purge-queue", status="429") == 1
    assert d("podgate_endpoint_rate_limited_total", endpoint="lim", limit="status-sync", kind="concurrency") == refusals
    assert d("podgate_endpoint_requests_total", endpoint="lim", operation="status-sync", status="429") == refusals
    assert d("podgate_endpoint_requests_total", endpoint="lim", operation="status-sync", status="200") == (
        len(probes) + len(held) - refusals)


def test_queue_gauge_with_no_worker_and_queue_full(server):
    """No worker reads ``idle``: the gauge follows jobs into the queue up to its cap (50 with
    workers_max=0: RunPod refuses once the queue is larger than max(50, workersMax × 500)),
    then the refusal is counted under the queue limit, and the gauge follows jobs out."""
    before = scrape(server)
    sdk = server.sdk("idle")
    jobs = [sdk.run({"k": k}) for k in range(51)]
    samples = scrape(server)
    assert value(samples, "podgate_endpoint_jobs_in_queue", endpoint="idle") == 51
    assert value(samples, "podgate_endpoint_jobs_in_progress", endpoint="idle") == 0
    assert sum(value(samples, "podgate_endpoint_workers", endpoint="idle", state=st)
               for st in ("idle", "running", "unhealthy")) == 0
    with server.client() as c:
        full = c.post(f"{server.url('idle')}/run", json={"input": {}})
    assert full.status_code == 429
    d = Delta(before, scrape(server))
    assert d("podgate_endpoint_rate_limited_total", endpoint="idle", limit="queue", kind="size") == 1
    assert d("podgate_endpoint_requests_total", endpoint="idle", operation="run", status="200") == 51
    assert d("podgate_endpoint_requests_total", endpoint="idle", operation="run", status="429") == 1
    jobs[0].cancel()
    assert value(scrape(server), "podgate_endpoint_jobs_in_queue", endpoint="idle") == 50
    with server.client() as c:
        assert c.post(f"{server.url('idle')}/purge-queue").json()["removed"] == 50
    assert value(scrape(server), "podgate_endpoint_jobs_in_queue", endpoint="idle") == 0


# --- replicas on one Redis -----------------------------------------------------------------

def test_redis_replicas_share_gauges_and_count_their_own_requests(endpoint_factory):
    prefix = f"podgate-test:{uuid.uuid4().hex}:"
    a = endpoint_factory(endpoints=("shared",), store="redis", redis_prefix=prefix, api_key=KEY)
    b = endpoint_factory(endpoints=("shared",), store="redis", redis_prefix=prefix, api_key=KEY)
    sdk = a.sdk("shared")
    for k in range(3):
        sdk.run({"k": k})
    on_a, on_b = scrape(a), scrape(b)
    for samples in (on_a, on_b):
        assert value(samples, "podgate_endpoint_store_up") == 1
        assert value(samples, "podgate_endpoint_jobs_in_queue", endpoint="shared") == 3
    assert value(on_a, "podgate_endpoint_requests_total", endpoint="shared", operation="run", status="200") == 3
    assert value(on_b, "podgate_endpoint_requests_total", endpoint="shared", operation="run", status="200") == 0
    with b.client() as c:
        assert c.post(f"{b.url('shared')}/purge-queue").json()["removed"] == 3
    assert value(scrape(a), "podgate_endpoint_jobs_in_queue", endpoint="shared") == 0


# --- in process ------------------------------------------------------------------------------

def _families(metrics: EndpointMetrics, health) -> dict:
    text = asyncio.run(metrics.render(health)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def _health(endpoint: str) -> EndpointHealth:
    return EndpointHealth(jobs=JobCounts(in_queue=7), workers=WorkerCounts(idle=2, ready=2))


async def _no_store(endpoint: str) -> EndpointHealth:
    raise ConnectionError("redis is down")


def test_each_app_counts_in_its_own_registry():
    one, two = EndpointMetrics(["a"]), EndpointMetrics(["a"])
    one.request("a", "run", 200)
    one.request("elsewhere", "job-take", 204)
    assert value(_families(one, _health), "podgate_endpoint_requests_total", endpoint="a", operation="run",
                 status="200") == 1
    assert value(_families(one, _health), "podgate_endpoint_worker_requests_total", endpoint=UNKNOWN_ENDPOINT,
                 operation="job-take", status="204") == 1
    assert value(_families(two, _health), "podgate_endpoint_requests_total", endpoint="a", operation="run",
                 status="200") == 0
    assert not [m for m in REGISTRY.collect() if m.name.startswith("podgate_endpoint")]


def test_a_failed_store_read_leaves_the_gauges_out():
    metrics = EndpointMetrics(["a"])
    up = _families(metrics, _health)
    assert value(up, "podgate_endpoint_store_up") == 1
    assert value(up, "podgate_endpoint_jobs_in_queue", endpoint="a") == 7
    assert value(up, "podgate_endpoint_workers", endpoint="a", state="idle") == 2
    down = _families(metrics, _no_store)
    assert value(down, "podgate_endpoint_store_up") == 0
    assert ("podgate_endpoint_jobs_in_queue", (("endpoint", "a"),)) not in down
