"""Submits before the first byte, retried when RunPod refused them (issue 11, part 4).

A job's submit (``/run``, ``/runsync``) and a passthrough's call (``/openai/*``) that RunPod
refused — it answered 429, 502 or 503, or the request never reached it
(``RunPodError.refused``) — created nothing upstream, so repeating it is safe; nothing has
reached the client yet either, so repeating it is invisible. ``Submission`` repeats it
through the one retry policy (``adapters.retries.RetryPolicy``: jittered doubling pauses, or
the upstream's ``Retry-After``), at most ``[timing] submit_retries`` more times. Anything
else is not repeated: a 500 or a timeout after the request was sent may have created a job,
which would then run twice.

The retrying ends with the request: the caller awaits ``result()`` under its own race with
the client's disconnect, the drain and its deadline, which cancel it. A pause between tries
is simply cancelled; a try in flight is either cancelled with the request (the passthrough:
closing its HTTP request is how its job is cancelled) or, with ``keep=True`` (the queue: the
job may exist already), shielded and left in ``attempt`` for the caller to hand to the cancel
queue (``CancelQueue.submit_when_known``). A pause that would end past the request's
deadline, or past ``SUBMIT_RETRY_WAIT_S`` from the first try, is not waited: the refusal
goes to the client at once, with its ``Retry-After`` and ``x-should-retry: true``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Generic, TypeVar

from adapters.retries import RetryPolicy
from proxy.settings import TimingSettings

T = TypeVar("T")

SUBMIT_FIRST_PAUSE_S = 0.5
"""The pause before the first retry of a refused submit without ``Retry-After`` (it doubles)."""
SUBMIT_RETRY_WAIT_S = 30.0
"""The longest the retries of one submit may wait in all; a ``Retry-After`` beyond it is the
client's to honour (it gets the 429 with it)."""


def submit_policy(timing: TimingSettings) -> RetryPolicy:
    """The retry policy of submits: refused ones only, ``timing.submit_retries`` times."""
    return RetryPolicy(attrgetter("refused"), timing.submit_retries, SUBMIT_FIRST_PAUSE_S)


class Submission(Generic[T]):
    """One submit, retried while RunPod refuses it (module docstring). ``start()`` makes one
    try; ``attempt`` is the latest try's task (None before the first)."""

    __slots__ = ("_start", "_policy", "_deadline", "_keep", "attempt", "tries")

    def __init__(self, start: Callable[[], Awaitable[T]], policy: RetryPolicy, deadline: float, *,
                 keep: bool = False):
        self._start = start
        self._policy = policy
        self._deadline = deadline
        self._keep = keep
        self.attempt: asyncio.Future[T] | None = None
        self.tries = 0

    async def result(self) -> T:
        """The first try that RunPod did not refuse (its ``RunPodError`` if it failed), or
        the last refusal once the retries are spent."""
        deadline = min(self._deadline, time.monotonic() + SUBMIT_RETRY_WAIT_S)
        return await self._policy.call_until(deadline, self._try)

    async def _try(self) -> T:
        self.tries += 1
        self.attempt = attempt = asyncio.ensure_future(self._start())
        return await (asyncio.shield(attempt) if self._keep else attempt)


__all__ = ["Submission", "submit_policy", "SUBMIT_FIRST_PAUSE_S", "SUBMIT_RETRY_WAIT_S"]
