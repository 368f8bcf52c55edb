"""Per-request context, response headers and the one log line per request.

``RequestContextMiddleware`` (pure ASGI, so it costs next to nothing on the hot path)
gives every HTTP request a ``RequestContext`` in ``scope["state"]``, and with client keys
configured (``proxy.keys``) answers a ``/v1/`` request without a valid one 401 before
anything else runs (but a CORS preflight, which never carries one); routes fill in the
RunPod job id, the model and any extra headers as they learn them. When the response
starts, the middleware adds ``x-request-id`` (podgate's id), ``x-runpod-job-id`` and the
extra headers — on every response, errors included. When it ends, one log line joins
both ids and the client key's name (never a key).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from proxy.keys import UNAUTHORIZED_MISSING, UNAUTHORIZED_WRONG, ClientKeys
from proxy.settings import KeySettings

log = logging.getLogger("podgate.access")

STATE_KEY = "podgate_ctx"


class RequestContext:
    __slots__ = ("request_id", "job_id", "model", "endpoint", "headers", "started", "note", "key")

    def __init__(self) -> None:
        self.request_id = "req_" + secrets.token_hex(12)
        self.key: KeySettings | None = None
        """The client key the request came with (None: podgate is open)."""
        self.job_id: str | None = None
        self.model: str | None = None
        self.endpoint: str | None = None
        self.headers: dict[str, str] = {}
        self.started = time.monotonic()
        self.note: str | None = None
        """A short outcome for the log line (e.g. ``client-disconnected``, ``cancelled``)."""

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
        ctx = state[STATE_KEY] = RequestContext()
    return ctx


class RequestContextMiddleware:
    def __init__(self, app: Any, keys: ClientKeys | None = None) -> None:
        self.app = app
        self.keys = keys if keys is not None else ClientKeys([])

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        status_holder = [0]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
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
            if refusal is None:
                await self.app(scope, receive, send_with_headers)
            else:
                await send_with_headers({"type": "http.response.start", "status": 401,
                                         "headers": [(b"content-type", b"application/json"),
                                                     (b"content-length", str(len(refusal)).encode())]})
                await send({"type": "http.response.body", "body": refusal})
        finally:
            log.info(
                "%s %s %s %.1fms request_id=%s job_id=%s model=%s%s%s",
                scope.get("method"), scope.get("path"), status_holder[0] or "-",
                (time.monotonic() - ctx.started) * 1000, ctx.request_id, ctx.job_id or "-",
                ctx.model or "-", f" key={ctx.key.name}" if ctx.key else "", f" note={ctx.note}" if ctx.note else "",
            )

    def _refusal(self, scope: dict, ctx: RequestContext) -> bytes | None:
        """With client keys configured, the 401 body for a ``/v1/`` request without a valid
        one; None when it may go on (``ctx.key`` set to its key)."""
        if self.keys.open or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return None  # a CORS preflight carries no key
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        ctx.key = self.keys.identify(header)
        if ctx.key is not None:
            return None
        ctx.note = "unauthorized"
        return UNAUTHORIZED_WRONG if header else UNAUTHORIZED_MISSING
