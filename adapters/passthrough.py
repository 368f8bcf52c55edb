"""The ``/openai/*`` passthrough: OpenAI requests relayed to a RunPod endpoint's OpenAI
gateway (``{base}/{endpoint}/openai/v1/{route}``), and its answers made right for the client.

``OpenAIPassthrough`` is the transport: one ``Upstream`` (the same seam, key and pool as the
queue client of that base URL), calls named ``openai/v1/<route>`` in errors and logs.

What RunPod's gateway gets wrong, and what this module does about it
(reference/worker-formats.md §1.4, §2.3, §8.2):

- **Model names.** The request's ``model`` is replaced by the served name on the way in
  (``request_body``); ``ModelRename`` puts the client's name back in every answer, as bytes
  (a JSON key cannot occur unescaped inside a JSON string, so ``"model":"<served>"`` only
  matches the real key), so an answer is never decoded and re-encoded just for its name.
- **Errors with HTTP 200.** worker-vllm ≤ v2.12.0 and infinity yield flat
  ``{"object":"error", …}`` bodies that the gateway answers with 200; a FAILED job is a 500
  whose body holds the worker's error (which may say ``vLLM returned HTTP 400``).
  ``answer_body`` and ``upstream_error`` turn both into the ``OpenAIError`` they stand for,
  with the status the worker meant (``adapters.errors``, the one home of that reading).
- **Streams.** ``SSERelay`` passes the upstream's SSE bytes through as they arrive, event
  boundaries kept: whole events are forwarded untouched (renamed if needed) unless a cheap
  byte scan sees something to look at — an error event (it becomes the client's in-stream
  error and ends the stream), a usage-only chunk the client did not ask for (dropped; workers
  started with ``ENABLE_FORCE_INCLUDE_USAGE`` send one anyway), ``[DONE]`` (the end).
  A stream that ends without ``[DONE]`` was cut (RunPod has cut gateway streams at 60 s to
  5 min): ``close`` says so, and the client gets an in-stream ``upstream_stream_cut`` error
  and ``[DONE]``, never a silent truncation.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from adapters.errors import OpenAIError, UpstreamError, find_output_error, from_runpod, from_worker_error, to_exception
from adapters.events import ErrorEvent, Usage
from adapters.upstream import RunPodError, Upstream, UpstreamBody, UpstreamRequest

__all__ = ["OpenAIPassthrough", "ModelRename", "SSERelay", "request_body", "answer_body", "usage_of",
           "upstream_error", "stream_cut"]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class OpenAIPassthrough:
    """The OpenAI gateways of the RunPod endpoints behind one ``Upstream`` (one base URL)."""

    def __init__(self, upstream: Upstream):
        self._upstream = upstream

    @staticmethod
    def _request(endpoint: str, route: str, body: bytes, read_timeout: float | None) -> UpstreamRequest:
        return UpstreamRequest("POST", f"{endpoint}/openai/v1/{route}", f"openai/v1/{route}", body,
                               read_timeout=read_timeout)

    async def post(self, endpoint: str, route: str, body: bytes, *, read_timeout: float | None = None) -> bytes:
        """The whole answer of a non-streaming call (``route``: ``chat/completions`` …)."""
        return await self._upstream.send(self._request(endpoint, route, body, read_timeout))

    async def open(self, endpoint: str, route: str, body: bytes, *,
                   read_timeout: float | None = None) -> UpstreamBody:
        """A streaming call's answer, its body to be read as it arrives (then ``aclose``)."""
        return await self._upstream.open(self._request(endpoint, route, body, read_timeout))


def request_body(body: dict[str, Any], served_model: str) -> bytes:
    """The client's request (decoded JSON object) with the served model name, encoded."""
    if body.get("model") != served_model:
        body = {**body, "model": served_model}
    return _encode(body)


class ModelRename:
    """Puts the client's model name back where an answer has the served one (bytes in, bytes
    out; a no-op when the names are the same)."""

    __slots__ = ("_pattern", "_replacement")

    def __init__(self, served: str, name: str):
        self._pattern: re.Pattern[bytes] | None = None
        self._replacement = b'"model":' + _encode(name)
        if served != name:
            self._pattern = re.compile(rb'"model"\s*:\s*' + re.escape(_encode(served)))

    def __call__(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda _: self._replacement, data)


class _Answer(msgspec.Struct):
    """What ``answer_body`` looks at in a 200 body (other fields are skipped unread)."""

    object: Any = None
    error: Any = None


_answer_dec = msgspec.json.Decoder(_Answer | list)


def answer_body(body: bytes, rename: ModelRename) -> bytes:
    """A 200 answer as the client gets it: an error object in it raised as the error it
    stands for, a one-element list unwrapped (a worker's aggregated output), the model
    renamed. A body that is not JSON is the upstream's fault (502)."""
    try:
        probe = _answer_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError("The upstream's answer is not a JSON object.", status=502, type="server_error",
                            code="upstream_bad_answer") from None
    if isinstance(probe, list):
        if len(probe) != 1 or not isinstance(probe[0], dict):
            raise UpstreamError("The upstream's answer is a list, not one JSON object.", status=502,
                                type="server_error", code="upstream_bad_answer")
        error = find_output_error(probe[0])
        if error is not None:
            raise to_exception(error)
        return rename(_encode(probe[0]))
    if probe.error or probe.object == "error":
        error = find_output_error(_decode(body))
        if error is not None:
            raise to_exception(error)
    return rename(body)


class _Counts(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WithUsage(msgspec.Struct):
    usage: _Counts | None = None


_usage_dec = msgspec.json.Decoder(_WithUsage)


def usage_of(answer: bytes | dict[str, Any]) -> Usage | None:
    """The token counts an answer (a body, or a decoded chunk) reports, if any."""
    try:
        counts = _usage_dec.decode(answer).usage if isinstance(answer, bytes) else \
            msgspec.convert(answer, _WithUsage).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None if counts is None else Usage(counts.prompt_tokens, counts.completion_tokens)


def upstream_error(exc: RunPodError) -> OpenAIError:
    """A failed passthrough call → the client's error. A 400/422/500 answer whose body carries
    a worker's error is that error (a FAILED job's 500 may hold ``vLLM returned HTTP 400``);
    anything else is RunPod's own answer (``from_runpod``). Worth a retry only when RunPod
    turned the request away before a job ran (``refused``: 429/502/503, or never reached)."""
    error: ErrorEvent | None = None
    if exc.answered and exc.status in (400, 422, 500) and exc.body:
        try:
            value = _decode(exc.body)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            error = find_output_error(value)
        elif isinstance(value, (list, str)):
            error = from_worker_error(value, default=exc.status)
    err = to_exception(error) if error is not None else from_runpod(exc)
    err.should_retry = exc.refused
    return err


def stream_cut() -> OpenAIError:
    """The upstream's stream ended before ``[DONE]``."""
    return UpstreamError("The upstream closed the stream before it finished (RunPod's gateway cuts long streams).",
                         status=502, type="server_error", code="upstream_stream_cut")


_EVENT_END = b"\n\n"
_LOOK_CLOSER = (b'"error"', b"[DONE]", b'"usage"')


class SSERelay:
    """Upstream SSE bytes → the client's SSE bytes, whole events at a time (module docstring).

    ``feed(chunk)`` returns the bytes to send now and the error that ends the stream (or
    None); ``done`` is True once ``[DONE]`` went out; ``usage`` holds the last token counts a
    chunk reported. Line endings are normalised to LF (CRLF and lone CR, even split across
    chunks), so events end at ``\\n\\n``."""

    __slots__ = ("_rename", "_drop_usage", "_buf", "_cr", "done", "usage")

    def __init__(self, rename: ModelRename, include_usage: bool):
        self._rename = rename
        self._drop_usage = not include_usage
        self._buf = b""
        self._cr = False
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> tuple[bytes, ErrorEvent | None]:
        if self._cr or b"\r" in chunk:
            chunk = self._lf(chunk)
        buf = self._buf + chunk if self._buf else chunk
        end = buf.rfind(_EVENT_END)
        if end < 0:
            self._buf = buf
            return b"", None
        end += 2
        events, self._buf = buf[:end], buf[end:]
        first = min((at for at in map(events.find, _LOOK_CLOSER) if at >= 0), default=-1)
        if first < 0:
            return self._rename(events), None
        # the events before the first one with a needle pass as they are (a batch that ends
        # with [DONE] is mostly those); from that one on, event by event
        start = events.rfind(_EVENT_END, 0, first) + 2 if first else 0
        if start < 2:
            return self._events(events)
        data, error = self._events(events[start:])
        return self._rename(events[:start]) + data, error

    def _lf(self, chunk: bytes) -> bytes:
        """CRLF and lone CR as LF; after a chunk that ended with CR, an LF that starts the next
        one is the rest of that CRLF."""
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _events(self, events: bytes) -> tuple[bytes, ErrorEvent | None]:
        """The slow path: event by event, each one's data read."""
        out: list[bytes] = []
        for event in events.split(_EVENT_END)[:-1]:
            data = b"\n".join(line[6:] if line[5:6] == b" " else line[5:]
                              for line in event.split(b"\n") if line.startswith(b"data:"))
            if data == b"[DONE]":
                out.append(b"data: [DONE]\n\n")
                self.done = True
                break
            if data[:1] == b"{":
                try:
                    value = _decode(data)
                except msgspec.DecodeError:
                    value = None
                if isinstance(value, dict):
                    error = find_output_error(value)
                    if error is not None:
                        return b"".join(out), error
                    if value.get("usage"):
                        self.usage = usage_of(value) or self.usage
                        if self._drop_usage and value.get("choices") == []:
                            continue  # a usage chunk the client did not ask for
            out.append(self._rename(event + _EVENT_END))
        return b"".join(out), None
