"""The non-streaming path: ``/runsync?wait=``, then the job's events, then one OpenAI object.

``/runsync`` submits the job and often brings its whole result. When it does not — the job
is still running after ``runsync_wait_ms``, or it completed with an empty output because
its worker is a generator without ``return_aggregate_stream`` (RunPod's final output is
then ``[]`` and the tokens exist only on ``/stream``) — the job is read through
``JobEvents`` like a stream (``/stream`` polls, ``/status`` at the end only where needed)
and its events are collected. A job that runs again from the start (its worker was lost)
is collected again from the start: nothing was sent yet, so the re-run is harmless.

The client may leave at any moment: the whole wait races ``http.disconnect``. If it
leaves while ``/runsync`` is in flight (the job id is not known yet), the cancel queue
takes over that call and cancels the job it returns; afterwards the job id is known and
``/cancel`` is queued at once. A request that outlives ``request_timeout_s`` is cancelled
upstream and answered 504.
"""

from __future__ import annotations

import asyncio
import time

from msgspec import UNSET

from adapters.errors import to_exception
from adapters.events import Event
from adapters.transport import JobStatus
from proxy.errors import request_timeout
from proxy.jobs import ClientDisconnected, JobEvents, JobGuard, events_of_final, first_error, race_disconnect
from proxy.prepare import Prepared


async def run_nonstream(prep: Prepared) -> bytes:
    """The response body (JSON bytes) for a non-streaming request; raises ``OpenAIError``
    or ``RunPodError`` (rendered by ``proxy.errors``), or ``ClientDisconnected`` when nobody
    is waiting any more."""
    route, t, ctx = prep.route, prep.timing, prep.ctx
    deadline = time.monotonic() + t.request_timeout_s
    submit = asyncio.ensure_future(route.client.runsync(route.endpoint, prep.job_input, wait_ms=t.runsync_wait_ms))
    try:
        st: JobStatus = await race_disconnect(prep.receive, asyncio.wait_for(asyncio.shield(submit), t.request_timeout_s))
    except ClientDisconnected:
        ctx.note = "client-disconnected"
        prep.cancels.submit_when_known(submit, route.client, route.endpoint)
        raise
    except asyncio.TimeoutError:
        ctx.note = "timeout"
        prep.cancels.submit_when_known(submit, route.client, route.endpoint)
        raise request_timeout() from None
    ctx.job_id = st.id
    guard = JobGuard(prep.cancels, route.client, route.endpoint, st.id)
    guard.finished = st.terminal
    try:
        if st.terminal and not _output_on_stream(st):
            events = events_of_final(prep.decoder(), st)
        else:
            source = JobEvents(route.client, route.endpoint, st.id, prep.decoder, t, guard, on_rerun="restart")
            collect = asyncio.wait_for(_collect(source), max(0.0, deadline - time.monotonic()))
            events = await race_disconnect(prep.receive, collect)
    except ClientDisconnected:
        ctx.note = "client-disconnected"
        raise
    except asyncio.TimeoutError:
        ctx.note = "timeout"
        raise request_timeout() from None
    finally:
        if guard.release():
            ctx.note = ctx.note or "cancelled"
    err = first_error(events)
    if err is not None:
        raise to_exception(err)
    return await prep.aggregate(events)


def _output_on_stream(st: JobStatus) -> bool:
    """A completed job whose output is empty: a generator's worker without
    ``return_aggregate_stream`` leaves ``[]`` there, and its tokens on ``/stream``."""
    return st.status == "COMPLETED" and (st.output is UNSET or st.output is None or st.output == [] or st.output == "")


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
