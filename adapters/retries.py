"""The one retry policy of upstream calls.

A ``RetryPolicy`` repeats a call that failed with a ``RunPodError`` its ``retry_if`` accepts
(the error's own judgement: ``refused`` or ``transient``), at most ``retries`` more times:
after the upstream's ``Retry-After`` when it sent one (a ``Retry-After`` of 0 counts as
none), else after a pause that doubles from ``first_pause_s``; no pause is longer than
``max_pause_s``. Any other error, and the last failure, is raised as it is. Its callers: a
job's polls (``proxy.jobs``) and the cancel queue (``proxy.cancel``).

A few lines rather than tenacity or stamina: a job's polls go through it on every
``/stream`` answer, and tenacity's per-call machinery costs ~25 µs where this costs well under
one; the policy is a frozen value, made once and shared.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from adapters.upstream import RunPodError

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_if: Callable[[RunPodError], bool]
    retries: int
    first_pause_s: float
    max_pause_s: float = math.inf

    def pause(self, retry: int, retry_after: float | None = None) -> float:
        """The pause before retry number ``retry`` (0 for the first)."""
        return min(retry_after or self.first_pause_s * 2**retry, self.max_pause_s)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)``, retried as the policy says."""
        for retry in range(self.retries + 1):
            try:
                return await fn(*args, **kwargs)
            except RunPodError as exc:
                if retry == self.retries or not self.retry_if(exc):
                    raise
                await asyncio.sleep(self.pause(retry, exc.retry_after))
        raise AssertionError("unreachable")
