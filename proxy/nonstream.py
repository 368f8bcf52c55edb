"""The non-streaming path: ``/runsync?wait=``, then the job's events, then one OpenAI object.

``run_job`` runs one job for any request that waits for its whole answer (completions
here, embeddings in ``proxy.embeddings``); ``run_nonstream`` makes a completion of it.

``/runsync`` submits the job (retried while RunPod refuses it, ``proxy.submit``) and often
brings its whole result. When it does not — the job is still running after
``runsync_wait_ms``, or it completed with an empty output because its worker is a generator
without ``return_aggregate_stream`` (RunPod's final output is then ``[]`` and the tokens
exist only on ``/stream``) — the job is read through
``JobEvents`` like a stream (``/stream`` polls, ``/status`` at the end only where needed)
and its events are collected. A job that runs again from the start (its worker was lost)
is collected again from the start: nothing was sent yet, so the re-run is harmless. A job
that ended with an error is run again with ``/retry`` when its model allows it
(``[[models]] retries``; ``proxy.submit.rerun_failed``).

The client may leave at any moment: the whole wait races ``http.disconnect``. If it
leaves while ``/runsync`` is in flight (the job id is not known yet), the cancel queue
takes over that call and cancels the job it returns; afterwards the job id is known and
``/cancel`` is queued at once. A request that outlives ``request_timeout_s`` is cancelled
upstream and answered 504; one still waiting when the server's drain expires
(``proxy.drain``) is cancelled the same way and answered 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from msgspec import UNSET

from adapters.assemble import Aggregator
from adapters.errors import to_exception
from adapters.events import Event
from adapters.runpod_client import JobStatus
from proxy.cancel import CancelQueue
from proxy.completion import Completion
from proxy.context import RequestContext
from proxy.drain import Drain, ShuttingDown
from proxy.errors import request_timeout
from proxy.jobs import ClientDisconnected, JobEvents, JobGuard, events_of_final, first_error, race_disconnect
from proxy.settings import TimingSettings
from proxy.submit import Submission, rerun_failed, submit_policy
from proxy.upstreams import ModelBinding

_enc = msgspec.json.Encoder()

_ABANDONED: dict[type[BaseException], str] = {
    ClientDisconnected: "client-disconnected", ShuttingDown: "shutdown", TimeoutError: "timeout"}
"""The request's note when it ends before its submit was answered."""


async def run_nonstream(completion: Completion, ctx: RequestContext, *, receive: Any, cancels: CancelQueue,
                        timing: TimingSettings, drain: Drain) -> bytes:
    """The response body (JSON bytes) for a non-streaming request; raises ``OpenAIError``
    or ``RunPodError`` (rendered by ``proxy.errors``), or ``ClientDisconnected`` when nobody
    is waiting any more."""
    events = await run_job(completion.binding, completion.job_input, completion.new_decoder, ctx,
                           receive=receive, cancels=cancels, timing=timing, drain=drain)
    return await _response_body(completion, ctx, events)


async def run_job(binding: ModelBinding, job_input: Any, new_decoder: Callable[[], Any], ctx: RequestContext, *,
                  receive: Any, cancels: CancelQueue, timing: TimingSettings, drain: Drain) -> list[Event]:
    """Run one job for a request that waits for the whole answer (module docstring): its
    events, decoded by a fresh ``new_decoder()`` per run. Raises the job's first error
    (``OpenAIError``), ``RunPodError`` when RunPod failed, ``ClientDisconnected``, the
    request timeout (504) or ``ShuttingDown`` (503); the job is cancelled whenever the
    request ends before it."""
    deadline = time.monotonic() + timing.request_timeout_s
    drain.check()
    submit = Submission(partial(binding.client.runsync, binding.endpoint, job_input, wait_ms=timing.runsync_wait_ms),
                        submit_policy(timing), deadline, keep=True)
    try:
        job: JobStatus = await race_disconnect(
            receive, drain.bound(asyncio.wait_for(submit.result(), timing.request_timeout_s)))
    except (ClientDisconnected, ShuttingDown, TimeoutError) as exc:  # the job may exist: cancel it once known
        ctx.note = _ABANDONED[type(exc)]
        ctx.cancelled = True
        if submit.attempt is not None:
            cancels.submit_when_known(submit.attempt, binding.client, binding.endpoint)
        if isinstance(exc, TimeoutError):
            raise request_timeout() from None
        raise
    ctx.job_id = job.id
    guard = JobGuard(cancels, binding.client, binding.endpoint, job.id, result_ttl_ms=timing.result_ttl_ms)
    guard.finished = job.terminal
    reruns = binding.settings.retries
    try:
        while True:
            if job.terminal and not _output_on_stream(job):
                events = events_of_final(new_decoder(), job)
            else:
                source = JobEvents(binding.client, binding.endpoint, job.id, new_decoder, timing, guard,
                                   on_rerun="restart", first_output_lead_s=0.0)  # nobody sees its first token
                collect = asyncio.wait_for(_collect(source), max(0.0, deadline - time.monotonic()))
                events = await race_disconnect(receive, drain.bound(collect))
            if reruns <= 0 or first_error(events) is None or not await rerun_failed(
                    binding.client, binding.endpoint, job.id, timing, deadline, receive=receive, drain=drain,
                    cancels=cancels):
                break
            reruns -= 1  # the job failed and runs again (nothing was sent): read it afresh
            guard.finished = False
            job = JobStatus(id=job.id, status="IN_QUEUE")
    except ClientDisconnected:
        ctx.note = "client-disconnected"
        raise
    except ShuttingDown:
        ctx.note = "shutdown"
        raise
    except TimeoutError:
        ctx.note = "timeout"
        raise request_timeout() from None
    finally:
        if guard.release():
            ctx.note = ctx.note or "cancelled"
            ctx.cancelled = True
    err = first_error(events)
    if err is not None:
        raise to_exception(err)
    return events


async def _response_body(completion: Completion, ctx: RequestContext, events: list[Event]) -> bytes:
    """One ``chat.completion`` / ``text_completion`` (JSON) from a job's events (without
    an error), counted by podgate when the worker reported no usage."""
    agg = Aggregator(completion.kind, id=completion.response_id, model=completion.model,
                     created=completion.created, n=completion.params.choices)
    agg.feed(events)
    usage, reasons = None, None
    if agg.usage is None:
        usage, reasons = await completion.count(ctx, agg.completion_texts(), agg.open_choices())
        ctx.record_usage(usage.prompt_tokens, usage.completion_tokens, estimated=True)
    else:
        ctx.record_usage(agg.usage.prompt_tokens, agg.usage.completion_tokens)
    return _enc.encode(agg.result(usage, reasons))


def _output_on_stream(job: JobStatus) -> bool:
    """A completed job whose output is empty: a generator's worker without
    ``return_aggregate_stream`` leaves ``[]`` there, and its tokens on ``/stream``."""
    output = job.output
    return job.status == "COMPLETED" and (output is UNSET or output is None or output == [] or output == "")


async def _collect(source: JobEvents) -> list[Event]:
    """Every event of the job, up to its end or its first error; when the job ran again
    from the start, only the events of the run that finished."""
    events: list[Event] = []
    restarts = source.restarts
    while (batch := await source.next()) is not None:
        if source.restarts != restarts:
            restarts, events = source.restarts, []
        events.extend(batch)
        if first_error(batch) is not None:
            break
    if source.restarts != restarts:
        events = []
    return events
