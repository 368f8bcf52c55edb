"""The app-owned cancel queue: ``/cancel/{id}`` for jobs nobody is waiting for any more,
and ``/status/{id}?ttl=`` for jobs whose result was read (``retain``): the calls about a job
that outlive its request.

A request whose client went away (or that timed out) must not await its own ``/cancel``:
under uvicorn its generator/handler is being cancelled at that moment (DESIGN.md
"Disconnects"). It calls ``CancelQueue.submit`` (synchronous, never blocks) and the
queue's own task sends the cancel, outliving the request.

- duplicates coalesce (a job queued or in flight is not queued twice);
- at most ``concurrency`` cancels in flight (RunPod allows 20 concurrent ``/cancel``);
- 429 / 5xx / network errors are retried (``adapters.retries.RetryPolicy``: ``Retry-After``
  honoured, else a pause doubling from ``backoff_s`` up to ``RETRY_MAX_S``) at most ``retries``
  times (``[timing] cancel_retries``: the default rides out about a minute of refusals), each
  try holding one of the ``concurrency`` slots (a pause holds none); 404 (job already gone)
  counts as done;
- ``submit_when_known(task, ...)`` handles a job whose id is not known yet (a
  ``/runsync`` still in flight when the client left): when the call returns a
  non-terminal job, that job is cancelled.

``retain(client, endpoint, job_id, ttl_ms)`` shortens RunPod's retention of a result podgate
has read (RunPod keeps a ``/runsync`` result for a minute, a ``/run`` one for 30 minutes;
nobody will read it again, and it holds the prompt and the answer). Best effort and cheap: at
most ``RETAIN_CONCURRENCY`` calls at once, at most ``RETAIN_PENDING`` waiting (more are
dropped), no retries, failures logged at debug level, and none sent at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from operator import attrgetter

from adapters.errors import KeyMask
from adapters.retries import RetryPolicy
from adapters.runpod_client import JobStatus, RunPodQueueClient
from adapters.upstream import RunPodError

log = logging.getLogger("podgate.cancel")

RETRY_MAX_S = 10.0
"""The longest pause between two tries of one ``/cancel`` (without ``Retry-After``)."""
RETAIN_CONCURRENCY = 4
RETAIN_PENDING = 1000


class CancelQueue:
    def __init__(self, *, concurrency: int = 20, retries: int = 10, backoff_s: float = 0.5):
        self._queue: asyncio.Queue[tuple[RunPodQueueClient, str, str]] = asyncio.Queue()
        self._pending: dict[tuple[str, str], float] = {}
        """(endpoint, job id) → when its cancel was queued (``time.monotonic()``)."""
        self._sem = asyncio.Semaphore(concurrency)
        # /cancel is idempotent: any failure that may pass is retried
        self._retry = RetryPolicy(attrgetter("transient"), retries, backoff_s, RETRY_MAX_S)
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        self.sent = 0
        self.failed = 0
        self.on_done: Callable[[str, str, bool], None] | None = None
        """Test/metrics hook: called with (endpoint, job_id, ok) after each cancel."""
        self.on_lag: Callable[[float], None] | None = None
        """Console hook: called with the seconds from ``submit`` to RunPod's answer of each
        cancel that went through (its lag: retries and waits for a slot included)."""
        self.key_mask = KeyMask()
        """The configured keys, masked in the upstream's messages this queue logs (set by the app)."""
        self._retaining: set[asyncio.Task] = set()
        self._retain_sem = asyncio.Semaphore(RETAIN_CONCURRENCY)
        self.retained = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="podgate-cancel-queue")

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop."""
        if self._pending:
            log.info("sending %d queued cancel(s) before closing", len(self._pending))
        try:
            await asyncio.wait_for(self._drain(), timeout)
        except TimeoutError:
            log.warning("cancel queue closed with %d cancels unsent", len(self._pending))
        tasks = [*self._tasks, *self._retaining, *([self._runner] if self._runner else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None

    async def _drain(self) -> None:
        while self._pending or self._tasks:
            await asyncio.sleep(0.01)

    @property
    def depth(self) -> int:
        """Cancels queued or in flight (not yet sent, or being retried)."""
        return len(self._pending)

    # -- submit -----------------------------------------------------------------------
    def submit(self, client: RunPodQueueClient, endpoint: str, job_id: str) -> None:
        """Queue ``/cancel/{job_id}``; returns at once (safe inside a dying request)."""
        key = (endpoint, job_id)
        if not job_id or key in self._pending:
            return
        self._pending[key] = time.monotonic()
        self._queue.put_nowait((client, endpoint, job_id))

    def submit_when_known(
        self, call: Awaitable[JobStatus] | asyncio.Task, client: RunPodQueueClient, endpoint: str
    ) -> None:
        """Cancel the job a still-running submit call (``/runsync``) will return, unless it
        returns a terminal job. The call is awaited by a task of this queue."""
        task = call if isinstance(call, asyncio.Task) else asyncio.ensure_future(call)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if t.cancelled() or t.exception() is not None:
                return
            status = t.result()
            if status.id and not status.terminal:
                self.submit(client, endpoint, status.id)

        self._tasks.add(task)
        task.add_done_callback(done)

    def retain(self, client: RunPodQueueClient, endpoint: str, job_id: str, ttl_ms: int) -> None:
        """Shorten the retention of a job's result to ``ttl_ms`` (module docstring); returns at once."""
        if not job_id or ttl_ms <= 0 or len(self._retaining) >= RETAIN_PENDING:
            return
        task = asyncio.get_running_loop().create_task(self._retain(client, endpoint, job_id, ttl_ms))
        self._retaining.add(task)
        task.add_done_callback(self._retaining.discard)

    async def _retain(self, client: RunPodQueueClient, endpoint: str, job_id: str, ttl_ms: int) -> None:
        try:
            async with self._retain_sem:
                await client.status(endpoint, job_id, ttl_ms=ttl_ms)
            self.retained += 1
        except RunPodError as exc:  # gone already, or RunPod busy: the result expires on its own
            log.debug("status?ttl for %s/%s failed: %s", endpoint, job_id, self.key_mask.text(exc.message))

    # -- the sender -------------------------------------------------------------------
    async def _cancel(self, client: RunPodQueueClient, endpoint: str, job_id: str) -> None:
        """One try: it holds one of the ``concurrency`` slots (a pause between tries does not)."""
        async with self._sem:
            await client.cancel(endpoint, job_id)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            t = asyncio.get_running_loop().create_task(self._send(*item))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _send(self, client: RunPodQueueClient, endpoint: str, job_id: str) -> None:
        ok = False
        try:
            await self._retry.call(self._cancel, client, endpoint, job_id)
            ok = True
        except RunPodError as exc:
            if exc.status == 404:
                ok = True  # already gone (finished and expired, or TTL)
            else:
                log.warning("cancel %s/%s failed: %s", endpoint, job_id, self.key_mask.text(exc.message))
        except Exception:  # never let the queue die
            log.exception("cancel %s/%s crashed", endpoint, job_id)
        queued_at = self._pending.pop((endpoint, job_id), None)
        if ok:
            self.sent += 1
            if self.on_lag is not None and queued_at is not None:
                self.on_lag(time.monotonic() - queued_at)
        else:
            self.failed += 1
        if self.on_done:
            self.on_done(endpoint, job_id, ok)
