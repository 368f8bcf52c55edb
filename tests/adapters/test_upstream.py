"""The upstream seam (``adapters.upstream``): the queue client speaks to RunPod only through
an ``Upstream`` (so the ``/openai/*`` passthrough can share it), and the one retry policy of
upstream calls (``adapters.retries.RetryPolicy``) pauses and gives up as the polls and the cancel
queue always did."""

from __future__ import annotations

import time
from operator import attrgetter

import msgspec
import pytest

from adapters.retries import RetryPolicy
from adapters.runpod_client import RunPodQueueClient
from adapters.upstream import RunPodError, Upstream, UpstreamRequest


class RecordingUpstream:
    """An ``Upstream`` that answers from a table and records what it was sent."""

    def __init__(self, answers: dict[str, bytes]):
        self.answers = answers
        self.sent: list[UpstreamRequest] = []
        self.closed = False

    async def send(self, request: UpstreamRequest) -> bytes:
        self.sent.append(request)
        return self.answers[request.operation]

    async def aclose(self) -> None:
        self.closed = True


async def test_queue_client_speaks_only_through_its_upstream():
    upstream = RecordingUpstream({
        "run": b'{"id":"j","status":"IN_QUEUE"}',
        "stream": b'{"status":"IN_PROGRESS","stream":[{"output":"a"}]}',
        "cancel": b'{"id":"j","status":"CANCELLED"}',
        "health": b"[]",
    })
    seam: Upstream = upstream
    client = RunPodQueueClient(seam)
    assert (await client.run("ep", {"p": 1})).id == "j"
    assert [i.output for i in (await client.stream("ep", "j", wait_ms=500)).stream] == ["a"]
    assert (await client.cancel("ep", "j")).status == "CANCELLED"
    with pytest.raises(RunPodError) as info:  # a body RunPod does not send
        await client.health("ep")
    assert (info.value.status, info.value.answered, info.value.operation) == (502, False, "health")
    await client.aclose()
    assert upstream.closed
    assert [(r.method, r.path, r.operation, r.wait_ms) for r in upstream.sent] == [
        ("POST", "ep/run", "run", None),
        ("GET", "ep/stream/j", "stream", 500),
        ("POST", "ep/cancel/j", "cancel", None),
        ("GET", "ep/health", "health", None),
    ]
    assert msgspec.json.decode(upstream.sent[0].content) == {"input": {"p": 1}}


def _failing(errors: list[RunPodError]):
    calls = []

    async def call(tag: str) -> str:
        calls.append(tag)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


def test_retry_policy_honours_retry_after_doubles_and_caps():
    policy = RetryPolicy(attrgetter("refused"), retries=5, first_pause_s=0.25, max_pause_s=2.0, jitter=0.0)
    retry_afters = (None, None, 5.0, None, 0.0)  # a Retry-After of 0 counts as none
    assert [policy.pause(n, ra) for n, ra in enumerate(retry_afters)] == [0.25, 0.5, 2.0, 2.0, 2.0]
    uncapped = RetryPolicy(attrgetter("transient"), retries=3, first_pause_s=0.5, jitter=0.0)
    assert [uncapped.pause(n) for n in range(3)] + [uncapped.pause(0, 7.0)] == [0.5, 1.0, 2.0, 7.0]


def test_retry_policy_jitters_backoff_down_and_retry_after_only_up():
    policy = RetryPolicy(attrgetter("refused"), retries=5, first_pause_s=1.0, jitter=0.5)
    backoffs = {policy.pause(1) for _ in range(200)}
    assert all(1.0 <= p <= 2.0 for p in backoffs) and len(backoffs) > 1  # spread, never longer than 2 s
    honoured = {policy.pause(0, 3.0) for _ in range(200)}
    assert all(3.0 <= p <= 4.5 for p in honoured) and len(honoured) > 1  # never sooner than Retry-After


async def test_retry_policy_gives_up_when_the_pause_would_pass_the_deadline():
    policy = RetryPolicy(attrgetter("refused"), retries=5, first_pause_s=0.0)
    call, calls = _failing([RunPodError(429, "x", retry_after=60.0)] * 5)
    with pytest.raises(RunPodError):
        await policy.call_until(time.monotonic() + 30, call, "d")
    assert calls == ["d"]  # told to wait a minute, with half a minute left: not retried


async def test_retry_policy_retries_what_it_accepts_then_gives_up():
    policy = RetryPolicy(attrgetter("refused"), retries=5, first_pause_s=0.0)
    call, calls = _failing([RunPodError(429, "x", retry_after=0.0)] * 5)
    assert await policy.call(call, "a") == "ok"
    assert calls == ["a"] * 6  # the first try and five retries

    call, calls = _failing([RunPodError(503, "x")] * 9)
    with pytest.raises(RunPodError):
        await RetryPolicy(attrgetter("refused"), retries=2, first_pause_s=0.0).call(call, "b")
    assert len(calls) == 3

    call, calls = _failing([RunPodError(504, "timed out", answered=False)])  # transient, not refused
    with pytest.raises(RunPodError) as info:
        await policy.call(call, "c")
    assert (info.value.status, len(calls)) == (504, 1)
