"""The peers bench's load generator: cheap per request, since it shares a core with the
upstream.

Keep-alive HTTP/1.1 connections as raw asyncio Protocols with httptools' response parser
(on uvloop, which the caller runs): each of ``concurrency`` connections sends one prepared
request after another until ``total`` have been sent. Per request it records the latency
(request written → response complete) and, for streams, the time to the first SSE data event
and the number of ``data: {`` events (JSON chunks; ``[DONE]`` and comments are not counted).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httptools

_EVENT = b"data: {"


def build_request(port: int, path: str, body: dict, *, api_key: str = "sk-bench") -> bytes:
    """A complete HTTP/1.1 POST with a JSON body, ready to write as is."""
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {api_key}\r\ncontent-length: {len(data)}\r\n\r\n")
    return head.encode() + data


@dataclass
class LoadResult:
    """What one run measured: per request latency (s); per stream time to first chunk (s)."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    chunks: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def chunk_rate(self) -> float:
        return self.chunks / self.elapsed if self.elapsed else 0.0


class _Client(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bool] | None = None
        self.lost = False
        self.sent_at = 0.0
        self.first_at = 0.0
        self.events = 0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.done is not None and not self.done.done():
            self.done.set_result(False)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.done is not None and not self.done.done():
                self.done.set_result(False)
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        buf = self.tail + body  # an event split across two reads is counted once
        n = buf.count(_EVENT)
        if n:
            if not self.events:
                self.first_at = time.perf_counter()
            self.events += n
        self.tail = buf[-(len(_EVENT) - 1):]

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(True)

    async def request(self, data: bytes) -> bool:
        self.done = asyncio.get_running_loop().create_future()
        self.events, self.first_at, self.tail = 0, 0.0, b""
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(data)
        return await self.done


async def run(port: int, request: bytes, *, concurrency: int, total: int, seconds: float = 0.0,
              stream: bool = False, timeout: float = 120.0) -> LoadResult:
    """Send up to ``total`` copies of ``request`` to 127.0.0.1:``port`` over ``concurrency``
    keep-alive connections, sending no new one after ``seconds`` (0: no time limit); the
    whole run is bounded by ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    result = LoadResult()
    remaining = total
    stop_at = time.perf_counter() + (seconds or timeout)

    async def worker() -> None:
        nonlocal remaining
        client: _Client | None = None
        while remaining > 0 and time.perf_counter() < stop_at:
            remaining -= 1
            if client is None or client.lost:
                _, client = await loop.create_connection(_Client, "127.0.0.1", port)
            ok = await client.request(request)
            status = client.parser.get_status_code() if ok else 0
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if not ok or status != 200:
                result.errors += 1
                if client.transport is not None:
                    client.transport.close()
                client = None
                continue
            now = time.perf_counter()
            result.latencies.append(now - client.sent_at)
            if stream:
                result.chunks += client.events
                if client.first_at:
                    result.first_chunk.append(client.first_at - client.sent_at)
        if client is not None and client.transport is not None:
            client.transport.close()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    result.elapsed = time.perf_counter() - t0
    return result


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]
