"""The job store interface: every atomic operation the endpoint API needs.

One store holds the jobs of any number of endpoints; every method takes the endpoint id and
jobs are only visible under the endpoint they were submitted to. Implementations:
``serverless.store.memory.MemoryStore`` (one process, the embedded default) and
``serverless.store.redis.RedisStore`` (several server replicas on one Redis; constructed as
``RedisStore(url, prefix="...")`` where every key it touches starts with ``prefix``, so that
tests can use a random prefix on a shared Redis; it also has ``async def close()``).

Rules every implementation follows:

- **Atomicity.** Each method is one atomic step with respect to every other method call, in
  every replica (Redis: one Lua script or MULTI/WATCH transaction per call). In particular a
  job is handed out by :meth:`JobStore.take` at most once, and a transition happens in exactly
  one call, whose :class:`~serverless.jobs.Outcome` says ``changed=True`` (the server fires the
  webhook on that — so webhooks fire once even with several replicas sweeping).
- **Time.** ``now`` is always passed in (seconds since the epoch, float); implementations never
  read the clock for state decisions. Durations are ms ints as on the wire.
- **Expiry.** A job whose ``expires_at <= now`` is deleted: every read or mutation treats it
  as absent (returns ``None``) even before :meth:`JobStore.sweep` has physically removed it.
  Implementations may additionally use native key expiry (Redis ``PEXPIREAT``) as a safety net
  but must not rely on it for the IN_PROGRESS stop signal (``sweep`` does that).
- **Ownership.** Worker-side mutations (``append_chunks``, ``progress``, ``finish``) apply only
  when the job is IN_PROGRESS *and* its ``worker_id`` equals the caller's worker id: a stale
  worker whose job was re-queued or cancelled gets ``False``/``None`` (→ HTTP 404).
- **Byte payloads.** ``Job.payload``, ``Job.output`` and stream chunks are opaque JSON bytes;
  store them verbatim.
- **Waiting.** The ``wait_*`` methods block until something relevant *may* have changed or
  ``timeout`` seconds pass, and return nothing: callers always re-check with a normal method
  in a loop (``while not deadline: check(); await wait_x(remaining)``). Spurious or early
  returns are allowed; a return later than ``timeout`` is not. A relevant change made by any
  replica after the caller's check must end the wait promptly (target ≤ 50 ms; a Redis store
  may implement this with pub/sub, BLPOP on a notification key, or short polling).
- **Outages.** A store whose backing service cannot be reached raises
  :class:`StoreUnavailable` from any method (the server answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import abc

from serverless.jobs import EndpointHealth, Job, Outcome


class StoreUnavailable(Exception):
    """The store's backing service (Redis) cannot be reached now; the call may be retried."""


class JobStore(abc.ABC):
    """Abstract job store. See the module docstring for the rules all methods follow."""

    # --- callers -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def submit(self, job: Job, *, max_queue: int | None, now: float) -> bool:
        """Add a new job (``job.status == IN_QUEUE``, ids unique) at the tail of its endpoint's
        FIFO queue, with ``expires_at`` as given by the caller.

        If ``max_queue`` is not None and the endpoint's queue already holds ``>= max_queue``
        jobs, nothing is stored and ``False`` is returned (→ HTTP 429). Otherwise ``True``.
        Wakes :meth:`wait_queue` waiters of the endpoint.
        """

    @abc.abstractmethod
    async def get(self, endpoint: str, job_id: str, *, now: float) -> Job | None:
        """The job, or ``None`` if unknown, expired (``expires_at <= now``) or deleted."""

    @abc.abstractmethod
    async def set_ttl(self, endpoint: str, job_id: str, ttl_ms: int, *, now: float) -> Job | None:
        """``/status?ttl=``: set ``expires_at = now + ttl_ms / 1000`` (shorter or longer, any
        state) and return the updated job; ``None`` if absent."""

    @abc.abstractmethod
    async def read_stream(self, endpoint: str, job_id: str, *, now: float) -> tuple[Job, list[bytes]] | None:
        """``/stream``: in one atomic step, return the job and *consume* every chunk appended
        since the previous ``read_stream`` of this job (oldest first; each chunk is delivered to
        exactly one reader, once). ``None`` if the job is absent. Because status and chunks are
        read together, a terminal status is never returned while older chunks stay unread."""

    @abc.abstractmethod
    async def cancel(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        """``/cancel``. IN_QUEUE: remove from the queue, status CANCELLED, ``finished_at=now``.
        IN_PROGRESS: status CANCELLED, ``finished_at=now``, and add ``job_id`` to the stop
        signals of its ``worker_id`` (see :meth:`take_stop_signals`). Both: ``expires_at =
        min(expires_at, now + retention_ms/1000)``, ``changed=True``, wake job waiters.
        Terminal: nothing changes, ``changed=False``. Absent: ``None``."""

    @abc.abstractmethod
    async def retry(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        """``/retry``. FAILED or TIMED_OUT: back to IN_QUEUE at the queue's tail with the same
        id and payload; ``output``, ``error``, ``worker_id``, ``started_at``, ``finished_at``
        and the stream buffer cleared; ``attempts = 0`` (a fresh lost-worker budget);
        ``retries += 1``; the endpoint's ``retried`` health counter += 1;
        ``expires_at = now + ttl_ms/1000``; ``changed=True``; wakes queue and job waiters.
        Any other status: ``changed=False``. Absent: ``None``."""

    @abc.abstractmethod
    async def purge(self, endpoint: str, *, now: float) -> int:
        """``/purge-queue``: delete every IN_QUEUE job of the endpoint (they become absent →
        404, no webhook) and return how many were removed. Running jobs are untouched."""

    @abc.abstractmethod
    async def health(self, endpoint: str, *, now: float, worker_timeout: float) -> EndpointHealth:
        """``/health``. ``jobs.inQueue``/``inProgress``: current counts (expired excluded);
        ``jobs.completed``: cumulative COMPLETED; ``jobs.failed``: cumulative FAILED +
        TIMED_OUT; ``jobs.retried``: cumulative /retry re-queues (CANCELLED counts nowhere).
        Workers (only those seen within ``worker_timeout`` seconds, see :meth:`touch_worker`,
        and not found gone by :meth:`requeue_unreported`): ``unhealthy`` = last report was
        unhealthy; else ``running`` = holds ≥ 1 IN_PROGRESS job or reported job ids in its last
        ping; else ``idle``. ``ready`` = idle + running;
        ``initializing`` and ``throttled`` are 0."""

    # --- workers -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def take(self, endpoint: str, worker_id: str, count: int, *, now: float) -> list[Job]:
        """job-take / job-take-batch: pop up to ``count`` jobs from the head of the endpoint's
        queue in one atomic step, skipping (and deleting) expired ones, and mark each
        IN_PROGRESS with ``worker_id``, ``started_at=now``. Returns them in queue order
        (possibly empty; never blocks). Also counts as contact from the worker
        (:meth:`touch_worker`)."""

    @abc.abstractmethod
    async def append_chunks(self, endpoint: str, job_id: str, worker_id: str, chunks: list[bytes], *,
                            now: float) -> bool:
        """job-stream: append ``chunks`` (JSON bytes of each ``output`` value, already split to
        the size limit) to the job's stream buffer, in order. Applies only to an IN_PROGRESS
        job owned by ``worker_id``. Else ``False``, and ``job_id`` becomes a stop signal of
        ``worker_id`` (:meth:`take_stop_signals`): the worker runs a job that is not its own
        (cancelled, timed out, re-queued to another worker, or gone: purged, expired, lost
        with a Redis that restarted without its data), and its run is stopped. Wakes job
        waiters."""

    @abc.abstractmethod
    async def progress(self, endpoint: str, job_id: str, worker_id: str, output: bytes | None, *,
                       now: float) -> bool:
        """job-done with ``status: IN_PROGRESS``: set ``output`` (progress) of an IN_PROGRESS job
        owned by ``worker_id``; status unchanged. ``False`` if it does not apply. Wakes job
        waiters."""

    @abc.abstractmethod
    async def finish(self, endpoint: str, job_id: str, worker_id: str, status: str, *,
                     output: bytes | None, error: str | None, now: float) -> Outcome | None:
        """job-done: ``status`` is COMPLETED or FAILED. Applies only to an IN_PROGRESS job owned
        by ``worker_id``: sets status, ``output`` (``None`` = no output key), ``error``,
        ``finished_at=now``, ``expires_at = min(expires_at, now + retention_ms/1000)``, bumps
        the completed/failed counter, wakes job waiters, returns ``changed=True``. Otherwise
        (absent, terminal, other owner) returns ``None`` (→ HTTP 404, the worker just logs)."""

    @abc.abstractmethod
    async def abandon_poll(self, endpoint: str, worker_id: str, job_ids: list[str], *, now: float) -> None:
        """A held long-poll of this worker (job-take or job-stop) was closed by the worker before
        it was answered (its process died, or its connection broke):

        1. The jobs in ``job_ids`` (those this very poll had just taken, whose answer can no
           longer be delivered) that are IN_PROGRESS and owned by ``worker_id`` go back to the
           *head* of the queue, ``job_ids[0]`` first, as if never taken: ``worker_id``,
           ``started_at`` (and run state) cleared, ``attempts`` unchanged; queue and job waiters
           woken.
        2. The worker's poll is *cut* at ``now`` (``cut_at``), until its next request other than
           a ping (``touch_worker`` with ``job_ids=None``, and every worker operation that counts
           as contact), which clears it. See :meth:`requeue_unreported`.

        Not contact from the worker."""

    @abc.abstractmethod
    async def take_stop_signals(self, endpoint: str, worker_id: str, *, now: float) -> list[str]:
        """job-stop: return and clear the job ids the worker must stop (added by ``cancel``,
        ``sweep`` timeouts and TTL deletions, in that order of arrival; no duplicates needed).
        Counts as contact (:meth:`touch_worker`)."""

    @abc.abstractmethod
    async def touch_worker(self, endpoint: str, worker_id: str, *, now: float,
                           job_ids: list[str] | None = None, unhealthy: bool = False) -> None:
        """Record contact from a worker: ``last_seen = now``. Called for pings (with
        ``job_ids`` = the ids the ping reported, ``[]`` when idle, and ``unhealthy`` from
        ``status=unhealthy``) and, with ``job_ids=None`` (keep the last report), for every other
        worker request. A worker is *alive* while ``now - last_seen < worker_timeout``."""

    # --- time-driven transitions ------------------------------------------------------------

    @abc.abstractmethod
    async def sweep(self, endpoint: str, *, now: float, worker_timeout: float, max_attempts: int) -> list[Job]:
        """Apply every transition that time has made due, each atomically, and return the jobs
        that became terminal in this call (for webhooks), in any order:

        1. IN_PROGRESS with ``started_at + execution_timeout_ms/1000 <= now`` → TIMED_OUT,
           ``finished_at=now``, retention as in ``finish``, failed counter += 1, stop signal
           to its worker; returned.
        2. ``expires_at <= now`` (any status) → deleted; if it was IN_PROGRESS, a stop signal
           to its worker; not returned (deleted jobs get no webhook).
        3. IN_PROGRESS whose worker is not alive (``now - last_seen >= worker_timeout``, or no
           record at all): ``attempts += 1``; if ``attempts <= max_attempts`` → back to IN_QUEUE
           at the *head* of the queue (worker_id, started_at, output and stream buffer cleared;
           queue waiters woken; not returned); else → FAILED with error
           ``"worker lost"`` (``finished_at=now``, retention, failed counter += 1; returned).
        4. Worker records not seen for ``10 * worker_timeout`` may be forgotten.

        Wakes the waiters of every job it changes. Must be cheap when nothing is due (it runs
        about every 100–500 ms per endpoint in every replica)."""

    @abc.abstractmethod
    async def requeue_unreported(self, endpoint: str, *, now: float, grace: float, max_attempts: int) -> list[Job]:
        """Catches jobs that a worker which still looks *live* (it pings) does not actually
        hold, and treats each exactly like a lost worker's job in :meth:`sweep` step 3
        (``attempts += 1``; re-queue at the head, or FAILED ``"worker lost"`` once ``attempts >
        max_attempts``). Returns the jobs that became terminal.

        1. A job missing from the pings: an IN_PROGRESS job whose worker record has
           ``reports_jobs`` (some earlier ping listed at least one job id, so this worker is
           known to report its jobs) and whose last *ping* (``touch_worker`` with ``job_ids is
           not None``) arrived at ``ping_at >= started_at + grace`` without listing the job —
           e.g. a worker that crashed and was restarted under the same worker id, or a take
           response that never reached it. Implementations therefore record, per worker,
           ``ping_at`` (time of the last ping) and ``reports_jobs`` in ``touch_worker``.
        2. A worker whose main process is gone: its poll was cut (:meth:`abandon_poll`) at
           ``cut_at <= now - grace`` and it has made no request but pings since. The runpod
           SDK neither closes a held poll while it lives (its graceful shutdown lets held
           polls finish) nor goes a second without polling again after an error, but its
           heartbeat is a child process that can outlive it and keep pinging with the job ids
           it last had. Every IN_PROGRESS job of that worker is lost, and the worker counts as
           gone in :meth:`health` until its next request other than a ping."""

    # --- waiting -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def wait_queue(self, endpoint: str, timeout: float) -> None:
        """Wait until a job may have been added to the endpoint's queue (submit, retry, requeue)
        or ``timeout`` seconds pass. See the module docstring on waiting."""

    @abc.abstractmethod
    async def wait_job(self, endpoint: str, job_id: str, timeout: float) -> None:
        """Wait until the job may have changed (status, output, new stream chunks, deletion) or
        ``timeout`` seconds pass. Used by /runsync, /status-sync and /stream long-polls."""

    @abc.abstractmethod
    async def wait_stop(self, endpoint: str, worker_id: str, timeout: float) -> None:
        """Wait until a stop signal may have been added for this worker or ``timeout`` seconds
        pass. Used by the job-stop long-poll."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Release connections; the default does nothing."""
        return None
