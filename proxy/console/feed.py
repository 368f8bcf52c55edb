"""The console's feed: one snapshot a second, built once and sent to every open page.

``ConsoleFeed`` is fed by the same hooks as ``/metrics`` (``proxy.app`` wires them): the
finished-request observer (``observe``: latency windows, errors), the cancel queue
(``cancel_lag``), and it reads at each tick what the app holds anyway — the ``/health``
poller's latest readings, the budgets' use (``Budgets.usage()``: an operation shows once
it has been called), the live requests (``proxy.live``), the cancel queue's counts and
the metrics' GPU-seconds-saved totals. Nothing is polled per open page.

One task ticks every ``TICK_S``: every ``SAMPLE_EVERY`` ticks it appends a point to each
endpoint's history (queue, workers, budgets: ``HISTORY`` points, so the charts show the
last ten minutes even for a page opened just now); while pages are open (``subscribe``) it
encodes one snapshot and hands the same bytes to each page's queue of one (a slow page
skips snapshots, it never piles them up). The charts' points go out only in a page's first
snapshot and after each sample; the page keeps them in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from proxy.console.windows import Errors, Lags, Latency
from proxy.context import RequestContext

log = logging.getLogger("podgate.console")

TICK_S = 1.0
SAMPLE_EVERY = 5
HISTORY = 120
"""Points per chart: ``HISTORY * SAMPLE_EVERY * TICK_S`` seconds (10 minutes)."""
LATENCY_EVERY = 5
"""Ticks between two computations of the latency percentiles (their windows are minutes long)."""
WORKER_STATES = ("idle", "ready", "running", "initializing", "throttled", "unhealthy")
"""RunPod's worker states (``/health``), in the order the page shows them."""
JOB_STATES = ("inQueue", "inProgress")

_enc = msgspec.json.Encoder()


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


class ConsoleFeed:
    """The snapshots of one app (module docstring). ``gateway``: ``proxy.app.Gateway``."""

    def __init__(self, gateway: Any):
        self.gateway = gateway
        self.latency = Latency()
        self.errors = Errors()
        self.lags = Lags()
        self.history: dict[str, deque[list[Any]]] = {}
        """endpoint → points ``[time, *JOB_STATES, *WORKER_STATES]``."""
        self.budget_history: dict[str, dict[str, deque[float]]] = {}
        """endpoint → operation → the fraction of its rate used, one point per sample."""
        self._pages: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task | None = None
        self._ticks = 0
        self._latency: dict[str, Any] = {}

    # -- hooks ------------------------------------------------------------------------
    def observe(self, ctx: RequestContext) -> None:
        """A finished request (a ``RequestContextMiddleware`` observer)."""
        if ctx.route == "other":  # not the API: the console itself, unknown paths
            return
        model = self.gateway.metrics.model_label(ctx.model)
        if ctx.model is not None and ctx.status == 200:  # a request cut short (cancelled) has a TTFT,
            self.latency.add(model, ctx.ttft_s, None if ctx.cancelled else ctx.duration_s)  # not a job's duration
        self.errors.add(ctx, model)  # a refused key or a bad body too (no model)

    def cancel_lag(self, seconds: float) -> None:
        """``CancelQueue.on_lag``."""
        self.lags.add(seconds)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="podgate-console-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task.cancel():
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug here must not stop the charts for good
                log.exception("console feed tick failed")
            await asyncio.sleep(TICK_S)

    def tick(self) -> None:
        sampled = self._ticks % SAMPLE_EVERY == 0
        if sampled:
            self.sample()
        if self._pages:
            if self._ticks % LATENCY_EVERY == 0 or not self._latency:
                self._latency = self.latency.summary()
            data = sse(_enc.encode(self.snapshot(charts=sampled)))
            for page in self._pages:
                if page.full():
                    page.get_nowait()  # a slow page skips a snapshot
                page.put_nowait(data)
        self._ticks += 1

    # -- pages ------------------------------------------------------------------------
    async def subscribe(self) -> AsyncIterator[bytes]:
        """One open page's SSE body: a snapshot now, then one per tick, until it leaves or
        the server drains (the page reconnects to whichever replica answers)."""
        page: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._pages.add(page)
        try:
            self._latency = self.latency.summary()
            yield sse(_enc.encode(self.snapshot()))
            while not self.gateway.drain.draining:  # a page must not hold a shutdown up
                yield await page.get()
        finally:
            self._pages.discard(page)

    @property
    def pages(self) -> int:
        return len(self._pages)

    # -- what the page shows ----------------------------------------------------------
    def _budget_use(self) -> dict[str, dict[str, float]] | None:
        """endpoint → operation → share of its rate used in the last window
        (``Budgets.usage()``; None before the app started)."""
        upstreams = self.gateway.upstreams
        return None if upstreams is None else upstreams.budget_usage()

    def sample(self) -> None:
        """One point per endpoint for the charts."""
        now = time.time()
        health = self.gateway.health
        for endpoint in self._endpoints():
            reading = health.latest.get(endpoint)
            point: list[Any] = [round(now, 1)]
            if reading is None:
                point += [None] * (len(JOB_STATES) + len(WORKER_STATES))
            else:
                point += [reading.health.jobs.get(s, 0) for s in JOB_STATES]
                point += [reading.health.workers.get(s, 0) for s in WORKER_STATES]
            self.history.setdefault(endpoint, deque(maxlen=HISTORY)).append(point)
        for endpoint, ops in (self._budget_use() or {}).items():  # (a budget made since: its chart starts now)
            charts = self.budget_history.setdefault(endpoint, {})
            for op, fraction in ops.items():
                charts.setdefault(op, deque(maxlen=HISTORY)).append(round(float(fraction), 3))

    def _endpoints(self) -> list[str]:
        return list(dict.fromkeys(m.endpoint for m in self.gateway.settings.models))

    def _models(self) -> list[dict[str, Any]]:
        out = []
        upstreams = self.gateway.upstreams
        for m in self.gateway.settings.models:
            binding = upstreams.binding(m.name) if upstreams is not None else None
            if binding is None or not binding.passthrough:
                path = "queue"
            elif binding.format is None:
                path = "passthrough"
            else:
                path = "passthrough + queue"
            out.append({"name": m.name, "endpoint": m.endpoint, "format": m.format, "path": path})
        return out

    def _endpoint_rows(self, charts: bool) -> dict[str, Any]:
        health = self.gateway.health
        use = self._budget_use()
        rows = {}
        for endpoint in self._endpoints():
            reading = health.latest.get(endpoint)
            rows[endpoint] = row = {
                "up": None if health.interval_s <= 0 else health.answering(endpoint),
                "failing": health.failing.get(endpoint),
                "at": None if reading is None else reading.at,
                "jobs": None if reading is None else {s: reading.health.jobs.get(s, 0) for s in JOB_STATES},
                "workers": None if reading is None else {s: reading.health.workers.get(s, 0) for s in WORKER_STATES},
                "budgets": None if use is None else use.get(endpoint, {}),
            }
            if charts:
                row["history"] = list(self.history.get(endpoint, ()))
                row["budget_history"] = {op: list(p) for op, p in self.budget_history.get(endpoint, {}).items()}
        return rows

    def snapshot(self, charts: bool = True) -> dict[str, Any]:
        """What an open page shows; the charts' points (most of the bytes) only with
        ``charts`` — when they changed, and in a page's first snapshot: the page keeps them."""
        g = self.gateway
        saved = g.metrics.gpu_seconds_saved
        return {
            "t": time.time(),
            "keyed": bool(g.settings.keys),
            "models": self._models(),
            "endpoints": self._endpoint_rows(charts),
            "live": g.live.rows(),
            "errors": self.errors.kinds,
            "runpod_429": g.metrics.runpod_429,
            "cost": {"cancels_sent": g.cancels.sent, "cancels_failed": g.cancels.failed,
                     "cancel_queue": g.cancels.depth, "median_lag_s": self.lags.median(),
                     "gpu_seconds_saved": sum(saved.values()), "saved_by_model": dict(saved)},
            "latency": self._latency,
        }


__all__ = ["ConsoleFeed", "TICK_S", "HISTORY"]
