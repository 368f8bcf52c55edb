"""The console's routes: the page, its live feed, and the cancel button.

- ``GET /console``: the page (``static/index.html``); ``GET /console/static/{name}`` its
  script and style sheet, read from the package once. The page holds no data and no secret:
  everything it shows comes through the feed.
- ``GET /console/events``: one SSE stream per open page (``ConsoleFeed.subscribe``: a
  snapshot a second). The page reads it with ``fetch()``, which can send the admin key as a
  Bearer header (``EventSource`` cannot send headers).
- ``POST /console/cancel/{request_id}``: cancel a live request's RunPod job through the app's
  cancel queue (``/cancel``, like a client that left); the request then ends CANCELLED.

Access (``Access``): with client keys configured (``[[keys]]``) every console route needs the
admin key (``[console] admin_sha256``; none configured: nobody gets in), answered 401 in
OpenAI's shape without it — the page too, whose 401 body is the page itself, so that a
browser shows its login form (the key goes to ``sessionStorage`` and from there into the
feed's and the button's Authorization header). With no keys (the open local mode) the
console is open to loopback clients only and answers 403 to others, unless they bring the
admin key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from importlib.resources import files

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Stream

from adapters.openai_protocol import ErrorDetail, ErrorResponse
from proxy.console.feed import ConsoleFeed
from proxy.context import get_context
from proxy.keys import UNAUTHORIZED_MISSING, UNAUTHORIZED_WRONG, ClientKeys, Refusal
from proxy.settings import ProxySettings

_JSON = "application/json"
_STATIC_TYPES = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
_STATIC = files("proxy.console") / "static"
_PAGE = (_STATIC / "index.html").read_bytes()
_ASSETS = {name: (_STATIC / name).read_bytes() for name in _STATIC_TYPES}
_NO_STORE = {"cache-control": "no-store"}
_PAGE_HEADERS = {**_NO_STORE, "x-frame-options": "DENY",  # no cancel button clicked through another site's frame
                 "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}
"""The page runs its own script and style only, talks to its own origin only, and is never framed."""


def _error(status: int, message: str, type_: str, code: str | None = None) -> Response:
    body = msgspec.json.encode(ErrorResponse(ErrorDetail(message, type_, None, code)))
    return Response(content=body, status_code=status, media_type=_JSON)


_FORBIDDEN = _error(403, "The console is open to loopback clients only while podgate has no client keys; "
                    "set [console] admin_sha256 to open it from elsewhere with that key.", "permission_error",
                    "console_loopback_only")


class Access:
    """Who may use the console (module docstring)."""

    def __init__(self, settings: ProxySettings):
        self.keyed = not ClientKeys(settings.keys).open
        admin = settings.console.admin_sha256
        self.admin = bytes.fromhex(admin) if admin else None

    def is_admin(self, authorization: str | None) -> bool:
        if self.admin is None or not authorization or authorization[:7].lower() != "bearer ":
            return False
        return hmac.compare_digest(hashlib.sha256(authorization[7:].strip().encode()).digest(), self.admin)

    def refusal(self, request: Request) -> Response | None:
        """None when the request may use the console; else its 401 or 403."""
        authorization = request.headers.get("authorization")
        if self.is_admin(authorization):
            return None
        if self.keyed:
            refusal: Refusal = UNAUTHORIZED_WRONG if authorization else UNAUTHORIZED_MISSING
            return Response(content=refusal.body, status_code=401, media_type=_JSON)
        client = request.scope.get("client")
        if client and _loopback(client[0]):
            return None
        return _FORBIDDEN


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gate(request: Request) -> Response | None:
    access: Access = request.app.state.console_access
    refused = access.refusal(request)
    if refused is not None:
        get_context(request).note = "console-refused"
    return refused


@get("/console", include_in_schema=False)
async def console_page(request: Request) -> Response:
    refused = _gate(request)
    status = 200 if refused is None else refused.status_code
    return Response(content=_PAGE, status_code=status, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


@get("/console/static/{name:str}", include_in_schema=False)
async def console_static(request: Request) -> Response:
    """The page's script and style: code only, no data (open like the page's login form)."""
    name = str(request.path_params["name"])
    body = _ASSETS.get(name)
    if body is None:
        return _error(404, f"Invalid URL (GET /console/static/{name})", "invalid_request_error")
    return Response(content=body, media_type=_STATIC_TYPES[name], headers=_NO_STORE)


@get("/console/events", include_in_schema=False)
async def console_events(request: Request) -> Response:
    refused = _gate(request)
    if refused is not None:
        return refused
    feed: ConsoleFeed = request.app.state.gateway.console
    return Stream(feed.subscribe(), media_type="text/event-stream",
                  headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


@post("/console/cancel/{request_id:str}", include_in_schema=False, status_code=202)
async def console_cancel(request: Request) -> Response:
    request_id = str(request.path_params["request_id"])
    refused = _gate(request)
    if refused is not None:
        return refused
    gateway = request.app.state.gateway
    ctx = gateway.live.get(request_id)
    if ctx is None:
        return _error(404, f"No live request {request_id}.", "invalid_request_error", "request_not_found")
    binding = gateway.upstreams.binding(ctx.headers.get("x-podgate-served-by") or ctx.model or "")
    if ctx.job_id is not None and binding is not None and binding.endpoint == ctx.endpoint:
        ctx.note, ctx.cancelled = "console-cancel", True
        gateway.cancels.submit(binding.client, binding.endpoint, ctx.job_id)
        cancel = "queued"
    elif ctx.halt is not None:  # passed through: no job id; closing its upstream request cancels the job
        if not ctx.halt.done():
            ctx.note, ctx.cancelled = "console-cancel", True
            ctx.halt.set_result(None)
        cancel = "upstream request closed"
    else:
        return _error(409, "This request has no RunPod job to cancel yet (it is not submitted).",
                      "invalid_request_error", "no_job")
    body = msgspec.json.encode({"request_id": request_id, "job_id": ctx.job_id, "cancel": cancel})
    return Response(content=body, status_code=202, media_type=_JSON)


ROUTES = [console_page, console_static, console_events, console_cancel]

__all__ = ["ROUTES", "Access"]
