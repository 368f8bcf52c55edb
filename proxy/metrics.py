"""The proxy's Prometheus metrics: ``Metrics`` (one registry per app) and ``GET /metrics``.

Each app has its own ``CollectorRegistry``, never prometheus_client's global one: tests run
several apps in one process, and the embedded default runs the endpoint's metrics beside
the proxy's. ``GET /metrics`` is open like ``/healthz`` (no client key: a scraper has none)
and answers the text format, or OpenMetrics when the scraper asks for it.

Where the numbers come from — each source is a hook the app wires (``proxy.app``), so no
route, transport or queue knows of metrics:

- the finished request (``observe``, a ``RequestContextMiddleware`` observer, once per HTTP
  request after its response ended): ``podgate_requests_total``, the duration and
  time-to-first-token histograms, ``podgate_tokens_total``, ``podgate_requests_cancelled_total``
  and, for those whose job podgate cancelled mid-answer, ``podgate_gpu_seconds_saved_total``
  (``proxy.savings``: the estimated generation time the cancel spared);
- the upstream seam (``runpod_answer``, ``HTTPUpstream.on_answer``, once per RunPod call):
  ``podgate_runpod_calls_total`` and ``podgate_runpod_rate_limited_total`` (its 429s);
- the budgets (``budget_wait``, ``BudgetedUpstream.on_wait``, once per budgeted call):
  ``podgate_budget_wait_seconds``, how long calls waited for RunPod's limits (the ``stream``
  operation's is the poll scheduler's line);
- the cancel queue (``cancel_done``, ``CancelQueue.on_done``): ``podgate_cancels_total``, and
  its depth read at scrape time, ``podgate_cancel_queue_depth``;
- the retries and fallbacks (``submit_retried``, ``rerun``, ``fallback``: the app's
  ``RetryObserver``, ``Upstreams.observer``, told by ``proxy.submit`` and ``proxy.fallback``):
  ``podgate_submit_retries_total``, ``podgate_reruns_total``, ``podgate_fallbacks_total``;
- ``proxy.live.LiveTracker`` (ASGI middleware around the routes, through ``active_streams``):
  ``podgate_active_streams``, the SSE responses that started and have not ended (queue and
  passthrough paths alike);
- the ``/health`` poller (``proxy.health``), read at scrape time: ``podgate_runpod_endpoint_jobs``,
  ``podgate_runpod_endpoint_workers``, ``podgate_runpod_endpoint_health_up`` and
  ``podgate_runpod_endpoint_health_timestamp_seconds``;
- the process (prometheus_client's ``ProcessCollector``): ``process_*`` (memory, CPU, files).

Labels stay bounded, whatever clients send: ``model`` is a configured model name, or
``unknown`` for any other name a client asked for ("" when the request named none);
``route`` is the context's route label; ``status`` an HTTP status; ``key`` a configured
client key's name ("" when podgate is open or the request had no valid key); ``operation``
one of the upstream seam's fixed names (``run``, ``runsync``, ``status``, ``stream``,
``cancel``, ``health``, ``openai/v1/<route>``); ``endpoint`` a configured endpoint id;
``state`` one of the short names RunPod's ``/health`` uses; ``to`` a configured model name
(a fallback); ``reason`` and ``result`` fixed sets (``proxy.submit.RetryReason``,
``RerunResult``). Never a request id, a job id, a
raw path, a key or its hash.

Cost: ``observe`` runs on every request. Label children are looked up once per label tuple
(``_Children``: ``.labels()`` builds a tuple of strings and takes a lock on each call) and
kept; a request then costs a few dict lookups and increments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, get_args

from litestar import Request, Response, get
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from proxy.cancel import CancelQueue
from proxy.context import RequestContext
from proxy.health import HealthPoller
from proxy.savings import saved_by
from proxy.settings import ProxySettings
from proxy.submit import RerunResult, RetryReason

disable_created_metrics()  # no ``*_created`` series: one more sample per child that nobody graphs

DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds from the request's arrival to its response's end. The low buckets are the
routes podgate answers itself (``/v1/models``, probes, a refused request); a completion
takes from about a second (a short answer, warm worker) to minutes (a long generation, a
cold start); 600 is the default ``request_timeout_s``."""
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""Seconds from a streaming request's arrival to its first content byte: a fraction of a
second with a warm worker, seconds while the job waits in RunPod's queue, tens of seconds
to minutes when a worker must start cold (finely spaced below 3 s, where a warm endpoint's
changes show)."""
BUDGET_WAIT_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds a call waited for its budget: nothing at all while under RunPod's limits (the
first bucket), one interval (5 ms for ``/stream``) to seconds when the budget is the bottleneck."""

_STATE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}\Z")
_MAX_STATES = 16
"""At most this many ``state`` labels per endpoint and kind (RunPod sends 5 and 6)."""


class _Children(dict[tuple, Any]):
    """A metric's label children by label values, each looked up once."""

    def __init__(self, metric: Counter | Gauge | Histogram):
        super().__init__()
        self.metric = metric

    def __missing__(self, labels: tuple) -> Any:
        child = self[labels] = self.metric.labels(*labels)
        return child


class Metrics:
    """The app's registry and the hooks that feed it (module docstring)."""

    def __init__(self, settings: ProxySettings, health: HealthPoller | None = None, cancel_queue: CancelQueue | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self._models = {m.name: m.name for m in settings.models}
        requests = Counter("podgate_requests", "HTTP requests answered, by model, route, status and client key name.",
                           ["model", "route", "status", "key"], registry=r)
        duration = Histogram("podgate_request_duration_seconds", "Time from a request's arrival to its response's end.",
                             ["model", "route"], buckets=DURATION_BUCKETS, registry=r)
        ttft = Histogram("podgate_time_to_first_token_seconds",
                         "Streams: time from the request's arrival to its first content byte.", ["model"],
                         buckets=TTFT_BUCKETS, registry=r)
        tokens = Counter("podgate_tokens", "Tokens of answered completions and embeddings; estimated: podgate counted "
                         "them (the worker reported none).", ["model", "kind", "estimated"], registry=r)
        cancelled = Counter("podgate_requests_cancelled",
                            "Requests whose job was cancelled because nobody waited for it any more (the client left, "
                            "the request timed out, the server shut down).", ["model", "route"], registry=r)
        saved = Counter("podgate_gpu_seconds_saved", "Estimated GPU seconds spared by cancelling jobs mid-answer: from "
                        "the cancel to when the job would have reached max_tokens at its observed token rate "
                        "(only where both are known).", ["model"], registry=r)
        calls = Counter("podgate_runpod_calls", "Calls to RunPod by operation and HTTP status (error: no answer came).",
                        ["operation", "status"], registry=r)
        limited = Counter("podgate_runpod_rate_limited", "RunPod answers 429 (rate limited), by operation.",
                          ["operation"], registry=r)
        cancels = Counter("podgate_cancels", "/cancel calls sent for abandoned jobs, by result (ok: cancelled or "
                          "already gone; failed: retries exhausted).", ["result"], registry=r)
        budget_wait = Histogram("podgate_budget_wait_seconds", "How long calls to RunPod waited for their budget "
                                "(RunPod's per-endpoint limits, kept by podgate), by operation.", ["operation"],
                                buckets=BUDGET_WAIT_BUCKETS, registry=r)
        active = Gauge("podgate_active_streams", "Streaming responses started and not yet ended.", ["model"],
                       registry=r)
        if cancel_queue is not None:
            Gauge("podgate_cancel_queue_depth", "Cancels of abandoned jobs queued or in flight (RunPod allows "
                  "100 per 10 s per endpoint: a burst of leaving clients shows here).",
                  registry=r).set_function(lambda: cancel_queue.depth)
        self._requests = _Children(requests)
        self._duration = _Children(duration)
        self._ttft = _Children(ttft)
        self._tokens = _Children(tokens)
        self._cancelled = _Children(cancelled)
        self._saved = _Children(saved)
        self.runpod_429 = 0
        """``podgate_runpod_rate_limited_total`` summed over operations (the console shows it)."""
        self.gpu_seconds_saved: dict[str, float] = {}
        """model label → ``podgate_gpu_seconds_saved_total``'s value (the console shows it)."""
        self._calls = _Children(calls)
        self._limited = _Children(limited)
        self._cancels = _Children(cancels)
        self._budget_wait = _Children(budget_wait)
        self._active = _Children(active)
        for name in self._models:  # present (at 0) before the first stream
            self._active[(name,)].set(0)
        for result in ("ok", "failed"):
            self._cancels[(result,)].inc(0)
        self._retry_metrics(settings)
        if health is not None and health.interval_s > 0:
            r.register(_HealthCollector(health))
        ProcessCollector(registry=r)  # process_*: memory, CPU, open files (memory growth shows here)

    def model_label(self, model: str | None) -> str:
        """A configured model's name; ``unknown`` for any other; "" for none."""
        return "" if model is None else self._models.get(model, "unknown")

    # -- hooks ------------------------------------------------------------------------
    def observe(self, ctx: RequestContext) -> None:
        """A finished request (``RequestContextMiddleware.observers``)."""
        model = self.model_label(ctx.model)
        route = ctx.route
        self._requests[(model, route, ctx.status, ctx.key.name if ctx.key is not None else "")].inc()
        self._duration[(model, route)].observe(ctx.duration_s)
        ttft = ctx.ttft_s
        if ttft is not None:
            self._ttft[(model,)].observe(ttft)
        estimated = "true" if ctx.tokens_estimated else "false"
        if ctx.prompt_tokens:
            self._tokens[(model, "prompt", estimated)].inc(ctx.prompt_tokens)
        if ctx.completion_tokens:
            self._tokens[(model, "completion", estimated)].inc(ctx.completion_tokens)
        if ctx.cancelled:
            self._cancelled[(model, route)].inc()
            if (seconds := saved_by(ctx)) is not None:
                self._saved[(model,)].inc(seconds)
                self.gpu_seconds_saved[model] = self.gpu_seconds_saved.get(model, 0.0) + seconds

    def runpod_answer(self, operation: str, status: int) -> None:
        """One RunPod call's answer (``HTTPUpstream.on_answer``; 0: none came)."""
        self._calls[(operation, status or "error")].inc()
        if status == 429:
            self._limited[(operation,)].inc()
            self.runpod_429 += 1

    def budget_wait(self, operation: str, seconds: float) -> None:
        """One budgeted call's wait for its budget (``BudgetedUpstream.on_wait``)."""
        self._budget_wait[(operation,)].observe(seconds)

    def cancel_done(self, endpoint: str, job_id: str, ok: bool) -> None:
        """One ``/cancel`` finished (``CancelQueue.on_done``); its ids are not labels."""
        self._cancels[("ok" if ok else "failed",)].inc()

    # -- retries and fallbacks (issue 11, part 4): ``proxy.submit.RetryObserver`` ----------
    def _retry_metrics(self, settings: ProxySettings) -> None:
        r = self.registry
        self._submit_retries = _Children(Counter(
            "podgate_submit_retries", "Refused submits (/run, /runsync, /retry, passthrough calls) tried again before "
            "the first byte, by the model whose endpoint refused and why (429, 5xx: 502/503, connect: never reached).",
            ["model", "reason"], registry=r))
        self._reruns = _Children(Counter(
            "podgate_reruns", "FAILED jobs run again with /retry before any output was sent ([[models]] retries), by "
            "result (queued: RunPod ran it again; failed: it would not, the job's error stands).", ["model", "result"],
            registry=r))
        self._fallbacks = _Children(Counter(
            "podgate_fallbacks", "Requests for a model taken by one of its fallbacks (its endpoint swamped, or refusing "
            "after the retries), by the model asked for and the one that served.", ["model", "to"], registry=r))
        for m in settings.models:  # the configured series, present at 0
            for reason in get_args(RetryReason):
                self._submit_retries[(m.name, reason)].inc(0)
            for fallback in m.fallbacks:
                self._fallbacks[(m.name, fallback)].inc(0)
            if m.retries:
                for rerun in get_args(RerunResult):
                    self._reruns[(m.name, rerun)].inc(0)

    def submit_retried(self, model: str, reason: RetryReason) -> None:
        self._submit_retries[(self.model_label(model), reason)].inc()

    def rerun(self, model: str, result: RerunResult) -> None:
        self._reruns[(self.model_label(model), result)].inc()

    def fallback(self, model: str, to: str) -> None:
        self._fallbacks[(self.model_label(model), self.model_label(to))].inc()

    def active_streams(self, model: str | None) -> Any:
        """The ``podgate_active_streams`` child of a model (``proxy.live.LiveTracker``)."""
        return self._active[(self.model_label(model),)]

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry as ``/metrics`` answers it: body and content type (OpenMetrics when
        ``accept`` asks for it, else the Prometheus text format)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _HealthCollector(Collector):
    """The ``/health`` poller's latest readings as gauges, read at scrape time."""

    def __init__(self, poller: HealthPoller):
        self.poller = poller

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("podgate_runpod_endpoint_jobs", "Jobs of a RunPod endpoint by state (inQueue, inProgress, "
                                  "…), from its latest /health answer.", labels=["endpoint", "state"]),
                GaugeMetricFamily("podgate_runpod_endpoint_workers", "Workers of a RunPod endpoint by state (idle, running, "
                                  "throttled, unhealthy, …), from its latest /health answer.",
                                  labels=["endpoint", "state"]),
                GaugeMetricFamily("podgate_runpod_endpoint_health_up", "1 when the endpoint answered its last /health poll.",
                                  labels=["endpoint"]),
                GaugeMetricFamily("podgate_runpod_endpoint_health_timestamp_seconds",
                                  "Unix time of the endpoint's latest /health answer.", labels=["endpoint"]))

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        jobs, workers, up, at = self._families()
        poller = self.poller
        for endpoint in poller.endpoints:
            up.add_metric([endpoint], 1.0 if poller.answering(endpoint) else 0.0)
            reading = poller.latest.get(endpoint)
            if reading is None:
                continue
            at.add_metric([endpoint], reading.at)
            for family, counts in ((jobs, reading.health.jobs), (workers, reading.health.workers)):
                for state, n in _states(counts):
                    family.add_metric([endpoint, state], n)
        yield from (jobs, workers, up, at)


def _states(counts: dict[str, int]) -> Iterator[tuple[str, float]]:
    """RunPod's counts whose names are fit to be labels (a short identifier), at most
    ``_MAX_STATES`` of them: whatever an upstream sends, the series stay bounded."""
    taken = 0
    for state, n in counts.items():
        if taken < _MAX_STATES and _STATE.match(state):
            taken += 1
            yield state, float(n)


@get("/metrics", include_in_schema=False)
async def metrics_route(request: Request) -> Response:
    """``GET /metrics``: open (no client key), Prometheus text or OpenMetrics."""
    metrics: Metrics = request.app.state.gateway.metrics
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(content=body, media_type=content_type)


__all__ = ["Metrics", "metrics_route", "DURATION_BUCKETS", "TTFT_BUCKETS"]
