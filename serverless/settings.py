"""Settings of the self-hosted endpoint server: one msgspec Struct with production defaults.

Every timing and limit the server uses lives here, so tests can shorten them (the CLI maps
``--flag`` / ``PODGATE_EP_*`` environment variables onto these fields, see
``serverless.cli_endpoint``). Durations are seconds (floats) unless the name says ``_ms``.
"""

from __future__ import annotations

import msgspec

from serverless import jobs

MB = 1024 * 1024


class OpLimit(msgspec.Struct, frozen=True):
    """A per-endpoint limit on one operation: requests per ``rate_window`` and requests in
    flight at once (0 = unlimited)."""

    per_window: int = 0
    concurrent: int = 0


def runpod_limits() -> dict[str, OpLimit]:
    """RunPod's documented per-endpoint limits (reference/runpod-protocol.md §1.5)."""
    sync_ops = OpLimit(2000, 400)
    return {
        "run": OpLimit(1000, 200),
        "runsync": sync_ops,
        "status": sync_ops,
        "status-sync": sync_ops,
        "stream": sync_ops,
        "cancel": OpLimit(100, 20),
        "purge-queue": OpLimit(2, 0),
        "openai": sync_ops,
    }


class EndpointSettings(msgspec.Struct, kw_only=True):
    """Everything ``podgate endpoint`` can be told."""

    endpoints: list[str] = msgspec.field(default_factory=lambda: ["local"])
    host: str = "127.0.0.1"
    port: int = 8100
    #: callers send ``Authorization: Bearer KEY`` or the raw key; None = no auth.
    api_key: str | None = None
    #: the key workers send (raw); None = same as ``api_key``.
    worker_api_key: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "podgate:"

    # long-polls (s)
    take_hold: float = 20.0
    stop_hold: float = 30.0
    runsync_wait_default_ms: int = 90_000
    #: RunPod's /runsync waits 1000–300000 ms whatever ``?wait=`` says
    runsync_wait_min_ms: int = 1_000
    runsync_wait_max_ms: int = 300_000
    status_sync_wait_default_ms: int = 90_000
    status_sync_wait_max_ms: int = 90_000
    stream_wait_max_ms: int = 90_000
    #: the longest one ``/openai/v1/*`` request lasts (waiting for the job, or streaming it)
    #: before the gateway gives up and cancels the job; RunPod's gateway cut streams at 60 s,
    #: later at about 5 min (reference/worker-formats.md §1.4)
    openai_hold_max_ms: int = 300_000

    # job lifetimes (ms)
    retention_run_ms: int = jobs.RETENTION_RUN_MS
    retention_runsync_ms: int = jobs.RETENTION_RUNSYNC_MS
    default_execution_timeout_ms: int = jobs.EXECUTION_TIMEOUT_DEFAULT_MS
    default_ttl_ms: int = jobs.TTL_DEFAULT_MS
    #: lower bounds of policy values (RunPod: 5 s and 10 s); tests lower them.
    execution_timeout_min_ms: int = jobs.EXECUTION_TIMEOUT_MIN_MS
    ttl_min_ms: int = jobs.TTL_MIN_MS

    # sizes (bytes)
    max_run_body: int = 10 * MB
    max_runsync_body: int = 20 * MB
    max_worker_body: int = 64 * MB
    max_chunk: int = 1 * MB

    # limits
    rate_window: float = 10.0
    limits: dict[str, OpLimit] = msgspec.field(default_factory=runpod_limits)
    #: /run (and /runsync) → 429 once the queue holds more than max(50, workers_max × 500).
    workers_max: int = 3

    # webhooks
    webhook_retries: int = 2
    webhook_retry_interval: float = 10.0
    webhook_timeout: float = 10.0

    # worker supervision
    #: a worker not heard from (ping or any request) for this long is lost.
    worker_timeout: float = 60.0
    #: how often a job is re-queued after losing its worker before it is FAILED.
    max_attempts: int = 3
    #: a live worker whose pings, arriving this long after it took a job, do not list that
    #: job has lost it (crashed and restarted under the same id): the job is re-queued. And a
    #: worker that closed a held poll this long ago and has since only pinged is gone (its
    #: main process died, its heartbeat child pings on): its jobs are re-queued.
    #: 0 disables both checks (see ``JobStore.requeue_unreported``).
    ping_grace: float = 10.0
    sweep_interval: float = 0.25

    # store outages (``serverless.outage``)
    #: how long a caller's request that can wait (/run, /runsync, /status, /stream, /cancel,
    #: the /openai/v1 gateway) retries the job store through an outage before it answers 503
    #: (never past the request's own deadline); 0 answers 503 at once.
    store_outage_wait: float = 10.0
    #: the same for a worker's job-done and job-stream posts, longer: the runpod SDK drops a
    #: result after 3 failed attempts, and a dropped result is a lost job.
    worker_outage_wait: float = 60.0

    def queue_cap(self) -> int:
        """The largest queue /run still accepts a job into (RunPod: 429 when the queue is
        larger than both 50 and workersMax × 500)."""
        return max(50, self.workers_max * 500)

    def worker_key(self) -> str | None:
        return self.worker_api_key if self.worker_api_key is not None else self.api_key
