"""The scale run of issue 11: many concurrent streaming clients through one podgate process.

On loopback: the local endpoint (``podgate endpoint``) with real ``runpod`` SDK workers whose
handler streams ``--tokens`` tokens at ``--rate`` tokens/s (each first token carries the wall
clock of its yield), one ``podgate serve --config`` in front (RunPod's budgets on, as in
production), and ``--streams`` clients that each stream one completion after another for
``--seconds``. Printed:

- ``/stream`` calls per 10 s that podgate made (from its ``/metrics``, read every second; RunPod
  allows 2,000), and the most between two readings 10–11 s apart (it errs high: a span of 11 s
  may hold the burst and 11 s of the rate, up to about 2,160 within budget);
- time to first token: from the worker's first yield to the client's read of it (p50, p99),
  and the gap between tokens as the client reads them (p50, p99);
- errors (anything but a whole answer ending in ``[DONE]``);
- podgate's peak RSS and its CPU-seconds per stream-second;
- then the disconnect storm: ``--streams`` long streams, all clients gone at once; how long
  until every job is CANCELLED on the endpoint, how many ``/cancel`` calls podgate made, and
  the most between two readings 10–11 s apart (RunPod allows 100 per 10 s; within budget a span
  of 11 s may hold up to about 108).

    .venv/bin/python bench/bench_scale.py [--streams 200] [--seconds 30] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKENS = int(os.environ.get("BENCH_SCALE_TOKENS", "20"))
RATE = float(os.environ.get("BENCH_SCALE_RATE", "20"))


async def paced_handler(job):
    """Era C style SSE text, one token every 1/RATE s; the first token is the wall clock of its
    yield. ``input.openai_input.max_tokens`` (when set) replaces ``TOKENS``."""
    body = (job.get("input") or {}).get("openai_input") or {}
    tokens = int(body.get("max_tokens") or TOKENS)
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def ev(delta, finish=None):
        return "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    yield ev({"role": "assistant", "content": repr(time.time())})
    for _ in range(tokens - 1):
        await asyncio.sleep(1 / RATE)
        yield ev({"content": " tok"})
    yield ev({}, "stop") + "data: [DONE]\n\n"


def production_timing() -> dict:
    """podgate's own timing defaults, not the test suite's short ones (its 30 s request timeout
    would cancel the storm's streams before their clients leave), but for the first byte: at once."""
    from proxy.settings import TimingSettings
    from tests.proxy.conftest import TIMING

    return {name: getattr(TimingSettings(), name) for name in TIMING} | {"first_byte_wait_s": 0.0}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU-seconds so far, peak RSS in bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def _counter(metrics_text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Sampler:
    """podgate's cumulative RunPod calls of one operation, read from /metrics every second."""

    def __init__(self, metrics_url: str, operation: str):
        self.url, self.operation = metrics_url, operation
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as http:  # its own connection: never behind the clients' pool
            while True:
                try:
                    text = (await http.get(self.url)).text
                except httpx.HTTPError:  # podgate too busy to answer in time: the next sample will do
                    continue
                count = _counter(text, "podgate_runpod_calls_total", operation=self.operation)
                self.samples.append((time.monotonic(), count))
                await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def most_in(self, window_s: float = 10.0) -> float:
        """The most calls counted between two samples ``window_s`` to 1.1 × ``window_s`` apart:
        each such span holds every ``window_s`` window inside it, so this errs high, never low
        (a raw count; scaling shorter spans up would count a burst as a rate)."""
        best = 0.0
        for i, (t0, c0) in enumerate(self.samples):
            for t1, c1 in self.samples[i + 1:]:
                if window_s <= t1 - t0 <= 1.1 * window_s:
                    best = max(best, c1 - c0)
        return best

    def per_10s(self) -> float:
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) * 10 if t1 > t0 else 0.0


async def _stream_once(http, body: dict, ttfts: list[float], gaps: list[float]) -> str | None:
    """One streamed completion; None when it ended with [DONE] and no error, else what went wrong."""
    last = None
    done = False
    try:
        r = await http.send(http.build_request("POST", "/chat/completions", json=body), stream=True)
    except httpx.TransportError as exc:  # before any answer: a kept-alive connection the server had closed?
        return f"before the answer: {type(exc).__name__} {exc}"
    try:
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return f"in-stream error: {chunk['error'].get('code')}: {chunk['error'].get('message', '')[:150]}"
                content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                if content is None:
                    continue
                now = time.time()
                if last is None:
                    ttfts.append((now - float(content)) * 1000)
                else:
                    gaps.append((now - last) * 1000)
                last = now
    finally:
        await r.aclose()
    return None if done else "no [DONE]"


async def sustained(base_url: str, metrics_url: str, streams: int, seconds: float, pid: int) -> dict:
    ttfts: list[float] = []
    gaps: list[float] = []
    results = {"ok": 0, "errors": 0}
    reasons: collections.Counter[str] = collections.Counter()
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    # a kept-alive connection is dropped well before uvicorn closes it (5 s idle), not raced
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        sampler = Sampler(metrics_url, "stream")
        sampler.start()
        cpu0, _ = _proc_stats(pid)
        t0 = time.monotonic()
        deadline = t0 + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                try:
                    error = await _stream_once(http, body, ttfts, gaps)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"[:200]
                results["ok" if error is None else "errors"] += 1
                if error is not None:
                    reasons[error] += 1

        await asyncio.gather(*(client() for _ in range(streams)))
        elapsed = time.monotonic() - t0
        cpu1, peak = _proc_stats(pid)
        await asyncio.sleep(1.0)
        await sampler.stop()
    return {"streams": streams, "elapsed_s": elapsed, **results, "reasons": reasons.most_common(5),
            "ttft_p50": _pct(ttfts, 0.5), "ttft_p99": _pct(ttfts, 0.99),
            "gap_p50": _pct(gaps, 0.5), "gap_p99": _pct(gaps, 0.99),
            "stream_per_10s": sampler.per_10s(), "stream_most_10s": sampler.most_in(),
            "rss_mib": peak / 2**20, "cpu_per_stream_s": (cpu1 - cpu0) / (streams * elapsed)}


async def disconnect_storm(base_url: str, metrics_url: str, endpoint, streams: int) -> dict:
    """``streams`` long streams; once each has its first token, every client leaves at once."""

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 100_000}
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
    job_ids: list[str] = []
    refused: collections.Counter[str] = collections.Counter()
    streaming = [0]
    started = asyncio.Event()
    go = asyncio.Event()

    async def client(http) -> None:
        async with http.stream("POST", "/chat/completions", json=body) as r:
            if r.status_code != 200:
                refused[f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"] += 1
            else:
                job_ids.append(r.headers.get("x-runpod-job-id", ""))
                lines = r.aiter_lines()  # held until the client leaves: a dropped iterator is closed
                async for line in lines:  # by asyncio's finalizer, and with it the connection
                    if '"content"' in line:
                        break
            streaming[0] += 1
            if streaming[0] == streams:
                started.set()
            await go.wait()

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http, \
            httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {endpoint.api_key}"}) as ep:
        sampler = Sampler(metrics_url, "cancel")
        sampler.start()
        tasks = [asyncio.ensure_future(client(http)) for _ in range(streams)]
        await asyncio.wait_for(started.wait(), 300)
        t0 = time.monotonic()
        go.set()
        for t in tasks:
            t.cancel()  # every client closes its connection now
        await asyncio.gather(*tasks, return_exceptions=True)
        pending = {j for j in job_ids if j}
        while pending and time.monotonic() - t0 < 300:
            for job in list(pending)[:200]:
                try:
                    status = (await ep.get(f"{endpoint.url()}/status/{job}")).json().get("status")
                except httpx.HTTPError:  # the endpoint is busy: ask again on the next round
                    continue
                if status == "CANCELLED":
                    pending.discard(job)
            await asyncio.sleep(0.2)
        all_cancelled_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        await sampler.stop()
    first, last = sampler.samples[0][1], sampler.samples[-1][1]
    return {"streams": streams, "refused": refused.most_common(5), "all_cancelled_s": all_cancelled_s,
            "not_cancelled": len(pending), "cancel_calls": last - first,
            "cancel_most_10s": sampler.most_in()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--skip-storm", action="store_true", help="no disconnect storm")
    ap.add_argument("--logs", type=Path, help="keep the servers' logs in this folder (default: a temporary one)")
    args = ap.parse_args()
    os.chdir(ROOT)
    from tests.conftest import _Factory
    from tests.proxy.conftest import start_proxy, write_config

    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = args.logs or Path(d)
        factory = _Factory(tmp)
        try:
            server = factory(endpoints=("ep",))
            per_worker = math.ceil(args.streams / args.workers) + 5
            for _ in range(args.workers):
                server.worker("bench.bench_scale:paced_handler", concurrency=per_worker, wait=False)
            server.wait_for_workers(count=args.workers, timeout=60)
            cfg = write_config(tmp / "scale.toml", server.base, "ep", models={"m": ("vllm", "era-c")},
                               timing=production_timing())
            proxy = start_proxy(cfg, server.api_key, tmp)
            metrics_url = f"http://127.0.0.1:{proxy.port}/metrics"
            try:
                print(f"# bench_scale: {args.streams} streams, {args.seconds:.0f} s, {args.workers} SDK workers, "
                      f"{TOKENS} tokens at {RATE:.0f}/s per stream; podgate pid {proxy.proc.pid}", flush=True)
                r = asyncio.run(sustained(proxy.base_url, metrics_url, args.streams, args.seconds, proxy.proc.pid))
                print(f"streams {r['streams']}: {r['ok']} answers, {r['errors']} errors in {r['elapsed_s']:.0f} s")
                for reason, count in r["reasons"]:
                    print(f"  error x{count}: {reason}")
                print(f"  /stream calls per 10 s: {r['stream_per_10s']:.0f} on average, {r['stream_most_10s']:.0f} "
                      f"at most in 10-11 s (RunPod allows 2,000 per 10 s)")
                print(f"  time to first token (worker's yield → client): p50 {r['ttft_p50']:.0f} ms, "
                      f"p99 {r['ttft_p99']:.0f} ms")
                print(f"  gap between tokens at the client: p50 {r['gap_p50']:.0f} ms, p99 {r['gap_p99']:.0f} ms "
                      f"(the worker's: {1000 / RATE:.0f} ms)")
                print(f"  podgate: peak RSS {r['rss_mib']:.0f} MiB, {r['cpu_per_stream_s'] * 1000:.1f} "
                      f"CPU-ms per stream-second")
                if not args.skip_storm:
                    s = asyncio.run(disconnect_storm(proxy.base_url, metrics_url, server, args.streams))
                    print(f"disconnect storm, {s['streams']} streams: all CANCELLED {s['all_cancelled_s']:.1f} s "
                          f"after the clients left ({s['not_cancelled']} not); {s['cancel_calls']:.0f} /cancel calls "
                          f"by podgate, at most "
                          f"{s['cancel_most_10s']:.0f} in 10-11 s (RunPod allows 100 per 10 s)")
                    for reason, count in s["refused"]:
                        print(f"  not started x{count}: {reason}")
            finally:
                proxy.stop()
        finally:
            factory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
