"""Riding out a short job-store outage (Redis restarting, a network blip) inside the server.

A store call that cannot reach Redis raises :class:`StoreUnavailable`. A request that can
wait (a caller's ``/run``, ``/runsync``, ``/status``, ``/stream``, ``/cancel``, the
``/openai/v1`` gateway; a worker's job-done and job-stream posts) does not pass that on at
once: :func:`ride_out` calls the store again with jittered, doubling back-off (50 ms up to
500 ms) until it answers or the request's outage budget (``store_outage_wait``, 10 s by
default, never past the request's own deadline) is spent; only then does the route answer
503 with ``Retry-After: 1``. Requests that should learn of an outage at once do not wait:
``/health`` and ``/metrics`` (monitoring), ``/purge-queue`` and ``/retry``, and the worker's
held polls (job-take, job-stop: their 503 is paced by ``serverless.routes._paced``, and the
SDK simply polls again), and the sweeper (it skips its pass).

What the ``runpod`` SDK worker (1.12) does with an error from the endpoint, and so what
survives an outage:

- **job-done / job-stream** (``rp_http.py``): each post is retried on 5xx and connection
  errors, 3 attempts with a short Fibonacci back-off, then *dropped* (logged). A dropped
  result is a lost job (it runs until its execution timeout or is re-queued as lost), so
  the server holds these posts longest: ``worker_outage_wait`` (default 60 s) per attempt,
  about three minutes in all with the SDK's own retries. A result posted during an outage shorter
  than that is stored once Redis is back. A stream chunk held this way keeps the
  generator waiting (the SDK awaits each post before the next yield), so the order holds.
- **job-take / job-take-batch**: any error other than 204/400/429 is logged and the poll is
  sent again at once, with no back-off: the server holds its 503 for a second
  (``serverless.routes.OUTAGE_PACE``), which paces the worker to one poll a second.
- **job-stop**: sleeps 1 s after an error; **ping** (the heartbeat process): 3 retries on
  503, then the next ping at its interval.
- A worker's liveness is its last contact, which an outage stops: the sweeper, on its
  first pass after an outage, counts the outage's length as contact (see
  :class:`OutageClock`), so no running job is re-queued or failed as "worker lost" because
  Redis was away.

Idempotence of a retried call: a failed call most often never reached Redis (the connection
was refused or dropped before the script ran). If its reply was lost after the script ran,
the retry is safe for reads, submits (the same job id is stored again, the queue is a set),
``/cancel`` (a second cancel changes nothing) and job-done (the retry finds the job
terminal: 404, which the SDK only logs, and the job has its result); a job-stream chunk
would then be stored twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serverless.store.base import StoreUnavailable

_T = TypeVar("_T")

#: first and longest pause between two tries of a store call during an outage (s)
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 0.5


async def ride_out(call: Callable[[], Awaitable[_T]], budget: float) -> _T:
    """``await call()``; while it raises :class:`StoreUnavailable`, call again after a
    jittered back-off, for up to ``budget`` seconds in all; then the last error is raised.
    ``call`` builds a new store call each time (it reads the clock again)."""
    give_up = time.monotonic() + budget
    pause = FIRST_PAUSE
    while True:
        try:
            return await call()
        except StoreUnavailable:
            left = give_up - time.monotonic()
            if left <= 0:
                raise
        await asyncio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
        pause = min(pause * 2, LONGEST_PAUSE)


class OutageClock:
    """How long the store was out, for the sweeper's lost-worker check.

    During an outage workers' pings and posts cannot be recorded, so each worker's last
    contact ages by the outage's length. :meth:`failed` marks the outage's start (the first
    failed pass), :meth:`succeeded` its end; :meth:`allowance` is then that length, added
    to ``worker_timeout`` for one ``worker_timeout`` after the store is back (by then every
    live worker has pinged again)."""

    __slots__ = ("_out_since", "_allowance", "_until")

    def __init__(self) -> None:
        self._out_since: float | None = None
        self._allowance = 0.0
        self._until = 0.0

    def failed(self, now: float) -> None:
        if self._out_since is None:
            self._out_since = now

    def succeeded(self, now: float, worker_timeout: float) -> None:
        if self._out_since is not None:
            self._allowance = max(self._allowance if now < self._until else 0.0, now - self._out_since)
            self._until = now + worker_timeout + self._allowance
            self._out_since = None

    def allowance(self, now: float) -> float:
        """Seconds to add to ``worker_timeout`` now (also while the store is still out)."""
        if self._out_since is not None:
            return max(now - self._out_since, self._allowance if now < self._until else 0.0)
        return self._allowance if now < self._until else 0.0
