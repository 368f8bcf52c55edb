"""RunPod's OpenAI-compatible gateway on the self-hosted endpoint:
``GET|POST /v2/{endpoint_id}/openai/v1/{rest}`` (reference/worker-formats.md §1.4, §2.3).

A request becomes an ordinary job (``/status/{id}`` shows it, it counts in ``/health``) with
input ``{"openai_route": "/v1/<rest>", "openai_input": <body>}``, or no ``openai_input`` for
a GET. It goes through the service's submit path (body checks, queue cap, a ``sync-`` id with
``/runsync``'s short retention, the default execution timeout). A POST body that is not a
JSON object is a 400 in the endpoint's error shape (``{"error": "..."}``). The route holds
its own limit operation, ``openai`` (RunPod's 2,000 per 10 s and 400 concurrent), for the
whole answer, a stream's last byte included.

Non-streaming (``openai_input.stream`` is not ``true``): the request is held until the job
ends (at most ``openai_hold_max_ms``), then:

- COMPLETED → 200, ``application/json``, the job's output as the body, a one-element list
  unwrapped (a worker that yields once has ``[obj]`` as its aggregated output; RunPod's
  unwrapping rule is UNVERIFIED). An ``{"object": "error", ...}`` output is passed as it is
  with 200, as RunPod does (worker-vllm issue #57); a JSON-string output stays a JSON string;
  no output at all is ``null``.
- FAILED → 500 with the job's error (RunPod: worker-vllm issue #104; its exact body is
  UNVERIFIED, this one is the endpoint's ``{"error": "<job error>"}``).
- TIMED_OUT (the job ran past its execution timeout) → 504.
- CANCELLED (someone sent ``/cancel``) and a job that vanished (purged, expired) → 410: the
  answer is gone for good, and 410, unlike 409 and 5xx, is not retried by the OpenAI SDKs
  (a retry would run the cancelled work again). podgate's choice; RunPod's is unknown.
- still running after ``openai_hold_max_ms`` → 504, and the job is cancelled.

Streaming (``stream: true``): ``text/event-stream`` is answered at once, then every stream
item of the job is written the moment the worker posts it (the store's waits, as ``/stream``
holds; no polling): a **string** item verbatim (worker-vllm yields whole SSE events, Era B,
or arbitrary slices of vLLM's SSE body, Era C), any **other** item as ``data: <json>\\n\\n``,
and a **list** item as a sequence of items, so that a list of chunk dicts
(``RAW_OPENAI_OUTPUT=0``) becomes one event per chunk. That last rule is an UNVERIFIED
choice: what RunPod writes for non-string yields is not documented. A job that completed
without streaming anything (a plain handler) is written from its output by the same rules.
A job that ends FAILED, TIMED_OUT or CANCELLED, vanishes, or is still running after
``openai_hold_max_ms`` or when the server shuts down ends the stream with one event
``data: {"error": {"message", "type", "param", "code"}}`` (code as the non-streaming status
above; preceded by a blank line when the last slice stopped inside an event) and no
``[DONE]``.

Disconnects: when the HTTP client goes away before the job ended (Litestar cancels a
streaming body; a held non-streaming answer watches for ``http.disconnect``), or the answer
ends for any other reason before the job did, the job is cancelled at once, from a task that
outlives the request (:meth:`OpenAIGateway.cancel_soon`). What the job and the worker see
then is a ``/cancel``: the job is CANCELLED, its worker's ``job-stop`` long-poll answers with
the job's id, and a ``runpod`` SDK ≥ 1.10 worker cancels the handler's task (an async
handler gets ``CancelledError``); whatever the worker posts for that job afterwards
(``job-stream``, ``job-done``) is refused with 404.

Store outages: the submit and every read of the job ride out an outage as ``/runsync``
does (``serverless.outage``). One that outlasts ``store_outage_wait`` is a 503 with
``Retry-After`` before the answer started (the app's handler), and after a stream started an
error event with code 503 (type ``store_unavailable``), like any other ending. Either way
the job is cancelled (its cancel rides out the outage too; a cancel that cannot reach the
store is dropped without a log line: the store logs each outage once).

Every answer carries ``x-runpod-job-id``, the job's id. That header is podgate's addition:
RunPod's gateway returns no job id at all (nothing is added to the body).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from serverless import payloads
from serverless.jobs import CANCELLED, COMPLETED, FAILED, TIMED_OUT, Job
from serverless.service import ApiError, EndpointService
from serverless.store.base import StoreUnavailable

log = logging.getLogger("podgate.serverless")

SSE = "text/event-stream"
JOB_ID_HEADER = "x-runpod-job-id"

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class _Body(msgspec.Struct):
    """What the gateway reads of a request body (the rest goes to the worker untouched)."""

    stream: Any = None


_body_decoder = msgspec.json.Decoder(_Body)

#: how a job that did not complete is answered: its status → (HTTP status, error type, message)
_ENDINGS: dict[str, tuple[int, str, str]] = {
    FAILED: (500, "job_failed", "the job failed"),
    TIMED_OUT: (504, "job_timed_out", "the job ran longer than its execution timeout"),
    CANCELLED: (410, "job_cancelled", "the job was cancelled"),
}
_GONE = (410, "job_gone", "the job is gone (purged or expired)")
_STORE_OUT = (503, "store_unavailable", "the job store is unavailable; retry shortly")


def _cut(hold_ms: int) -> tuple[int, str, str]:
    return 504, "gateway_timeout", f"no answer within {hold_ms / 1000:g} s; the job was cancelled"


class OpenAIGateway:
    """The ``/openai/v1`` gateway of every endpoint the service serves. ``close()`` waits for
    the cancels still in flight (the app's lifespan calls it before stopping the service)."""

    def __init__(self, service: EndpointService) -> None:
        self.service = service
        self._cancels: set[asyncio.Task[None]] = set()

    async def submit(self, endpoint: str, rest: str, body: bytes | None,
                     release: Callable[[], None]) -> GatewayCall:
        """Queue the job for ``/v1/<rest>`` with ``body`` (``None`` for a GET); ``release`` is
        called once when the answer ends (the route's limit slot)."""
        route = _encode("/v1/" + rest.lstrip("/"))
        stream = False
        if body is None:
            job_input = b'{"openai_route":' + route + b"}"
        else:
            try:
                stream = _body_decoder.decode(body).stream is True
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ApiError(400, f"the request body must be a JSON object: {exc}") from None
            except RecursionError:
                raise ApiError(400, f"invalid request body: {payloads.too_deep()}") from None
            job_input = b'{"openai_route":' + route + b',"openai_input":' + body + b"}"
        job = await self.service.submit(endpoint, b'{"input":' + job_input + b"}", sync=True)
        return GatewayCall(self, endpoint, job.id, stream, release)

    def cancel_soon(self, endpoint: str, job_id: str) -> None:
        """Cancel the job from a task of its own: safe to call from a request that is being
        cancelled (the task outlives it)."""
        task = asyncio.get_running_loop().create_task(self._cancel(endpoint, job_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel(self, endpoint: str, job_id: str) -> None:
        try:
            await self.service.cancel(endpoint, job_id)  # a no-op for a job that ended meanwhile
        except (ApiError, StoreUnavailable):  # gone already; or the store is out (it logs that once)
            pass
        except Exception:
            log.exception("cancel of job %s after its gateway request ended failed", job_id)

    async def close(self) -> None:
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)


class GatewayCall:
    """One gateway request's job, from its submit to the end of its answer: :meth:`answer`
    (non-streaming) or :meth:`events` (streaming), then :meth:`end` (idempotent; both call
    it, and the route also calls it after a stream, in case the body never started)."""

    __slots__ = ("gateway", "endpoint", "job_id", "stream", "_release", "_deadline", "_finished", "_ended")

    def __init__(self, gateway: OpenAIGateway, endpoint: str, job_id: str, stream: bool,
                 release: Callable[[], None]) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.job_id = job_id
        self.stream = stream
        self._release = release
        svc = gateway.service
        self._deadline = svc.clock() + svc.settings.openai_hold_max_ms / 1000.0
        self._finished = False  # the job was seen ended (or gone): nothing to cancel
        self._ended = False

    @property
    def headers(self) -> dict[str, str]:
        return {JOB_ID_HEADER: self.job_id}

    def _remaining(self) -> float:
        return max(0.0, self._deadline - self.gateway.service.clock())

    def _ending(self, job: Job | None) -> tuple[int, str, str] | None:
        """How the answer ends for the job as last seen: ``None`` when it completed; marks
        the job finished when it ended or vanished."""
        if job is None:
            self._finished = True
            return _GONE
        if not job.terminal:
            return _cut(self.gateway.service.settings.openai_hold_max_ms)
        self._finished = True
        if job.status == COMPLETED:
            return None
        status, kind, message = _ENDINGS[job.status]
        if job.status == FAILED and job.error:
            message = job.error
        return status, kind, message

    async def answer(self, gone: asyncio.Future[None]) -> bytes:
        """Hold until the job ends (``gone``: the client left); its output as the body, or
        :class:`ApiError` with the status of the module docstring."""
        try:
            job = await self.gateway.service.wait_terminal(self.endpoint, self.job_id, self._remaining(), gone)
            ending = self._ending(job)
            if ending is not None:
                raise ApiError(ending[0], ending[2], self.headers)
            assert job is not None
            return _unwrap(job.output)
        finally:
            self.end()

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE body: the job's stream items as they arrive, then an error event unless it
        completed."""
        svc = self.gateway.service
        tail = b""  # the end of what was written: a worker's slice may stop inside an event
        try:
            while True:
                job: Job | None
                try:
                    job, chunks = await svc.next_chunks(self.endpoint, self.job_id, self._remaining())
                except ApiError:  # deleted (purged, expired)
                    job, chunks = None, []
                except StoreUnavailable:  # an outage longer than the service rides out
                    yield _last_event(tail, _STORE_OUT)
                    return
                if chunks:
                    data = b"".join([_sse_items(_decode(raw)) for raw in chunks])
                    if data:
                        tail = data[-2:]
                        yield data
                if job is not None and not job.terminal and not svc.shutting_down and self._remaining() > 0:
                    continue
                ending = self._ending(job)
                if ending is None:
                    assert job is not None
                    if not tail and job.output is not None:  # nothing streamed (a plain handler): its output
                        yield _sse_items(_decode(job.output))
                else:  # on an event of its own, even after a slice that ended mid-event
                    yield _last_event(tail, ending)
                return
        finally:
            self.end()

    def end(self) -> None:
        """The answer is over: release the limit slot and cancel the job unless it was seen
        to end. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._release()
        if not self._finished:
            self.gateway.cancel_soon(self.endpoint, self.job_id)


def _unwrap(output: bytes | None) -> bytes:
    """The response body for a job's output: a one-element list unwrapped."""
    if output is None:
        return b"null"
    if output.lstrip()[:1] == b"[":
        items = _raw_list.decode(output)
        if len(items) == 1:
            return bytes(items[0])
    return output


def _sse_items(value: Any) -> bytes:
    """The SSE bytes of one stream item; a list is a sequence of items."""
    if isinstance(value, list):
        return b"".join([_sse_item(v) for v in value])
    return _sse_item(value)


def _sse_item(value: Any) -> bytes:
    """A string verbatim (it holds SSE text already), anything else as one ``data:`` event."""
    if isinstance(value, str):
        return value.encode()
    return b"data: " + _encode(value) + b"\n\n"


def _last_event(tail: bytes, ending: tuple[int, str, str]) -> bytes:
    """The error event that ends a stream, on an event of its own even after a worker's
    slice that stopped mid-event (``tail``: the last bytes written)."""
    return (b"\n\n" if tail and tail != b"\n\n" else b"") + _error_event(*ending)


def _error_event(code: int, kind: str, message: str) -> bytes:
    return b"data: " + _encode({"error": {"message": message, "type": kind, "param": None, "code": code}}) + b"\n\n"
