"""One RunPod job seen from one proxy request: its events, and its cancellation.

- ``JobEvents`` is the one way the proxy reads a job (streaming or not): ``/stream/{id}``
  polls, adaptive — again at once while data flows, asking the upstream to hold
  (``?wait=``), backing off (doubling, bounded) when it answers empty polls without
  holding — and the items turned into normalized events by the worker format's decoder.
  At the end it calls ``/status`` once only where needed: for the error of a
  FAILED/TIMED_OUT/CANCELLED job, or for the output of a job that streamed nothing
  (aggregate-only output).
- Re-runs: a job whose worker was lost goes back to the queue and runs again from the
  start. ``JobEvents`` notices it — the job IN_QUEUE again after it ran, or, when its output
  resumes after a pause of ``timing.restart_check_s``, a different run in ``/status``
  (``workerId``, ``delayTime``) than at the pause. A re-run is harmless while nothing of
  the lost run was read. Once events of it were delivered, ``on_rerun="fail"`` ends with
  a ``job_restarted`` error (a stream cannot take back what it sent; the caller cancels
  the re-run) and ``"restart"`` reads the re-run afresh (nothing was sent yet:
  ``restarts`` counts it, so the reader drops what it collected).
- The poll scheduler: every poll takes its place in its endpoint's line of ``/stream`` polls
  (the budget, ``adapters.budgets``: one line per endpoint, shared by all its live streams,
  served smallest order first at the budget's rate). A poll's order is when it was asked for,
  ``FIRST_OUTPUT_LEAD_S`` earlier while the stream waits for its first output (the time to
  first token is what a client feels most; a non-streaming request, whose first token
  nobody sees, gets no lead) and ``IDLE_LAG_S`` later when its last poll brought
  nothing after output had come (an idle stream: its next output is the least urgent). A
  stream asks again only when its poll came back, so under load the streams of each kind are
  served round-robin, each stream's wait grows smoothly with the number of streams, and none
  starves: a poll's order is fixed while later ones' grow with the clock.
- Polls the upstream refused are retried (``adapters.retries.RetryPolicy``, at most
  ``POLL_RETRIES`` times): ``/stream`` only when RunPod did not act on it
  (``RunPodError.refused``: its answers consume chunks), ``/status`` also after timeouts
  and 5xx (``transient``: it is idempotent).
- ``JobGuard`` remembers whether the job reached a terminal state; ``release()`` at the
  end of a request queues ``/cancel`` (through the app's ``CancelQueue``) when it did not.
- ``race_disconnect`` runs a coroutine against the client's ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any, Literal, TypeVar

from msgspec import UNSET as _UNSET

from adapters.errors import from_job_status
from adapters.events import ErrorEvent, Event
from adapters.retries import RetryPolicy
from adapters.runpod_client import JobStatus, RunPodQueueClient, StreamPoll
from adapters.upstream import RunPodError
from proxy.cancel import CancelQueue
from proxy.settings import TimingSettings

T = TypeVar("T")

log = logging.getLogger("podgate.jobs")

#: How often one poll (``/stream`` or ``/status``) that failed retryably is retried, and
#: the longest pause between tries (``adapters.retries.RetryPolicy``: after ``Retry-After``,
#: else doubling from ``timing.poll_min_ms``).
POLL_RETRIES = 5
POLL_RETRY_MAX_S = 2.0

#: The poll scheduler's leads (module docstring), in seconds on the ``time.monotonic`` clock.
#: The first output's lead must be longer than the line's wait, or a first poll still queues
#: behind flowing ones: at 200 streams on one endpoint (about 1.5 s of line) a lead of 1 s left
#: the first token p50 422 ms after the worker's yield, 5 s made it 4 ms (``bench/bench_scale.py``).
FIRST_OUTPUT_LEAD_S = 5.0
IDLE_LAG_S = 0.5


def job_restarted() -> ErrorEvent:
    """The job ran again from the start after part of its first run was sent."""
    return ErrorEvent(
        "The job was re-run on RunPod after its worker was lost, and the first run's output was "
        "already partly sent; the answer cannot be continued, and the re-run was cancelled.",
        type="server_error", code="job_restarted", status=502,
    )


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


class JobGuard:
    """Cancels the job when the request ends before the job did; when it did, shortens the
    retention of its result to ``result_ttl_ms`` (0: RunPod's own)."""

    __slots__ = ("client", "endpoint", "job_id", "cancels", "finished", "released", "result_ttl_ms")

    def __init__(self, cancels: CancelQueue, client: RunPodQueueClient, endpoint: str, job_id: str, *,
                 result_ttl_ms: int = 0):
        self.cancels = cancels
        self.client = client
        self.endpoint = endpoint
        self.job_id = job_id
        self.finished = False
        self.released = False
        self.result_ttl_ms = result_ttl_ms

    def release(self) -> bool:
        """End of the request: queue ``/cancel`` unless the job finished (then its result's
        ``/status?ttl=``). Idempotent. Returns True when a cancel was queued. Never blocks,
        never raises."""
        if self.released:
            return False
        self.released = True
        if self.finished:
            self.cancels.retain(self.client, self.endpoint, self.job_id, self.result_ttl_ms)
            return False
        self.cancels.submit(self.client, self.endpoint, self.job_id)
        return True


def _run_of(job: JobStatus) -> tuple[Any, Any]:
    """What tells one run of a job from another in its status: the worker that took it and
    how long it waited in the queue before this run started."""
    return job.worker_id, job.delay_time


class JobEvents:
    """The events of one job, batch by batch, from ``/stream`` polls (module docstring)."""

    def __init__(self, client: RunPodQueueClient, endpoint: str, job_id: str, new_decoder: Callable[[], Any],
                 timing: TimingSettings, guard: JobGuard | None = None, *,
                 on_rerun: Literal["fail", "restart"] = "fail", first_output_lead_s: float = FIRST_OUTPUT_LEAD_S):
        self._client = client
        self._first_output_lead = first_output_lead_s
        self._endpoint = endpoint
        self._job_id = job_id
        self._new_decoder = new_decoder
        self._decoder = new_decoder()
        self._t = timing
        self._guard = guard
        self._on_rerun = on_rerun
        self._delay = timing.poll_min_ms / 1000.0
        first = timing.poll_min_ms / 1000.0
        self._retry_refused = RetryPolicy(attrgetter("refused"), POLL_RETRIES, first, POLL_RETRY_MAX_S)
        self._retry_transient = RetryPolicy(attrgetter("transient"), POLL_RETRIES, first, POLL_RETRY_MAX_S)
        self._running = False  # the current run was seen IN_PROGRESS or with items
        self._saw_items = False  # items of the current run were read
        self._flowing = False  # the last poll brought items
        self._delivered = False  # events of the current run were returned
        self._items_at = 0.0  # when items last came
        self._paused_run: tuple[Any, Any] | None = None  # the run in /status during a pause
        self.restarts = 0
        self.ended = False

    async def next(self) -> list[Event] | None:
        """The next non-empty batch of events; ``None`` once the job has ended and
        everything was delivered. Raises ``RunPodError`` when an upstream call fails."""
        if self.ended:
            return None
        t = self._t
        wait_ms = t.stream_wait_ms or None
        while True:
            started = time.monotonic()
            poll = await self._poll(wait_ms)
            items = poll.stream
            self._flowing = bool(items)
            if poll.status == "IN_QUEUE" and self._running:  # back in the queue: it runs again
                if (end := self._rerun("back in the queue")) is not None:
                    return end
                items = []  # what is left is the lost run's
            elif poll.status == "IN_PROGRESS":
                self._running = True
            events: list[Event] = []
            if items:
                if self._paused_run is not None and await self._another_run():
                    if (end := self._rerun("another run after a pause")) is not None:
                        return end
                self._running = self._saw_items = True
                self._items_at = time.monotonic()
                self._paused_run = None
                self._delay = t.poll_min_ms / 1000.0
                feed = self._decoder.feed
                for item in items:
                    events.extend(feed(item.output))
            if poll.terminal:
                if items:
                    if events:  # deliver these, then one more poll drains what is left
                        return self._deliver(events)
                    continue
                events.extend(await self._finish(poll.status))
                return self._deliver(events) or None
            if events:
                return self._deliver(events)
            if items:
                continue  # data flowing (a partial SSE event): poll again at once
            if self._saw_items and self._paused_run is None and time.monotonic() - self._items_at >= t.restart_check_s:
                if (end := await self._note_paused_run()) is not None:
                    return end
            held = wait_ms is not None and (time.monotonic() - started) * 1000 >= wait_ms * 0.5
            if not held:
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, t.poll_max_ms / 1000.0)

    def _deliver(self, events: list[Event]) -> list[Event]:
        if events:
            self._delivered = True
        return events

    async def _note_paused_run(self) -> list[Event] | None:
        """The output paused: note which run is going on (best effort: without an answer
        from ``/status`` the resumed output is taken as the same run's)."""
        try:
            job = await self._status()
        except RunPodError:
            return None
        if job.status == "IN_QUEUE":
            return self._rerun("back in the queue")
        if not job.terminal:
            self._paused_run = _run_of(job)
        return None

    async def _another_run(self) -> bool:
        """The output resumed after a pause: is it from another run than the paused one?"""
        try:
            job = await self._status()
        except RunPodError:
            return False
        if job.status == "IN_QUEUE":
            return True
        run = _run_of(job)
        return run != (None, None) and run != self._paused_run

    def _rerun(self, seen: str) -> list[Event] | None:
        """The job runs again from the start. The events to end with, or None to go on
        reading: the re-run is harmless when nothing of the lost run was read, and is read
        afresh when nothing was delivered yet or in ``restart`` mode (``restarts`` tells
        the reader to drop what it collected)."""
        self._running = False
        self._paused_run = None
        log.warning("job %s runs again from the start (%s)%s", self._job_id, seen,
                    "" if self._saw_items else ": nothing of the lost run was read")
        if not self._saw_items:
            return None
        if self._on_rerun == "restart" or not self._delivered:
            self._decoder = self._new_decoder()
            self._saw_items = self._delivered = False
            self.restarts += 1
            return None
        self.ended = True
        return [job_restarted()]

    def order(self) -> float:
        """This stream's next poll's place in its endpoint's line (module docstring)."""
        now = time.monotonic()
        if not self._saw_items:
            return now - self._first_output_lead
        return now if self._flowing else now + IDLE_LAG_S

    async def _poll(self, wait_ms: int | None) -> StreamPoll:
        """One ``/stream`` poll, retried only when RunPod refused it (nothing consumed); a
        poll that may have consumed chunks (timeout after sending) is never repeated."""
        return await self._retry_refused.call(self._client.stream, self._endpoint, self._job_id, wait_ms=wait_ms,
                                              order=self.order())

    async def _status(self) -> JobStatus:
        """One ``/status`` call, retried like a poll (and after timeouts: it is idempotent)."""
        return await self._retry_transient.call(self._client.status, self._endpoint, self._job_id)

    async def _finish(self, status: str) -> list[Event]:
        """The job is terminal and its stream drained: flush the decoder, and ask
        ``/status`` only for what the stream cannot carry."""
        self.ended = True
        if self._guard is not None:
            self._guard.finished = True
        if status == "COMPLETED" and self._saw_items:
            return self._decoder.close()
        job = await self._status()
        if status == "COMPLETED":  # nothing was streamed: the output is aggregate-only
            return events_of_final(self._decoder, job)
        return [*self._decoder.close(), *events_of_final(self._decoder, job, status)]


def events_of_final(decoder: Any, job: JobStatus, status: str | None = None) -> list[Event]:
    """Events of a terminal status body (``/runsync`` or ``/status``); ``status``
    overrides the body's status (what ``/stream`` reported)."""
    status = status or job.status
    if status == "COMPLETED":
        if job.output is None or job.output is _UNSET:
            return []
        return list(decoder.decode_final(job.output))
    err = from_job_status(status, job.error)
    return [err] if err is not None else []


def first_error(events: list[Event]) -> ErrorEvent | None:
    for ev in events:
        if type(ev) is ErrorEvent:
            return ev
    return None


async def race_disconnect(receive: Any, aw: Awaitable[T]) -> T:
    """Await ``aw`` unless the client disconnects first (then ``ClientDisconnected``; the
    awaitable's task is cancelled unless the caller shielded it)."""
    work = asyncio.ensure_future(aw)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        watch.cancel()
        raise
    if work in done:
        watch.cancel()
        return work.result()
    work.cancel()
    raise ClientDisconnected()


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return

