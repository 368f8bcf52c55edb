"""The RunPod queue client: one ``RunPodClient`` per upstream base URL.

It knows RunPod's endpoint operations (``/run``, ``/runsync``, ``/status``, ``/stream``,
``/cancel``, ``/health``), their bodies (typed msgspec Structs, decoded once per shape)
and their HTTP errors, and nothing about OpenAI. Every failure of an upstream call —
a non-2xx answer, a body that is not what RunPod sends, a connection or timeout error —
is raised as one exception type, ``RunPodError`` (status + message; never the key). What a
failure means for a retry is the error's own judgement, in one place: ``refused`` (RunPod
turned the call away without acting on it: safe to repeat even a ``/stream`` poll, whose
answers consume chunks) and ``transient`` (worth repeating an idempotent call: ``/status``,
``/cancel``). What a failure means for the client (its OpenAI error) is decided once, next
to this client, by ``adapters.errors.from_runpod``.

The client wraps one ``httpx.AsyncClient`` (created by the owner at startup, closed at
shutdown) with explicit timeouts and pool limits sized for RunPod's per-endpoint
concurrency limits. Calls that ask the upstream to hold (``?wait=``) get a read timeout
longer than the wait.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


class RunPodError(Exception):
    """An upstream call failed. ``status`` is the upstream HTTP status (``answered`` True),
    or — with ``answered`` False — 502 when the upstream could not be reached or answered
    garbage, 504 when it timed out. ``reached`` is False only when the request certainly
    never got to the upstream (no connection, or none free in the pool)."""

    def __init__(self, status: int, message: str, *, operation: str = "", retry_after: float | None = None,
                 answered: bool = True, reached: bool = True):
        super().__init__(f"RunPod {operation or 'call'} failed ({status}): {message}")
        self.status = status
        self.message = message
        self.operation = operation
        self.retry_after = retry_after
        self.answered = answered
        self.reached = reached or answered

    @property
    def refused(self) -> bool:
        """RunPod did not act on the call: it answered 429, 502 or 503, or the request never
        reached it. Repeating such a call is safe whatever the operation."""
        return not self.reached or (self.answered and self.status in (429, 502, 503))

    @property
    def transient(self) -> bool:
        """Worth repeating an idempotent call (``/status``, ``/cancel``): refused, or a
        timeout, a broken connection or a 408/5xx answer (4xx answers will not change)."""
        return self.refused or not self.answered or self.status == 408 or self.status >= 500


class JobStatus(msgspec.Struct, rename="camel"):
    """A status body (``/run``, ``/runsync``, ``/status``, ``/cancel``). ``output`` is UNSET
    when absent (a non-terminal ``/runsync`` answer), which differs from a ``null`` output."""

    id: str = ""
    status: str = ""
    output: Any = msgspec.UNSET
    error: Any = None
    delay_time: int | float | None = None
    execution_time: int | float | None = None
    worker_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class StreamItem(msgspec.Struct):
    output: Any = None


class StreamPoll(msgspec.Struct):
    """One ``/stream`` answer: the chunks not yet delivered, and the job's status."""

    status: str = ""
    stream: list[StreamItem] = msgspec.field(default_factory=list)
    error: Any = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Health(msgspec.Struct):
    jobs: dict[str, int] = msgspec.field(default_factory=dict)
    workers: dict[str, int] = msgspec.field(default_factory=dict)


class _ErrorBody(msgspec.Struct):
    """RunPod's error bodies (and those of proxies in front of it): the message is in
    ``error`` (a string, or an object with a ``message``), ``message`` or ``detail``."""

    error: Any = None
    message: Any = None
    detail: Any = None


_status_dec = msgspec.json.Decoder(JobStatus)
_stream_dec = msgspec.json.Decoder(StreamPoll)
_health_dec = msgspec.json.Decoder(Health)
_error_dec = msgspec.json.Decoder(_ErrorBody)
_T = TypeVar("_T")
_enc = msgspec.json.Encoder()


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


class RunPodClient:
    """RunPod's queue API for all endpoints under one base URL (``…/v2``)."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, *, read_timeout: float = 30.0):
        self._http = http
        http.headers["authorization"] = f"Bearer {api_key}"  # set once, not merged per call
        self._read_timeout = read_timeout
        self._wait_timeouts: dict[int, httpx.Timeout] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- operations -------------------------------------------------------------------
    async def run(self, endpoint: str, job_input: Any) -> JobStatus:
        body = {"input": job_input}
        return _decode(_status_dec, await self._call("POST", f"{endpoint}/run", "run", content=_enc.encode(body)), "run")

    async def runsync(self, endpoint: str, job_input: Any, *, wait_ms: int | None = None) -> JobStatus:
        body = _enc.encode({"input": job_input})
        resp = await self._call("POST", f"{endpoint}/runsync", "runsync", content=body, wait_ms=wait_ms)
        return _decode(_status_dec, resp, "runsync")

    async def status(self, endpoint: str, job_id: str) -> JobStatus:
        return _decode(_status_dec, await self._call("GET", f"{endpoint}/status/{job_id}", "status"), "status")

    async def stream(self, endpoint: str, job_id: str, *, wait_ms: int | None = None) -> StreamPoll:
        resp = await self._call("GET", f"{endpoint}/stream/{job_id}", "stream", wait_ms=wait_ms)
        return _decode(_stream_dec, resp, "stream")

    async def cancel(self, endpoint: str, job_id: str) -> JobStatus:
        return _decode(_status_dec, await self._call("POST", f"{endpoint}/cancel/{job_id}", "cancel"), "cancel")

    async def health(self, endpoint: str) -> Health:
        return _decode(_health_dec, await self._call("GET", f"{endpoint}/health", "health"), "health")

    # -- plumbing ---------------------------------------------------------------------
    async def _call(
        self, method: str, path: str, operation: str, *, content: bytes | None = None, wait_ms: int | None = None
    ) -> bytes:
        timeout: httpx.Timeout | None = None  # None: the client's default
        if wait_ms:
            path = f"{path}?wait={int(wait_ms)}"
            timeout = self._wait_timeouts.get(wait_ms)
            if timeout is None:
                timeout = self._wait_timeouts[wait_ms] = httpx.Timeout(
                    self._read_timeout + wait_ms / 1000.0, connect=self._http.timeout.connect)
        try:
            resp = await self._http.request(method, path, content=content,
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


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes, operation: str) -> _T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RunPodError(502, f"unexpected upstream body: {exc}", operation=operation, answered=False) from None


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
