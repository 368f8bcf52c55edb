"""The one retry policy of upstream calls.

A ``RetryPolicy`` repeats a call that failed with a ``RunPodError`` its ``retry_if`` accepts
(the error's own judgement: ``refused`` or ``transient``), at most ``retries`` more times:
after the upstream's ``Retry-After`` when it sent one (a ``Retry-After`` of 0 counts as
none), else after a pause that doubles from ``first_pause_s``; no pause is longer than
``max_pause_s``. Any other error, and the last failure, is raised as it is. Its callers: a
job's polls (``proxy.jobs``), the cancel queue (``proxy.cancel``) and the submits before
the first byte (``proxy.submit``: ``/run``, ``/runsync`` and the passthrough's calls).

Jitter: every pause is spread by up to ``jitter`` (a fraction) so that the many callers a
burst of 429s turned away at the same moment do not all come back at the same moment. A
backoff pause is shortened by up to that fraction (never below ``(1 - jitter)`` of it); a
``Retry-After`` is lengthened by up to that fraction, never shortened (it is honoured).

``call_until(deadline, …)`` gives up early — raises the last failure at once — when the
next pause would end past ``deadline`` (``time.monotonic()``): the request's own deadline
ends the retrying, and a client told ``Retry-After: 60`` learns it now rather than after a
wait that would outlive its request.

A few lines rather than tenacity or stamina: a job's polls go through it on every
``/stream`` answer, and tenacity's per-call machinery costs ~25 µs where this costs well under
one; the policy is a frozen value, made once and shared.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
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
    jitter: float = 0.2
    """The spread of each pause, a fraction of it (0: exact pauses)."""

    def pause(self, retry: int, retry_after: float | None = None) -> float:
        """The pause before retry number ``retry`` (0 for the first)."""
        spread = self.jitter * random.random() if self.jitter else 0.0
        if retry_after:
            return min(retry_after * (1.0 + spread), self.max_pause_s)
        return min(self.first_pause_s * 2**retry, self.max_pause_s) * (1.0 - spread)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)``, retried as the policy says."""
        return await self.call_until(None, fn, *args, **kwargs)

    async def call_until(self, deadline: float | None, fn: Callable[P, Awaitable[T]], *args: P.args,
                         **kwargs: P.kwargs) -> T:
        """``call``, giving up when the next pause would end past ``deadline`` (monotonic)."""
        for retry in range(self.retries + 1):
            try:
                return await fn(*args, **kwargs)
            except RunPodError as exc:
                if retry == self.retries or not self.retry_if(exc):
                    raise
                pause = self.pause(retry, exc.retry_after)
                if deadline is not None and time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")
