"""Benchmark of the self-hosted endpoint server (``podgate endpoint``, memory store, one
process). Prints:

1. jobs/s through /run → job-take → job-done → /status, driving the worker API directly
   with httpx (C concurrent pipelines);
2. jobs/s with N real ``runpod`` SDK workers (``podgate worker``) running an async echo
   handler, callers submitting with /run and collecting with /status-sync;
3. /stream chunks/s to one reader: (a) live, while a scripted worker posts job-stream chunks
   from P concurrent connections and the reader long-polls ``/stream?wait=``; (b) drain: the
   reader empties a backlog of chunks already posted.

    .venv/bin/python bench/bench_endpoint.py [--jobs 3000] [--concurrency 32] [--sdk-workers 4]
                                             [--sdk-jobs 1000] [--chunks 20000] [--skip-sdk]

Targets (issue 2): ≥ 500 jobs/s, ≥ 20,000 chunks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from supervisor.readiness import ReadyPipe  # noqa: E402

PODGATE = [sys.executable, "-m", "proxy.cli"]
EP = "bench"
KEY = "bench-key"
UNLIMITED = ["run", "runsync", "status", "status-sync", "stream", "cancel", "purge-queue"]


def start_server() -> tuple[subprocess.Popen, str]:
    cmd = [*PODGATE, "endpoint", "--endpoint", EP, "--port", "0", "--workers-max", "100000",
           "--take-hold", "5", "--stop-hold", "20"]
    for op in UNLIMITED:
        cmd += ["--limit", f"{op}=0:0"]
    pipe = ReadyPipe()
    env = {**os.environ, "PODGATE_EP_API_KEY": KEY, **pipe.env}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, pass_fds=(pipe.fd,), stdout=subprocess.DEVNULL,
                            start_new_session=True)
    pipe.child_started()
    try:
        ready = pipe.read(timeout=30)
    finally:
        pipe.close()
    if ready is not None and ready.url:
        return proc, f"{ready.url}/{EP}"
    stop(proc)
    raise SystemExit("endpoint server did not start")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Client:
    """The load driver's HTTP client: ``httpx`` (the project's client) or ``aiohttp``.

    httpx costs about 2.5 ms of client CPU per request on this machine, so with two cores
    the httpx figures measure the driver more than the server; the aiohttp driver shows what
    the server itself sustains. Both are printed."""

    def __init__(self, kind: str, key_header: str) -> None:
        self.kind = kind
        headers = {"Authorization": key_header}
        if kind == "httpx":
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            self._c = httpx.AsyncClient(headers=headers, limits=limits, timeout=60)
        else:
            import aiohttp

            self._c = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=200),
                                            timeout=aiohttp.ClientTimeout(total=60))

    async def request(self, method: str, url: str, body: bytes | None = None, form: bool = False) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else None
        if self.kind == "httpx":
            r = await self._c.request(method, url, content=body, headers=headers)
            return r.status_code, r.content
        async with self._c.request(method, url, data=body, headers=headers) as r:
            return r.status, await r.read()

    async def json(self, method: str, url: str, body: bytes | None = None, form: bool = False):
        status, content = await self.request(method, url, body, form)
        if status >= 400:
            raise RuntimeError(f"{method} {url} -> {status} {content[:200]!r}")
        return json.loads(content) if content else None

    async def close(self) -> None:
        await (self._c.aclose() if self.kind == "httpx" else self._c.close())


def clients(kind: str) -> tuple[Client, Client]:
    return Client(kind, f"Bearer {KEY}"), Client(kind, KEY)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_direct(url: str, jobs: int, concurrency: int, kind: str) -> float:
    caller, worker = clients(kind)
    per = max(1, jobs // concurrency)
    completed = 0

    async def pipeline(i: int, n: int) -> None:
        nonlocal completed
        wid = f"bw{i}"
        for _ in range(n):
            await caller.json("POST", f"{url}/run", b'{"input":{"prompt":"hello"}}')
            job = await worker.json("GET", f"{url}/job-take/{wid}?gpu=LOCAL&job_in_progress=0")
            await worker.json("POST", f"{url}/job-done/{wid}/{job['id']}?gpu=LOCAL&isStream=false",
                              b'{"output":{"text":"hi"}}', form=True)
            status = await caller.json("GET", f"{url}/status/{job['id']}")
            completed += status["status"] == "COMPLETED"

    await asyncio.gather(*[pipeline(i, 5) for i in range(concurrency)])  # warm-up connections
    completed = 0
    t0 = time.perf_counter()
    await asyncio.gather(*[pipeline(i, per) for i in range(concurrency)])
    elapsed = time.perf_counter() - t0
    await caller.close()
    await worker.close()
    assert completed == per * concurrency, (completed, per * concurrency)
    return per * concurrency / elapsed


async def bench_sdk(url: str, n_workers: int, jobs: int, concurrency: int, kind: str) -> float:
    procs = []
    for i in range(n_workers):
        cmd = [*PODGATE, "worker", "--endpoint-url", url, "--handler", "tests.serverless.handlers:echo_async",
               "--api-key", KEY, "--worker-id", f"sdk{i}", "--concurrency", str(concurrency),
               "--ping-interval", "5000"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    caller, worker = clients(kind)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (await caller.json("GET", f"{url}/health"))["workers"]["ready"] >= n_workers:
                break
            await asyncio.sleep(0.2)
        sem = asyncio.Semaphore(64)

        async def one() -> str:
            async with sem:
                job = await caller.json("POST", f"{url}/run", b'{"input":{"prompt":"hello"}}')
                while True:
                    body = await caller.json("GET", f"{url}/status-sync/{job['id']}?wait=30000")
                    if body["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                        return body["status"]

        t0 = time.perf_counter()
        results = await asyncio.gather(*[one() for _ in range(jobs)])
        elapsed = time.perf_counter() - t0
        assert all(s == "COMPLETED" for s in results), set(results)
        return jobs / elapsed
    finally:
        await caller.close()
        await worker.close()
        for p in procs:
            stop(p)


async def bench_stream(url: str, chunks: int, posters: int, kind: str) -> tuple[float, float]:
    caller, worker = clients(kind)
    body = b'{"output":"token "}'
    per = max(1, chunks // posters)
    total = per * posters

    async def new_job(wid: str) -> str:
        job_id = (await caller.json("POST", f"{url}/run", b'{"input":{}}'))["id"]
        assert (await worker.json("GET", f"{url}/job-take/{wid}"))["id"] == job_id
        return job_id

    async def post(wid: str, job_id: str, n: int) -> None:
        for _ in range(n):
            await worker.json("POST", f"{url}/job-stream/{wid}/{job_id}", body, form=True)

    # (a) live: posters and one long-polling reader at the same time
    job_id = await new_job("sw1")

    async def read() -> int:
        got = 0
        while got < total:
            got += len((await caller.json("GET", f"{url}/stream/{job_id}?wait=5000"))["stream"])
        return got

    t0 = time.perf_counter()
    reader = asyncio.create_task(read())
    await asyncio.gather(*[post("sw1", job_id, per) for _ in range(posters)])
    live = await reader / (time.perf_counter() - t0)
    await worker.json("POST", f"{url}/job-done/sw1/{job_id}", b'{"output":[]}', form=True)

    # (b) drain: the reader empties a backlog
    job_id = await new_job("sw2")
    await asyncio.gather(*[post("sw2", job_id, per) for _ in range(posters)])
    t0 = time.perf_counter()
    got = 0
    while got < total:
        got += len((await caller.json("GET", f"{url}/stream/{job_id}"))["stream"])
    drain = got / (time.perf_counter() - t0)
    await caller.close()
    await worker.close()
    return live, drain


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sdk-workers", type=int, default=4)
    ap.add_argument("--sdk-concurrency", type=int, default=64)
    ap.add_argument("--sdk-jobs", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--posters", type=int, default=16)
    ap.add_argument("--clients", default="aiohttp,httpx", help="load drivers to use, comma-separated")
    ap.add_argument("--skip-sdk", action="store_true")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.clients.split(",") if k.strip()]
    proc, url = start_server()
    print(f"podgate endpoint (memory store, one process) at {url}; load average {os.getloadavg()[0]:.1f}")
    try:
        for kind in kinds:
            c0 = cpu_seconds(proc.pid)
            rate = await bench_direct(url, args.jobs, args.concurrency, kind)
            per_job = (cpu_seconds(proc.pid) - c0) / (args.jobs + 5 * args.concurrency) * 1000
            print(f"[{kind:7}] direct worker API : {rate:9.0f} jobs/s   (/run→job-take→job-done→/status, "
                  f"{args.jobs} jobs, {args.concurrency} pipelines; server CPU {per_job:.2f} ms/job)")
        if not args.skip_sdk:
            rate = await bench_sdk(url, args.sdk_workers, args.sdk_jobs, args.sdk_concurrency, kinds[0])
            print(f"[{kinds[0]:7}] real SDK workers  : {rate:9.0f} jobs/s   ({args.sdk_workers} runpod workers × "
                  f"concurrency {args.sdk_concurrency}, async echo handler, {args.sdk_jobs} jobs, /run + /status-sync)")
        for kind in kinds:
            live, drain = await bench_stream(url, args.chunks, args.posters, kind)
            print(f"[{kind:7}] /stream live      : {live:9.0f} chunks/s (one reader long-polling ?wait=, "
                  f"{args.posters} concurrent job-stream posters: bounded by one POST per chunk)")
            print(f"[{kind:7}] /stream drain     : {drain:9.0f} chunks/s (one reader emptying a backlog of "
                  f"{args.chunks} chunks)")
    finally:
        stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
