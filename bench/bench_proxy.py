"""Benchmark podgate's queue path. Prints two figures:

1. **TTFT added** (median): from the moment a real ``runpod`` SDK worker yields its first
   delta (the handler puts ``time.time()`` in it) to the moment the client reads that
   delta from podgate's SSE stream — through the worker's job-stream POST, the local
   endpoint (``podgate endpoint``), podgate's ``/stream`` poll and podgate's SSE writer.
   Target ≤ 50 ms.
2. **SSE chunks/s** through one podgate process (one event loop, so one core): a minimal
   fake RunPod upstream (another process) answers ``/run`` and ``/stream`` polls with
   batches of ready-made vLLM SSE events (1000, 100 and 10 per poll); one client reads
   podgate's stream and counts chunks. Target ≥ 10,000/s. Small batches measure the
   fixed cost of one ``/stream`` round trip (mostly the HTTP client).

    .venv/bin/python bench/bench_proxy.py [--requests 30] [--chunks 200000]
        [--skip-ttft] [--per-poll 10 --per-poll 100 ...] [--repeat 3]

``--repeat N`` runs each throughput figure N times and adds a median line per batch size
(the machine is noisy); ``--per-poll`` picks the batch sizes; ``--skip-ttft`` skips figure 1.

Everything runs on loopback as separate processes (free ports).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the worker handler for the TTFT run (imported by ``podgate worker``) -------------------

async def ttft_handler(job):
    """Era C style: raw SSE text; the first delta's content is the wall clock at the yield."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def ev(delta, finish=None):
        return "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    yield ev({"role": "assistant", "content": repr(time.time())})
    yield ev({"content": " done"}) + ev({}, "stop") + "data: [DONE]\n\n"


# -- the fake upstream for the throughput run ---------------------------------------------

def fake_upstream_app(events_per_poll: int, polls: int):
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
    text = ("data: " + json.dumps(chunk) + "\n\n") * events_per_poll
    batch = json.dumps({"status": "IN_PROGRESS", "stream": [{"output": text}]}).encode()
    final = json.dumps({"status": "COMPLETED", "stream": []}).encode()
    state: dict[str, int] = {}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        while True:  # drain the request body
            msg = await receive()
            if not msg.get("more_body"):
                break
        if path.endswith("/run"):
            job = f"job-{len(state)}"
            state[job] = 0
            body = json.dumps({"id": job, "status": "IN_QUEUE"}).encode()
        elif "/stream/" in path:
            job = path.rsplit("/", 1)[1]
            state[job] += 1
            body = batch if state[job] <= polls else final
        else:
            body = json.dumps({"id": path.rsplit("/", 1)[1], "status": "COMPLETED", "output": []}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _start_proxy(tmp: Path, base_url: str, endpoint: str, key: str, timing: dict) -> tuple[subprocess.Popen, str]:
    from tests.proxy.conftest import start_proxy, write_config

    cfg = write_config(tmp / f"bench-{endpoint}.toml", base_url, endpoint, timing=timing, models={"m": ("vllm", "m")})
    # RunPod's /stream budget (200 polls/s) would set the chunk rate; the figures are podgate's cost
    cfg.write_text(cfg.read_text() + "\n[budgets.stream]\nrate = 0\nconcurrency = 0\n")
    p = start_proxy(cfg, key, tmp)
    return p, p.base_url


def bench_ttft(tmp: Path, requests: int) -> list[float]:
    import httpx

    from tests.conftest import _Factory

    factory = _Factory(tmp)
    try:
        server = factory(endpoints=("ep",))
        server.worker("bench.bench_proxy:ttft_handler", concurrency=4)
        proxy, base = _start_proxy(tmp, server.base, "ep", server.api_key,
                                   {"stream_wait_ms": 5000, "first_byte_wait_s": 0.0, "keepalive_s": 5.0})
        added = []
        try:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            with httpx.Client(base_url=base, timeout=30) as c:
                for i in range(requests + 2):
                    with c.stream("POST", "/chat/completions", json=body) as s:
                        for line in s.iter_lines():
                            if line.startswith("data: {"):
                                content = json.loads(line[6:])["choices"][0]["delta"].get("content")
                                if content:
                                    got = time.time()
                                    if i >= 2:  # two warm-up requests
                                        added.append((got - float(content)) * 1000)
                                    break
        finally:
            proxy.stop()
        return added
    finally:
        factory.close()


def bench_throughput(tmp: Path, chunks: int, events_per_poll: int = 1000) -> tuple[float, int]:
    import httpx

    port = _free_port()
    polls = max(1, chunks // events_per_poll)
    code = (f"import sys, uvicorn; sys.path.insert(0, {str(ROOT)!r}); from bench.bench_proxy import fake_upstream_app; "
            f"uvicorn.run(fake_upstream_app({events_per_poll}, {polls}), host='127.0.0.1', port={port}, "
            f"log_level='warning')")
    upstream = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        _wait_port(port)
        proxy, base = _start_proxy(tmp, f"http://127.0.0.1:{port}/v2", "fake", "k",
                                   {"stream_wait_ms": 0, "poll_min_ms": 0})
        try:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            with httpx.Client(base_url=base, timeout=60) as c:
                with c.stream("POST", "/chat/completions", json=body) as s:  # warm-up
                    for _ in s.iter_lines():
                        pass
                n = 0
                t0 = time.perf_counter()
                with c.stream("POST", "/chat/completions", json=body) as s:
                    for line in s.iter_lines():
                        if line.startswith("data: {"):
                            n += 1
                elapsed = time.perf_counter() - t0
        finally:
            proxy.stop()
        return n / elapsed, n
    finally:
        upstream.terminate()
        upstream.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--skip-ttft", action="store_true", help="only the chunks/s figures")
    ap.add_argument("--per-poll", type=int, action="append", choices=(1000, 100, 10),
                    help="events per /stream poll (repeatable; default 1000, 100 and 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per chunks/s figure (adds a median line)")
    args = ap.parse_args()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_ttft:
            added = bench_ttft(tmp, args.requests)
            med = statistics.median(added)
            p90 = sorted(added)[int(len(added) * 0.9) - 1]
            print(f"TTFT added over the worker's first yield: median {med:.1f} ms, p90 {p90:.1f} ms, "
                  f"min {min(added):.1f} ms ({len(added)} requests; target <= 50 ms) -> {'OK' if med <= 50 else 'MISSED'}")
        for per_poll in args.per_poll or (1000, 100, 10):  # 10: a worker yielding a few tokens at a time
            rates = []
            for _ in range(max(1, args.repeat)):
                rate, n = bench_throughput(tmp, {1000: args.chunks, 100: args.chunks // 4,
                                                 10: args.chunks // 10}[per_poll], per_poll)
                rates.append(rate)
                print(f"SSE chunks through one podgate process, {per_poll} events per /stream poll: {rate:,.0f} chunks/s "
                      f"({n:,} chunks; target >= 10,000/s) -> {'OK' if rate >= 10_000 else 'MISSED'}", flush=True)
            if len(rates) > 1:
                med = statistics.median(rates)
                print(f"  median of {len(rates)} runs, {per_poll} events per poll: {med:,.0f} chunks/s "
                      f"(min {min(rates):,.0f}, max {max(rates):,.0f}) -> {'OK' if med >= 10_000 else 'MISSED'}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
