"""Rolling windows for the console: bounded memory, whatever the traffic.

- ``Percentiles``: latencies over the last 5 and 60 minutes. A ring of 60 one-minute slots,
  each a histogram over fixed log-spaced buckets (``RATIO`` apart: a percentile is known to
  within about 5 %), so a window's memory is 60 × ``BUCKETS`` counts and a percentile costs
  one pass over them, however many requests came.
- ``Latency``: one ``Percentiles`` per model and measure (TTFT, duration); the model label is
  the metrics' (``Metrics.model_label``: configured names and ``unknown``), so the models are
  bounded too.
- ``Errors``: the finished requests that failed, grouped by kind (``classify``), each with a
  count and its latest example (request id, job id, model, status, code — never a key).
- ``Lags``: the last ``LAGS`` cancel lags, for their median.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import Any

from proxy.context import RequestContext

MIN_S = 0.001
"""The first bucket's upper bound: faster is counted as a millisecond."""
RATIO = 1.1
BUCKETS = 150
"""Buckets from 1 ms to ``MIN_S * RATIO**(BUCKETS - 1)`` (about 25 min); longer is counted there."""
SLOTS = 60
"""One-minute slots: the longest window is an hour."""
WINDOWS = {"5m": 5, "60m": 60}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_LOG_RATIO = math.log(RATIO)


def bucket_of(seconds: float) -> int:
    if seconds <= MIN_S:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log(seconds / MIN_S) / _LOG_RATIO - 1e-9))


def upper_bound(bucket: int) -> float:
    return MIN_S * RATIO ** bucket


class Percentiles:
    """Observations in one-minute slots (module docstring)."""

    __slots__ = ("_minutes", "_counts")

    def __init__(self) -> None:
        self._minutes = [-1] * SLOTS
        self._counts = [[0] * BUCKETS for _ in range(SLOTS)]

    def add(self, seconds: float, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        slot = minute % SLOTS
        if self._minutes[slot] != minute:
            self._minutes[slot] = minute
            self._counts[slot] = [0] * BUCKETS
        self._counts[slot][bucket_of(seconds)] += 1

    def summary(self, minutes: int, now: float | None = None) -> dict[str, Any]:
        """``n`` and the ``QUANTILES`` (each its bucket's upper bound, seconds) over the last
        ``minutes`` minutes, the current one included."""
        current = int((time.time() if now is None else now) // 60)
        total = [0] * BUCKETS
        for slot, minute in enumerate(self._minutes):
            if current - minutes < minute <= current:
                for i, c in enumerate(self._counts[slot]):
                    if c:
                        total[i] += c
        n = sum(total)
        out: dict[str, Any] = {"n": n}
        for name, q in QUANTILES.items():
            out[name] = None if n == 0 else upper_bound(_rank_bucket(total, q * n))
        return out


def _rank_bucket(counts: list[int], rank: float) -> int:
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return i
    return len(counts) - 1


class Latency:
    """TTFT and duration ``Percentiles`` per model."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, Percentiles]] = {}

    def add(self, model: str, ttft_s: float | None, duration_s: float | None, now: float | None = None) -> None:
        m = self._models.get(model)
        if m is None:
            m = self._models[model] = {"ttft": Percentiles(), "duration": Percentiles()}
        if duration_s is not None:
            m["duration"].add(duration_s, now)
        if ttft_s is not None:
            m["ttft"].add(ttft_s, now)

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """model → window (``5m``, ``60m``) → measure → ``n`` and percentiles."""
        return {model: {w: {k: p.summary(minutes, now) for k, p in m.items()} for w, minutes in WINDOWS.items()}
                for model, m in self._models.items()}


KINDS = {"runpod_429": "RunPod 429", "worker": "Worker failure", "timeout": "Timeout", "client": "Client error"}


def classify(ctx: RequestContext) -> str | None:
    """The kind of error a finished request ended with (a ``KINDS`` key), or None: it did not
    fail (a client that left, 499, did not fail, nor did a job an operator cancelled)."""
    status, error = ctx.status, ctx.error
    if status == 499 or ctx.note == "console-cancel" or (error is None and status < 400):
        return None
    if error == "rate_limit_exceeded":  # RunPod's 429 (a key over its own rpm/tpm has no code: a client error)
        return "runpod_429"
    if status == 504 or error in ("timeout", "request_timeout") or ctx.note == "timeout":
        return "timeout"
    if 400 <= status < 500:
        return "client"
    return "worker"


class Errors:
    """Counts and the latest example per ``KINDS`` kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, Any]] = {}

    def add(self, ctx: RequestContext, model: str) -> None:
        kind = classify(ctx)
        if kind is None:
            return
        entry = self.kinds.setdefault(kind, {"label": KINDS[kind], "count": 0, "latest": None})
        entry["count"] += 1
        entry["latest"] = {"request_id": ctx.request_id, "job_id": ctx.job_id, "model": model,
                           "status": ctx.status, "code": ctx.error, "at": time.time()}


LAGS = 256


class Lags:
    """The last ``LAGS`` cancel lags (seconds)."""

    def __init__(self) -> None:
        self._lags: deque[float] = deque(maxlen=LAGS)

    def add(self, seconds: float) -> None:
        self._lags.append(seconds)

    def median(self) -> float | None:
        return statistics.median(self._lags) if self._lags else None


__all__ = ["Percentiles", "Latency", "Errors", "Lags", "classify", "KINDS", "bucket_of", "upper_bound"]
