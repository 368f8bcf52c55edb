"""Per-request context, response headers and the one log line per request.

``RequestContextMiddleware`` (pure ASGI, so it costs next to nothing on the hot path)
gives every HTTP request a ``RequestContext`` in ``scope["state"]``, and with client keys
configured (``proxy.keys``) answers a ``/v1/`` request without a valid one 401 before
anything else runs (but a CORS preflight, which never carries one), and a key over its
rpm/tpm 429 (``proxy.ratelimit``); routes fill in the
RunPod job id, the model, the tokens, the time of the first token and any extra headers as
they learn them. When the response starts, the middleware adds ``x-request-id`` (podgate's
id), ``x-runpod-job-id`` and the extra headers — on every response, errors included. When it
ends, the ``observers`` see the finished context (metrics, per-key token counts) and one log
line joins both ids and the client key's name (never a key): text, or with
``[server] log_format = "json"`` one JSON object whose fields are ``RequestContext.fields``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from litestar.config.cors import CORSConfig

from proxy.keys import UNAUTHORIZED_MISSING, UNAUTHORIZED_WRONG, ClientKeys, Refusal
from proxy.ratelimit import RateLimits, limited
from proxy.settings import KeySettings

log = logging.getLogger("podgate.access")

STATE_KEY = "podgate_ctx"


_ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
           "/v1/embeddings": "embeddings", "/v1/models": "models", "/healthz": "healthz", "/readyz": "readyz",
           "/metrics": "metrics", "/openapi.json": "openapi"}


def route_label(path: str) -> str:
    """The route a path belongs to, as a bounded label for logs and metrics (never the raw
    path: ``/v1/models/{id}`` is ``models``, anything unknown ``other``)."""
    label = _ROUTES.get(path)
    if label is None:
        label = "models" if path.startswith("/v1/models/") else "other"
    return label


class RequestContext:
    __slots__ = ("request_id", "job_id", "model", "endpoint", "headers", "started", "note", "key", "route",
                 "status", "stream", "first_token_at", "prompt_tokens", "completion_tokens", "tokens_estimated",
                 "cancelled", "max_tokens", "streamed", "error", "halt")

    def __init__(self, route: str = "other") -> None:
        self.request_id = "req_" + secrets.token_hex(12)
        self.key: KeySettings | None = None
        """The client key the request came with (None: podgate is open)."""
        self.route = route
        """``route_label`` of the request's path."""
        self.job_id: str | None = None
        self.model: str | None = None
        self.endpoint: str | None = None
        self.headers: dict[str, str] = {}
        self.started = time.monotonic()
        self.status = 0
        """The response's HTTP status (0: none was sent)."""
        self.stream = False
        self.first_token_at: float | None = None
        """``time.monotonic()`` when the first content reached the client (streams only)."""
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.tokens_estimated = False
        """The token counts are podgate's estimate (the worker reported none)."""
        self.cancelled = False
        """The job was cancelled because nobody waited for it any more (the client left, the
        request timed out, the server shut down)."""
        self.max_tokens: int | None = None
        """The request's output limit, when it set one (the console's GPU-time estimate)."""
        self.streamed = 0.0
        """Tokens sent so far (streams), estimated (``proxy.live``): read live by the console."""
        self.error: str | int | None = None
        """The code (else the type) of the OpenAI error the request ended with, in an HTTP
        answer or in the stream (None: none)."""
        self.note: str | None = None
        """A short outcome for the log line (e.g. ``client-disconnected``, ``cancelled``)."""
        self.halt: asyncio.Future[None] | None = None
        """A passed-through request's stop (``proxy.passthrough``), which has no job id to
        cancel: resolving it ends the request now and closes its upstream call (the console's
        Cancel button)."""

    def first_token(self) -> None:
        """Note that content reaches the client now, if none did before (the TTFT)."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def record_usage(self, prompt_tokens: int, completion_tokens: int, *, estimated: bool = False) -> None:
        self.prompt_tokens, self.completion_tokens, self.tokens_estimated = prompt_tokens, completion_tokens, estimated

    @property
    def duration_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def fields(self) -> dict[str, Any]:
        """The request as the JSON log line has it (no key, only the key's name)."""
        ttft = self.ttft_s
        return {"request_id": self.request_id, "job_id": self.job_id, "model": self.model, "route": self.route,
                "key_name": self.key.name if self.key else None, "status": self.status, "stream": self.stream,
                "duration_ms": round(self.duration_s * 1000, 1),
                "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens_estimated": self.tokens_estimated, "cancelled": self.cancelled, "note": self.note}

    def response_headers(self) -> dict[str, str]:
        h = {"x-request-id": self.request_id}
        if self.job_id:
            h["x-runpod-job-id"] = self.job_id
        h.update(self.headers)
        return h


def get_context(scope_or_request: Any) -> RequestContext:
    """The request's context (from a Litestar ``Request`` or an ASGI scope)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.setdefault("state", {})
    ctx = state.get(STATE_KEY)
    if ctx is None:
        ctx = state[STATE_KEY] = RequestContext(route_label(scope.get("path", "")))
    return ctx


Observer = Callable[[RequestContext], None]


class RequestContextMiddleware:
    def __init__(self, app: Any, keys: ClientKeys | None = None, observers: list[Observer] | None = None, *,
                 limits: RateLimits | None = None, cors: CORSConfig | None = None) -> None:
        self.app = app
        self.keys = keys if keys is not None else ClientKeys([])
        self.observers: list[Observer] = observers if observers is not None else []
        """Called with each finished request's context (after its response ended)."""
        self.limits = limits
        """Per-key rpm/tpm, checked once the key is known (only for a key that has one)."""
        self.cors = cors
        """The app's CORS (its own middleware never sees a refusal, answered out here)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                for k, v in ctx.response_headers().items():
                    kb = k.encode("latin-1")
                    if kb not in present:
                        headers.append((kb, v.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = self._refusal(scope, ctx)
            if refusal is None and self.limits is not None and limited(ctx.key):
                refusal = await self.limits.admit(ctx)
            if refusal is None:
                await self.app(scope, receive, send_with_headers)
            else:
                ctx.note = refusal.note
                await send_with_headers({"type": "http.response.start", "status": refusal.status,
                                         "headers": [(b"content-type", b"application/json"),
                                                     (b"content-length", str(len(refusal.body)).encode()),
                                                     *self._cors_headers(scope)]})
                await send({"type": "http.response.body", "body": refusal.body})
        finally:
            for observe in self.observers:
                try:
                    observe(ctx)
                except Exception:  # an observer's bug must not turn into the client's error
                    log.exception("request observer failed")
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %s %.1fms request_id=%s job_id=%s model=%s%s%s",
                         scope.get("method"), scope.get("path"), ctx.status or "-", ctx.duration_s * 1000,
                         ctx.request_id, ctx.job_id or "-", ctx.model or "-",
                         f" key={ctx.key.name}" if ctx.key else "", f" note={ctx.note}" if ctx.note else "",
                         extra=ctx.fields())

    def _cors_headers(self, scope: dict) -> list[tuple[bytes, bytes]]:
        """The CORS headers Litestar's middleware puts on a simple response, for a refusal: a
        browser client must be able to read that its key was refused (or limited)."""
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if self.cors is None or origin is None:
            return []
        headers = [(k.lower().encode(), v.encode()) for k, v in self.cors.simple_headers.items()]
        if not self.cors.is_allow_all_origins and self.cors.is_origin_allowed(origin.decode("latin-1")):
            headers += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return headers

    def _refusal(self, scope: dict, ctx: RequestContext) -> Refusal | None:
        """With client keys configured, the 401 for a ``/v1/`` request without a valid one;
        None when it may go on (``ctx.key`` set to its key)."""
        if self.keys.open or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return None  # a CORS preflight carries no key
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        ctx.key = self.keys.identify(header)
        if ctx.key is not None:
            return None
        return UNAUTHORIZED_WRONG if header else UNAUTHORIZED_MISSING
