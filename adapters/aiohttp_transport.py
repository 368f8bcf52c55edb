"""``AiohttpTransport``: httpx's transport interface over one ``aiohttp.ClientSession``.

httpx stays podgate's client interface (``httpx.AsyncClient``: base URL, headers, timeouts,
``MockTransport`` in tests); aiohttp does the HTTP/1.1 work. httpx's default transport
(httpcore over anyio) costs about 2 ms of CPU per request on one core here, and its pool gets
slower with concurrency (about 3 ms at 32 in flight); through this transport the same client
costs about a third of that (``bench/peers``, issue 9). A streamed body is read as it comes
(``iter_any``): the events already in the socket buffer arrive as one chunk, not one per HTTP
chunk, so a relay sends them on in one write.

Failures are raised as the httpx exceptions that say what happened, because whether the
request went out decides whether it may be sent again (``adapters.http_upstream``):
``ConnectError`` / ``ConnectTimeout`` only when nothing was sent (no connection, or none free
in time); ``ReadTimeout`` when the answer did not come in time; ``RemoteProtocolError`` when the
connection broke or the answer was not HTTP after the request was sent; ``ReadError`` when a
body broke off. (The ``httpx-aiohttp`` package maps a connection reset after sending to
``ConnectTimeout``, which would let a ``/run`` be retried and run twice: hence this module.)
For the same reason aiohttp's own retry is off: it sends a GET (or PUT, DELETE) again, once,
when the connection broke after the request went out, and a ``/stream`` poll whose answer was
lost had consumed its chunks: sent again, it answers the chunks after them, and the answer
would be passed on with a hole in it (``tests/faults/test_resets.py``). Whether a call may be
repeated is decided above this module (``adapters.retries``), from the failure it raised.

A body closed before its end closes its connection at once (the upstream sees its client go);
a body read to the end gives the connection back to the pool. aiohttp has one connection
limit (``max_connections``), no separate cap on idle ones; idle connections close after
``keepalive_expiry`` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent with one lazily made ``aiohttp.ClientSession`` (it must be made in
    the running event loop)."""

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float = 5.0):
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_expiry,
                                         ssl=httpx.create_ssl_context(trust_env=False))  # httpx's CA bundle
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,  # httpx decodes
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              timeout=aiohttp.ClientTimeout(total=None))
        # no silent resend of an idempotent method (module docstring); aiohttp has no public
        # switch for it: its own test client (aiohttp.test_utils) clears the same attribute
        self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        t = request.extensions.get("timeout", {})
        body = await request.aread()
        with _mapped(request):
            resp = await session.request(
                request.method, URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=body or None, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=t.get("pool"), sock_connect=t.get("connect"),
                                              sock_read=t.get("read")))
        return httpx.Response(resp.status, headers=resp.raw_headers, stream=_Body(resp, request), request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (resp.reason or "").encode()})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's stream: chunks as they arrive."""

    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request):
        self._resp = resp
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request, body=True):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()  # back to the pool
        else:
            self._resp.close()  # unfinished: close the connection now


@contextmanager
def _mapped(request: httpx.Request, *, body: bool = False) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ConnectionTimeoutError as exc:  # no connection (or no free one) in time: nothing sent
        raise httpx.ConnectTimeout(str(exc), request=request) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # the connection broke, or the answer was not HTTP
        error = httpx.ReadError if body else httpx.RemoteProtocolError
        raise error(f"{type(exc).__name__}: {exc}", request=request) from exc
