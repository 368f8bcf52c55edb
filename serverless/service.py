"""The endpoint service: RunPod Serverless operations on top of a :class:`JobStore`.

HTTP-agnostic core used by the routes (``serverless.routes``): validation of bodies (only
what every party downstream can decode, ``serverless.payloads``), long-poll loops (a worker's
poll ends, handing back what it took, when the worker closes the connection), webhooks on
terminal transitions, limits and the background sweeper that applies timeouts, TTLs and
lost-worker re-queues. Failures are raised as :class:`ApiError` (status + message), which
the app renders as ``{"error": ...}``. The service tells its :class:`EndpointMetrics` of
every terminal transition, every hand-out to a worker and every 429 (queue cap, limits).

Store outages (``serverless.outage``): a store that cannot reach its Redis raises
:class:`serverless.store.base.StoreUnavailable`. The operations a request can wait for retry
their store calls through the outage (:meth:`EndpointService._patient`: up to
``store_outage_wait``, a worker's result and stream posts up to ``worker_outage_wait``)
before the app answers 503 with ``Retry-After``; a long-poll whose own deadline passes
during an outage answers with the job as it last saw it. The sweeper skips its pass without
logging (the store logs the outage once) and does not count the outage against workers'
liveness (:class:`serverless.outage.OutageClock`).

Shutdown: :meth:`EndpointService.begin_shutdown` (called by ``serverless.app.serve`` as soon
as uvicorn starts shutting down) ends every held long-poll at once with the answer it would
give at its timeout, so that open connections close and the process exits promptly.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import msgspec

from serverless import jobs, payloads
from serverless.chunks import split_chunk
from serverless.jobs import COMPLETED, FAILED, IN_PROGRESS, EndpointHealth, Job, Outcome, SubmitRequest
from serverless.limits import Limiter, SharedRate
from serverless.metrics import EndpointMetrics
from serverless.outage import OutageClock, ride_out
from serverless.payloads import PayloadError
from serverless.settings import EndpointSettings
from serverless.store.base import JobStore, StoreUnavailable
from serverless.webhooks import WebhookSender

log = logging.getLogger("podgate.serverless")

_encode = msgspec.json.encode
_submit_decoder = msgspec.json.Decoder(SubmitRequest)
_done_decoder = msgspec.json.Decoder(jobs.DoneBody)
_stream_decoder = msgspec.json.Decoder(jobs.StreamBody)
_status_encoder = msgspec.json.Encoder()
_T = TypeVar("_T")


class ApiError(Exception):
    """An error for the client: HTTP status, message, optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _bad_body(exc: Exception) -> ApiError:
    return ApiError(400, f"invalid request body: {exc}")


def _decode(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """Decode a request body and check that what it carries can be passed on
    (:func:`serverless.payloads.check`); :class:`PayloadError` for every refusal."""
    try:
        value = decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(str(exc)) from None
    except RecursionError:  # msgspec's own depth limit, below which payloads.check bounds it
        raise payloads.too_deep() from None
    payloads.check(body)
    return value


def _is_object(raw: bytes) -> bool:
    return raw[:1] == b"{"


class EndpointService:
    """All operations of every configured endpoint. ``start()``/``stop()`` run the sweeper."""

    def __init__(self, settings: EndpointSettings, store: JobStore, metrics: EndpointMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.endpoints = frozenset(settings.endpoints)
        self.metrics = metrics if metrics is not None else EndpointMetrics(settings.endpoints)
        self.limiter = Limiter(settings.limits, settings.rate_window, on_limited=self.metrics.rate_limited,
                               shared=store if isinstance(store, SharedRate) else None)
        self.webhooks: WebhookSender | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._outage = OutageClock()
        self.clock = time.time
        #: set by :meth:`begin_shutdown`; ``_shutdown`` resolves then (made by the first hold).
        self.shutting_down = False
        self._shutdown: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        start_store = getattr(self.store, "start", None)
        if inspect.iscoroutinefunction(start_store):  # e.g. RedisStore: fail fast if Redis is down
            await start_store()
        self.webhooks = WebhookSender(retries=s.webhook_retries, interval=s.webhook_retry_interval,
                                      timeout=s.webhook_timeout)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    def begin_shutdown(self) -> None:
        """The server is shutting down: every held long-poll (job-take, job-stop, /runsync,
        /status-sync, /stream) answers now with what it last saw, as at its timeout (204 for
        take/stop, the current status or stream for callers), and none holds from now on.
        Idempotent."""
        self.shutting_down = True
        if self._shutdown is not None and not self._shutdown.done():
            self._shutdown.set_result(None)

    async def _hold(self, waiting: Coroutine[Any, Any, None], gone: asyncio.Future[None] | None = None) -> bool:
        """Await one store wait of a long-poll loop, cut short by :meth:`begin_shutdown` and
        by ``gone`` (the client closed the connection). ``False`` when the server is shutting
        down: the loop then answers with its last check (without another store call, so a
        take hands out no job to a worker that is about to lose this server)."""
        if self.shutting_down:
            waiting.close()
            return False
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((task, self._shutdown) if gone is None else (task, self._shutdown, gone),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()  # a no-op once the wait ended; else (shutdown, or we were cancelled) end it
        return not self.shutting_down

    async def stop(self) -> None:
        self.begin_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
        await self.store.close()

    async def _sweep_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.sweep_interval)
            now = self.clock()
            # workers could not be heard from while the store was out: not lost for that
            worker_timeout = s.worker_timeout + self._outage.allowance(now)
            for endpoint in s.endpoints:
                try:
                    finished = await self.store.sweep(endpoint, now=now, worker_timeout=worker_timeout,
                                                      max_attempts=s.max_attempts)
                    if s.ping_grace > 0:
                        finished += await self.store.requeue_unreported(endpoint, now=now, grace=s.ping_grace,
                                                                        max_attempts=s.max_attempts)
                except StoreUnavailable:  # logged once per outage by the store; try again next pass
                    self._outage.failed(now)
                    break
                except Exception:  # keep sweeping whatever one pass did
                    log.exception("sweep of endpoint %s failed", endpoint)
                    continue
                for job in finished:
                    self._terminal(job)
            else:
                self._outage.succeeded(now, s.worker_timeout)

    # --- shared helpers ---------------------------------------------------------------------

    async def _patient(self, call: Callable[[], Awaitable[_T]], budget: float | None = None) -> _T:
        """A store call of a request that can wait: retried through an outage for ``budget``
        seconds (default ``store_outage_wait``), then :class:`StoreUnavailable` (→ 503)."""
        return await ride_out(call, self.settings.store_outage_wait if budget is None else budget)

    async def _worker_post(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """A store call of a worker's result or stream post: retried longest (see
        ``serverless.outage``: the SDK drops a result after 3 failed attempts)."""
        return await ride_out(call, self.settings.worker_outage_wait)

    def _until(self, deadline: float) -> float:
        """The outage budget of a long-poll's store call: never past its own ``deadline``."""
        return min(self.settings.store_outage_wait, max(0.0, deadline - self.clock()))

    def check_endpoint(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            raise ApiError(404, "endpoint not found")

    def _terminal(self, job: Job) -> None:
        """A job just became terminal (this call is the only one told of it, in every
        replica): count it and fire its webhook."""
        log.debug("job %s %s on endpoint %s", job.id, job.status, job.endpoint)
        self.metrics.job_ended(job)
        if job.webhook and self.webhooks is not None:
            self.webhooks.send(job.webhook, self.status_json(job), job.id)

    def _after(self, outcome: Outcome) -> None:
        if outcome.changed and outcome.job.terminal:
            self._terminal(outcome.job)

    def status_json(self, job: Job) -> bytes:
        return _status_encoder.encode(jobs.status_body(job, self.clock()))

    @staticmethod
    def short_json(job: Job) -> bytes:
        return b'{"id":' + _encode(job.id) + b',"status":"' + job.status.encode() + b'"}'

    async def _job(self, endpoint: str, job_id: str) -> Job:
        job = await self._patient(lambda: self.store.get(endpoint, job_id, now=self.clock()))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    @staticmethod
    def _wait_ms(value: int | None, default: int, maximum: int, minimum: int = 0) -> float:
        """Clamp a ``?wait=`` value (ms) to ``[minimum, maximum]`` and return seconds."""
        wait = default if value is None else value
        return max(minimum, min(wait, maximum)) / 1000.0

    # --- caller operations ---------------------------------------------------------------------

    async def submit(self, endpoint: str, body: bytes, *, sync: bool) -> Job:
        """Validate a /run or /runsync body and queue the job (429 when the queue is full)."""
        s = self.settings
        try:
            req = _decode(_submit_decoder, body)
        except PayloadError as exc:
            raise _bad_body(exc) from None
        raw_input = bytes(req.input)
        if not raw_input:  # RunPod takes a missing input as it takes null: as absent
            raw_input = b"null"
        if raw_input != b"null" and not _is_object(raw_input):
            raise ApiError(400, "input must be a JSON object")
        s3 = bytes(req.s3_config)
        if s3 == b"null":
            s3 = b""
        if s3 and not _is_object(s3):
            raise ApiError(400, "s3Config must be a JSON object")
        if req.webhook is not None and not req.webhook.startswith(("http://", "https://")):
            raise ApiError(400, "webhook must be an http(s) URL")
        try:
            execution_timeout, ttl = jobs.resolve_policy(
                req.policy, default_execution_timeout_ms=s.default_execution_timeout_ms,
                default_ttl_ms=s.default_ttl_ms, execution_timeout_min_ms=s.execution_timeout_min_ms,
                ttl_min_ms=s.ttl_min_ms)
        except jobs.PolicyError as exc:
            raise ApiError(400, str(exc)) from None
        job_id = f"sync-{uuid.uuid4()}-u1" if sync else f"{uuid.uuid4()}-u1"
        # "input" always: the SDK drops a job taken on its own without one (reference §2.4)
        payload = b'{"id":"' + job_id.encode() + b'","input":' + raw_input
        if s3:
            payload += b',"s3Config":' + s3
        payload += b"}"
        now = self.clock()
        job = Job(id=job_id, endpoint=endpoint, payload=payload, webhook=req.webhook,
                  execution_timeout_ms=execution_timeout, ttl_ms=ttl,
                  retention_ms=s.retention_runsync_ms if sync else s.retention_run_ms,
                  created_at=now, expires_at=now + ttl / 1000.0)
        # a retry after a lost reply stores the same job again (same id; the queue is a set)
        if not await self._patient(lambda: self.store.submit(job, max_queue=s.queue_cap() + 1, now=self.clock())):
            self.metrics.rate_limited(endpoint, "queue", "size")
            raise ApiError(429, "queue is full", {"Retry-After": "10"})
        return job

    async def wait_terminal(self, endpoint: str, job_id: str, wait: float,
                            gone: asyncio.Future[None] | None = None) -> Job | None:
        """Wait up to ``wait`` seconds for the job to become terminal; the job as it is then
        (``None`` if it disappeared). ``gone``: the caller closed the connection, stop waiting.
        A store outage is waited out (the first read up to ``store_outage_wait``, later ones
        within ``wait``); when ``wait`` ends in an outage, the job as it was last seen."""
        deadline = self.clock() + wait
        job: Job | None = None
        seen = False
        while True:
            try:
                job = await self._patient(lambda: self.store.get(endpoint, job_id, now=self.clock()),
                                          self._until(deadline) if seen else None)
            except StoreUnavailable:
                if not seen:
                    raise
                return job
            seen = True
            now = self.clock()
            if (job is None or job.terminal or now >= deadline or (gone is not None and gone.done())
                    or not await self._hold(self.store.wait_job(endpoint, job_id, deadline - now), gone)):
                return job

    async def runsync(self, endpoint: str, body: bytes, wait_ms: int | None) -> bytes:
        s = self.settings
        wait = self._wait_ms(wait_ms, s.runsync_wait_default_ms, s.runsync_wait_max_ms, s.runsync_wait_min_ms)
        job = await self.submit(endpoint, body, sync=True)
        done = await self.wait_terminal(endpoint, job.id, wait)
        if done is None:
            raise ApiError(404, "job not found")
        return self.status_json(done) if done.terminal else self.short_json(done)

    async def status(self, endpoint: str, job_id: str, ttl_ms: int | None) -> bytes:
        if ttl_ms is not None:
            if ttl_ms <= 0 or ttl_ms > jobs.TTL_MAX_MS:
                raise ApiError(400, f"ttl must be between 1 and {jobs.TTL_MAX_MS} ms")
            job = await self._patient(lambda: self.store.set_ttl(endpoint, job_id, ttl_ms, now=self.clock()))
            if job is None:
                raise ApiError(404, "job not found")
        else:
            job = await self._job(endpoint, job_id)
        return self.status_json(job)

    async def status_sync(self, endpoint: str, job_id: str, wait_ms: int | None) -> bytes:
        s = self.settings
        job = await self.wait_terminal(endpoint, job_id,
                                       self._wait_ms(wait_ms, s.status_sync_wait_default_ms, s.status_sync_wait_max_ms))
        if job is None:
            raise ApiError(404, "job not found")
        return self.status_json(job)

    async def stream(self, endpoint: str, job_id: str, wait_ms: int | None) -> bytes:
        """``/stream``: new chunks since the last read (see :meth:`next_chunks`)."""
        job, chunks = await self.next_chunks(endpoint, job_id, self._wait_ms(wait_ms, 0, self.settings.stream_wait_max_ms))
        items = b",".join([b'{"output":' + c + b"}" for c in chunks])
        return b'{"status":"' + job.status.encode() + b'","stream":[' + items + b"]}"

    async def next_chunks(self, endpoint: str, job_id: str, wait: float) -> tuple[Job, list[bytes]]:
        """The job and the stream chunks appended since the last read (consumed), held up to
        ``wait`` seconds while there are none and the job is not terminal (and not past
        :meth:`begin_shutdown`). 404 when the job is gone. An outage is waited out as in
        :meth:`wait_terminal`."""
        deadline = self.clock() + wait
        seen: Job | None = None
        while True:
            try:
                got = await self._patient(lambda: self.store.read_stream(endpoint, job_id, now=self.clock()),
                                          None if seen is None else self._until(deadline))
            except StoreUnavailable:
                if seen is None:
                    raise
                return seen, []
            if got is None:
                raise ApiError(404, "job not found")
            job, chunks = got
            seen = job
            now = self.clock()
            if (chunks or job.terminal or now >= deadline
                    or not await self._hold(self.store.wait_job(endpoint, job_id, deadline - now))):
                return job, chunks

    async def cancel(self, endpoint: str, job_id: str) -> bytes:
        outcome = await self._patient(lambda: self.store.cancel(endpoint, job_id, now=self.clock()))
        if outcome is None:
            raise ApiError(404, "job not found")
        self._after(outcome)
        return self.short_json(outcome.job)

    async def retry(self, endpoint: str, job_id: str) -> bytes:
        outcome = await self.store.retry(endpoint, job_id, now=self.clock())
        if outcome is None:
            raise ApiError(404, "job not found")
        if not outcome.changed:
            raise ApiError(400, f"job is {outcome.job.status}; only FAILED or TIMED_OUT jobs can be retried")
        return self.short_json(outcome.job)

    async def purge(self, endpoint: str) -> bytes:
        removed = await self.store.purge(endpoint, now=self.clock())
        return b'{"removed":' + str(removed).encode() + b',"status":"completed"}'

    async def endpoint_health(self, endpoint: str) -> EndpointHealth:
        return await self.store.health(endpoint, now=self.clock(), worker_timeout=self.settings.worker_timeout)

    async def health(self, endpoint: str) -> bytes:
        return _encode(await self.endpoint_health(endpoint))

    # --- worker operations ---------------------------------------------------------------------

    async def take(self, endpoint: str, worker_id: str, count: int,
                   gone: asyncio.Future[None] | None = None) -> list[Job]:
        """Long-poll for up to ``count`` jobs (empty list after ``take_hold``). ``gone`` is done
        once the worker has closed the connection: the poll then ends with no job (jobs it
        had just taken go back to the head of the queue) and the store learns of the cut
        (:meth:`JobStore.abandon_poll`)."""
        deadline = self.clock() + self.settings.take_hold
        while True:
            if gone is not None and gone.done():
                await self.store.abandon_poll(endpoint, worker_id, [], now=self.clock())
                return []
            now = self.clock()
            taken = await self.store.take(endpoint, worker_id, count, now=now)
            if taken and gone is not None and gone.done():
                await self.store.abandon_poll(endpoint, worker_id, [job.id for job in taken], now=self.clock())
                return []
            if taken:
                self.metrics.jobs_taken(taken)
                return taken
            if now >= deadline or not await self._hold(self.store.wait_queue(endpoint, deadline - now), gone):
                return taken

    async def stop_signals(self, endpoint: str, worker_id: str, gone: asyncio.Future[None] | None = None) -> list[str]:
        """Long-poll for the job ids this worker must stop (empty list after ``stop_hold``);
        ``gone`` as for :meth:`take`."""
        deadline = self.clock() + self.settings.stop_hold
        while True:
            if gone is not None and gone.done():
                await self.store.abandon_poll(endpoint, worker_id, [], now=self.clock())
                return []
            now = self.clock()
            ids = await self.store.take_stop_signals(endpoint, worker_id, now=now)
            if (ids or now >= deadline
                    or not await self._hold(self.store.wait_stop(endpoint, worker_id, deadline - now), gone)):
                return ids

    async def _refuse(self, endpoint: str, worker_id: str, job_id: str, what: str, exc: PayloadError) -> NoReturn:
        """A job-done or job-stream body that cannot be accepted: 400, and the job it was
        posted for (if this worker holds it) becomes FAILED with the reason. The SDK drops a
        refused post (reference §2.5), so the job would otherwise run again for nothing and
        end as "worker lost"; a refused stream chunk would leave a hole in the stream."""
        error = f"the worker's {what} was refused: {exc}"
        outcome = await self._worker_post(lambda: self.store.finish(endpoint, job_id, worker_id, FAILED, output=None,
                                                                    error=error, now=self.clock()))
        if outcome is not None:
            self._after(outcome)
        raise _bad_body(exc)

    async def done(self, endpoint: str, worker_id: str, job_id: str, body: bytes) -> None:
        try:
            done = _decode(_done_decoder, body) if body.strip() else jobs.DoneBody()
        except PayloadError as exc:
            await self._refuse(endpoint, worker_id, job_id, "result", exc)
        output = bytes(done.output) or None
        if done.status == IN_PROGRESS:
            if not await self._worker_post(lambda: self.store.progress(endpoint, job_id, worker_id, output,
                                                                       now=self.clock())):
                raise ApiError(404, "job not found or not in progress on this worker")
            return
        status, error = COMPLETED, None
        if done.error:  # truthy error → FAILED (reference §2.5)
            status, error = FAILED, done.error if isinstance(done.error, str) else _encode(done.error).decode()
        outcome = await self._worker_post(lambda: self.store.finish(endpoint, job_id, worker_id, status,
                                                                    output=output, error=error, now=self.clock()))
        if outcome is None:
            raise ApiError(404, "job not found or not in progress on this worker")
        if done.stop_pod:
            log.info("worker %s asked to be recycled (stopPod)", worker_id)
        self._after(outcome)

    async def stream_chunk(self, endpoint: str, worker_id: str, job_id: str, body: bytes) -> None:
        try:
            chunk = _decode(_stream_decoder, body)
        except PayloadError as exc:
            await self._refuse(endpoint, worker_id, job_id, "stream output", exc)
        raw = bytes(chunk.output) or b"null"
        chunks = split_chunk(raw, self.settings.max_chunk)
        if not await self._worker_post(lambda: self.store.append_chunks(endpoint, job_id, worker_id, chunks,
                                                                        now=self.clock())):
            # not this worker's job (any more): the store has told its job-stop poll to stop the run
            raise ApiError(404, "job not found or not in progress on this worker")

    async def ping(self, endpoint: str, worker_id: str, job_ids: str | None, status: str | None) -> None:
        ids = [j for j in job_ids.split(",") if j] if job_ids else []
        await self.store.touch_worker(endpoint, worker_id, now=self.clock(), job_ids=ids,
                                      unhealthy=(status == "unhealthy"))
