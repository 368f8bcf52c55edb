"""Back-off for the ``runpod`` SDK worker's job-take after an error, installed by
``podgate worker`` (:func:`install`).

The SDK's take loop (``rp_scale.JobScaler.get_jobs``) polls again at once after any error
but a 429: against an endpoint that is down (connection refused, a killed replica, a load
balancer answering 502 at once) it spins, tens of thousands of polls and "Failed to get
job" log lines a second, on a core of its own. :class:`PacedFetcher` wraps the SDK's
``get_job``: after a failed take it waits a jittered, doubling pause (50 ms up to 1 s; reset
by the next take that succeeds) before the error reaches the SDK's loop, which logs it and
polls again. A 429 passes at once (the SDK sleeps 5 s itself). The endpoint server paces
its own refusals already (a held 503 during a store outage, ``serverless.routes._paced``);
this covers the endpoint being unreachable. A plain SDK worker (not run by ``podgate
worker``) still spins then.

The SDK has a ``jobs_fetcher`` config key, but honours it only in its local test mode
(``rp_scale.JobScaler.__init__`` returns before reading it otherwise), so :func:`install`
replaces the ``get_job`` that ``rp_scale`` imported (the SDK's files are untouched; each
``JobScaler`` binds it when it is made). Import after the worker's environment is set.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

FIRST_PAUSE = 0.05
LONGEST_PAUSE = 1.0

Fetch = Callable[[Any, int], Awaitable[Any]]


class PacedFetcher:
    """``fetch`` (the SDK's ``get_job(session, num_jobs)``), paused after each failure."""

    def __init__(self, fetch: Fetch, too_many: type[BaseException]) -> None:
        self._fetch = fetch
        self._too_many = too_many
        self._pause = 0.0

    async def __call__(self, session: Any, num_jobs: int = 1) -> Any:
        try:
            jobs = await self._fetch(session, num_jobs)
        except Exception as exc:
            if not isinstance(exc, self._too_many):
                self._pause = min(LONGEST_PAUSE, max(FIRST_PAUSE, self._pause * 2))
                await asyncio.sleep(self._pause * random.uniform(0.5, 1.0))
            raise
        self._pause = 0.0
        return jobs


def install() -> None:
    """Make every ``JobScaler`` made from now on take jobs through :class:`PacedFetcher`."""
    from runpod.http_client import TooManyRequests
    from runpod.serverless.modules import rp_job, rp_scale

    rp_scale.get_job = PacedFetcher(rp_job.get_job, TooManyRequests)
