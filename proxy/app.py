"""The proxy's Litestar app: ``create_app(settings) -> Litestar``.

The app owns, from startup to shutdown, the ``Gateway``: the settings, one RunPod client
per upstream base URL (``Upstreams``) and the cancel queue. Routes reach it through
``request.app.state.gateway``. ``readiness`` (optional; sync or async, returns bool)
backs ``GET /readyz`` — the embedded default passes a check that its worker is up.
``app.state.openapi`` holds the OpenAPI document's bytes (``proxy.openapi``), built here once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig

from proxy.cancel import CancelQueue
from proxy.context import RequestContextMiddleware
from proxy.errors import EXCEPTION_HANDLERS
from proxy.keys import ClientKeys
from proxy.openapi import document_bytes
from proxy.routes import MAX_BODY, ROUTES
from proxy.settings import ProxySettings
from proxy.upstreams import Upstreams

Readiness = Callable[[], "bool | Awaitable[bool]"]


class Gateway:
    """What the app holds while it runs."""

    def __init__(self, settings: ProxySettings, readiness: Readiness | None = None):
        self.settings = settings
        self.readiness = readiness
        self.created = int(time.time())
        self.upstreams: Upstreams | None = None
        t = settings.timing
        self.cancels = CancelQueue(concurrency=t.cancel_concurrency, retries=t.cancel_retries)

    async def start(self) -> None:
        self.upstreams = Upstreams(self.settings)
        self.cancels.start()

    async def stop(self) -> None:
        await self.cancels.close()
        if self.upstreams is not None:
            await self.upstreams.aclose()


def create_app(settings: ProxySettings, *, readiness: Readiness | None = None, debug: bool = False) -> Litestar:
    gateway = Gateway(settings, readiness)
    app = Litestar(
        route_handlers=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        on_startup=[gateway.start],
        on_shutdown=[gateway.stop],
        debug=debug,
        openapi_config=None,
        logging_config=None,  # the process's own (``podgate serve --log-level``); Litestar's would reset it to INFO
        cors_config=_cors(settings),
        request_max_body_size=MAX_BODY,
    )
    app.state.gateway = gateway
    keys = ClientKeys(settings.keys)
    app.state.openapi = document_bytes(secured=not keys.open)
    return RequestContextMiddlewareApp(app, keys)  # type: ignore[return-value]


def _cors(settings: ProxySettings) -> CORSConfig | None:
    """Litestar's CORS for ``[server] cors_origins`` (none: off). The headers a browser
    client may read include podgate's own (request and job ids, ignored parameters)."""
    origins = settings.server.cors_origins
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                      expose_headers=["x-request-id", "x-runpod-job-id", "x-podgate-ignored-params",
                                      "x-podgate-usage-estimated", "retry-after", "x-should-retry"])


class RequestContextMiddlewareApp(RequestContextMiddleware):
    """The Litestar app wrapped in the context middleware (outermost, so that every
    response — Litestar's own errors included — gets the id headers and a log line).
    Attribute access falls through to the Litestar app (``.state``, ``.debug`` …)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
