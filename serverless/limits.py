"""Per-endpoint, per-operation request limits (RunPod's rate and concurrency table).

:class:`Limiter` admits a request of an operation, or raises :class:`RateLimited` with the
number of seconds a client should wait (sent as ``Retry-After``), after telling
``on_limited(endpoint, operation, kind)`` (the metrics; ``kind`` is ``"rate"`` for the
per-window limit, ``"concurrency"`` for the in-flight one).

- The rate part counts requests in a sliding window per (endpoint, operation). With a
  :class:`SharedRate` (the Redis store) the window is counted once for every replica, in
  Redis; while Redis is out (``SharedRate.out``, or a call fails) each replica counts alone,
  the full limit each: a limiter never fails closed for Redis' sake. Each replica also keeps
  its own window at all times, so the fallback starts from what this replica just admitted.
- The concurrency part is per replica: a slot is held for the request's duration, and a
  crashed replica's slots would otherwise stay taken in a shared counter.

The concurrency slot is taken first, then the rate: a request refused for concurrency spends
nothing of the shared window.
"""

from __future__ import annotations

import math
from collections import deque
from types import TracebackType
from typing import Protocol, runtime_checkable
from collections.abc import Callable

from serverless.settings import OpLimit
from serverless.store.base import StoreUnavailable


class RateLimited(Exception):
    def __init__(self, operation: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded for {operation}")
        self.operation = operation
        self.retry_after = retry_after


@runtime_checkable
class SharedRate(Protocol):
    """A window counter shared by replicas (``RedisStore``)."""

    @property
    def out(self) -> bool:
        """The shared counter is known to be unreachable now: count locally."""
        ...

    async def take_rate(self, endpoint: str, operation: str, per_window: int, window: float, *,
                        now: float) -> float:
        """Count one request if fewer than ``per_window`` were counted in the last ``window``
        seconds and answer 0; else the seconds until one leaves the window. Raises
        :class:`StoreUnavailable`."""
        ...


class _Bucket:
    __slots__ = ("limit", "stamps", "in_flight")

    def __init__(self, limit: OpLimit) -> None:
        self.limit = limit
        self.stamps: deque[float] = deque()
        self.in_flight = 0


class Slot:
    """An admitted request's concurrency slot; leaving the ``with`` block frees it."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: _Bucket | None) -> None:
        self._bucket = bucket

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        if self._bucket is not None:
            self._bucket.in_flight -= 1
            self._bucket = None


class Limiter:
    def __init__(self, limits: dict[str, OpLimit], window: float,
                 on_limited: Callable[[str, str, str], None] | None = None,
                 shared: SharedRate | None = None) -> None:
        self._limits = limits
        self._window = window
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._on_limited = on_limited
        self._shared = shared

    def _refuse(self, endpoint: str, operation: str, kind: str, retry_after: int) -> RateLimited:
        if self._on_limited is not None:
            self._on_limited(endpoint, operation, kind)
        return RateLimited(operation, retry_after)

    async def acquire(self, endpoint: str, operation: str, now: float) -> Slot:
        """Admit one request of ``operation`` (its slot is held until the returned
        :class:`Slot` is left or released), or raise RateLimited."""
        limit = self._limits.get(operation)
        if limit is None or (limit.per_window <= 0 and limit.concurrent <= 0):
            return Slot(None)
        key = (endpoint, operation)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit)
        if limit.concurrent > 0 and bucket.in_flight >= limit.concurrent:
            raise self._refuse(endpoint, operation, "concurrency", 1)
        bucket.in_flight += 1
        slot = Slot(bucket)
        try:
            if limit.per_window > 0:
                await self._take_rate(endpoint, operation, bucket, now)
        except BaseException:
            slot.release()
            raise
        return slot

    async def _take_rate(self, endpoint: str, operation: str, bucket: _Bucket, now: float) -> None:
        per_window = bucket.limit.per_window
        stamps = bucket.stamps
        horizon = now - self._window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        wait = None
        shared = self._shared
        if shared is not None and not shared.out:
            try:
                wait = await shared.take_rate(endpoint, operation, per_window, self._window, now=now)
            except StoreUnavailable:
                pass  # the store logged the outage; counted here until Redis is back
        if wait is None and len(stamps) >= per_window:
            wait = stamps[0] - horizon
        if wait:
            # ``now`` was read before the await: a replica's stamp taken after it can be the
            # oldest, which would put the wait a little past the window itself
            wait = min(wait, self._window)
            raise self._refuse(endpoint, operation, "rate", max(1, math.ceil(wait)))
        stamps.append(now)
        if len(stamps) > per_window:  # admitted by the shared window: keep the last ones only
            stamps.popleft()
