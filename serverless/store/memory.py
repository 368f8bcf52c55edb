"""MemoryStore: the in-process job store (the embedded default; one server process).

All state lives in plain dicts owned by one event loop; every method runs without awaiting
in its critical section, so each is atomic. Long-polls wait on futures that mutations
resolve (see :class:`serverless.store.waiters.Waiters`). Semantics are those of :class:`serverless.store.base.JobStore`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from serverless.jobs import (
    CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, RETRYABLE, TIMED_OUT,
    EndpointHealth, Job, JobCounts, Outcome, WorkerCounts,
)
from serverless.store.base import JobStore
from serverless.store.waiters import Waiters

WORKER_LOST_ERROR = "worker lost"


class _Worker:
    __slots__ = ("last_seen", "job_ids", "unhealthy", "ping_at", "reports_jobs", "cut_at", "gone")

    def __init__(self, now: float) -> None:
        self.last_seen = now
        self.job_ids: list[str] = []
        self.unhealthy = False
        self.ping_at: float | None = None
        self.reports_jobs = False
        #: a held poll of the worker was closed by it then, and no request but pings came since
        self.cut_at: float | None = None
        #: requeue_unreported found it gone (cut for longer than the grace): not in /health
        self.gone = False


class _Endpoint:
    __slots__ = ("jobs", "queue", "running", "chunks", "stops", "workers", "expiry",
                 "completed", "failed", "retried")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.queue: OrderedDict[str, None] = OrderedDict()  # FIFO of IN_QUEUE ids
        self.running: dict[str, None] = {}  # IN_PROGRESS ids
        self.chunks: dict[str, list[bytes]] = {}
        self.stops: dict[str, dict[str, None]] = {}  # worker id -> ordered set of job ids
        self.workers: dict[str, _Worker] = {}
        self.expiry: list[tuple[float, str]] = []  # heap; stale entries skipped lazily
        self.completed = 0
        self.failed = 0
        self.retried = 0


class MemoryStore(JobStore):
    """In-memory :class:`JobStore` for one process."""

    def __init__(self) -> None:
        self._eps: dict[str, _Endpoint] = {}
        self._queue_waiters = Waiters()
        self._job_waiters = Waiters()
        self._stop_waiters = Waiters()

    # --- helpers ---------------------------------------------------------------------------

    def _ep(self, endpoint: str) -> _Endpoint:
        ep = self._eps.get(endpoint)
        if ep is None:
            ep = self._eps[endpoint] = _Endpoint()
        return ep

    def _live(self, ep: _Endpoint, job_id: str, now: float) -> Job | None:
        job = ep.jobs.get(job_id)
        if job is None or job.expires_at <= now:
            return None
        return job

    def _owned(self, endpoint: str, job_id: str, worker_id: str, now: float) -> Job | None:
        job = self._live(self._ep(endpoint), job_id, now)
        if job is None or job.status != IN_PROGRESS or job.worker_id != worker_id:
            return None
        return job

    def _set_expiry(self, ep: _Endpoint, job: Job, expires_at: float) -> None:
        job.expires_at = expires_at
        heapq.heappush(ep.expiry, (expires_at, job.id))

    def _terminate(self, ep: _Endpoint, job: Job, status: str, now: float) -> None:
        """Move a queued or running job to a terminal status (retention starts)."""
        if job.status == IN_PROGRESS:
            ep.running.pop(job.id, None)
        elif job.status == IN_QUEUE:
            ep.queue.pop(job.id, None)
        job.status = status
        job.finished_at = now
        if status == COMPLETED:
            ep.completed += 1
        elif status in (FAILED, TIMED_OUT):
            ep.failed += 1
        self._set_expiry(ep, job, min(job.expires_at, now + job.retention_ms / 1000.0))
        self._job_waiters.notify((job.endpoint, job.id))

    def _stop(self, ep: _Endpoint, endpoint: str, worker_id: str | None, job_id: str) -> None:
        if worker_id is None:
            return
        ep.stops.setdefault(worker_id, {})[job_id] = None
        self._stop_waiters.notify((endpoint, worker_id))

    def _delete(self, ep: _Endpoint, job: Job) -> None:
        ep.jobs.pop(job.id, None)
        ep.queue.pop(job.id, None)
        ep.running.pop(job.id, None)
        ep.chunks.pop(job.id, None)
        self._job_waiters.notify((job.endpoint, job.id))

    def _requeue(self, ep: _Endpoint, job: Job, *, head: bool) -> None:
        ep.running.pop(job.id, None)
        job.status = IN_QUEUE
        job.worker_id = None
        job.started_at = None
        job.finished_at = None
        job.output = None
        job.error = None
        ep.chunks.pop(job.id, None)
        ep.queue[job.id] = None
        if head:
            ep.queue.move_to_end(job.id, last=False)
        self._queue_waiters.notify(job.endpoint)
        self._job_waiters.notify((job.endpoint, job.id))

    # --- callers ---------------------------------------------------------------------------

    async def submit(self, job: Job, *, max_queue: int | None, now: float) -> bool:
        ep = self._ep(job.endpoint)
        if max_queue is not None and len(ep.queue) >= max_queue:
            return False
        ep.jobs[job.id] = job
        ep.queue[job.id] = None
        heapq.heappush(ep.expiry, (job.expires_at, job.id))
        self._queue_waiters.notify(job.endpoint)
        return True

    async def get(self, endpoint: str, job_id: str, *, now: float) -> Job | None:
        return self._live(self._ep(endpoint), job_id, now)

    async def set_ttl(self, endpoint: str, job_id: str, ttl_ms: int, *, now: float) -> Job | None:
        ep = self._ep(endpoint)
        job = self._live(ep, job_id, now)
        if job is not None:
            self._set_expiry(ep, job, now + ttl_ms / 1000.0)
        return job

    async def read_stream(self, endpoint: str, job_id: str, *, now: float) -> tuple[Job, list[bytes]] | None:
        ep = self._ep(endpoint)
        job = self._live(ep, job_id, now)
        if job is None:
            return None
        chunks = ep.chunks.pop(job_id, None)
        return job, (chunks or [])

    async def cancel(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        ep = self._ep(endpoint)
        job = self._live(ep, job_id, now)
        if job is None:
            return None
        if job.terminal:
            return Outcome(job, False)
        worker_id = job.worker_id if job.status == IN_PROGRESS else None
        self._terminate(ep, job, CANCELLED, now)
        self._stop(ep, endpoint, worker_id, job_id)
        return Outcome(job, True)

    async def retry(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        ep = self._ep(endpoint)
        job = self._live(ep, job_id, now)
        if job is None:
            return None
        if job.status not in RETRYABLE:
            return Outcome(job, False)
        job.retries += 1
        job.attempts = 0
        ep.retried += 1
        self._set_expiry(ep, job, now + job.ttl_ms / 1000.0)
        self._requeue(ep, job, head=False)
        return Outcome(job, True)

    async def purge(self, endpoint: str, *, now: float) -> int:
        ep = self._ep(endpoint)
        ids = list(ep.queue)
        for job_id in ids:
            job = ep.jobs.get(job_id)
            if job is not None:
                self._delete(ep, job)
        ep.queue.clear()
        return len(ids)

    async def health(self, endpoint: str, *, now: float, worker_timeout: float) -> EndpointHealth:
        ep = self._ep(endpoint)
        holders = {ep.jobs[j].worker_id for j in ep.running if j in ep.jobs}
        workers = WorkerCounts()
        for wid, rec in ep.workers.items():
            if now - rec.last_seen >= worker_timeout or rec.gone:
                continue
            if rec.unhealthy:
                workers.unhealthy += 1
            elif wid in holders or rec.job_ids:
                workers.running += 1
            else:
                workers.idle += 1
        workers.ready = workers.idle + workers.running
        jobs = JobCounts(completed=ep.completed, failed=ep.failed, in_progress=len(ep.running),
                         in_queue=len(ep.queue), retried=ep.retried)
        return EndpointHealth(jobs=jobs, workers=workers)

    # --- workers ---------------------------------------------------------------------------

    async def take(self, endpoint: str, worker_id: str, count: int, *, now: float) -> list[Job]:
        ep = self._ep(endpoint)
        self._touch(ep, worker_id, now, None, False)
        taken: list[Job] = []
        queue = ep.queue
        while queue and len(taken) < count:
            job_id, _ = queue.popitem(last=False)
            job = ep.jobs.get(job_id)
            if job is None:
                continue
            if job.expires_at <= now:
                self._delete(ep, job)
                continue
            job.status = IN_PROGRESS
            job.worker_id = worker_id
            job.started_at = now
            ep.running[job_id] = None
            taken.append(job)
            self._job_waiters.notify((endpoint, job_id))
        return taken

    async def append_chunks(self, endpoint: str, job_id: str, worker_id: str, chunks: list[bytes], *,
                            now: float) -> bool:
        ep = self._ep(endpoint)
        if self._owned(endpoint, job_id, worker_id, now) is None:
            self._stop(ep, endpoint, worker_id, job_id)
            return False
        self._touch(ep, worker_id, now, None, False)
        ep.chunks.setdefault(job_id, []).extend(chunks)
        self._job_waiters.notify((endpoint, job_id))
        return True

    async def progress(self, endpoint: str, job_id: str, worker_id: str, output: bytes | None, *,
                       now: float) -> bool:
        job = self._owned(endpoint, job_id, worker_id, now)
        if job is None:
            return False
        self._touch(self._eps[endpoint], worker_id, now, None, False)
        job.output = output
        self._job_waiters.notify((endpoint, job_id))
        return True

    async def finish(self, endpoint: str, job_id: str, worker_id: str, status: str, *,
                     output: bytes | None, error: str | None, now: float) -> Outcome | None:
        job = self._owned(endpoint, job_id, worker_id, now)
        if job is None:
            return None
        ep = self._eps[endpoint]
        self._touch(ep, worker_id, now, None, False)
        job.output = output
        job.error = error
        self._terminate(ep, job, status, now)
        return Outcome(job, True)

    async def abandon_poll(self, endpoint: str, worker_id: str, job_ids: list[str], *, now: float) -> None:
        ep = self._ep(endpoint)
        for job_id in reversed(job_ids):  # each to the head: the first ends up first
            job = self._owned(endpoint, job_id, worker_id, now)
            if job is not None:
                self._requeue(ep, job, head=True)
        rec = ep.workers.get(worker_id)
        if rec is None:
            rec = ep.workers[worker_id] = _Worker(now)
        rec.cut_at = now

    async def take_stop_signals(self, endpoint: str, worker_id: str, *, now: float) -> list[str]:
        ep = self._ep(endpoint)
        self._touch(ep, worker_id, now, None, False)
        stops = ep.stops.pop(worker_id, None)
        return list(stops) if stops else []

    async def touch_worker(self, endpoint: str, worker_id: str, *, now: float,
                           job_ids: list[str] | None = None, unhealthy: bool = False) -> None:
        self._touch(self._ep(endpoint), worker_id, now, job_ids, unhealthy)

    @staticmethod
    def _touch(ep: _Endpoint, worker_id: str, now: float, job_ids: list[str] | None, unhealthy: bool) -> None:
        rec = ep.workers.get(worker_id)
        if rec is None:
            rec = ep.workers[worker_id] = _Worker(now)
        rec.last_seen = now
        if job_ids is None:  # a request other than a ping: the worker's main process is there
            rec.cut_at = None
            rec.gone = False
        else:
            rec.job_ids = job_ids
            rec.unhealthy = unhealthy
            rec.ping_at = now
            if job_ids:
                rec.reports_jobs = True

    # --- time-driven ----------------------------------------------------------------------

    async def sweep(self, endpoint: str, *, now: float, worker_timeout: float, max_attempts: int) -> list[Job]:
        ep = self._ep(endpoint)
        finished: list[Job] = []
        # 1 + 3: running jobs that timed out or whose worker is gone
        for job_id in list(ep.running):
            job = ep.jobs.get(job_id)
            if job is None:
                ep.running.pop(job_id, None)
                continue
            if job.expires_at <= now:
                continue  # handled by the expiry pass below
            deadline = job.run_deadline()
            if deadline is not None and deadline <= now:
                worker_id = job.worker_id
                self._terminate(ep, job, TIMED_OUT, now)
                self._stop(ep, endpoint, worker_id, job_id)
                finished.append(job)
                continue
            rec = ep.workers.get(job.worker_id or "")
            if rec is None or now - rec.last_seen >= worker_timeout:
                if self._lost(ep, job, now, max_attempts):
                    finished.append(job)
        # 2: expiry (lazy heap; an entry is stale when the job's expires_at moved)
        heap = ep.expiry
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            job = ep.jobs.get(job_id)
            if job is None or job.expires_at > now:
                continue
            if job.status == IN_PROGRESS:
                self._stop(ep, endpoint, job.worker_id, job_id)
            self._delete(ep, job)
        if len(heap) > 2 * len(ep.jobs) + 1024:  # drop stale entries left by set_ttl/terminal/purge
            ep.expiry = [(job.expires_at, job.id) for job in ep.jobs.values()]
            heapq.heapify(ep.expiry)
        # 4: forget long-gone workers (and stop signals nobody will collect)
        if ep.workers:
            forget = [w for w, rec in ep.workers.items() if now - rec.last_seen >= 10 * worker_timeout]
            for w in forget:
                del ep.workers[w]
                ep.stops.pop(w, None)
        return finished

    def _lost(self, ep: _Endpoint, job: Job, now: float, max_attempts: int) -> bool:
        """The job's worker lost it: re-queue at the head, or fail once attempts are spent.
        True when the job became terminal."""
        job.attempts += 1
        if job.attempts <= max_attempts:
            self._requeue(ep, job, head=True)
            return False
        job.error = WORKER_LOST_ERROR
        self._terminate(ep, job, FAILED, now)
        return True

    async def requeue_unreported(self, endpoint: str, *, now: float, grace: float, max_attempts: int) -> list[Job]:
        ep = self._ep(endpoint)
        for worker in ep.workers.values():
            if worker.cut_at is not None and worker.cut_at <= now - grace:
                worker.gone = True
        finished: list[Job] = []
        for job_id in list(ep.running):
            job = ep.jobs.get(job_id)
            if job is None or job.started_at is None or job.expires_at <= now:
                continue
            rec = ep.workers.get(job.worker_id or "")
            if rec is None:
                continue
            unreported = (rec.reports_jobs and rec.ping_at is not None and rec.ping_at >= job.started_at + grace
                          and job_id not in rec.job_ids)
            if (unreported or rec.gone) and self._lost(ep, job, now, max_attempts):
                finished.append(job)
        return finished

    # --- waiting ---------------------------------------------------------------------------

    async def wait_queue(self, endpoint: str, timeout: float) -> None:
        await self._queue_waiters.wait(endpoint, timeout)

    async def wait_job(self, endpoint: str, job_id: str, timeout: float) -> None:
        await self._job_waiters.wait((endpoint, job_id), timeout)

    async def wait_stop(self, endpoint: str, worker_id: str, timeout: float) -> None:
        await self._stop_waiters.wait((endpoint, worker_id), timeout)
