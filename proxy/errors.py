"""HTTP errors to clients, always in OpenAI's shape with a real status.

Litestar exception handlers: ``OpenAIError`` (adapters.errors, the one error type routes
raise), Litestar's own HTTP exceptions (unknown route 404, wrong method 405, oversize
body 413, …) and, as a last resort, any other exception (500, message hidden).
Also the SSE form of an error for use after the first byte. Both forms are encoded by
``error_body``, which masks the configured keys by value; ``error_response`` says
``x-should-retry`` as the error decided (``from_runpod`` for RunPod's failures).
"""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from adapters.errors import KeyMask, OpenAIError, UpstreamError, error_type_for_status, from_runpod_http
from adapters.sse import DONE, encode_data
from adapters.transport import RunPodError
from proxy.context import get_context

log = logging.getLogger("podgate.errors")

#: The operations that submit a job: until one of them succeeds, RunPod has accepted no job.
SUBMIT_OPERATIONS = frozenset({"run", "runsync"})


def from_runpod(exc: RunPodError) -> OpenAIError:
    """A failed upstream call as the client should see it (``adapters.errors`` maps
    RunPod's HTTP answers; here only the calls that got no answer).

    The one home of ``x-should-retry`` for upstream failures: True only when RunPod turned
    the job away before accepting it (it answered a submit with 429 or 5xx, or could not be
    reached at all), so that a retry is safe (no job runs twice) and useful. A failure after
    the job was accepted, or a submit whose fate is unknown (it timed out after sending),
    says False: the job was cancelled or ran and failed, and a retry would pay for it again."""
    if not exc.answered:
        if exc.status == 504:
            err: OpenAIError = UpstreamError(f"RunPod /{exc.operation} timed out.", status=504, type="timeout", code="timeout")
        else:
            err = UpstreamError(f"RunPod /{exc.operation} failed: {exc.message}", status=502, type="server_error",
                                code="upstream_unreachable")
    else:
        err = from_runpod_http(exc.status, exc.message, exc.retry_after)
    turned_away = not exc.reached or (exc.answered and (exc.status == 429 or exc.status >= 500))
    err.should_retry = exc.operation in SUBMIT_OPERATIONS and turned_away
    return err


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(f"The model '{name}' does not exist.", status=404, type="invalid_request_error",
                       param="model", code="model_not_found")


def request_timeout() -> OpenAIError:
    """The request outlived ``timing.request_timeout_s`` (its job is being cancelled)."""
    return OpenAIError("The request timed out before the job finished; the job was cancelled.",
                       status=504, type="timeout", code="request_timeout", should_retry=False)


def error_body(err: OpenAIError, key_mask: KeyMask | None = None) -> bytes:
    """The error as JSON bytes. Every error a client sees is encoded here, so the configured
    keys (``key_mask``) are masked in it by value, whatever path its text came by (a
    worker's error, RunPod's answer)."""
    if key_mask:
        err = key_mask.error(err)
    return msgspec.json.encode(err.response())


def sse_error(err: OpenAIError, key_mask: KeyMask | None = None) -> bytes:
    """An error after the first SSE byte: ``data: {"error": …}`` then ``data: [DONE]``."""
    return encode_data(error_body(err, key_mask)) + DONE


def error_response(err: OpenAIError, key_mask: KeyMask | None = None) -> Response:
    headers = {}
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    if err.should_retry is not None:  # decided where the error was made (see from_runpod)
        headers["x-should-retry"] = "true" if err.should_retry else "false"
    return Response(content=error_body(err, key_mask), status_code=err.status, media_type="application/json",
                    headers=headers)


def _key_mask(request: Request) -> KeyMask | None:
    """The configured keys, from the app's upstreams (None before startup)."""
    upstreams = getattr(getattr(request.app.state, "gateway", None), "upstreams", None)
    return upstreams.key_mask if upstreams is not None else None


def _openai_error_handler(request: Request, exc: OpenAIError) -> Response:
    ctx = get_context(request)
    if ctx.note is None:
        ctx.note = f"error:{exc.status}"
    return error_response(exc, _key_mask(request))


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
