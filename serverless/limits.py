"""Per-endpoint, per-operation request limits (RunPod's rate and concurrency table).

:class:`Limiter` counts requests in a sliding window and requests in flight, per
(endpoint, operation), in this process. ``acquire`` raises :class:`RateLimited` with the
number of seconds a client should wait (sent as ``Retry-After``), after telling
``on_limited(endpoint, operation, kind)`` (the metrics; ``kind`` is ``"rate"`` for the
per-window limit, ``"concurrency"`` for the in-flight one).
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import contextmanager
from collections.abc import Callable, Iterator

from serverless.settings import OpLimit


class RateLimited(Exception):
    def __init__(self, operation: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded for {operation}")
        self.operation = operation
        self.retry_after = retry_after


class _Bucket:
    __slots__ = ("limit", "stamps", "in_flight")

    def __init__(self, limit: OpLimit) -> None:
        self.limit = limit
        self.stamps: deque[float] = deque()
        self.in_flight = 0


class Limiter:
    def __init__(self, limits: dict[str, OpLimit], window: float,
                 on_limited: Callable[[str, str, str], None] | None = None) -> None:
        self._limits = limits
        self._window = window
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._on_limited = on_limited

    def _refuse(self, endpoint: str, operation: str, kind: str, retry_after: int) -> RateLimited:
        if self._on_limited is not None:
            self._on_limited(endpoint, operation, kind)
        return RateLimited(operation, retry_after)

    @contextmanager
    def acquire(self, endpoint: str, operation: str, now: float) -> Iterator[None]:
        """Count one request of ``operation`` for its duration, or raise RateLimited."""
        limit = self._limits.get(operation)
        if limit is None or (limit.per_window <= 0 and limit.concurrent <= 0):
            yield
            return
        key = (endpoint, operation)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit)
        if limit.per_window > 0:
            stamps = bucket.stamps
            horizon = now - self._window
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
            if len(stamps) >= limit.per_window:
                raise self._refuse(endpoint, operation, "rate", max(1, math.ceil(stamps[0] - horizon)))
        if limit.concurrent > 0 and bucket.in_flight >= limit.concurrent:
            raise self._refuse(endpoint, operation, "concurrency", 1)
        if limit.per_window > 0:
            bucket.stamps.append(now)
        bucket.in_flight += 1
        try:
            yield
        finally:
            bucket.in_flight -= 1
