"""Errors in OpenAI's shape: the exceptions podgate raises, and the translation of every
error form a RunPod worker or RunPod itself produces into one.

Exceptions (all subclasses of ``OpenAIError``, which carries ``status``, ``message``,
``type``, ``param``, ``code``, ``should_retry`` and renders ``ErrorResponse`` via
``.response()``):
  ``InvalidRequest`` (400, malformed client input), ``UnsupportedParameter`` (400, a
  parameter the endpoint's worker format cannot honour), ``UpstreamError`` (an error
  reported by the worker or by RunPod, with the status it deserves).
``should_retry`` is what the client is told in ``x-should-retry`` (the OpenAI SDKs obey
it): ``None`` says nothing, ``UpstreamError`` defaults to False (the job ran and failed: a
retry would fail the same way and cost GPU time); whoever makes an error that is safe and
useful to retry (RunPod refused the job before accepting it) sets True.

Translators (pure functions):
  ``from_worker_error(value)``     — any error value found in a job: the ``error`` string of
                                     a FAILED job (JSON string, Python repr, "vLLM returned
                                     HTTP nnn: …", "handler: … traceback: …", plain text), or
                                     an error object in the output (flat ``{"object":
                                     "error"}``, nested ``{"error": {…}}``, a list).
  ``find_output_error(item)``      — the error inside one output item, or None.
  ``from_job_status(status, error)`` — FAILED / TIMED_OUT / CANCELLED job → error.
These return an ``ErrorEvent`` (``adapters.events``) — the value decoders emit in streams —
and ``to_exception(event)`` / ``OpenAIError.from_event`` turn one into an exception.
  ``from_runpod(exc)``             — a failed call to RunPod (``RunPodError``, raised by
                                     ``adapters.upstream``) → its ``UpstreamError``, with
                                     ``should_retry`` decided: the one home of that mapping.
Messages are cut to the message itself: tracebacks are dropped, length is bounded, and
anything that looks like a RunPod key or bearer token is masked. ``KeyMask`` masks the
configured keys by value, whatever their shape (the proxy applies it to every error it
sends, see ``proxy.errors``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.events import ErrorEvent
from adapters.openai_protocol import ErrorDetail, ErrorResponse

if TYPE_CHECKING:
    from adapters.upstream import RunPodError

__all__ = [
    "OpenAIError", "InvalidRequest", "UnsupportedParameter", "UpstreamError",
    "from_worker_error", "find_output_error", "from_job_status", "from_runpod",
    "to_exception", "error_type_for_status", "clean_message", "KeyMask",
]

MAX_MESSAGE = 2000


class OpenAIError(Exception):
    """An error to answer with OpenAI's error body and a real HTTP status."""

    status: int = 500
    type: str = "server_error"
    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
        if should_retry is not None:
            self.should_retry = should_retry

    def response(self) -> ErrorResponse:
        return ErrorResponse(ErrorDetail(self.message, self.type, self.param, self.code))

    @classmethod
    def from_event(cls, ev: ErrorEvent) -> OpenAIError:
        return cls(ev.message, status=ev.status, type=ev.type, param=ev.param, code=ev.code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class InvalidRequest(OpenAIError):
    """The client's request is malformed (HTTP 400)."""

    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(OpenAIError):
    """The endpoint's worker format cannot honour ``param`` and ignoring it would change
    the answer's meaning (HTTP 400, code ``unsupported_parameter``)."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, param: str, message: str | None = None) -> None:
        super().__init__(
            message or f"The parameter '{param}' is not supported by this model's worker.",
            param=param,
            code="unsupported_parameter",
        )


class UpstreamError(OpenAIError):
    """An error reported by the worker or by RunPod. Not worth a retry unless its maker
    says so (``should_retry=True``)."""

    should_retry = False


def to_exception(ev: ErrorEvent) -> OpenAIError:
    return UpstreamError.from_event(ev)


# ---------------------------------------------------------------------------
# Translating the error forms of workers and of RunPod
# ---------------------------------------------------------------------------

_MAX_PARSE = 100_000  # never parse (JSON / literal_eval) error text longer than this

_SECRET_RE = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(rpa|rp|sk|pk)[-_][A-Za-z0-9_-]{12,}"
    r"|((?:api[_-]?key|authorization|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"
)
_TRACEBACK_RE = re.compile(r"\s*(?:\n\s*traceback:|Traceback \(most recent call last\))", re.IGNORECASE)
_VLLM_HTTP_RE = re.compile(r"vLLM returned HTTP (\d{3}):\s*(.*)", re.DOTALL)
_HANDLER_RE = re.compile(r"^handler:\s*(.*?)\s*(?:\ntraceback:.*)?$", re.DOTALL)
_REPR_MESSAGE_RE = re.compile(r"""['"]message['"]\s*:\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")""")
_REPR_CODE_RE = re.compile(r"""['"]code['"]\s*:\s*(?:(\d{3})|'([^']*)'|"([^"]*)")""")
_REPR_TYPE_RE = re.compile(r"""['"]type['"]\s*:\s*(?:'([^']*)'|"([^"]*)")""")

_TYPE_STATUS = {
    "badrequesterror": 400,
    "invalid_request_error": 400,
    "validationerror": 400,
    "notfounderror": 404,
    "not_found_error": 404,
    "ratelimiterror": 429,
    "rate_limit_error": 429,
    "timeout": 504,
}
_STATUS_TYPE = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_CONTEXT_RE = re.compile(r"maximum context length|context length|too long|max_model_len|max_tokens", re.IGNORECASE)


def error_type_for_status(status: int) -> str:
    return _STATUS_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")


def clean_message(text: Any, limit: int = MAX_MESSAGE) -> str:
    """A message safe to show a client: no traceback, no key, bounded length."""
    if not isinstance(text, str):
        text = str(text)
    m = _TRACEBACK_RE.search(text)
    if m:
        text = text[: m.start()]
    text = _SECRET_RE.sub(_mask, text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or "The worker reported an error."


class KeyMask:
    """The configured keys, masked by value in text passed on from upstream (a worker's
    error may quote a key of any shape, which ``clean_message``'s patterns cannot know)."""

    __slots__ = ("_keys",)

    MIN_LENGTH = 6
    """Shorter values are not masked: they would mask ordinary words, and are no secret."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = sorted({k for k in keys if k and len(k) >= self.MIN_LENGTH}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def text(self, text: str) -> str:
        for key in self._keys:
            if key in text:
                text = text.replace(key, "***")
        return text


def _mask(m: re.Match) -> str:
    if m.group(1):
        return m.group(1) + "***"
    if m.group(2):
        return m.group(2) + "_***"
    return (m.group(3) or "") + "***"


def _event(message: Any, status: int, code: Any = None, param: Any = None) -> ErrorEvent:
    msg = clean_message(message)
    if code is not None and not isinstance(code, str):
        code = None  # vLLM's numeric "code" is just the HTTP status
    if status == 404 and code is None and "model" in msg.lower():
        code = "model_not_found"
    return ErrorEvent(
        message=msg,
        type=error_type_for_status(status),
        code=code,
        param=param if isinstance(param, str) else None,
        status=status,
    )


def _status_of(code: Any, type_: Any, message: str, default: int) -> int:
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    if isinstance(type_, str):
        status = _TYPE_STATUS.get(type_.lower())
        if status:
            return status
    if default >= 500 and _CONTEXT_RE.search(message) and "exceed" in message.lower():
        return 400
    return default


def _from_dict(d: dict, default: int) -> ErrorEvent:
    inner = d.get("error")
    if inner:
        if isinstance(inner, dict):
            return _from_dict(inner, _status_of(d.get("status") or d.get("code"), None, "", default))
        if isinstance(inner, (list, tuple)):
            return _event("; ".join(clean_message(x, 300) for x in inner), default)
        ev = from_worker_error(inner, default=default)
        status = d.get("status") or d.get("code")
        if isinstance(status, int) and 400 <= status <= 599 and ev.status == default:
            return _event(ev.message, status)
        return ev
    if "error_message" in d:  # plain handler exception: {"error_type", "error_message", ...}
        message = d.get("error_message") or d.get("error_type") or "The worker's handler raised an error."
        return _event(message, _status_of(None, None, str(message), default))
    message = d.get("message")
    if message is None:
        message = d.get("detail")
    if message is None:
        message = "The worker reported an error."
    if not isinstance(message, str):
        message = msgspec.json.encode(message).decode() if isinstance(message, (dict, list)) else str(message)
    # the message may itself be an error: "vLLM returned HTTP nnn: ...", or a FAILED job's
    # error (a JSON text or Python repr of the worker's error object) that a gateway wrapped
    if _VLLM_HTTP_RE.match(message) or message.lstrip()[:1] == "{":
        return from_worker_error(message, default=_status_of(d.get("code"), d.get("type"), message, default))
    status = _status_of(d.get("code"), d.get("type"), message, default)
    return _event(message, status, d.get("code"), d.get("param"))


def from_worker_error(value: Any, *, default: int = 500) -> ErrorEvent:
    """Any error value a job can carry → an ``ErrorEvent`` with the status it deserves.

    Accepts a FAILED job's ``error`` string in all its forms (JSON text, Python-repr dict,
    "vLLM returned HTTP nnn: <json>", "handler: <msg> \\ntraceback: …", plain text) and
    error objects found in output (``{"error": {...}}``, ``{"error": "..."}``, flat
    ``{"object": "error", "message", "type", "code"}``, ``{"detail": ...}``, lists).
    Unrecognised errors get ``default`` (500: the worker broke).
    """
    if isinstance(value, dict):
        return _from_dict(value, default)
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return from_worker_error(value[0], default=default)
        return _event("; ".join(clean_message(x, 300) for x in value) or "The worker reported an error.", default)
    if value is None:
        return _event("The job failed without an error message.", default)
    text = value if isinstance(value, str) else str(value)
    s = text.strip()
    m = _VLLM_HTTP_RE.match(s)
    if m:
        status = int(m.group(1))
        inner = m.group(2).strip()
        ev = from_worker_error(inner, default=status) if inner[:1] in "{[" else _event(inner, status)
        return _event(ev.message, status, ev.code, ev.param)
    if s[:1] in "{[" and len(s) <= _MAX_PARSE:
        try:
            parsed = msgspec.json.decode(s)
        except msgspec.DecodeError:
            parsed = None
            try:
                parsed = ast.literal_eval(s)  # Python repr of a dict (never eval)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                parsed = None
        if isinstance(parsed, (dict, list)):
            return from_worker_error(parsed, default=default)
        if s[:1] == "{":  # too odd for literal_eval: pick message / code with a tolerant regex
            mm = _REPR_MESSAGE_RE.search(s)
            if mm:
                msg = (mm.group(1) if mm.group(1) is not None else mm.group(2)).replace("\\'", "'").replace('\\"', '"')
                mc = _REPR_CODE_RE.search(s)
                mt = _REPR_TYPE_RE.search(s)
                code = int(mc.group(1)) if mc and mc.group(1) else (mc.group(2) or mc.group(3) if mc else None)
                typ = (mt.group(1) or mt.group(2)) if mt else None
                return _event(msg, _status_of(code, typ, msg, default), code)
    mh = _HANDLER_RE.match(s)
    if mh:
        return from_worker_error(mh.group(1), default=default) if mh.group(1)[:1] in "{[" else _event(mh.group(1), _status_of(None, None, mh.group(1), default))
    return _event(s, _status_of(None, None, s, default))


def find_output_error(item: Any) -> ErrorEvent | None:
    """The error carried by one output item (a dict), or None when it is not an error:
    a truthy ``error`` key, or ``object == "error"`` (flat vLLM ≤ v2.12.0 / infinity)."""
    if not isinstance(item, dict):
        return None
    if item.get("error"):
        return from_worker_error(item)
    if item.get("object") == "error":
        return from_worker_error(item)
    return None


def from_job_status(status: str, error: Any = None) -> ErrorEvent | None:
    """The error a final job status stands for; None for COMPLETED (and non-final states)."""
    if status == "FAILED":
        if error is None or error == "":
            return _event("The job failed without an error message.", 500)
        return from_worker_error(error)
    if status == "TIMED_OUT":
        return ErrorEvent(
            message="The job exceeded its execution timeout on RunPod.",
            type="timeout",
            code="timeout",
            status=504,
        )
    if status == "CANCELLED":
        return ErrorEvent(
            message="The job was cancelled on RunPod before it finished.",
            type="server_error",
            code="cancelled",
            status=502,
        )
    return None


#: The operations that submit a job: until one of them succeeds, RunPod has accepted no job.
SUBMIT_OPERATIONS = frozenset({"run", "runsync"})


def from_runpod(exc: RunPodError) -> UpstreamError:
    """A failed call to RunPod (``adapters.upstream.RunPodError``) → the error podgate
    returns to its client. The one home of this mapping; ``exc.message`` is RunPod's
    message as the client already read it from the answer (its body is parsed there, once).

    No answer: a timeout is 504, anything else (unreachable, garbage) 502. An answer:
    401/403 are podgate's misconfiguration (500); 404 means the endpoint or job is gone
    (502); 429 stays 429 (with ``retry_after``); 408 → 504; 400/413/422 → 400/413; other
    statuses → 502.

    The one home of ``x-should-retry`` for upstream failures (``should_retry``): True only
    when RunPod turned the job away before accepting it (it answered a submit with 429, 502
    or 503, or could not be reached at all: ``RunPodError.refused``, what podgate's own
    submit retries repeat), so that a retry is safe (no job runs twice) and useful. A
    failure after the job was accepted, or a submit whose fate is unknown (a 500 or another
    5xx, a timeout or a broken connection after sending: the job may exist), says False: the
    job was cancelled, ran and failed, or may be running, and a retry would pay for it again."""
    err = _runpod_error(exc)
    err.should_retry = exc.operation in SUBMIT_OPERATIONS and exc.refused
    return err


def _runpod_error(exc: RunPodError) -> UpstreamError:
    status = exc.status
    if not exc.answered:
        if status == 504:
            return UpstreamError(f"RunPod /{exc.operation} timed out.", status=504, type="timeout", code="timeout")
        return UpstreamError(f"RunPod /{exc.operation} failed: {exc.message}", status=502, type="server_error",
                             code="upstream_unreachable")
    detail = clean_message(exc.message, 300) if exc.message.strip() else ""
    if status in (401, 403):
        return UpstreamError(
            "podgate's RunPod API key was rejected by RunPod (check RUNPOD_API_KEY).",
            status=500, type="server_error", code="upstream_auth",
        )
    if status == 404:
        return UpstreamError(
            "RunPod answered 404: the endpoint or job does not exist." + (f" ({detail})" if detail else ""),
            status=502, type="server_error", code="upstream_not_found",
        )
    if status == 429:
        return UpstreamError(
            "RunPod's rate limit for this endpoint was reached; retry later.",
            status=429, type="rate_limit_error", code="rate_limit_exceeded", retry_after=exc.retry_after,
        )
    if status == 408:
        return UpstreamError("RunPod timed out.", status=504, type="timeout", code="timeout")
    if status in (400, 413, 422):
        return UpstreamError(
            f"RunPod rejected the request: {detail or 'HTTP ' + str(status)}",
            status=400 if status != 413 else 413, type="invalid_request_error",
        )
    return UpstreamError(
        f"RunPod answered HTTP {status}." + (f" {detail}" if detail else ""),
        status=502, type="server_error", code="upstream_error", retry_after=exc.retry_after,
    )
