"""Prometheus metrics of the endpoint server (``GET /metrics``, Prometheus text format).

One :class:`EndpointMetrics` per app, with a registry of its own (never prometheus-client's
global one), so several apps in one process keep separate counts. What is counted, and where
the count is taken (each in one place; a request pays one ASGI layer and a dict increment,
a job two histogram observations):

- every request of the caller API and of the worker API, by endpoint, operation and HTTP
  status: :meth:`EndpointMetrics.middleware`, one ASGI middleware around the routes, which
  reads the operation name from the route's ``opt`` (``routes.py``) and the status from the
  response start, so refusals (401, 404, 413, 429) count with the status they got;
- 429s sent, by the limit that refused them (an operation's per-window or concurrent limit,
  or the queue cap): :meth:`rate_limited`, called by ``Limiter`` and by the submit path;
- jobs by terminal status, and their execution time: :meth:`job_ended`, called once per
  transition (``EndpointService._terminal``, which also fires the webhook);
- queue wait (RunPod's ``delayTime``): :meth:`jobs_taken`, when a job is handed to a worker;
- jobs in queue and in progress, and live workers by state: read from the store's health
  record at scrape time (:meth:`render`), never per request;
- the process (memory, CPU, open files): prometheus-client's ``ProcessCollector``.

Label values are bounded: endpoint ids come from the configuration (a request for any other
id counts under ``endpoint="(unknown)"``), operations and limits are fixed names, statuses
are the few HTTP statuses the server answers with. No raw path, job id, worker id or key
ever becomes a label.

Replicas on one Redis store: the counters and histograms count what *this* replica served or
did (sum them over replicas; every job transition is made by exactly one replica, so the sum
of ``podgate_endpoint_jobs_total`` is the endpoint's total), while the gauges read from the
store are the same shared values in every replica (take ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serverless.jobs import EndpointHealth, Job
from serverless.store.base import StoreUnavailable

log = logging.getLogger("podgate.serverless")

#: the media type of :meth:`EndpointMetrics.render`'s text (the classic text format, as
#: prometheus-client's own servers label it); Litestar adds ``; charset=utf-8`` to it.
MEDIA_TYPE = "text/plain; version=0.0.4"
#: the route ``opt`` key that names a route's operation (``@post(..., opt=operation("run"))``)
OPERATION = "metrics_operation"
#: the endpoint label of a request for an endpoint id that is not configured
UNKNOWN_ENDPOINT = "(unknown)"

CALLER_OPERATIONS = frozenset({"run", "runsync", "status", "status-sync", "stream", "cancel", "retry", "purge-queue",
                               "health", "openai"})
WORKER_OPERATIONS = frozenset({"job-take", "job-take-batch", "job-stop", "job-done", "job-stream", "ping"})
#: how long a scrape waits for the store's health reads before it leaves their gauges out (s)
STORE_READ_TIMEOUT = 2.0
#: a request that ended before any response was sent (the client left mid-request)
CLIENT_CLOSED = 499

_SCOPE = ("Per replica: what this server process counted; with the Redis store, sum over "
          "replicas.")
_SHARED = ("Shared: read from the job store at scrape time; with the Redis store every replica "
           "reports the same endpoint-wide value.")
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
EXECUTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                     float("inf"))


def operation(name: str) -> dict[str, str]:
    """The ``opt`` of a route whose requests count under operation ``name``."""
    if name not in CALLER_OPERATIONS and name not in WORKER_OPERATIONS:
        raise ValueError(f"unknown operation {name!r}")
    return {OPERATION: name}


HealthReader = Callable[[str], Awaitable[EndpointHealth]]


class _Counts:
    """A counter family kept as plain ints by label values, emitted at scrape time.

    Counting is one ``dict.get`` and a store (about a tenth of a prometheus-client
    ``Counter`` child's ``inc()``, which takes a lock and checks its arguments every time):
    every count is taken on the event loop's thread, where the scrape runs too, so no lock
    is needed. Label values must be bounded by the caller."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.values: dict[tuple[Any, ...], int] = {}

    def add(self, key: tuple[Any, ...]) -> None:
        self.values[key] = self.values.get(key, 0) + 1

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, count in list(self.values.items()):
            family.add_metric([str(v) for v in key], count)
        return family


class _CountsCollector(Collector):
    def __init__(self, counts: Sequence[_Counts]) -> None:
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(c.name, c.doc, labels=c.labels) for c in self.counts]

    def collect(self) -> Iterable[Metric]:
        return [c.family() for c in self.counts]


class _StoreGauges(Collector):
    """The gauges read from the store: the last snapshot :meth:`EndpointMetrics.render` took
    (a dict of endpoint → health, ``None`` before the first scrape or when the store failed)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, EndpointHealth] | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.snapshot)

    @staticmethod
    def _families(snapshot: dict[str, EndpointHealth] | None) -> list[Metric]:
        up = GaugeMetricFamily("podgate_endpoint_store_up",
                               "1 when the job store answered this scrape's health reads, else 0 (and "
                               "the queue and worker gauges are left out).")
        in_queue = GaugeMetricFamily("podgate_endpoint_jobs_in_queue",
                                     f"Jobs waiting in the endpoint's queue. {_SHARED}", labels=["endpoint"])
        in_progress = GaugeMetricFamily("podgate_endpoint_jobs_in_progress",
                                        f"Jobs taken by a worker and not yet ended. {_SHARED}", labels=["endpoint"])
        workers = GaugeMetricFamily("podgate_endpoint_workers",
                                    "Live workers (heard from within worker_timeout) by state: idle, running "
                                    f"(holds a job), unhealthy (reported so). {_SHARED}",
                                    labels=["endpoint", "state"])
        if snapshot is not None:
            up.add_metric([], 1)
            for endpoint, health in snapshot.items():
                in_queue.add_metric([endpoint], health.jobs.in_queue)
                in_progress.add_metric([endpoint], health.jobs.in_progress)
                w = health.workers
                for state, count in (("idle", w.idle), ("running", w.running), ("unhealthy", w.unhealthy)):
                    workers.add_metric([endpoint, state], count)
        else:
            up.add_metric([], 0)
        return [up, in_queue, in_progress, workers]


class EndpointMetrics:
    """The metrics of one endpoint server app (see the module docstring)."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = tuple(dict.fromkeys(endpoints))
        self._known = frozenset(self.endpoints)
        self.registry = CollectorRegistry()
        r = self.registry
        by_status = ["endpoint", "operation", "status"]
        self._requests = _Counts("podgate_endpoint_requests",
                                 f"Caller API requests by operation and HTTP status. {_SCOPE}", by_status)
        self._worker_requests = _Counts("podgate_endpoint_worker_requests",
                                        f"Worker API requests by operation and HTTP status. {_SCOPE}", by_status)
        self._limited = _Counts("podgate_endpoint_rate_limited",
                                "429s sent, by the limit that refused the request: an operation's per-window "
                                "(kind=rate) or in-flight (kind=concurrency) limit, or the queue cap "
                                f"(limit=queue, kind=size). {_SCOPE}", ["endpoint", "limit", "kind"])
        self._jobs = _Counts("podgate_endpoint_jobs", "Jobs that reached a terminal status (COMPLETED, FAILED, "
                             f"CANCELLED, TIMED_OUT) through this replica. {_SCOPE}", ["endpoint", "status"])
        r.register(_CountsCollector([self._requests, self._worker_requests, self._limited, self._jobs]))
        delay = Histogram("podgate_endpoint_job_delay_seconds",
                          "Time a job waited in the queue before a worker took it (RunPod's delayTime), "
                          f"observed at each hand-out. {_SCOPE}", ["endpoint"], buckets=DELAY_BUCKETS, registry=r)
        execution = Histogram("podgate_endpoint_job_execution_seconds",
                              "Time from a worker taking a job to its terminal status (RunPod's executionTime), "
                              f"for jobs that ran. {_SCOPE}", ["endpoint"], buckets=EXECUTION_BUCKETS, registry=r)
        # every configured endpoint's series exist from the start (no gaps before its first job)
        self._delay = {ep: delay.labels(ep) for ep in self.endpoints}
        self._execution = {ep: execution.labels(ep) for ep in self.endpoints}
        self._gauges = _StoreGauges()
        r.register(self._gauges)
        ProcessCollector(registry=r)

    # --- counting ----------------------------------------------------------------------------

    def _endpoint(self, endpoint: str | None) -> str:
        return endpoint if endpoint is not None and endpoint in self._known else UNKNOWN_ENDPOINT

    def request(self, endpoint: str | None, operation: str, status: int) -> None:
        """One finished request of the caller or worker API."""
        counts = self._worker_requests if operation in WORKER_OPERATIONS else self._requests
        counts.add((self._endpoint(endpoint), operation, status))

    def rate_limited(self, endpoint: str, limit: str, kind: str) -> None:
        """One request refused with 429 by ``limit`` (an operation name, or ``"queue"``)."""
        self._limited.add((self._endpoint(endpoint), limit, kind))

    def job_ended(self, job: Job) -> None:
        """A job just became terminal (called once per transition)."""
        self._jobs.add((self._endpoint(job.endpoint), job.status))
        execution = self._execution.get(job.endpoint)
        if execution is not None and job.started_at is not None and job.finished_at is not None:
            execution.observe(max(0.0, job.finished_at - job.started_at))

    def jobs_taken(self, taken: Iterable[Job]) -> None:
        """Jobs just handed to a worker: their queue wait."""
        for job in taken:
            delay = self._delay.get(job.endpoint)
            if delay is not None and job.started_at is not None:
                delay.observe(max(0.0, job.started_at - job.created_at))

    def middleware(self, app: Any) -> Any:
        """Litestar middleware (an ASGI app factory) that counts every request of a route
        whose ``opt`` names an operation (:func:`operation`), by the status it was answered
        with (:data:`CLIENT_CLOSED` when it ended before a response started)."""
        count = self.request

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            name = scope["route_handler"].opt.get(OPERATION)
            if name is None:
                await app(scope, receive, send)
                return
            status = CLIENT_CLOSED

            async def send_status(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                count(scope["path_params"].get("endpoint_id"), name, status)

        return counted

    # --- exposition --------------------------------------------------------------------------

    async def render(self, health: HealthReader) -> bytes:
        """The Prometheus text of every metric, the store gauges read now through ``health``
        (one read per endpoint, concurrently, for at most ``STORE_READ_TIMEOUT``: a scrape
        answers while the store is out or hangs, with ``podgate_endpoint_store_up 0``; the
        store logs its outage once, so a scrape during one logs nothing)."""
        try:
            found = await asyncio.wait_for(asyncio.gather(*[health(ep) for ep in self.endpoints]),
                                           STORE_READ_TIMEOUT)
        except (StoreUnavailable, TimeoutError):
            self._gauges.snapshot = None
        except Exception:
            log.warning("metrics: the job store's health read failed", exc_info=True)
            self._gauges.snapshot = None
        else:
            self._gauges.snapshot = dict(zip(self.endpoints, found, strict=True))
        return generate_latest(self.registry)  # right after the snapshot: no await in between
