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

``rerun_failed``: a job that ended FAILED before any of its output reached the client is run
again with ``/retry`` (same id) when its model allows it (``[[models]] retries``).

Who hears of it: each retry of a refused submit (``RetryObserver.submit_retried``, by reason:
``429``, ``5xx`` for a 502/503, ``connect`` when the request never reached RunPod) and each
``/retry`` (``rerun``: ``queued`` or ``failed``) is reported, under the name of the model whose
endpoint it went to, to the observer the request is ``SERVING`` (the app's metrics). That
is a context variable, set by the walk of the model's fallbacks (``proxy.fallback``) around
each model it tries: the submits are made deep in paths (``proxy.streaming``,
``proxy.nonstream``, ``proxy.passthrough``) that know neither the model being tried nor the
metrics, and the request's task — with the tasks it starts, which copy it — carries it.
Outside a walk nothing is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any, Generic, Literal, Protocol, TypeVar

from adapters.retries import RetryPolicy
from adapters.runpod_client import RunPodQueueClient
from adapters.upstream import RunPodError
from proxy.cancel import CancelQueue
from proxy.drain import Drain, ShuttingDown
from proxy.jobs import ClientDisconnected, race_disconnect
from proxy.settings import TimingSettings

T = TypeVar("T")

SUBMIT_FIRST_PAUSE_S = 0.5
"""The pause before the first retry of a refused submit without ``Retry-After`` (it doubles)."""
SUBMIT_RETRY_WAIT_S = 30.0
"""The longest the retries of one submit may wait in all; a ``Retry-After`` beyond it is the
client's to honour (it gets the 429 with it)."""


RetryReason = Literal["429", "5xx", "connect"]
RerunResult = Literal["queued", "failed"]


class RetryObserver(Protocol):
    """Hears what the retries and the fallbacks did, by configured model name
    (``proxy.metrics.Metrics``)."""

    def submit_retried(self, model: str, reason: RetryReason) -> None:
        """A refused submit of ``model``'s is tried again."""

    def rerun(self, model: str, result: RerunResult) -> None:
        """A FAILED job of ``model``'s was ``/retry``-ed: queued again, or not."""

    def fallback(self, model: str, to: str) -> None:
        """A request for ``model`` was taken by its fallback ``to``."""


@dataclass(frozen=True, slots=True)
class Serving:
    """The model a request is being tried on now, and who hears of its submits."""

    model: str
    observer: RetryObserver


SERVING: ContextVar[Serving | None] = ContextVar("podgate_serving", default=None)
"""The request's ``Serving`` while a model is tried (module docstring); None: nobody hears."""


def retry_reason(exc: RunPodError) -> RetryReason:
    """A refusal's reason, as a bounded label: ``connect`` (never reached), ``429``, ``5xx``."""
    if not exc.reached:
        return "connect"
    return "429" if exc.status == 429 else "5xx"


def submit_policy(timing: TimingSettings) -> RetryPolicy:
    """The retry policy of submits: refused ones only, ``timing.submit_retries`` times."""
    return RetryPolicy(attrgetter("refused"), timing.submit_retries, SUBMIT_FIRST_PAUSE_S)


class Submission(Generic[T]):
    """One submit, retried while RunPod refuses it (module docstring). ``start()`` makes one
    try; ``attempt`` is the latest try's task (None before the first)."""

    __slots__ = ("_start", "_policy", "_deadline", "_keep", "_serving", "_refused", "attempt", "tries")

    def __init__(self, start: Callable[[], Awaitable[T]], policy: RetryPolicy, deadline: float, *,
                 keep: bool = False):
        self._start = start
        self._policy = policy
        self._deadline = deadline
        self._keep = keep
        self._serving = SERVING.get()
        self._refused: RunPodError | None = None
        self.attempt: asyncio.Future[T] | None = None
        self.tries = 0

    async def result(self) -> T:
        """The first try that RunPod did not refuse (its ``RunPodError`` if it failed), or
        the last refusal once the retries are spent."""
        deadline = min(self._deadline, time.monotonic() + SUBMIT_RETRY_WAIT_S)
        return await self._policy.call_until(deadline, self._try)

    async def _try(self) -> T:
        if self._refused is not None and self._serving is not None:  # the policy retries refusals only
            self._serving.observer.submit_retried(self._serving.model, retry_reason(self._refused))
        self.tries += 1
        self.attempt = attempt = asyncio.ensure_future(self._start())
        try:
            return await (asyncio.shield(attempt) if self._keep else attempt)
        except RunPodError as exc:
            self._refused = exc
            raise


async def rerun_failed(client: RunPodQueueClient, endpoint: str, job_id: str, timing: TimingSettings,
                       deadline: float, *, receive: Any, drain: Drain, cancels: CancelQueue) -> bool:
    """``/retry`` a job that ended with an error before any of its output was sent (the model's
    ``retries``): True when RunPod queued it again. False when it would not — the job did not
    end FAILED or TIMED_OUT (400), it expired (404), or the call failed — and the job's own
    error stands. Refusals (429 …) are retried like a submit. The client leaving (or the
    drain) while ``/retry`` is in flight raises as ``race_disconnect`` does, and the job it
    re-queues is cancelled once it is."""
    retry = Submission(partial(client.retry, endpoint, job_id), submit_policy(timing), deadline, keep=True)
    serving = SERVING.get()
    try:
        await race_disconnect(receive, drain.bound(retry.result()))
    except RunPodError:
        if serving is not None:
            serving.observer.rerun(serving.model, "failed")
        return False
    except (ClientDisconnected, ShuttingDown):
        if retry.attempt is not None:
            cancels.submit_when_known(retry.attempt, client, endpoint)
        raise
    if serving is not None:
        serving.observer.rerun(serving.model, "queued")
    return True


__all__ = ["Submission", "submit_policy", "rerun_failed", "RetryObserver", "Serving", "SERVING", "retry_reason",
           "SUBMIT_FIRST_PAUSE_S", "SUBMIT_RETRY_WAIT_S"]
