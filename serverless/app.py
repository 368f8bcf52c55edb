"""The endpoint server as a Litestar app, and how to build its store and run it in-process.

- :func:`create_app` builds the app for given settings and store; its lifespan starts and
  stops the service (sweeper, webhook client) and closes the store.
- The app's :class:`serverless.metrics.EndpointMetrics` (its own registry) counts through
  one middleware around the routes and through the service; ``GET /metrics`` serves it.
- :func:`make_store` picks the store: memory by default, Redis when ``settings.redis_url``.
- :func:`serve` runs the app under uvicorn until cancelled or signalled (SIGTERM/SIGINT);
  ``on_ready`` is called with the bound port (so port 0 works). When uvicorn starts shutting
  down it first calls ``EndpointService.begin_shutdown``, so held long-polls answer at once
  (uvicorn runs the lifespan shutdown only after every connection closed).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Callable

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from serverless.limits import RateLimited
from serverless.metrics import EndpointMetrics
from serverless.openai_gateway import OpenAIGateway
from serverless.routes import JSON, ROUTES
from serverless.service import ApiError, EndpointService
from serverless.settings import EndpointSettings
from serverless.store.base import JobStore, StoreUnavailable

log = logging.getLogger("podgate.serverless")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(content=msgspec.json.encode({"error": message}), status_code=status, media_type=JSON,
                    headers=headers)


def _api_error(_: Request, exc: ApiError) -> Response[bytes]:
    return _error(exc.status, exc.message, exc.headers)


def _rate_limited(_: Request, exc: RateLimited) -> Response[bytes]:
    return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})


def _store_unavailable(_: Request, exc: StoreUnavailable) -> Response[bytes]:
    # not logged: the store logs each outage once, not each request it fails
    return _error(503, "job store unavailable, retry shortly", {"Retry-After": "1"})


def _http_error(_: Request, exc: HTTPException) -> Response[bytes]:
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    status = exc.status_code
    message = exc.detail if status < 500 else "internal server error"
    if status == 400 and getattr(exc, "extra", None):
        message = f"{message}: {_describe(exc.extra)}"
    return _error(status, message, headers)


def _describe(extra: object) -> str:
    if isinstance(extra, list):
        return "; ".join(f"{e.get('key', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
                         for e in extra)
    return str(extra)


def _internal_error(request: Request, exc: Exception) -> Response[bytes]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal server error")


def make_store(settings: EndpointSettings) -> JobStore:
    """Memory store by default; ``serverless.store.redis.RedisStore`` when a Redis URL is set."""
    if settings.redis_url:
        from serverless.store.redis import RedisStore  # lazy: only with --redis-url

        return RedisStore(settings.redis_url, prefix=settings.redis_prefix)
    from serverless.store.memory import MemoryStore

    return MemoryStore()


def create_app(settings: EndpointSettings, store: JobStore | None = None) -> Litestar:
    """The Litestar app serving every endpoint in ``settings.endpoints``."""
    metrics = EndpointMetrics(settings.endpoints)
    service = EndpointService(settings, store if store is not None else make_store(settings), metrics)
    gateway = OpenAIGateway(service)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await gateway.close()  # the cancels of gateway requests that ended last
            await service.stop()

    app = Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        middleware=[metrics.middleware],
        exception_handlers={
            ApiError: _api_error,
            RateLimited: _rate_limited,
            StoreUnavailable: _store_unavailable,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        request_max_body_size=max(settings.max_run_body, settings.max_runsync_body, settings.max_worker_body) + 1,
        openapi_config=None,
        logging_config=None,  # the process's own (``--log-level``); Litestar's would reset it to INFO
        debug=False,
    )
    app.state.service = service
    app.state.openai_gateway = gateway
    return app


async def serve(settings: EndpointSettings, store: JobStore | None = None,
                on_ready: Callable[[int], None] | None = None) -> None:
    """Run the server under uvicorn on ``settings.host:settings.port`` until cancelled or
    signalled; raise ``supervisor.server.StartFailed`` if it cannot start."""
    from supervisor.server import AppServer

    app = create_app(settings, store)
    service: EndpointService = app.state.service
    # Held long-polls resume only once shutdown begins, by which time uvicorn has closed the
    # listeners and marked every connection to close after its response.
    server = AppServer(app, host=settings.host, port=settings.port, on_shutdown=service.begin_shutdown,
                       loop="none", http="httptools")
    port = await server.start()
    try:
        if on_ready is not None:
            on_ready(port)
        await server.wait()
    finally:
        await server.stop(10)
