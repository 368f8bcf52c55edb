"""The RunPod Serverless job model: statuses, policy, the stored job record and the wire
shapes built from it (status body, health body, the job a worker takes).

This module is the one home of these types; the stores (``serverless.store``) persist
:class:`Job` records and the API (``serverless.app``) turns them into wire bodies.

Times: every absolute time is a float of seconds since the epoch (``time.time()``), passed
in explicitly by callers as ``now``; every duration that RunPod expresses in milliseconds
(policy, ``?ttl=``, ``delayTime``) stays an ``int`` of milliseconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

# --- statuses -----------------------------------------------------------------------------

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"

TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
RETRYABLE = frozenset({FAILED, TIMED_OUT})

# --- policy -------------------------------------------------------------------------------

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
DAY_MS = 24 * 60 * MINUTE_MS

#: RunPod's documented defaults and bounds (reference/runpod-protocol.md §1.2).
EXECUTION_TIMEOUT_DEFAULT_MS = 10 * MINUTE_MS
EXECUTION_TIMEOUT_MIN_MS = 5 * SECOND_MS
EXECUTION_TIMEOUT_MAX_MS = 7 * DAY_MS
TTL_DEFAULT_MS = DAY_MS
TTL_MIN_MS = 10 * SECOND_MS
TTL_MAX_MS = 7 * DAY_MS

#: Result retention after a terminal state (§1.4): 30 min after /run, 60 s after /runsync.
RETENTION_RUN_MS = 30 * MINUTE_MS
RETENTION_RUNSYNC_MS = MINUTE_MS


class Policy(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=False):
    """The ``policy`` object of a submit body; absent fields take the endpoint's defaults."""

    execution_timeout: int | None = None
    low_priority: bool = False
    ttl: int | None = None


class PolicyError(ValueError):
    """A policy value outside RunPod's bounds; the message names the field."""


def resolve_policy(policy: Policy | None, *, default_execution_timeout_ms: int = EXECUTION_TIMEOUT_DEFAULT_MS,
                   default_ttl_ms: int = TTL_DEFAULT_MS, execution_timeout_min_ms: int = EXECUTION_TIMEOUT_MIN_MS,
                   ttl_min_ms: int = TTL_MIN_MS) -> tuple[int, int]:
    """Return ``(execution_timeout_ms, ttl_ms)`` for a job: the policy's values, or the
    endpoint's defaults for absent ones. Raises :class:`PolicyError` when a given value is
    outside RunPod's bounds (5 s–7 d and 10 s–7 d; tests may lower the minimums)."""
    execution_timeout = default_execution_timeout_ms
    ttl = default_ttl_ms
    if policy is not None and policy.execution_timeout is not None:
        execution_timeout = policy.execution_timeout
        if not execution_timeout_min_ms <= execution_timeout <= EXECUTION_TIMEOUT_MAX_MS:
            raise PolicyError(f"policy.executionTimeout must be between {execution_timeout_min_ms} and "
                              f"{EXECUTION_TIMEOUT_MAX_MS} ms")
    if policy is not None and policy.ttl is not None:
        ttl = policy.ttl
        if not ttl_min_ms <= ttl <= TTL_MAX_MS:
            raise PolicyError(f"policy.ttl must be between {ttl_min_ms} and {TTL_MAX_MS} ms")
    return execution_timeout, ttl


# --- the stored job -----------------------------------------------------------------------


class Job(msgspec.Struct, kw_only=True):
    """One job as the store keeps it.

    ``payload`` is the exact JSON object handed to a worker on job-take
    (``{"id", "input", "s3Config"?}``), encoded once at submit time; ``output`` is the
    JSON encoding of the job's current output (final or progress), ``None`` when there is
    none. Both are bytes so that stores never re-encode them (msgpack keeps bytes as is;
    JSON stores base64 them).
    """

    id: str
    endpoint: str
    payload: bytes
    status: str = IN_QUEUE
    webhook: str | None = None
    execution_timeout_ms: int = EXECUTION_TIMEOUT_DEFAULT_MS
    ttl_ms: int = TTL_DEFAULT_MS
    retention_ms: int = RETENTION_RUN_MS
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: absolute time at which the job is deleted (→ 404). Set to ``created_at + ttl`` at
    #: submit, to ``min(expires_at, finished_at + retention)`` on a terminal state, and to
    #: ``now + ttl`` by ``/status?ttl=`` and by ``/retry``.
    expires_at: float = 0.0
    worker_id: str | None = None
    output: bytes | None = None
    error: str | None = None
    #: how many times the job was re-queued because its worker was lost.
    attempts: int = 0
    #: how many times ``/retry`` re-queued it.
    retries: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def run_deadline(self) -> float | None:
        """When an IN_PROGRESS job times out (``started_at + executionTimeout``)."""
        if self.status != IN_PROGRESS or self.started_at is None:
            return None
        return self.started_at + self.execution_timeout_ms / 1000.0


class Outcome(msgspec.Struct):
    """What a state-changing store operation did: the job as it is now, and whether this
    call changed it (``changed=False``: the operation did not apply, e.g. /cancel of a job
    that is already terminal). The server fires the webhook when ``changed`` and the job is
    terminal — exactly once, because only one call can make a given transition."""

    job: Job
    changed: bool


# --- wire shapes ----------------------------------------------------------------------------


class SubmitRequest(msgspec.Struct, rename="camel"):
    """The body of /run and /runsync. ``input`` and ``s3_config`` stay raw JSON (checked to be
    objects, or null, by the API) so that they are copied into the worker payload without
    re-encoding; an absent ``input`` is taken as null, as RunPod does."""

    input: msgspec.Raw = msgspec.Raw(b"")
    webhook: str | None = None
    policy: Policy | None = None
    s3_config: msgspec.Raw = msgspec.Raw(b"")


class StatusBody(msgspec.Struct, rename="camel", omit_defaults=True):
    """The status object of /status, /runsync, /status-sync and webhooks (§1.3)."""

    id: str
    status: str
    delay_time: int | None = None
    execution_time: int | None = None
    output: msgspec.Raw | None = None
    error: str | None = None
    worker_id: str | None = None
    retries: int | None = None


def status_body(job: Job, now: float) -> StatusBody:
    """Build the status object of ``job`` at time ``now``.

    ``delayTime`` appears once the job has started (time in queue), ``executionTime`` once it
    has started (running time so far, or final), ``output`` when there is one (including
    progress updates while IN_PROGRESS), ``error`` on failure, ``workerId`` once taken.
    """
    body = StatusBody(id=job.id, status=job.status)
    if job.started_at is not None:
        body.delay_time = max(0, int((job.started_at - job.created_at) * 1000))
        end = job.finished_at if job.finished_at is not None else now
        body.execution_time = max(0, int((end - job.started_at) * 1000))
    elif job.finished_at is not None:  # cancelled or timed out in the queue
        body.delay_time = max(0, int((job.finished_at - job.created_at) * 1000))
    if job.output is not None:
        body.output = msgspec.Raw(job.output)
    if job.error is not None:
        body.error = job.error
    if job.worker_id is not None:
        body.worker_id = job.worker_id
    if job.retries:
        body.retries = job.retries
    return body


class JobCounts(msgspec.Struct, rename="camel"):
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    in_queue: int = 0
    retried: int = 0


class WorkerCounts(msgspec.Struct):
    idle: int = 0
    initializing: int = 0
    ready: int = 0
    running: int = 0
    throttled: int = 0
    unhealthy: int = 0


class EndpointHealth(msgspec.Struct):
    """The /health body this endpoint serves (§1.4); podgate's RunPod client decodes it into its own ``Health``."""

    jobs: JobCounts
    workers: WorkerCounts


class DoneBody(msgspec.Struct, rename="camel"):
    """The job-done body a worker posts (§2.5). ``output`` stays raw; ``error`` may be any
    JSON value (a handler may return ``{"error": {...}}``)."""

    output: msgspec.Raw = msgspec.Raw(b"")
    error: Any = None
    status: str | None = None
    stop_pod: bool = False


class StreamBody(msgspec.Struct):
    """The job-stream body a worker posts (§2.6): one yielded value, kept raw."""

    output: msgspec.Raw = msgspec.Raw(b"")
