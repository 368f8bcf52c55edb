"""One round of the peers bench: the same phases against each way in, in turn.

Phases (each bounded by a request count and a time, per :class:`Plan`): latency at
concurrency 1; requests/s at concurrency 32, with the gateway's CPU-seconds over that phase;
streams at concurrency 32 (chunks/s, time to first chunk). Before the rounds, :func:`check`
sends one request of each kind through every way and reports answers that are not what the
upstream sent; :func:`drift` measures podgate's RSS over a long run.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers import load
from bench.peers.servers import MODEL, Server


@dataclass(frozen=True)
class Plan:
    latency_requests: int
    latency_seconds: float
    rate_requests: int
    rate_seconds: float
    streams: int
    stream_seconds: float
    warmup: int
    concurrency: int = 32


FULL = Plan(latency_requests=3000, latency_seconds=5.0, rate_requests=50_000, rate_seconds=5.0,
            streams=5000, stream_seconds=5.0, warmup=300)
QUICK = Plan(latency_requests=300, latency_seconds=1.0, rate_requests=5000, rate_seconds=1.5,
             streams=500, stream_seconds=1.5, warmup=100)


@dataclass
class Way:
    """A way in: ``server`` is the gateway (None for direct to the upstream)."""

    name: str
    port: int
    path: str
    server: Server | None = None

    def request(self, *, stream: bool) -> bytes:
        body: dict = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
        if stream:
            body["stream"] = True
        return load.build_request(self.port, self.path, body)


@dataclass
class RoundFigures:
    p50_ms: float
    p99_ms: float
    rate: float
    cpu_per_1k: float | None
    chunk_rate: float
    first_chunk_p50_ms: float
    errors: int


async def check(way: Way, chunks: int) -> list[str]:
    """One plain and one streamed request; what is wrong with the answers (empty: nothing)."""
    problems = []
    plain = await load.run(way.port, way.request(stream=False), concurrency=1, total=1)
    if plain.errors:
        problems.append(f"non-stream answered {sorted(plain.statuses)}")
    streamed = await load.run(way.port, way.request(stream=True), concurrency=1, total=1, stream=True)
    if streamed.errors:
        problems.append(f"stream answered {sorted(streamed.statuses)}")
    elif streamed.chunks != chunks + 2:  # the role chunk, the content chunks, the finish chunk
        problems.append(f"stream brought {streamed.chunks} chunks, the upstream sent {chunks + 2}")
    return problems


async def warm(way: Way, plan: Plan) -> None:
    await load.run(way.port, way.request(stream=False), concurrency=8, total=plan.warmup, seconds=5.0)
    await load.run(way.port, way.request(stream=True), concurrency=8, total=plan.warmup // 4, seconds=5.0,
                   stream=True)


async def measure_round(ways: list[Way], plan: Plan) -> dict[str, RoundFigures]:
    latency: dict[str, load.LoadResult] = {}
    rate: dict[str, load.LoadResult] = {}
    cpu: dict[str, float | None] = {}
    streams: dict[str, load.LoadResult] = {}
    for way in ways:
        latency[way.name] = await load.run(way.port, way.request(stream=False), concurrency=1,
                                           total=plan.latency_requests, seconds=plan.latency_seconds)
    for way in ways:
        before = way.server.cpu_seconds() if way.server else 0.0
        rate[way.name] = r = await load.run(way.port, way.request(stream=False), concurrency=plan.concurrency,
                                            total=plan.rate_requests, seconds=plan.rate_seconds)
        cpu[way.name] = ((way.server.cpu_seconds() - before) / r.ok * 1000) if way.server and r.ok else None
    for way in ways:
        streams[way.name] = await load.run(way.port, way.request(stream=True), concurrency=plan.concurrency,
                                           total=plan.streams, seconds=plan.stream_seconds, stream=True)
    figures = {}
    for way in ways:
        lat, rr, st = latency[way.name], rate[way.name], streams[way.name]
        figures[way.name] = RoundFigures(
            p50_ms=load.percentile(lat.latencies, 0.50) * 1000, p99_ms=load.percentile(lat.latencies, 0.99) * 1000,
            rate=rr.rate, cpu_per_1k=cpu[way.name], chunk_rate=st.chunk_rate,
            first_chunk_p50_ms=load.percentile(st.first_chunk, 0.50) * 1000,
            errors=lat.errors + rr.errors + st.errors)
    return figures


async def drift(way: Way, total: int, concurrency: int = 32, steps: int = 10) -> list[tuple[int, float]]:
    """(requests so far, RSS MiB) after each of ``steps`` equal parts of ``total`` requests,
    one in ten of them streamed."""
    assert way.server is not None
    points, done = [], 0
    plain, streamed = way.request(stream=False), way.request(stream=True)
    for _ in range(steps):
        part = total // steps
        for request, n, stream in ((plain, part - part // 10, False), (streamed, part // 10, True)):
            r = await load.run(way.port, request, concurrency=concurrency, total=n, stream=stream, timeout=3600.0)
            done += r.ok
        points.append((done, way.server.rss_mib()))
    return points
