"""The passthrough path: a model with ``format = "openai"`` is served by its endpoint's OpenAI
gateway (``{base_url}/{endpoint}/openai/v1/…``), not by a translated job.

The client's request goes up with the served model name (``adapters.passthrough``); the
answer comes back with the client's model name, its errors — even those RunPod answers with
HTTP 200 — as OpenAI errors with real statuses. A call RunPod refused (429, 502, 503, or never
reached) is tried again before anything reached the client (``proxy.submit``); still refused
after the retries, it is raised as the ``RunPodError`` it is, for the walk of the model's
fallbacks (``proxy.fallback``) to try the next model, or to answer it.

Streams are relayed as the bytes arrive (``SSERelay``), with ``: keep-alive`` comments while
nothing does. The response starts only once the upstream answered 2xx and its first events
came (or ``first_byte_wait_s`` passed), so that an early error still gets a real status.
A stream that the upstream cuts, that breaks, or that outlives ``request_timeout_s`` ends
with an in-stream error and ``[DONE]``; so does one still running when the server's drain
expires (``proxy.drain``: ``server_shutting_down``), and a non-streaming call still waiting
then is answered 503. Either way the upstream request is closed, which is how a
passed-through job is cancelled (see below).

Disconnects: the upstream request is closed the moment the client goes. A non-streaming call
races ``http.disconnect``; a stream's body generator, cancelled by Litestar, closes the
upstream body in its ``finally`` (and ``finalize`` does it again as a backstop). RunPod's
gateway returns no job id, so podgate cannot ``/cancel``: what the upstream sees is its HTTP
client going away. podgate's own endpoint (``serverless/gateway.py``) then cancels the job
and the worker gets its stop signal; whether RunPod's cloud gateway does the same is
unverified (reference/worker-formats.md §1.4), which is why the queue path stays the default.

An operator ends a request the same way (the console's Cancel button resolves its
``RequestContext.halt``): the upstream request is closed, and the client gets what a
cancelled job gives on the queue path (``halted()``: 502 ``cancelled``, in the stream once
it started).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from adapters.errors import OpenAIError, from_job_status, to_exception
from adapters.events import ErrorEvent
from adapters.openai_protocol import Kind
from adapters.passthrough import ModelRename, SSERelay, answer_body, request_body, stream_cut, upstream_error
from adapters.upstream import RunPodError, UpstreamBody
from proxy.context import RequestContext
from proxy.drain import Drain, ShuttingDown, until
from proxy.errors import error_code, request_timeout, sse_error
from proxy.jobs import race_disconnect
from proxy.settings import TimingSettings
from proxy.streaming import KEEPALIVE, TIMEOUT, TimedOut
from proxy.submit import Submission, submit_policy
from proxy.upstreams import ModelBinding

T = TypeVar("T")

ROUTES: dict[Kind, str] = {"chat": "chat/completions", "completion": "completions"}


class _Reader:
    """Reads the upstream body in a task of its own, a bounded amount ahead of the client;
    the stream takes everything that has arrived at once (``take``), so that a burst of
    network chunks goes out in one write, and waits (with a timeout, for keep-alives) only
    when nothing has."""

    __slots__ = ("_chunks", "_size", "_arrived", "_drained", "ended", "error", "_task")

    AHEAD = 1 << 20
    """Bytes read ahead of a slow client before the reader waits."""

    def __init__(self, body: UpstreamBody):
        self._chunks: list[bytes] = []
        self._size = 0
        self._arrived: asyncio.Future[None] | None = None  # while ``take`` waits
        self._drained = asyncio.Event()
        self.ended = False
        """The body ended (or broke: ``error``); what was read may still be waiting."""
        self.error: RunPodError | None = None
        self._task = asyncio.ensure_future(self._read(body))

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def _read(self, body: UpstreamBody) -> None:
        try:
            async for chunk in body:
                self._chunks.append(chunk)
                self._size += len(chunk)
                self._wake()
                if self._size > self.AHEAD:
                    self._drained.clear()
                    await self._drained.wait()
        except RunPodError as exc:
            self.error = exc
        finally:
            self.ended = True
            self._wake()

    async def take(self, timeout: float, *stops: asyncio.Future[None]) -> bytes | TimedOut:
        """What has arrived (``b""``: nothing more will), or ``TIMEOUT`` when nothing came
        within ``timeout`` (or one of ``stops`` resolved first)."""
        if not self._chunks and not self.ended:
            self._arrived = arrived = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait((arrived, *stops), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._arrived = None
            if not self._chunks and not self.ended:
                return TIMEOUT
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._drained.set()
        return data

    @property
    def exhausted(self) -> bool:
        """The body ended and everything read was taken."""
        return self.ended and not self._chunks

    def cancel(self) -> None:
        self._task.cancel()


class Relay:
    """One passthrough stream while it runs: the upstream body, its reader and the relay."""

    __slots__ = ("body", "reader", "relay", "key_mask", "timing", "drain", "halt", "deadline", "first", "error")

    def __init__(self, body: UpstreamBody, relay: SSERelay, binding: ModelBinding, timing: TimingSettings,
                 drain: Drain, halt: asyncio.Future[None]):
        self.body = body
        self.reader = _Reader(body)
        self.relay = relay
        self.key_mask = binding.key_mask
        self.timing = timing
        self.drain = drain
        self.halt = halt
        self.deadline = time.monotonic() + timing.request_timeout_s
        self.first = b""
        self.error: ErrorEvent | OpenAIError | None = None

    async def read_first(self) -> None:
        """Read until the first events (or ``first_byte_wait_s``); an error among them is
        raised, to be answered with its status."""
        wait_until = time.monotonic() + self.timing.first_byte_wait_s
        while not self.first and self.error is None and not self.relay.done:
            remaining = wait_until - time.monotonic()
            if remaining <= 0:
                return
            data, error = await self.step(remaining)
            if data is None:
                return
            self.first += data
            self.error = error
        if self.error is not None and not self.first:
            raise self.error if isinstance(self.error, OpenAIError) else to_exception(self.error)

    async def step(self, timeout: float) -> tuple[bytes | None, ErrorEvent | OpenAIError | None]:
        """What has arrived: ``(bytes to send, error that ends the stream)``; ``(None, None)``
        when nothing came within ``timeout``."""
        reader = self.reader
        chunk = await reader.take(timeout, self.drain.expiry(), self.halt)
        if chunk is TIMEOUT:
            return None, None
        error: ErrorEvent | OpenAIError | None
        data, error = self.relay.feed(chunk) if chunk else (b"", None)
        if error is None and not self.relay.done and reader.exhausted:
            error = upstream_error(reader.error) if reader.error is not None else stream_cut()
        return data, error

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.shield(self.body.aclose())


def halt_of(ctx: RequestContext) -> asyncio.Future[None]:
    """The request's stop (``RequestContext.halt``), made on first use."""
    if ctx.halt is None:
        ctx.halt = asyncio.get_running_loop().create_future()
    return ctx.halt


def halted() -> OpenAIError:
    """What the client of a request an operator ended gets: the error of a cancelled job, as
    on the queue path (the endpoint cancels the job when its request is closed)."""
    error = from_job_status("CANCELLED")
    assert error is not None
    return to_exception(error)


async def _submit(call: Callable[[], Awaitable[T]], *, receive: Any, timing: TimingSettings, drain: Drain,
                  halt: asyncio.Future[None]) -> T:
    """The passthrough call, retried while RunPod refuses it (``proxy.submit``); a try in
    flight is cancelled with the request (closing it is how its job is cancelled). Raises
    the ``OpenAIError`` of a failed call, but a refusal as its ``RunPodError`` (module
    docstring)."""
    submission = Submission(call, submit_policy(timing), time.monotonic() + timing.request_timeout_s)
    try:
        return await race_disconnect(receive, drain.bound(until(halt, submission.result(), halted)))
    except RunPodError as exc:
        if exc.refused:
            raise
        raise upstream_error(exc) from None


async def post(raw: dict[str, Any], route: str, binding: ModelBinding, *, receive: Any,
               timing: TimingSettings, drain: Drain, halt: asyncio.Future[None]) -> bytes:
    """The upstream's 2xx answer to a non-streaming request, as it came (raises the
    ``OpenAIError`` of a failed call — the ``RunPodError`` of a refused one —,
    ``ClientDisconnected`` after closing the upstream request, ``ShuttingDown`` when the
    drain expired first, or ``halted()`` when ``halt`` resolved first)."""
    drain.check()
    call = partial(binding.openai.post, binding.endpoint, route, request_body(raw, binding.served_model),
                   read_timeout=timing.request_timeout_s)
    return await _submit(call, receive=receive, timing=timing, drain=drain, halt=halt)


async def relay_nonstream(raw: dict[str, Any], kind: Kind, binding: ModelBinding, *, receive: Any,
                          timing: TimingSettings, drain: Drain, halt: asyncio.Future[None],
                          model: str | None = None) -> bytes:
    """The client's answer to a non-streaming completion request (``post``, then
    ``answer_body``: errors answered with 200 raised, the client's model name: ``model``,
    default the binding's — a fallback answers under the name the client asked for)."""
    answer = await post(raw, ROUTES[kind], binding, receive=receive, timing=timing, drain=drain, halt=halt)
    return answer_body(answer, ModelRename(binding.served_model, model or binding.name))


async def open_relay(raw: dict[str, Any], kind: Kind, binding: ModelBinding, include_usage: bool, *, receive: Any,
                     timing: TimingSettings, drain: Drain, halt: asyncio.Future[None], model: str | None = None) -> Relay:
    """Open the upstream stream and read its first events (errors here → HTTP status; a
    refusal as ``post``'s); ``model`` as ``relay_nonstream``'s."""
    drain.check()
    call = partial(binding.openai.open, binding.endpoint, ROUTES[kind], request_body(raw, binding.served_model),
                   read_timeout=timing.request_timeout_s)
    body = await _submit(call, receive=receive, timing=timing, drain=drain, halt=halt)
    rename = ModelRename(binding.served_model, model or binding.name)
    if not body.content_type.startswith("text/event-stream"):  # a JSON answer: an error, or not a stream
        try:
            answer = b"".join([chunk async for chunk in body])
        except RunPodError as exc:
            raise upstream_error(exc) from None
        finally:
            await body.aclose()
        answer_body(answer, rename)  # raises the error it holds
        raise OpenAIError("The upstream answered a streaming request without a stream.", status=502,
                          type="server_error", code="upstream_bad_answer")
    relay = Relay(body, SSERelay(rename, include_usage), binding, timing, drain, halt)
    try:
        await race_disconnect(receive, relay.read_first())
        drain.check()
        if halt.done():
            raise halted()
    except BaseException:
        await relay.close()
        raise
    return relay


async def relay_body(relay: Relay, ctx: RequestContext) -> AsyncGenerator[bytes, None]:
    """The SSE body: what the relay passes on, keep-alives, and an in-stream error + ``[DONE]``
    when the stream cannot end cleanly."""
    drain = relay.drain
    try:
        if relay.first:
            ctx.first_token()
            ctx.streamed += relay.first.count(b"data: ")  # an event a token (proxy.live)
            yield relay.first
        error = relay.error
        while error is None and not relay.relay.done:
            remaining = relay.deadline - time.monotonic()
            if remaining <= 0:
                error = request_timeout()
                ctx.note = "timeout"
                break
            if drain.expired:
                error = ShuttingDown()
                ctx.note = "shutdown"
                ctx.cancelled = True  # closing the upstream request cancels the job
                break
            if relay.halt.done():  # an operator ended it (the console: note and cancelled are set)
                error = halted()
                break
            data, error = await relay.step(min(relay.timing.keepalive_s, remaining))
            if data is None:
                if not drain.expired:
                    yield KEEPALIVE
            elif data:
                ctx.first_token()
                ctx.streamed += data.count(b"data: ")
                yield data
        if error is not None:
            ctx.note = ctx.note or "upstream-error"
            ctx.error = error_code(error)
            yield sse_error(error, relay.key_mask)
    except (GeneratorExit, asyncio.CancelledError):
        ctx.cancelled = True  # the client left: closing the upstream request cancels the job
        raise
    finally:
        if relay.relay.usage is not None:
            ctx.record_usage(relay.relay.usage.prompt_tokens, relay.relay.usage.completion_tokens)
        await relay.close()


async def finalize(chunks: AsyncGenerator[bytes, None], relay: Relay) -> None:
    """After the response (also after a disconnect): the upstream body is closed."""
    try:
        await chunks.aclose()
    except RuntimeError:
        pass
    await relay.close()


__all__ = ["post", "relay_nonstream", "open_relay", "relay_body", "finalize", "Relay", "ROUTES"]
