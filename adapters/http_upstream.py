"""``HTTPUpstream``: the upstream seam (``adapters.upstream.Upstream``) over httpx.

It wraps one ``httpx.AsyncClient`` (made by ``make_http_client`` at startup, closed at
shutdown) with explicit timeouts and pool limits sized for RunPod's per-endpoint concurrency
limits, sets the key once, and turns every failure — a non-2xx answer, a connection or
timeout error — into one ``RunPodError`` (status + RunPod's message, read once here; never
the key). Calls that ask the upstream to hold (``wait_ms``) get a read timeout longer than
the wait.
"""

from __future__ import annotations

import httpx
import msgspec

from adapters.upstream import RunPodError, UpstreamRequest


def make_http_client(
    base_url: str,
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    max_connections: int = 400,
    max_keepalive_connections: int = 100,
) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for one upstream base URL."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections),
        headers={"content-type": "application/json", "user-agent": "podgate"},
        trust_env=False,
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
        self._wait_timeouts: dict[int, httpx.Timeout] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, request: UpstreamRequest) -> bytes:
        path, operation, wait_ms = request.path, request.operation, request.wait_ms
        timeout: httpx.Timeout | None = None  # None: the client's default
        if wait_ms:
            path = f"{path}?wait={int(wait_ms)}"
            timeout = self._wait_timeouts.get(wait_ms)
            if timeout is None:
                timeout = self._wait_timeouts[wait_ms] = httpx.Timeout(
                    self._read_timeout + wait_ms / 1000.0, connect=self._http.timeout.connect)
        try:
            resp = await self._http.request(request.method, path, content=request.content,
                                            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing was sent
            raise RunPodError(502, f"upstream unreachable ({type(exc).__name__})", operation=operation,
                              answered=False, reached=False) from None
        except httpx.TimeoutException as exc:
            raise RunPodError(504, f"upstream timed out ({type(exc).__name__})", operation=operation,
                              answered=False) from None
        except httpx.HTTPError as exc:
            raise RunPodError(502, f"upstream connection failed ({type(exc).__name__})", operation=operation,
                              answered=False) from None
        if resp.status_code >= 400:
            raise RunPodError(
                resp.status_code, _error_message(resp), operation=operation, retry_after=_retry_after(resp)
            )
        return resp.content


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
