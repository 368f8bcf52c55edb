"""HTTP errors to clients, always in OpenAI's shape with a real status.

Litestar exception handlers: ``OpenAIError`` (adapters.errors, the one error type routes
raise), Litestar's own HTTP exceptions (unknown route 404, wrong method 405, oversize
body 413, …) and, as a last resort, any other exception (500, message hidden).
Also the SSE form of an error for use after the first byte.
"""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from adapters.errors import OpenAIError, UpstreamError, error_type_for_status, from_runpod_http
from adapters.sse import DONE, encode_data
from adapters.transport import RunPodError
from proxy.context import get_context

log = logging.getLogger("podgate.errors")

def from_runpod(exc: RunPodError) -> OpenAIError:
    """A failed upstream call as the client should see it (``adapters.errors`` maps
    RunPod's HTTP answers; here only the calls that got no answer)."""
    if not exc.answered:
        if exc.status == 504:
            return UpstreamError(f"RunPod /{exc.operation} timed out.", status=504, type="timeout", code="timeout")
        return UpstreamError(f"RunPod /{exc.operation} failed: {exc.message}", status=502, type="server_error",
                             code="upstream_unreachable")
    return from_runpod_http(exc.status, exc.message, exc.retry_after)


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(f"The model '{name}' does not exist.", status=404, type="invalid_request_error",
                       param="model", code="model_not_found")


def request_timeout() -> OpenAIError:
    """The request outlived ``timing.request_timeout_s`` (its job is being cancelled)."""
    return OpenAIError("The request timed out before the job finished; the job was cancelled.",
                       status=504, type="timeout", code="request_timeout")


def error_body(err: OpenAIError) -> bytes:
    return msgspec.json.encode(err.response())


def sse_error(err: OpenAIError) -> bytes:
    """An error after the first SSE byte: ``data: {"error": …}`` then ``data: [DONE]``."""
    return encode_data(error_body(err)) + DONE


def error_response(err: OpenAIError) -> Response:
    headers = {}
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    if isinstance(err, UpstreamError) and err.status not in (429, 503):
        # a retry would run the same job again and fail the same way (and cost GPU time)
        headers["x-should-retry"] = "false"
    return Response(content=error_body(err), status_code=err.status, media_type="application/json", headers=headers)


def _openai_error_handler(request: Request, exc: OpenAIError) -> Response:
    ctx = get_context(request)
    if ctx.note is None:
        ctx.note = f"error:{exc.status}"
    return error_response(exc)


def _runpod_error_handler(request: Request, exc: RunPodError) -> Response:
    return _openai_error_handler(request, from_runpod(exc))


def _http_exception_handler(request: Request, exc: HTTPException) -> Response:
    """Litestar's own HTTP errors. An unknown route is OpenAI's ``Invalid URL (METHOD
    /path)`` (404, ``code: null``); a wrong method is the same words with 405 and ``Allow``
    (Litestar's header, passed on as every header of the exception is)."""
    status = exc.status_code
    if status in (404, 405):
        message = f"Invalid URL ({request.method} {request.url.path})"
        allowed = [m for m in ((exc.headers or {}).get("allow") or "").split(", ") if m not in ("", "OPTIONS")]
        if status == 405 and allowed:
            message += f": the method must be {' or '.join(allowed)}"
        err = OpenAIError(message, status=status, type="invalid_request_error")
    else:
        err = OpenAIError(exc.detail or f"HTTP {status}", status=status, type=error_type_for_status(status))
    response = _openai_error_handler(request, err)
    for name, value in (exc.headers or {}).items():
        response.headers.setdefault(name.lower(), value)
    return response


def _internal_error_handler(request: Request, exc: Exception) -> Response:
    ctx = get_context(request)
    log.exception("internal error request_id=%s job_id=%s", ctx.request_id, ctx.job_id)
    err = OpenAIError(f"Internal server error (request id {ctx.request_id})", status=500, type="server_error")
    return _openai_error_handler(request, err)


EXCEPTION_HANDLERS = {
    OpenAIError: _openai_error_handler,
    RunPodError: _runpod_error_handler,
    HTTPException: _http_exception_handler,
    Exception: _internal_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "error_response", "sse_error", "from_runpod", "request_timeout", "model_not_found"]
