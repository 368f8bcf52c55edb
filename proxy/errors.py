"""Rendering errors for clients, always in OpenAI's shape with a real status.

Routes and the stream body only render errors; they never convert one. Three kinds reach
here: ``OpenAIError`` (adapters.errors, the errors podgate makes), ``RunPodError`` (a failed
upstream call, mapped once by ``adapters.errors.from_runpod``, which also decides its
``x-should-retry``) and ``ErrorEvent`` (an error the job reported, in a stream after the
first byte). ``error_body`` encodes every one of them and masks the configured keys
(``KeyMask``) in it by value; ``sse_error`` is its form after the first SSE byte,
``error_response`` its form as an HTTP answer.

Litestar exception handlers: ``OpenAIError`` and ``RunPodError`` (the errors routes
raise), Litestar's own HTTP exceptions (unknown route 404, wrong method 405, oversize
body 413, …), ``ClientDisconnected`` (an empty 499: the client left) and, as a last
resort, any other exception (500, message hidden).
"""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from adapters.errors import KeyMask, OpenAIError, error_type_for_status, from_runpod
from adapters.events import ErrorEvent
from adapters.openai_protocol import ErrorDetail, ErrorResponse
from adapters.sse import DONE, encode_data
from adapters.upstream import RunPodError
from proxy.context import get_context
from proxy.jobs import ClientDisconnected

log = logging.getLogger("podgate.errors")

_enc = msgspec.json.Encoder()


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(f"The model '{name}' does not exist.", status=404, type="invalid_request_error",
                       param="model", code="model_not_found")


def request_timeout() -> OpenAIError:
    """The request outlived ``timing.request_timeout_s`` (its job is being cancelled)."""
    return OpenAIError("The request timed out before the job finished; the job was cancelled.",
                       status=504, type="timeout", code="request_timeout", should_retry=False)


def _openai(err: OpenAIError | RunPodError) -> OpenAIError:
    return from_runpod(err) if isinstance(err, RunPodError) else err


def error_body(err: OpenAIError | RunPodError | ErrorEvent, key_mask: KeyMask | None = None) -> bytes:
    """The error as JSON bytes. Every error a client sees is encoded here, so the configured
    keys (``key_mask``) are masked in it by value, whatever path its text came by (a
    worker's error, RunPod's answer)."""
    if not isinstance(err, ErrorEvent):
        err = _openai(err)
    message = key_mask.text(err.message) if key_mask else err.message
    return _enc.encode(ErrorResponse(ErrorDetail(message, err.type, err.param, err.code)))


def error_code(err: OpenAIError | RunPodError | ErrorEvent) -> str | int:
    """What kind of error it is, in one word: its OpenAI ``code``, else its ``type`` (the
    context's ``error``: the console groups errors by it)."""
    if isinstance(err, RunPodError):
        err = _openai(err)
    return err.code or err.type


def sse_error(err: OpenAIError | RunPodError | ErrorEvent, key_mask: KeyMask | None = None) -> bytes:
    """An error after the first SSE byte: ``data: {"error": …}`` then ``data: [DONE]``."""
    return encode_data(error_body(err, key_mask)) + DONE


def error_response(err: OpenAIError | RunPodError, key_mask: KeyMask | None = None) -> Response:
    err = _openai(err)
    headers = {}
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    if err.should_retry is not None:  # decided where the error was made (see adapters.errors.from_runpod)
        headers["x-should-retry"] = "true" if err.should_retry else "false"
    return Response(content=error_body(err, key_mask), status_code=err.status, media_type="application/json",
                    headers=headers)


def _key_mask(request: Request) -> KeyMask | None:
    """The configured keys, from the app's upstreams (None before startup)."""
    upstreams = getattr(getattr(request.app.state, "gateway", None), "upstreams", None)
    return upstreams.key_mask if upstreams is not None else None


def _openai_error_handler(request: Request, exc: OpenAIError | RunPodError) -> Response:
    err = _openai(exc)
    response = error_response(err, _key_mask(request))
    ctx = get_context(request)
    ctx.error = error_code(err)
    if ctx.note is None:
        ctx.note = f"error:{response.status_code}"
    return response


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


def _client_left_handler(request: Request, exc: ClientDisconnected) -> Response:
    """Nobody is listening any more: an empty 499 for the access log and the metrics (the
    job's cancel is already queued, or closing the upstream request cancelled it)."""
    ctx = get_context(request)
    ctx.note = ctx.note or "client-disconnected"
    return Response(content=b"", status_code=499, media_type="application/json")


def _internal_error_handler(request: Request, exc: Exception) -> Response:
    ctx = get_context(request)
    log.exception("internal error request_id=%s job_id=%s", ctx.request_id, ctx.job_id)
    err = OpenAIError(f"Internal server error (request id {ctx.request_id})", status=500, type="server_error")
    return _openai_error_handler(request, err)


EXCEPTION_HANDLERS = {
    OpenAIError: _openai_error_handler,
    RunPodError: _openai_error_handler,
    HTTPException: _http_exception_handler,
    ClientDisconnected: _client_left_handler,
    Exception: _internal_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "error_body", "error_code", "error_response", "sse_error", "request_timeout", "model_not_found"]
