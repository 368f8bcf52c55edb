"""``HTTPUpstream``: the upstream seam (``adapters.upstream.Upstream``) over httpx.

It sends ``httpx.Request`` objects through one httpx transport (``make_transport``: over
aiohttp, ``adapters.aiohttp_transport``; ``httpx.MockTransport`` in tests), made at startup and
closed at shutdown, with explicit timeouts and a connection limit sized for RunPod's
per-endpoint concurrency limits. It calls the transport itself rather than through
``httpx.AsyncClient``, whose request pipeline (URL and header merging, auth and redirect
flows, cookies, hooks) podgate does not use and which cost about 0.35 ms of CPU per request
(``bench/peers``). It sets the key once, and turns every failure — a non-2xx answer, a
connection or timeout error — into one ``RunPodError`` (status + RunPod's message, read once
here; never the key). Calls that ask the upstream to hold (``wait_ms``) get a read timeout
longer than the wait. ``open`` gives a 2xx answer's body as it arrives (decoded if the
upstream compressed it; for the passthrough's SSE), closed by the caller. ``on_answer``
(optional) hears of every call once — its operation and the answer's HTTP status, 0 when
none came — so the proxy can count RunPod's answers (``proxy.metrics``) without this
module knowing of metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import httpx
import msgspec

from adapters.aiohttp_transport import AiohttpTransport
from adapters.upstream import RunPodError, UpstreamBody, UpstreamRequest


def make_transport(*, max_connections: int = 400) -> httpx.AsyncBaseTransport:
    """The one transport for one upstream base URL: httpx over aiohttp (about a third of
    httpcore's CPU per request). aiohttp caps connections at ``max_connections`` and closes
    idle ones after 5 s."""
    return AiohttpTransport(max_connections=max_connections)


class _ErrorBody(msgspec.Struct):
    """RunPod's error bodies (and those of proxies in front of it): the message is in
    ``error`` (a string, or an object with a ``message``), ``message`` or ``detail``."""

    error: object = None
    message: object = None
    detail: object = None


_error_dec = msgspec.json.Decoder(_ErrorBody)

AnswerHook = Callable[[str, int], None]
"""``on_answer(operation, status)``: one call answered with ``status`` (0: no answer came —
unreachable, timed out, connection broken). ``operation`` is ``UpstreamRequest.operation``
(``run``, ``stream``, ``openai/v1/chat/completions`` …: never an id)."""


class HTTPUpstream:
    """The RunPod endpoints under one base URL (``…/v2``), over one httpx transport."""

    def __init__(self, transport: httpx.AsyncBaseTransport, base_url: str, api_key: str, *,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0, on_answer: AnswerHook | None = None):
        self._transport = transport
        self.on_answer = on_answer
        base = base_url.rstrip("/") + "/"
        self._url = lru_cache(maxsize=1024)(lambda path: httpx.URL(base + path))
        self._headers = {"content-type": "application/json", "user-agent": "podgate",
                         "authorization": f"Bearer {api_key}"}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._timeouts: dict[float, dict[str, dict[str, float]]] = {}

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def send(self, request: UpstreamRequest) -> bytes:
        with _mapped(request.operation, self.on_answer):
            resp = await self._transport.handle_async_request(self._request(request))
            try:
                await resp.aread()
            finally:
                await resp.aclose()
        if self.on_answer is not None:
            self.on_answer(request.operation, resp.status_code)
        if resp.status_code >= 400:
            raise _answer_error(resp, request.operation)
        return resp.content

    async def open(self, request: UpstreamRequest) -> UpstreamBody:
        with _mapped(request.operation, self.on_answer):
            resp = await self._transport.handle_async_request(self._request(request))
        if self.on_answer is not None:
            self.on_answer(request.operation, resp.status_code)
        if resp.status_code >= 400:
            try:
                with _mapped(request.operation):
                    await resp.aread()
            finally:
                await resp.aclose()
            raise _answer_error(resp, request.operation)
        return _StreamedBody(resp, request.operation)

    def _request(self, request: UpstreamRequest) -> httpx.Request:
        """The httpx request: the path (with ``?wait=``) under the base URL, the key, and the
        call's timeouts: the default read timeout, or one longer than the wait, or the
        request's own ``read_timeout``."""
        path, wait_ms = request.path, request.wait_ms
        read = request.read_timeout or self._read_timeout
        if wait_ms:
            path = f"{path}?wait={int(wait_ms)}"
            read += wait_ms / 1000.0
        timeout = self._timeouts.get(read)
        if timeout is None:
            timeout = self._timeouts[read] = {"timeout": {"connect": self._connect_timeout, "read": read,
                                                          "write": read, "pool": read}}
        return httpx.Request(request.method, self._url(path), headers=self._headers, content=request.content,
                             extensions=timeout)


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
def _mapped(operation: str, on_answer: AnswerHook | None = None) -> Iterator[None]:
    """httpx's failures as ``RunPodError`` (``_failure``); ``on_answer`` hears of them as
    status 0."""
    try:
        yield
    except httpx.HTTPError as exc:
        if on_answer is not None:
            on_answer(operation, 0)
        raise _failure(exc, operation) from None


def _failure(exc: httpx.HTTPError, operation: str) -> RunPodError:
    """Nothing sent (502, ``reached`` False), a timeout (504) or a broken connection (502)."""
    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):  # nothing was sent
        return RunPodError(502, f"upstream unreachable ({name})", operation=operation, answered=False, reached=False)
    if isinstance(exc, httpx.TimeoutException):
        return RunPodError(504, f"upstream timed out ({name})", operation=operation, answered=False)
    return RunPodError(502, f"upstream connection failed ({name})", operation=operation, answered=False)


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
