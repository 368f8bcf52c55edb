"""``HTTPUpstream``: the upstream seam (``adapters.upstream.Upstream``) over httpx.

It wraps one ``httpx.AsyncClient`` (made by ``make_http_client`` at startup, closed at
shutdown) with explicit timeouts and pool limits sized for RunPod's per-endpoint concurrency
limits, sets the key once, and turns every failure — a non-2xx answer, a connection or
timeout error — into one ``RunPodError`` (status + RunPod's message, read once here; never
the key). Calls that ask the upstream to hold (``wait_ms``) get a read timeout longer than
the wait. ``open`` gives a 2xx answer's body as it arrives (decoded if the upstream compressed it;
for the passthrough's SSE), closed by the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import msgspec

from adapters.aiohttp_transport import AiohttpTransport
from adapters.upstream import RunPodError, UpstreamBody, UpstreamRequest


def make_http_client(
    base_url: str,
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    max_connections: int = 400,
    max_keepalive_connections: int = 100,
) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for one upstream base URL, over ``AiohttpTransport``
    (about a third of httpcore's CPU per request). aiohttp caps connections at
    ``max_connections`` and closes idle ones after 5 s; it has no separate cap on idle ones,
    so ``max_keepalive_connections`` is not used."""
    del max_keepalive_connections
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout),
        headers={"content-type": "application/json", "user-agent": "podgate"},
        trust_env=False,
        transport=AiohttpTransport(max_connections=max_connections),
    )


class _ErrorBody(msgspec.Struct):
    """RunPod's error bodies (and those of proxies in front of it): the message is in
    ``error`` (a string, or an object with a ``message``), ``message`` or ``detail``."""

    error: object = None
    message: object = None
    detail: object = None


_error_dec = msgspec.json.Decoder(_ErrorBody)


class HTTPUpstream:
    """The RunPod endpoints under one base URL (``…/v2``), over one ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, *, read_timeout: float = 30.0):
        self._http = http
        http.headers["authorization"] = f"Bearer {api_key}"  # set once, not merged per call
        self._read_timeout = read_timeout
        self._timeouts: dict[float, httpx.Timeout] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, request: UpstreamRequest) -> bytes:
        path, timeout = self._target(request)
        with _mapped(request.operation):
            resp = await self._http.request(request.method, path, content=request.content, timeout=timeout)
        if resp.status_code >= 400:
            raise _answer_error(resp, request.operation)
        return resp.content

    async def open(self, request: UpstreamRequest) -> UpstreamBody:
        path, timeout = self._target(request)
        call = self._http.build_request(request.method, path, content=request.content, timeout=timeout)
        with _mapped(request.operation):
            resp = await self._http.send(call, stream=True)
        if resp.status_code >= 400:
            try:
                with _mapped(request.operation):
                    await resp.aread()
            finally:
                await resp.aclose()
            raise _answer_error(resp, request.operation)
        return _StreamedBody(resp, request.operation)

    def _target(self, request: UpstreamRequest) -> tuple[str, httpx.Timeout | httpx._client.UseClientDefault]:
        """The path (with ``?wait=``) and the call's timeout: the client's default, or a read
        timeout longer than the wait, or the request's own ``read_timeout``."""
        path, wait_ms = request.path, request.wait_ms
        read = request.read_timeout
        if wait_ms:
            path = f"{path}?wait={int(wait_ms)}"
            read = (read or self._read_timeout) + wait_ms / 1000.0
        if read is None:
            return path, httpx.USE_CLIENT_DEFAULT
        timeout = self._timeouts.get(read)
        if timeout is None:
            timeout = self._timeouts[read] = httpx.Timeout(read, connect=self._http.timeout.connect)
        return path, timeout


class _StreamedBody:
    """``UpstreamBody`` over an httpx response opened with ``stream=True``."""

    __slots__ = ("_resp", "_operation", "content_type")

    def __init__(self, resp: httpx.Response, operation: str):
        self._resp = resp
        self._operation = operation
        self.content_type = resp.headers.get("content-type", "")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._operation):
            async for chunk in self._resp.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        await self._resp.aclose()


@contextmanager
def _mapped(operation: str) -> Iterator[None]:
    """httpx's failures as ``RunPodError``: nothing sent (502, ``reached`` False), a timeout
    (504) or a broken connection (502)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing was sent
        raise RunPodError(502, f"upstream unreachable ({type(exc).__name__})", operation=operation,
                          answered=False, reached=False) from None
    except httpx.TimeoutException as exc:
        raise RunPodError(504, f"upstream timed out ({type(exc).__name__})", operation=operation,
                          answered=False) from None
    except httpx.HTTPError as exc:
        raise RunPodError(502, f"upstream connection failed ({type(exc).__name__})", operation=operation,
                          answered=False) from None


_MAX_ERROR_BODY = 100_000


def _answer_error(resp: httpx.Response, operation: str) -> RunPodError:
    return RunPodError(resp.status_code, _error_message(resp), operation=operation, retry_after=_retry_after(resp),
                       body=resp.content[:_MAX_ERROR_BODY])


def _error_message(resp: httpx.Response) -> str:
    """RunPod's message in an error answer, read once (``adapters.errors.from_runpod``
    turns it into the client's error)."""
    body = resp.content[:2000]
    try:
        err = _error_dec.decode(body)
        msg = next((m for m in (err.error, err.message, err.detail) if m is not None), None)
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        if msg is not None:
            return str(msg)[:500]
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:500] or (resp.reason_phrase or f"HTTP {resp.status_code}")


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
