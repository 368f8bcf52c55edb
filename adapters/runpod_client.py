"""The RunPod queue client: ``RunPodQueueClient``, one per upstream base URL.

It knows RunPod's queue operations (``/run``, ``/runsync``, ``/status``, ``/stream``,
``/cancel``, ``/retry``, ``/health``) and their bodies (typed msgspec Structs, decoded once per shape),
and nothing about OpenAI or HTTP: each operation is one ``UpstreamRequest`` sent through the
upstream seam (``adapters.upstream.Upstream``; over httpx, ``adapters.http_upstream``). Every
failure — of the call, or a body that is not what RunPod sends — is one ``RunPodError``
(status + message; never the key), whose ``refused`` / ``transient`` say whether it is worth
repeating. What a failure means for the client (its OpenAI error) is decided once, next to
this client, by ``adapters.errors.from_runpod``.

One body that is not what RunPod sends is still read: a submit's answer cut short after the
job id (``{"id":"…","status":…`` and no more). The job exists, and sending the submit again
would run it twice, so the id is what counts: the answer is taken as ``IN_QUEUE`` and the
caller reads the job's real state as it does for any queued job.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

import msgspec

from adapters.upstream import RunPodError, Upstream, UpstreamRequest

log = logging.getLogger("podgate.runpod")

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})

#: a status body's leading job id, whole (its closing quote arrived); RunPod's ids are plain
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')


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


_status_dec = msgspec.json.Decoder(JobStatus)
_stream_dec = msgspec.json.Decoder(StreamPoll)
_health_dec = msgspec.json.Decoder(Health)
_T = TypeVar("_T")
_enc = msgspec.json.Encoder()


class RunPodQueueClient:
    """RunPod's queue API for all endpoints behind one ``Upstream`` (one base URL)."""

    def __init__(self, upstream: Upstream):
        self._upstream = upstream

    async def aclose(self) -> None:
        await self._upstream.aclose()

    async def run(self, endpoint: str, job_input: Any) -> JobStatus:
        body = _enc.encode({"input": job_input})
        return await self._submit(UpstreamRequest("POST", f"{endpoint}/run", "run", body))

    async def runsync(self, endpoint: str, job_input: Any, *, wait_ms: int | None = None) -> JobStatus:
        body = _enc.encode({"input": job_input})
        return await self._submit(UpstreamRequest("POST", f"{endpoint}/runsync", "runsync", body, wait_ms))

    async def status(self, endpoint: str, job_id: str, *, ttl_ms: int | None = None) -> JobStatus:
        """The job's status; ``ttl_ms`` also re-sets how long RunPod keeps it (``?ttl=``)."""
        query = "" if ttl_ms is None else f"?ttl={ttl_ms}"
        return await self._call(_status_dec, UpstreamRequest("GET", f"{endpoint}/status/{job_id}{query}", "status"))

    async def stream(self, endpoint: str, job_id: str, *, wait_ms: int | None = None,
                     order: float | None = None) -> StreamPoll:
        """One ``/stream`` poll; ``order``: its place in the endpoint's line of polls
        (``adapters.budgets``, the poll scheduler)."""
        return await self._call(_stream_dec, UpstreamRequest("GET", f"{endpoint}/stream/{job_id}", "stream",
                                                             wait_ms=wait_ms, order=order))

    async def cancel(self, endpoint: str, job_id: str) -> JobStatus:
        return await self._call(_status_dec, UpstreamRequest("POST", f"{endpoint}/cancel/{job_id}", "cancel"))

    async def retry(self, endpoint: str, job_id: str) -> JobStatus:
        """Run a FAILED or TIMED_OUT job again (same id and input; RunPod answers 400 for
        a job in any other state)."""
        return await self._call(_status_dec, UpstreamRequest("POST", f"{endpoint}/retry/{job_id}", "retry"))

    async def health(self, endpoint: str) -> Health:
        return await self._call(_health_dec, UpstreamRequest("GET", f"{endpoint}/health", "health"))

    async def _call(self, decoder: msgspec.json.Decoder[_T], request: UpstreamRequest) -> _T:
        return _decode(decoder, await self._upstream.send(request), request.operation)

    async def _submit(self, request: UpstreamRequest) -> JobStatus:
        """``/run`` or ``/runsync``: the job's status, or only its id when the answer was cut
        short after it (module docstring)."""
        body = await self._upstream.send(request)
        try:
            return _decode(_status_dec, body, request.operation)
        except RunPodError:
            found = _LEADING_ID.match(body)
            if found is None:
                raise
        job_id = found.group(1).decode()
        log.warning("RunPod's answer to %s was cut short (%d bytes); going on with job %s, read from it",
                    request.operation, len(body), job_id)
        return JobStatus(id=job_id, status="IN_QUEUE")


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes, operation: str) -> _T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RunPodError(502, f"unexpected upstream body: {exc}", operation=operation, answered=False) from None
