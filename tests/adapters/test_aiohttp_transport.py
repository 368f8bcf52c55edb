"""``adapters.aiohttp_transport.AiohttpTransport`` under podgate's httpx client
(``adapters.http_upstream``), against small real servers on loopback: what goes up and
comes back, and which failure says the request was never sent (only those may be retried)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from adapters.http_upstream import HTTPUpstream, make_transport
from adapters.upstream import RunPodError, UpstreamRequest

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return first, headers, body


class Server:
    """A loopback server running ``handler`` per connection; counts connections and sees EOF."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.closed_by_client = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v2"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def answer(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + headers
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def keep_answering(response: bytes, seen: list | None = None) -> Handler:
    """A keep-alive connection that answers every request with ``response`` (and records it)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if seen is not None:
                seen.append(request)
            writer.write(response)
            await writer.drain()

    return handler


EVENT = b'data: {"a":1}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)  # one SSE event as one HTTP chunk


def upstream(base: str, *, read_timeout: float = 5.0) -> HTTPUpstream:
    return HTTPUpstream(make_transport(), base, "rpa_KEY", connect_timeout=2.0, read_timeout=read_timeout)


async def test_request_and_answer_over_one_kept_alive_connection():
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    srv = Server(keep_answering(answer(b'{"id":"j","status":"IN_QUEUE"}'), seen))
    async with srv as base:
        up = upstream(base)
        for _ in range(3):
            got = await up.send(UpstreamRequest("POST", "ep/run", "run", b'{"input":{"x":1}}'))
            assert got == b'{"id":"j","status":"IN_QUEUE"}'
        await up.aclose()
    first, headers, body = seen[0]
    assert first == b"POST /v2/ep/run HTTP/1.1"
    assert headers[b"authorization"] == b"Bearer rpa_KEY" and headers[b"content-type"] == b"application/json"
    assert body == b'{"input":{"x":1}}'
    assert len(seen) == 3 and srv.connections == 1


async def test_error_status_and_compressed_body_are_read_as_httpx_reads_them():
    async def handler(reader, writer):  # one request per connection, and it says so
        first, _, _ = await read_request(reader)
        if b"/status/" in first:
            writer.write(answer(b'{"error":"no such job"}', status=b"404 Not Found",
                                headers=b"retry-after: 2\r\nconnection: close\r\n"))
        else:
            writer.write(answer(gzip.compress(b'{"status":"COMPLETED"}'),
                                headers=b"content-encoding: gzip\r\nconnection: close\r\n"))
        await writer.drain()

    async with Server(handler) as base:
        up = upstream(base)
        with pytest.raises(RunPodError) as info:
            await up.send(UpstreamRequest("GET", "ep/status/j", "status", None))
        assert (info.value.status, info.value.message, info.value.retry_after) == (404, "no such job", 2.0)
        assert await up.send(UpstreamRequest("GET", "ep/health", "health", None)) == b'{"status":"COMPLETED"}'
        await up.aclose()


async def test_nothing_listening_is_not_reached():
    async with Server(lambda r, w: asyncio.sleep(0)) as base:
        pass  # closed: the port refuses now
    up = upstream(base)
    with pytest.raises(RunPodError) as info:
        await up.send(UpstreamRequest("POST", "ep/run", "run", b"{}"))
    assert (info.value.status, info.value.answered, info.value.reached) == (502, False, False)
    await up.aclose()


async def failure(handler: Handler, *, read_timeout: float = 5.0) -> RunPodError:
    """The error podgate's client raises when the upstream answers a ``/run`` with ``handler``."""
    async with Server(handler) as base:
        up = upstream(base, read_timeout=read_timeout)
        with pytest.raises(RunPodError) as info:
            await up.send(UpstreamRequest("POST", "ep/run", "run", b"{}"))
        await up.aclose()
    return info.value


async def test_connection_cut_after_the_request_was_sent_counts_as_reached():
    async def handler(reader, writer):
        await read_request(reader)
        writer.transport.abort()  # the request arrived; the connection breaks before an answer

    error = await failure(handler)
    assert (error.status, error.answered, error.reached) == (502, False, True)


async def test_a_get_whose_connection_broke_after_sending_is_not_sent_again():
    """aiohttp would resend a GET once; a ``/stream`` poll's lost answer consumed its chunks,
    so a resend would skip them."""
    seen: list = []

    async def handler(reader, writer):
        seen.append(await read_request(reader))
        writer.transport.abort()

    async with Server(handler) as base:
        up = upstream(base)
        with pytest.raises(RunPodError) as info:
            await up.send(UpstreamRequest("GET", "ep/stream/j", "stream", None))
        await up.aclose()
    assert (info.value.status, info.value.answered, info.value.reached) == (502, False, True)
    assert len(seen) == 1


async def test_no_answer_in_time_is_a_read_timeout():
    async def handler(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    error = await failure(handler, read_timeout=0.3)
    assert (error.status, error.answered, error.reached) == (504, False, True)


async def test_a_body_closed_before_its_end_closes_the_connection_at_once():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(CHUNK * 3)  # three events, then nothing: the stream goes on
        await writer.drain()
        assert await reader.read(1) == b""  # EOF: podgate's side closed the connection
        srv.closed_by_client.set()

    srv = Server(handler)
    async with srv as base:
        up = upstream(base)
        body = await up.open(UpstreamRequest("POST", "ep/openai/v1/chat/completions", "openai", b"{}"))
        got = b""
        async for chunk in body:
            got += chunk
            if got.count(b"\n\n") == 3:
                break
        assert got == EVENT * 3
        await body.aclose()
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)
        await up.aclose()


async def test_a_body_read_to_its_end_leaves_the_connection_for_the_next_request():
    srv = Server(keep_answering(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                b"transfer-encoding: chunked\r\n\r\n" + CHUNK + b"0\r\n\r\n"))
    async with srv as base:
        up = upstream(base)
        for _ in range(2):
            body = await up.open(UpstreamRequest("POST", "ep/openai/v1/chat/completions", "openai", b"{}"))
            assert b"".join([c async for c in body]) == EVENT
            await body.aclose()
        assert srv.connections == 1
        await up.aclose()


def test_the_transport_is_httpxs_over_aiohttp():
    transport = make_transport()
    assert isinstance(transport, httpx.AsyncBaseTransport)
    assert type(transport).__name__ == "AiohttpTransport"
