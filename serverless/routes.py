"""HTTP routes of the endpoint server: the caller API and the worker API under
``/v2/{endpoint_id}/`` (reference/runpod-protocol.md §3.1). Thin: each handler checks the
key, the endpoint and the operation's limits, reads the raw body and calls
:class:`serverless.service.EndpointService`. Bodies are read as raw bytes and decoded with
msgspec (worker posts are JSON under a form content type); every response is JSON. The
worker's held polls (job-take, job-take-batch, job-stop) watch for the worker closing the
connection (:func:`_client_gone`), so that no job is handed to a worker that has gone; when
the store is out they answer 503 only after a pause (:func:`_paced`), as the SDK does not
back off.
``/openai/v1/*`` is RunPod's OpenAI gateway (``serverless.openai_gateway``): JSON, or SSE
for a streaming request. Each ``/v2`` route names its operation in its ``opt``
(:func:`serverless.metrics.operation`): the caller routes' limits are that operation's, and
the metrics middleware counts requests by it. ``GET /metrics`` is the Prometheus text, open
(no key), as ``/metrics`` of the proxy: it holds counts by configured endpoint id and
operation only, and a scraper should not need the key that spends the endpoint's jobs.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from pathlib import PurePosixPath
from typing import TypeVar

import msgspec
from litestar import Request, Response, get, post, route
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_200_OK

from serverless.metrics import MEDIA_TYPE, OPERATION, operation
from serverless.openai_gateway import SSE, OpenAIGateway
from serverless.service import ApiError, EndpointService
from serverless.store.base import StoreUnavailable

JSON = "application/json"
_EMPTY_OK = b"{}"
#: a held worker poll that the store failed answers 503 this late (its Retry-After)
OUTAGE_PACE = 1.0
_T = TypeVar("_T")


def _service(request: Request) -> EndpointService:
    return request.app.state.service


def _header(request: Request, name: bytes) -> bytes | None:
    """A raw request header (lower-case name), read straight from the ASGI scope (cheaper
    than building Litestar's Headers on this hot path)."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value
    return None


def _key_matches(header: bytes | None, key: str) -> bool:
    if not header:
        return False
    if header[:7].lower() == b"bearer ":
        header = header[7:].strip()
    return hmac.compare_digest(header, key.encode())


def _authorize(request: Request, key: str | None) -> None:
    if key is not None and not _key_matches(_header(request, b"authorization"), key):
        raise ApiError(401, "unauthorized")


async def _caller(request: Request, endpoint_id: str) -> tuple[EndpointService, AbstractContextManager[None]]:
    """Auth + endpoint check for a caller route, and admission by the limits of the route's
    operation; returns the concurrency slot to enter at once (leaving it frees the slot)."""
    svc = _service(request)
    _authorize(request, svc.settings.api_key)
    svc.check_endpoint(endpoint_id)
    return svc, await svc.limiter.acquire(endpoint_id, request.route_handler.opt[OPERATION], svc.clock())


def _worker(request: Request, endpoint_id: str) -> EndpointService:
    svc = _service(request)
    _authorize(request, svc.settings.worker_key())
    svc.check_endpoint(endpoint_id)
    return svc


async def _body(request: Request, limit: int) -> bytes:
    length = _header(request, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    return body


@asynccontextmanager
async def _client_gone(request: Request) -> AsyncIterator[asyncio.Future[None]]:
    """For a held long-poll: a future that is done once the client has closed the connection
    (the ASGI ``http.disconnect`` that uvicorn sends as soon as it sees the socket close),
    watched until the block ends."""
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the (empty) body of the GET
        gone.set_result(None)

    watcher = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        watcher.cancel()


async def _paced(poll: Awaitable[_T], gone: asyncio.Future[None]) -> _T:
    """A held worker poll's answer; when the store is out, its 503 comes after
    ``OUTAGE_PACE`` (or once the worker is gone). The runpod SDK polls again at once after an
    error, whatever Retry-After says: an immediate 503 would make each worker spin (and log an
    error) thousands of times a second for the whole outage; a poll is held anyway."""
    try:
        return await poll
    except StoreUnavailable:
        await asyncio.wait((gone,), timeout=OUTAGE_PACE)
        raise


def _json(content: bytes, status_code: int = HTTP_200_OK) -> Response[bytes]:
    return Response(content=content, media_type=JSON, status_code=status_code)


def _no_content() -> Response[bytes]:
    return Response(content=b"", status_code=204)


# --- caller API ----------------------------------------------------------------------------

@post("/v2/{endpoint_id:str}/run", status_code=200, opt=operation("run"))
async def run(request: Request, endpoint_id: FromPath[str]) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        body = await _body(request, svc.settings.max_run_body)
        job = await svc.submit(endpoint_id, body, sync=False)
        return _json(svc.short_json(job))


@post("/v2/{endpoint_id:str}/runsync", status_code=200, opt=operation("runsync"))
async def runsync(request: Request, endpoint_id: FromPath[str], wait: FromQuery[int | None] = None) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        body = await _body(request, svc.settings.max_runsync_body)
        return _json(await svc.runsync(endpoint_id, body, wait))


@route("/v2/{endpoint_id:str}/status/{job_id:str}", http_method=["GET", "POST"], status_code=200,
       opt=operation("status"))
async def status(request: Request, endpoint_id: FromPath[str], job_id: FromPath[str], ttl: FromQuery[int | None] = None) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.status(endpoint_id, job_id, ttl))


@route("/v2/{endpoint_id:str}/status-sync/{job_id:str}", http_method=["GET", "POST"], status_code=200,
       opt=operation("status-sync"))
async def status_sync(request: Request, endpoint_id: FromPath[str], job_id: FromPath[str], wait: FromQuery[int | None] = None) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.status_sync(endpoint_id, job_id, wait))


@route("/v2/{endpoint_id:str}/stream/{job_id:str}", http_method=["GET", "POST"], status_code=200,
       opt=operation("stream"))
async def stream(request: Request, endpoint_id: FromPath[str], job_id: FromPath[str], wait: FromQuery[int | None] = None) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.stream(endpoint_id, job_id, wait))


@post("/v2/{endpoint_id:str}/cancel/{job_id:str}", status_code=200, opt=operation("cancel"))
async def cancel(request: Request, endpoint_id: FromPath[str], job_id: FromPath[str]) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.cancel(endpoint_id, job_id))


@post("/v2/{endpoint_id:str}/retry/{job_id:str}", status_code=200, opt=operation("retry"))
async def retry(request: Request, endpoint_id: FromPath[str], job_id: FromPath[str]) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.retry(endpoint_id, job_id))


@post("/v2/{endpoint_id:str}/purge-queue", status_code=200, opt=operation("purge-queue"))
async def purge_queue(request: Request, endpoint_id: FromPath[str]) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.purge(endpoint_id))


@get("/v2/{endpoint_id:str}/health", opt=operation("health"))
async def health(request: Request, endpoint_id: FromPath[str]) -> Response[bytes]:
    svc, limit = await _caller(request, endpoint_id)
    with limit:
        return _json(await svc.health(endpoint_id))


@route("/v2/{endpoint_id:str}/openai/v1/{rest:path}", http_method=["GET", "POST"], status_code=200,
       opt=operation("openai"))
async def openai(request: Request, endpoint_id: FromPath[str], rest: FromPath[PurePosixPath]) -> Response:
    svc, limit = await _caller(request, endpoint_id)
    slot = ExitStack()
    slot.enter_context(limit)  # held until the answer ends: a stream's last byte, too
    try:
        body = await _body(request, svc.settings.max_runsync_body) if request.method == "POST" else None
        gateway: OpenAIGateway = request.app.state.openai_gateway
        call = await gateway.submit(endpoint_id, str(rest), body, release=slot.close)
    except BaseException:
        slot.close()
        raise
    if call.stream:  # the background task ends the call even if the body never started
        return Stream(call.events(), media_type=SSE, headers={**call.headers, "cache-control": "no-cache"},
                      background=BackgroundTask(call.end))
    async with _client_gone(request) as gone:
        return Response(content=await call.answer(gone), media_type=JSON, headers=call.headers)


# --- worker API ----------------------------------------------------------------------------

@get("/v2/{endpoint_id:str}/job-take/{worker_id:str}", opt=operation("job-take"))
async def job_take(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str]) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    async with _client_gone(request) as gone:
        taken = await _paced(svc.take(endpoint_id, worker_id, 1, gone), gone)
    return _json(taken[0].payload) if taken else _no_content()


@get("/v2/{endpoint_id:str}/job-take-batch/{worker_id:str}", opt=operation("job-take-batch"))
async def job_take_batch(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str], batch_size: FromQuery[int] = 1) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    async with _client_gone(request) as gone:
        taken = await _paced(svc.take(endpoint_id, worker_id, max(1, min(batch_size, 1000)), gone), gone)
    if not taken:
        return _no_content()
    return _json(b"[" + b",".join([job.payload for job in taken]) + b"]")


@get("/v2/{endpoint_id:str}/job-stop/{worker_id:str}", opt=operation("job-stop"))
async def job_stop(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str]) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    async with _client_gone(request) as gone:
        ids = await _paced(svc.stop_signals(endpoint_id, worker_id, gone), gone)
    if not ids:
        return _no_content()
    return _json(msgspec.json.encode({"jobsToStop": ids}))


@post("/v2/{endpoint_id:str}/job-done/{worker_id:str}/{job_id:str}", status_code=200, opt=operation("job-done"))
async def job_done(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str], job_id: FromPath[str]) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    body = await _body(request, svc.settings.max_worker_body)
    await svc.done(endpoint_id, worker_id, job_id, body)
    return _json(_EMPTY_OK)


@post("/v2/{endpoint_id:str}/job-stream/{worker_id:str}/{job_id:str}", status_code=200, opt=operation("job-stream"))
async def job_stream(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str], job_id: FromPath[str]) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    body = await _body(request, svc.settings.max_worker_body)
    await svc.stream_chunk(endpoint_id, worker_id, job_id, body)
    return _json(_EMPTY_OK)


@get("/v2/{endpoint_id:str}/ping/{worker_id:str}", opt=operation("ping"))
async def ping(request: Request, endpoint_id: FromPath[str], worker_id: FromPath[str]) -> Response[bytes]:
    svc = _worker(request, endpoint_id)
    query = request.query_params
    await svc.ping(endpoint_id, worker_id, query.get("job_id"), query.get("status"))
    return _json(_EMPTY_OK)


@get("/metrics")
async def metrics(request: Request) -> Response[bytes]:
    svc = _service(request)
    return Response(content=await svc.metrics.render(svc.endpoint_health), media_type=MEDIA_TYPE)


ROUTES = [run, runsync, status, status_sync, stream, cancel, retry, purge_queue, health, openai,
          job_take, job_take_batch, job_stop, job_done, job_stream, ping, metrics]
