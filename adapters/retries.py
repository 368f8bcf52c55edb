"""The one retry policy of upstream calls, on tenacity.

``retrying(retry_if, retries=, first_pause_s=, max_pause_s=)`` repeats a call that failed
with a ``RunPodError`` that ``retry_if`` accepts (the error's own ``refused`` or
``transient``), at most ``retries`` more times: after the upstream's ``Retry-After`` when it
sent one (a ``Retry-After`` of 0 counts as none), else after a pause that doubles from
``first_pause_s``; no pause is longer than ``max_pause_s``. Any other error, and the last
failure, is raised as it is. Its callers: a job's polls (``proxy.jobs``) and the cancel
queue (``proxy.cancel``); ``serverless/`` (which imports nothing of ``adapters/``) retries
its webhook deliveries with tenacity directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from adapters.upstream import RunPodError


def retrying(retry_if: Callable[[RunPodError], bool], *, retries: int, first_pause_s: float,
             max_pause_s: float = math.inf) -> AsyncRetrying:
    """The policy for one call: ``await retrying(...)(fn, *args)``, or
    ``async for attempt in retrying(...): with attempt: …``."""
    backoff = wait_exponential(multiplier=first_pause_s, max=max_pause_s)

    def pause(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, RunPodError) else None
        return min(retry_after or backoff(state), max_pause_s)

    return AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, RunPodError) and retry_if(exc)),
        stop=stop_after_attempt(retries + 1),
        wait=pause,
        reraise=True,
    )
