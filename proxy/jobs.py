"""One RunPod job seen from one proxy request: its events, and its cancellation.

- ``JobEvents`` polls ``/stream/{id}`` adaptively and turns the items into normalized
  events through the worker format's decoder: polls again at once while data flows,
  asks the upstream to hold (``?wait=``), and backs off (doubling, bounded) when the
  upstream answers empty polls without holding. At the end it calls ``/status`` once
  only where needed: for the error of a FAILED/TIMED_OUT/CANCELLED job, or for the
  output of a job that streamed nothing (aggregate-only output).
- ``JobGuard`` remembers whether the job reached a terminal state; ``release()`` at the
  end of a request queues ``/cancel`` (through the app's ``CancelQueue``) when it did not.
- ``race_disconnect`` runs a coroutine against the client's ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, TypeVar

from msgspec import UNSET as _UNSET

from adapters.errors import from_job_status
from adapters.events import ErrorEvent, Event
from adapters.transport import JobStatus, RunPodClient, RunPodError
from proxy.cancel import CancelQueue
from proxy.settings import TimingSettings

T = TypeVar("T")

#: How often one ``/stream`` poll the upstream refused is retried, and the longest pause.
POLL_RETRIES = 5
POLL_RETRY_MAX_S = 2.0


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


class JobGuard:
    """Cancels the job when the request ends before the job did."""

    __slots__ = ("client", "endpoint", "job_id", "cancels", "finished", "released")

    def __init__(self, cancels: CancelQueue, client: RunPodClient, endpoint: str, job_id: str):
        self.cancels = cancels
        self.client = client
        self.endpoint = endpoint
        self.job_id = job_id
        self.finished = False
        self.released = False

    def release(self) -> bool:
        """End of the request: queue ``/cancel`` unless the job finished. Idempotent.
        Returns True when a cancel was queued. Never blocks, never raises."""
        if self.released:
            return False
        self.released = True
        if self.finished:
            return False
        self.cancels.submit(self.client, self.endpoint, self.job_id)
        return True


class JobEvents:
    """The events of one job, batch by batch, from ``/stream`` polls."""

    def __init__(self, client: RunPodClient, endpoint: str, job_id: str, decoder: Any, timing: TimingSettings,
                 guard: JobGuard | None = None):
        self._client = client
        self._endpoint = endpoint
        self._job_id = job_id
        self._decoder = decoder
        self._t = timing
        self._guard = guard
        self._delay = timing.poll_min_ms / 1000.0
        self._saw_items = False
        self.ended = False
        self.final_status: str | None = None

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
            events: list[Event] = []
            if poll.stream:
                self._saw_items = True
                self._delay = t.poll_min_ms / 1000.0
                feed = self._decoder.feed
                for item in poll.stream:
                    events.extend(feed(item.output))
            if poll.terminal:
                if poll.stream:
                    if events:  # deliver these, then one more poll drains what is left
                        return events
                    continue
                events.extend(await self._finish(poll.status))
                return events or None
            if events:
                return events
            if poll.stream:
                continue  # data flowing (a partial SSE event): poll again at once
            held = wait_ms is not None and (time.monotonic() - started) * 1000 >= wait_ms * 0.5
            if not held:
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, t.poll_max_ms / 1000.0)

    async def _poll(self, wait_ms: int | None) -> Any:
        """One ``/stream`` poll. A poll the upstream refused without consuming anything
        (429 rate limit, 502/503, or a connection that never reached it) is retried a few
        times, honouring ``Retry-After``, so that a busy moment does not end a stream;
        a poll that may have consumed chunks (timeout after sending) is never repeated."""
        delay = self._t.poll_min_ms / 1000.0
        for attempt in range(POLL_RETRIES + 1):
            try:
                return await self._client.stream(self._endpoint, self._job_id, wait_ms=wait_ms)
            except RunPodError as exc:
                refused = exc.status in (429, 502, 503) and (exc.answered or exc.status == 502)
                if not refused or attempt == POLL_RETRIES:
                    raise
                await asyncio.sleep(min(exc.retry_after or delay, POLL_RETRY_MAX_S))
                delay = min(delay * 2, POLL_RETRY_MAX_S)
        raise AssertionError("unreachable")

    async def _finish(self, status: str) -> list[Event]:
        """The job is terminal and its stream drained: flush the decoder, and ask
        ``/status`` only for what the stream cannot carry."""
        self.ended = True
        self.final_status = status
        if self._guard is not None:
            self._guard.finished = True
        if status == "COMPLETED" and self._saw_items:
            return self._decoder.close()
        st = await self._client.status(self._endpoint, self._job_id)
        if status == "COMPLETED":  # nothing was streamed: the output is aggregate-only
            return events_of_final(self._decoder, st)
        return [*self._decoder.close(), *events_of_final(self._decoder, st, status)]


def events_of_final(decoder: Any, st: JobStatus, status: str | None = None) -> list[Event]:
    """Events of a terminal status body (``/runsync`` or ``/status``); ``status``
    overrides the body's status (what ``/stream`` reported)."""
    status = status or st.status
    if status == "COMPLETED":
        if st.output is None or st.output is _UNSET:
            return []
        return list(decoder.decode_final(st.output))
    err = from_job_status(status, st.error)
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

