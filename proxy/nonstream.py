"""The non-streaming path: ``/runsync?wait=``, then ``/status`` polling, then one OpenAI object.

The client may leave at any moment: the whole wait races ``http.disconnect``. If it
leaves while ``/runsync`` is in flight (the job id is not known yet), the cancel queue
takes over that call and cancels the job it returns; afterwards the job id is known and
``/cancel`` is queued at once. A request that outlives ``request_timeout_s`` is cancelled
upstream and answered 504.
"""

from __future__ import annotations

import asyncio
import time

from adapters.errors import to_exception
from adapters.transport import JobStatus, RunPodError
from proxy.errors import from_runpod, request_timeout
from proxy.jobs import ClientDisconnected, JobGuard, events_of_final, first_error, race_disconnect
from proxy.prepare import Prepared


async def run_nonstream(prep: Prepared) -> bytes:
    """The response body (JSON bytes) for a non-streaming request; raises ``OpenAIError``
    (or ``ClientDisconnected`` when nobody is waiting any more)."""
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
    except RunPodError as exc:
        raise from_runpod(exc) from None
    ctx.job_id = st.id
    guard = JobGuard(prep.cancels, route.client, route.endpoint, st.id)
    try:
        if not st.terminal:
            st = await race_disconnect(prep.receive, _poll_status(prep, st, deadline))
        guard.finished = True
    except ClientDisconnected:
        ctx.note = "client-disconnected"
        raise
    except asyncio.TimeoutError:
        ctx.note = "timeout"
        raise request_timeout() from None
    except RunPodError as exc:
        raise from_runpod(exc) from None
    finally:
        if guard.release():
            ctx.note = ctx.note or "cancelled"
    events = events_of_final(prep.decoder(), st)
    err = first_error(events)
    if err is not None:
        raise to_exception(err)
    return await prep.aggregate(events)


async def _poll_status(prep: Prepared, st: JobStatus, deadline: float) -> JobStatus:
    route, t = prep.route, prep.timing
    delay = t.status_poll_min_ms / 1000.0
    while not st.terminal:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, t.status_poll_max_ms / 1000.0)
        st = await route.client.status(route.endpoint, st.id)
    return st
