"""The proxy's Litestar app: ``create_app(settings) -> Litestar``.

The app owns, from startup to shutdown, the ``Gateway``: the settings, one RunPod client
per upstream base URL (``Upstreams``), the cancel queue, the ``/health`` poller, the
metrics (``proxy.metrics``, fed by hooks wired here), the per-key limits and the drain
(``proxy.drain``: graceful shutdown; whoever runs the app calls ``gateway.drain.begin`` when
shutdown begins), the live requests (``proxy.live``) and the console's feed (``proxy.console``,
fed by the same hooks as the metrics). Routes reach it through ``request.app.state.gateway``. ``readiness``
(optional; sync or async, returns bool) backs ``GET /readyz`` — the embedded default passes a
check that its worker is up; while the app drains it is never ready. ``app.state.openapi``
holds the OpenAPI document's bytes (``proxy.openapi``), built here once.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware

from proxy.cancel import CancelQueue
from proxy.console.feed import ConsoleFeed
from proxy.console.routes import ROUTES as CONSOLE_ROUTES
from proxy.console.routes import Access
from proxy.context import RequestContextMiddleware
from proxy.drain import Drain
from proxy.errors import EXCEPTION_HANDLERS
from proxy.health import HealthPoller
from proxy.keys import ClientKeys
from proxy.live import LiveRequests, LiveTracker
from proxy.metrics import Metrics, metrics_route
from proxy.openapi import document_bytes
from proxy.ratelimit import RateLimits
from proxy.routes import MAX_BODY, ROUTES
from proxy.settings import ProxySettings
from proxy.upstreams import Upstreams

Readiness = Callable[[], "bool | Awaitable[bool]"]


CANCEL_FLUSH_S = 5.0
"""At shutdown, how long the cancel queue may take to send the cancels still queued (the
jobs of the requests the drain ended); a cancel that cannot be sent by then is given up."""


class Gateway:
    """What the app holds while it runs."""

    def __init__(self, settings: ProxySettings, readiness: Readiness | None = None):
        self.settings = settings
        self._check = readiness
        self.created = int(time.time())
        self.upstreams: Upstreams | None = None
        t = settings.timing
        self.cancels = CancelQueue(concurrency=t.cancel_concurrency, retries=t.cancel_retries)
        self.limits = RateLimits(settings.keys, settings.redis)
        self.health = HealthPoller(settings.metrics.health_interval_s)
        self.metrics = Metrics(settings, self.health, self.cancels)
        self.cancels.on_done = self.metrics.cancel_done
        self.drain = Drain(settings.server.drain_s)
        self.live = LiveRequests()
        self.console = ConsoleFeed(self)
        self.cancels.on_lag = self.console.cancel_lag

    async def readiness(self) -> bool:
        """``/readyz``: never while draining; else the app's check (none: ready once started)."""
        if self.drain.draining:
            return False
        if self._check is None:
            return True
        ready = self._check()
        if inspect.isawaitable(ready):
            ready = await ready
        return bool(ready)

    async def start(self) -> None:
        self.upstreams = Upstreams(self.settings, on_answer=self.metrics.runpod_answer,
                                   on_budget_wait=self.metrics.budget_wait, observer=self.metrics)
        self.cancels.key_mask = self.upstreams.key_mask
        self.cancels.start()
        self.health.start({b.endpoint: b.client for b in self.upstreams}, self.upstreams.key_mask)
        self.console.start()

    async def stop(self) -> None:
        """Lifespan shutdown (after every connection closed): send the cancels still queued
        (bounded by ``CANCEL_FLUSH_S``), then close the poller, the limits' Redis and the
        upstream clients."""
        self.drain.expire()  # nothing may wait for a job any more (it would never be cancelled)
        await self.health.stop()
        await self.console.stop()
        await self.cancels.close(CANCEL_FLUSH_S)
        await self.limits.aclose()
        if self.upstreams is not None:
            await self.upstreams.aclose()


def create_app(settings: ProxySettings, *, readiness: Readiness | None = None, debug: bool = False) -> Litestar:
    gateway = Gateway(settings, readiness)
    app = Litestar(
        route_handlers=[*ROUTES, metrics_route, *CONSOLE_ROUTES],
        middleware=[DefineMiddleware(LiveTracker, live=gateway.live, active_streams=gateway.metrics.active_streams)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        on_startup=[gateway.start],
        on_shutdown=[gateway.stop],
        debug=debug,
        openapi_config=None,
        logging_config=None,  # the process's own (``podgate serve --log-level``); Litestar's would reset it to INFO
        cors_config=(cors := _cors(settings)),
        request_max_body_size=MAX_BODY,
    )
    app.state.gateway = gateway
    app.state.console_access = Access(settings)
    keys = ClientKeys(settings.keys)
    app.state.openapi = document_bytes(secured=not keys.open)
    return RequestContextMiddlewareApp(app, keys,  # type: ignore[return-value]
                                       observers=[gateway.limits.observe, gateway.metrics.observe,
                                                gateway.console.observe],
                                       limits=gateway.limits, cors=cors)


def _cors(settings: ProxySettings) -> CORSConfig | None:
    """Litestar's CORS for ``[server] cors_origins`` (none: off). The headers a browser
    client may read include podgate's own (request and job ids, ignored parameters)."""
    origins = settings.server.cors_origins
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                      expose_headers=["x-request-id", "x-runpod-job-id", "x-podgate-ignored-params",
                                      "x-podgate-usage-estimated", "retry-after", "x-should-retry",
                                      *(f"x-ratelimit-{h}-{kind}" for h in ("limit", "remaining", "reset")
                                        for kind in ("requests", "tokens"))])


class RequestContextMiddlewareApp(RequestContextMiddleware):
    """The Litestar app wrapped in the context middleware (outermost, so that every
    response — Litestar's own errors included — gets the id headers and a log line).
    Attribute access falls through to the Litestar app (``.state``, ``.debug`` …)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
