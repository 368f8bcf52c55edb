"""The streaming path: a RunPod job as an OpenAI SSE stream (like vLLM's serving_chat.py).

``start_stream`` submits the job (``/run``) and waits a short while
(``first_byte_wait_s``) for its first events, so that an error known early (a bad
parameter the worker refused, a job that failed at once, RunPod refusing the submit)
is still answered with a real HTTP status. Then the response starts and ``sse_body``
writes each batch of deltas the moment a ``/stream`` poll brings it, ``: keep-alive``
comments while the job waits, an in-stream ``data: {"error": …}`` for an error after the
first byte (the configured keys masked), the usage chunk only when the client asked for
it, and ``data: [DONE]`` always. A job that runs again from the start after part of its
first run was sent (its worker was lost) ends the stream with a ``job_restarted`` error,
and the re-run is cancelled; a re-run before any output was read is harmless
(``JobEvents``).

Disconnects: Litestar cancels the body generator the moment the client goes away; its
``finally`` only queues ``/cancel`` (``JobGuard.release`` → the app's cancel queue),
never awaits it.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from adapters.errors import to_exception
from adapters.sse import DONE, comment
from adapters.events import ErrorEvent, Event, Usage
from adapters.transport import RunPodError
from adapters.errors import OpenAIError
from proxy.errors import request_timeout, sse_error
from proxy.jobs import ClientDisconnected, JobEvents, JobGuard, first_error, race_disconnect
from proxy.prepare import Prepared

KEEPALIVE = comment("keep-alive")
_TIMEOUT = object()

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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

    async def get(self, timeout: float | None):
        if self.task is None:
            self.task = asyncio.ensure_future(self.source.next())
        if not self.task.done():  # a prefetched poll may have finished while we wrote
            done, _ = await asyncio.wait((self.task,), timeout=timeout)
            if not done:
                return _TIMEOUT
        task, self.task = self.task, None
        return task.result()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class StreamJob:
    """Everything one streaming request holds while its job runs."""

    def __init__(self, prep: Prepared, guard: JobGuard, source: JobEvents):
        self.prep = prep
        self.guard = guard
        self.pending = _Pending(source)
        self.first: list[Event] = []
        self.deadline = time.monotonic() + prep.timing.request_timeout_s
        self.writer = prep.stream_writer()
        self.ended = False

    def render(self, events: list[Event]) -> tuple[bytes, ErrorEvent | None]:
        """SSE bytes for a batch of events; stops at the first error event."""
        err = None
        for i, ev in enumerate(events):
            if type(ev) is ErrorEvent:
                err = ev
                events = events[:i]
                break
        return self.writer.feed(events), err


async def start_stream(prep: Prepared) -> StreamJob:
    """Submit the job and wait briefly for its first events (errors here → HTTP status)."""
    route = prep.route
    ctx = prep.ctx
    submit = asyncio.ensure_future(route.client.run(route.endpoint, prep.job_input))
    try:
        job = await race_disconnect(prep.receive, asyncio.shield(submit))
    except ClientDisconnected:  # the job may exist already: cancel it once its id is known
        ctx.note = "client-disconnected"
        prep.cancels.submit_when_known(submit, route.client, route.endpoint)
        raise
    ctx.job_id = job.id
    guard = JobGuard(prep.cancels, route.client, route.endpoint, job.id)
    source = JobEvents(route.client, route.endpoint, job.id, prep.decoder, prep.timing, guard, on_rerun="fail")
    sj = StreamJob(prep, guard, source)
    try:
        first = await race_disconnect(prep.receive, sj.pending.get(prep.timing.first_byte_wait_s))
    except BaseException as exc:  # the response never starts: the job is not wanted
        sj.pending.cancel()
        guard.release()
        if isinstance(exc, ClientDisconnected):
            ctx.note = "client-disconnected"
        raise
    if first is None:
        sj.ended = True
    elif first is not _TIMEOUT:
        err = first_error(first)
        if err is not None and not _has_content(first):
            guard.release()  # cancels the job if the error did not end it
            raise to_exception(err)
        sj.first = first
    return sj


def _has_content(events: list[Event]) -> bool:
    return any(type(ev) is not ErrorEvent and type(ev) is not Usage for ev in events)


async def sse_body(sj: StreamJob) -> AsyncIterator[bytes]:
    prep = sj.prep
    keepalive = prep.timing.keepalive_s
    ended = sj.ended
    err: ErrorEvent | OpenAIError | RunPodError | None
    try:
        data, err = sj.render(sj.first)
        sj.first = []
        if data:
            yield data
        while err is None and not ended:
            remaining = sj.deadline - time.monotonic()
            if remaining <= 0:
                err = request_timeout()
                prep.ctx.note = "timeout"
                break
            try:
                got = await sj.pending.get(min(keepalive, remaining))
            except RunPodError as exc:
                err = exc
                break
            if got is _TIMEOUT:
                yield KEEPALIVE
                continue
            if got is None:
                break
            data, err = sj.render(got)
            if err is None:
                sj.pending.prefetch()
            if data:
                yield data
        if err is not None:
            yield sse_error(err, prep.route.key_mask)
            return
        yield await prep.finish_stream(sj.writer) + DONE
    finally:
        sj.pending.cancel()
        if sj.guard.release():
            prep.ctx.note = prep.ctx.note or "cancelled"


__all__ = ["start_stream", "sse_body", "StreamJob", "SSE_HEADERS", "KEEPALIVE", "DONE"]
