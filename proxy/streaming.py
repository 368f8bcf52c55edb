"""The streaming path: a RunPod job as an OpenAI SSE stream (like vLLM's serving_chat.py).

``start_stream`` submits the job (``/run``; retried while RunPod refuses it,
``proxy.submit``) and waits a short while (``first_byte_wait_s``) for its first events, so
that an error known early (a bad parameter the worker refused, a job that failed at once,
RunPod refusing the submit) is still answered with a real HTTP status; a job that failed
before any output is first run again with ``/retry`` when its model allows it
(``[[models]] retries``). Then the response starts and ``sse_body`` writes each batch of
deltas the moment a ``/stream`` poll brings it, ``: keep-alive`` comments while the job
waits, an in-stream ``data: {"error": …}`` for an error after the
first byte (the configured keys masked), the usage chunk only when the client asked for
it, and ``data: [DONE]`` always. A job that runs again from the start after part of its
first run was sent (its worker was lost) ends the stream with a ``job_restarted`` error,
and the re-run is cancelled; a re-run before any output was read is harmless
(``JobEvents``).

``SSEWriter`` turns the job's events into chunks (``adapters.assemble.StreamAssembler``)
and SSE bytes, and closes the stream with podgate's count (``Completion.count``) when the
worker reported no usage and the client asked for usage or a choice needs a finish reason.

Disconnects: Litestar cancels the body generator the moment the client goes away; its
``finally`` only queues ``/cancel`` (``JobGuard.release`` → the app's cancel queue),
never awaits it.

Shutdown (``proxy.drain``): a stream may go on while the server drains; once the drain
expires, its wait for the next batch ends at once and the stream closes with an in-stream
``server_shutting_down`` error and ``[DONE]``, its job cancelled as above. Before the response
started, the request is answered 503 (``ShuttingDown``).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncGenerator
from functools import partial
from typing import Any, Final, Literal

from adapters.assemble import StreamAssembler
from adapters.errors import OpenAIError, to_exception
from adapters.events import ErrorEvent, Event, Usage
from adapters.sse import DONE, comment, encode_event
from adapters.upstream import RunPodError
from proxy.cancel import CancelQueue
from proxy.completion import Completion
from proxy.context import RequestContext
from proxy.drain import Drain, ShuttingDown
from proxy.errors import error_code, request_timeout, sse_error
from proxy.jobs import ClientDisconnected, JobEvents, JobGuard, first_error, race_disconnect
from proxy.live import tokens_in
from proxy.settings import TimingSettings
from proxy.submit import Submission, rerun_failed, submit_policy

KEEPALIVE = comment("keep-alive")


class _Timeout(enum.Enum):
    """No batch came within the wait (a keep-alive is due)."""

    TIMEOUT = enum.auto()


TIMEOUT: Final = _Timeout.TIMEOUT
TimedOut = Literal[_Timeout.TIMEOUT]
"""The type of ``TIMEOUT``: nothing came within a wait (a keep-alive is due)."""

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class SSEWriter:
    """Events → the assembler's chunk Structs → SSE bytes (``data: {json}\\n\\n`` each)."""

    __slots__ = ("completion", "asm")

    def __init__(self, completion: Completion):
        self.completion = completion
        self.asm = StreamAssembler(completion.kind, id=completion.response_id, model=completion.model,
                                   created=completion.created, include_usage=completion.include_usage)

    def feed(self, events: list[Event]) -> bytes:
        """Chunks for events that hold no error (the caller splits errors off)."""
        if not events:
            return b""
        return b"".join(map(encode_event, self.asm.feed(events)))

    async def finish(self, ctx: RequestContext) -> bytes:
        """The stream's closing chunks: podgate counts the completion first when the worker
        reported no usage and the client asked for usage or an open choice needs a finish
        reason."""
        asm, completion = self.asm, self.completion
        usage: Usage | None = None
        reasons = None
        if asm.usage is None:  # counted also when the client did not ask: logs, metrics and tpm need it
            usage, reasons = await completion.count(ctx, asm.completion_texts(), asm.open_choices())
            ctx.record_usage(usage.prompt_tokens, usage.completion_tokens, estimated=True)
            if completion.include_usage:
                ctx.note = "usage-estimated"
        else:
            ctx.record_usage(asm.usage.prompt_tokens, asm.usage.completion_tokens)
        return b"".join(map(encode_event, asm.finish(usage, reasons)))


class _Pending:
    """At most one in-flight ``JobEvents.next()``; waiting on it with a timeout (for
    keep-alives) never cancels the poll."""

    __slots__ = ("source", "task")

    def __init__(self, source: JobEvents):
        self.source = source
        self.task: asyncio.Task | None = None

    def prefetch(self) -> None:
        """Start the next poll now (it runs while the caller writes to the client)."""
        if self.task is None and not self.source.ended:
            self.task = asyncio.ensure_future(self.source.next())

    async def get(self, timeout: float | None, stop: asyncio.Future[None] | None = None
                  ) -> list[Event] | TimedOut | None:
        """The next batch (``None``: the job ended), or ``TIMEOUT`` when none came within
        ``timeout`` (or ``stop`` resolved first)."""
        if self.task is None:
            self.task = asyncio.ensure_future(self.source.next())
        if not self.task.done():  # a prefetched poll may have finished while we wrote
            await asyncio.wait((self.task,) if stop is None else (self.task, stop), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not self.task.done():
                return TIMEOUT
        task, self.task = self.task, None
        return task.result()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class StreamJob:
    """Everything one streaming request holds while its job runs."""

    __slots__ = ("completion", "ctx", "timing", "drain", "guard", "pending", "first", "deadline", "writer", "ended")

    def __init__(self, completion: Completion, ctx: RequestContext, timing: TimingSettings, guard: JobGuard,
                 source: JobEvents, drain: Drain):
        self.completion = completion
        self.ctx = ctx
        self.timing = timing
        self.drain = drain
        self.guard = guard
        self.pending = _Pending(source)
        self.first: list[Event] = []
        self.deadline = time.monotonic() + timing.request_timeout_s
        self.writer = SSEWriter(completion)
        self.ended = False

    def render(self, events: list[Event]) -> tuple[bytes, ErrorEvent | None]:
        """SSE bytes for a batch of events; stops at the first error event."""
        err = None
        for i, ev in enumerate(events):
            if type(ev) is ErrorEvent:
                err = ev
                events = events[:i]
                break
        self.ctx.streamed += tokens_in(events)
        return self.writer.feed(events), err


async def start_stream(completion: Completion, ctx: RequestContext, *, receive: Any, cancels: CancelQueue,
                       timing: TimingSettings, drain: Drain) -> StreamJob:
    """Submit the job and wait briefly for its first events (errors here → HTTP status)."""
    binding = completion.binding
    drain.check()
    deadline = time.monotonic() + timing.request_timeout_s
    submit = Submission(partial(binding.client.run, binding.endpoint, completion.job_input), submit_policy(timing),
                        deadline, keep=True)
    try:
        job = await race_disconnect(receive, drain.bound(submit.result()))
    except (ClientDisconnected, ShuttingDown) as exc:  # the job may exist already: cancel it once its id is known
        ctx.note = _note(exc)
        ctx.cancelled = True
        if submit.attempt is not None:
            cancels.submit_when_known(submit.attempt, binding.client, binding.endpoint)
        raise
    ctx.job_id = job.id
    guard = JobGuard(cancels, binding.client, binding.endpoint, job.id, result_ttl_ms=timing.stream_result_ttl_ms)
    reruns = binding.settings.retries
    while True:
        source = JobEvents(binding.client, binding.endpoint, job.id, completion.new_decoder, timing, guard,
                           on_rerun="fail")
        stream = StreamJob(completion, ctx, timing, guard, source, drain)
        stream.deadline = deadline  # the request's, from its start
        try:
            first = await race_disconnect(receive, stream.pending.get(timing.first_byte_wait_s, drain.expiry()))
            drain.check()
            if first is None or first is TIMEOUT or (err := first_error(first)) is None or _has_content(first):
                break
            if reruns <= 0 or not await rerun_failed(binding.client, binding.endpoint, job.id, timing, deadline,
                                                     receive=receive, drain=drain, cancels=cancels):
                guard.release()  # cancels the job if the error did not end it
                raise to_exception(err)
        except BaseException as exc:  # the response never starts: the job is not wanted
            stream.pending.cancel()
            if guard.release():
                ctx.cancelled = True
            if isinstance(exc, (ClientDisconnected, ShuttingDown)):
                ctx.note = _note(exc)
            raise
        reruns -= 1  # the job failed before any output and runs again (same id): read it afresh
        guard.finished = False
    if first is None:
        stream.ended = True
    elif first is not TIMEOUT:
        stream.first = first
    return stream


def _note(exc: ClientDisconnected | ShuttingDown) -> str:
    return "shutdown" if isinstance(exc, ShuttingDown) else "client-disconnected"


def _has_content(events: list[Event]) -> bool:
    return any(type(ev) is not ErrorEvent and type(ev) is not Usage for ev in events)


async def sse_body(stream: StreamJob) -> AsyncGenerator[bytes, None]:
    ctx = stream.ctx
    keepalive = stream.timing.keepalive_s
    drain = stream.drain
    ended = stream.ended
    err: ErrorEvent | OpenAIError | RunPodError | None
    try:
        data, err = stream.render(stream.first)
        stream.first = []
        if data:
            ctx.first_token()
            yield data
        while err is None and not ended:
            remaining = stream.deadline - time.monotonic()
            if remaining <= 0:
                err = request_timeout()
                ctx.note = "timeout"
                break
            if drain.expired:
                err = ShuttingDown()
                ctx.note = "shutdown"
                break
            try:
                got = await stream.pending.get(min(keepalive, remaining), drain.expiry())
            except RunPodError as exc:
                err = exc
                break
            if got is TIMEOUT:
                if not drain.expired:
                    yield KEEPALIVE
                continue
            if got is None:
                break
            data, err = stream.render(got)
            if err is None:
                stream.pending.prefetch()
            if data:
                ctx.first_token()
                yield data
        if err is not None:
            ctx.error = error_code(err)
            yield sse_error(err, stream.completion.binding.key_mask)
            return
        yield await stream.writer.finish(ctx) + DONE
    finally:
        stream.pending.cancel()
        if stream.guard.release():
            ctx.note = ctx.note or "cancelled"
            ctx.cancelled = True


__all__ = ["start_stream", "sse_body", "StreamJob", "SSEWriter", "SSE_HEADERS", "KEEPALIVE", "DONE", "TIMEOUT",
           "TimedOut"]
