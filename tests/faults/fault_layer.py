"""``FaultLayer``: a programmable HTTP layer on loopback between podgate and the local endpoint.

podgate's ``[runpod] base_url`` points at the layer; the layer forwards every call to the
real ``podgate endpoint`` (the SDK workers talk to the endpoint directly) unless a rule the
test set matches it, and then misbehaves as RunPod, its load balancer or the network can:

- ``status=429`` (with ``retry_after`` or without), ``500``, ``502``, ``503``: answered by the
  layer, nothing forwarded (RunPod turned the call away) — or, with ``forward=True``,
  forwarded first and the endpoint's answer replaced (the endpoint acted, the caller is
  told it failed);
- ``reset="before"``: the connection is reset (RST) once the request was read, before
  anything was forwarded; ``reset="after"``: forwarded, the endpoint acted, then the
  connection is reset instead of the answer (the answer is lost);
- ``stall=60``: the call is held that long (or until the caller gives up and closes the
  connection; then nothing is forwarded, so a ``/stream`` poll consumes no chunk), then
  forwarded;
- ``truncate=True``: forwarded, and the answer's JSON body is cut in half (the HTTP framing
  stays correct: ``content-length`` is the cut body's); ``truncate=0.8`` keeps that share.

A rule matches an operation (``run``, ``runsync``, ``stream``, ``status``, ``cancel``,
``retry``, ``health``, ``openai``: the path segment after the endpoint id), optionally one
endpoint id, ``times`` times (None: until ``duration`` seconds have passed, or for ever).
Rules are tried in the order they were added; ``clear()`` removes them all.

What reached the endpoint is recorded: ``hits`` (every call, with its fault and whether it
was forwarded) and ``jobs`` (the id of every job the endpoint accepted through the layer —
from the answers of forwarded ``/run`` and ``/runsync``, also those the caller never got),
which the tests check for jobs lost or left running.

One request per connection (every answer says ``connection: close``), read and written with
asyncio streams, so that a reset or a cut body is exactly what the test asked for; the
forwarding uses one ``aiohttp.ClientSession``. It runs in its own event loop in a thread: the
tests drive podgate with the synchronous ``openai`` SDK.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

#: Operations whose 200 answer holds a new job's id.
SUBMITS = ("run", "runsync")
#: Headers of the endpoint's answer the layer passes on.
PASSED_HEADERS = ("content-type", "retry-after")


@dataclass
class Rule:
    """One fault (module docstring); ``hits`` counts the calls it matched."""

    op: str
    endpoint: str | None = None
    times: int | None = 1
    duration: float | None = None
    status: int | None = None
    retry_after: str | None = None
    forward: bool = False
    reset: Literal["before", "after"] | None = None
    stall: float | None = None
    truncate: bool | float = False
    hits: int = 0
    until: float | None = None

    def matches(self, op: str, endpoint: str, now: float) -> bool:
        if op != self.op or (self.endpoint is not None and endpoint != self.endpoint):
            return False
        if self.until is not None and now >= self.until:
            return False
        return self.times is None or self.hits < self.times

    @property
    def name(self) -> str:
        if self.status is not None:
            return f"{self.status}" + (" after forwarding" if self.forward else "")
        if self.reset is not None:
            return f"reset {self.reset}"
        return "stall" if self.stall is not None else "truncate"


@dataclass
class Hit:
    """One call that reached the layer."""

    op: str
    path: str
    fault: str | None
    forwarded: bool = False
    status: int | None = None
    """The status the caller was sent (None: a reset, or the caller left)."""


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> list[str]:
        """``[endpoint, operation, …]`` from ``/v2/{endpoint}/{operation}/…``."""
        return self.target.split("?")[0].split("/")[2:]


@dataclass
class FaultLayer:
    upstream: str
    """The endpoint's base URL (``http://127.0.0.1:PORT/v2``)."""
    base: str = ""
    """The layer's own base URL, for podgate's ``[runpod] base_url``."""
    rules: list[Rule] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    """Every job the endpoint accepted through the layer: id → the submit's operation."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _session: aiohttp.ClientSession | None = None

    # -- programming it (from the test's thread) ------------------------------------------

    def inject(self, op: str, *, times: int | None = 1, duration: float | None = None, endpoint: str | None = None,
               status: int | None = None, retry_after: float | str | None = None, forward: bool = False,
               reset: Literal["before", "after"] | None = None, stall: float | None = None,
               truncate: bool | float = False) -> Rule:
        """Add a rule (module docstring); ``duration`` with ``times=None`` makes a storm."""
        rule = Rule(op, endpoint, times, duration, status, None if retry_after is None else str(retry_after),
                    forward, reset, stall, truncate)
        if duration is not None:
            rule.until = time.monotonic() + duration
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and forget what was recorded."""
        with self._lock:
            self.rules.clear()
            self.hits.clear()
            self.jobs.clear()

    def count(self, op: str, *, forwarded: bool | None = None) -> int:
        """How many ``op`` calls came (only those forwarded, or not, when asked)."""
        with self._lock:
            return sum(1 for h in self.hits if h.op == op and (forwarded is None or h.forwarded == forwarded))

    def wait_count(self, op: str, n: int, timeout: float = 15.0) -> int:
        """Wait until ``n`` ``op`` calls came (a retry after the test's last check); the count."""
        deadline = time.monotonic() + timeout
        while (count := self.count(op)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return count

    # -- serving ------------------------------------------------------------------------------

    def _match(self, op: str, endpoint: str) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self.rules:
                if rule.matches(op, endpoint, now):
                    rule.hits += 1
                    return rule
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()
            return
        endpoint, op = [*request.path, "", ""][:2]
        rule = self._match(op, endpoint)
        hit = Hit(op, request.target, None if rule is None else rule.name)
        with self._lock:
            self.hits.append(hit)
        try:
            await self._answer(request, rule, hit, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the caller went away
        finally:
            if not writer.is_closing():
                writer.close()

    async def _answer(self, request: Request, rule: Rule | None, hit: Hit, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if rule is not None and rule.reset == "before":
            return _reset(writer)
        if rule is not None and rule.status is not None and not rule.forward:
            return await _send_error(writer, hit, rule)
        if rule is not None and rule.stall is not None:
            try:  # the caller closing its connection ends the hold: nothing is forwarded then
                await asyncio.wait_for(reader.read(1), rule.stall)
                return
            except TimeoutError:
                pass
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + "/" + "/".join(request.target.split("/")[2:]),
                                         headers=request.headers, data=request.body or None) as resp:
            hit.forwarded = True
            headers = {k: v for k, v in resp.headers.items() if k.lower() in PASSED_HEADERS}
            if resp.content_type == "text/event-stream" and rule is None:
                return await _relay(writer, hit, resp, headers)
            body = await resp.read()
        self._note_job(request, resp.status, body)
        if rule is None:
            return await _send(writer, hit, resp.status, body, headers)
        if rule.reset == "after":
            return _reset(writer)
        if rule.status is not None:  # forward=True: the endpoint acted, the caller hears a failure
            return await _send_error(writer, hit, rule)
        if rule.truncate:
            body = body[:int(len(body) * (0.5 if rule.truncate is True else rule.truncate))]
        await _send(writer, hit, resp.status, body, headers)

    def _note_job(self, request: Request, status: int, body: bytes) -> None:
        op = request.path[1] if len(request.path) > 1 else ""
        if status != 200 or op not in SUBMITS:
            return
        try:
            job_id = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self.jobs[job_id] = op

    # -- lifetime -----------------------------------------------------------------------------

    async def _start(self) -> asyncio.Server:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                              connector=aiohttp.TCPConnector(limit=0))
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v2"
        return server

    async def _stop(self, server: asyncio.Server) -> None:
        server.close()
        assert self._session is not None
        await self._session.close()


@contextmanager
def serve_fault_layer(upstream: str) -> Iterator[FaultLayer]:
    """A ``FaultLayer`` in front of ``upstream`` on a loopback port, in a thread of its own,
    while the ``with`` lasts."""
    layer = FaultLayer(upstream.rstrip("/"))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(layer._start())
    thread = threading.Thread(target=loop.run_forever, name="fault-layer", daemon=True)
    thread.start()
    try:
        yield layer
    finally:
        asyncio.run_coroutine_threadsafe(layer._stop(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _read_request(reader: asyncio.StreamReader) -> Request:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *lines = head.split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = {}
    for item in lines:
        if ":" in item:
            name, value = item.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    kept = {k: v for k, v in headers.items() if k in ("authorization", "content-type", "user-agent")}
    return Request(method, target, kept, body)


def _head(status: int, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, hit: Hit, status: int, body: bytes, headers: dict[str, str]) -> None:
    writer.write(_head(status, headers, len(body)) + body)
    await writer.drain()
    hit.status = status


async def _send_error(writer: asyncio.StreamWriter, hit: Hit, rule: Rule) -> None:
    assert rule.status is not None
    headers = {"content-type": "application/json"}
    if rule.retry_after is not None:
        headers["retry-after"] = rule.retry_after
    await _send(writer, hit, rule.status, json.dumps({"error": f"injected {rule.status}"}).encode(), headers)


async def _relay(writer: asyncio.StreamWriter, hit: Hit, resp: aiohttp.ClientResponse, headers: dict[str, str]) -> None:
    """An SSE answer (the ``/openai`` gateway) passed on as it comes; its end is the close."""
    writer.write(_head(resp.status, headers, None))
    hit.status = resp.status
    async for chunk in resp.content.iter_any():
        writer.write(chunk)
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (``SO_LINGER`` 0), as a connection that breaks does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


__all__ = ["FaultLayer", "Rule", "Hit", "serve_fault_layer"]
