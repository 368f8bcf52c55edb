"""Budgets (``adapters.budgets``), in one process: the GCRA never lets more than ``rate`` calls
into a window of ``per_s`` (a property over arrival patterns, on an injected clock), callers
over budget wait first come, first served instead of failing, the concurrency cap holds (a
streamed answer keeps its slot until closed), a caller that gives up frees what it held, and
``BudgetedUpstream`` puts every call of the seam through the budget of its endpoint and
operation (RunPod's table by default)."""

from __future__ import annotations

import asyncio
import bisect
import itertools

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.budgets import DEFAULT_LIMITS, Budget, BudgetedUpstream, Budgets, Limit, _LocalRate, budget_operation
from adapters.http_upstream import HTTPUpstream
from adapters.upstream import RunPodError, UpstreamRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def most_in_a_window(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) that fall in any half-open window ``[t, t + window)``."""
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def test_defaults_are_runpods_table():
    assert DEFAULT_LIMITS["stream"] == DEFAULT_LIMITS["status"] == DEFAULT_LIMITS["runsync"] == Limit(2000, 10.0, 400)
    assert DEFAULT_LIMITS["run"] == Limit(1000, 10.0, 200)
    assert DEFAULT_LIMITS["cancel"] == Limit(100, 10.0, 20)
    assert DEFAULT_LIMITS["purge-queue"].rate == 2
    assert DEFAULT_LIMITS["openai"] == Limit(2000, 10.0, 400)
    assert "health" not in DEFAULT_LIMITS
    assert budget_operation("openai/v1/chat/completions") == "openai"
    assert budget_operation("purge-queue") == "purge-queue"


@settings(max_examples=300, deadline=None)
@given(rate=st.integers(1, 50), per_s=st.sampled_from([0.5, 2.0, 10.0]), burst=st.none() | st.integers(1, 50),
       calls=st.lists(st.tuples(st.floats(0, 1.0), st.floats(0, 1.0)), min_size=1, max_size=300))
def test_gcra_never_lets_more_than_rate_into_a_window(rate, per_s, burst, calls):
    limit = Limit(rate, per_s, burst=None if burst is None else min(burst, rate))
    clock = Clock()
    gcra = _LocalRate(limit, clock)
    slots, arrivals = [], []
    for gap, late in calls:  # each call goes at its arrival + its wait, and lands up to headroom_s later
        clock.now += gap * per_s / rate
        slots.append(clock.now + gcra.reserve()[0])
        arrivals.append(slots[-1] + late * limit.headroom_s * 0.999)
    assert slots == sorted(slots)  # first come, first served
    assert most_in_a_window(sorted(arrivals), per_s) <= rate


def test_gcra_lets_a_burst_through_then_spaces_the_rest():
    clock = Clock()
    limit = Limit(20, 2.0)  # a burst of 2, then one per 2.25 / 19 s
    gcra = _LocalRate(limit, clock)
    waits = [gcra.reserve()[0] for _ in range(40)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(limit.interval)
    assert all(b - a == pytest.approx(limit.interval) for a, b in itertools.pairwise(waits[2:]))
    clock.now += 100  # idle long enough: the burst is back
    assert gcra.reserve()[0] == 0.0


def test_a_waiter_that_gives_up_hands_back_its_slot():
    clock = Clock()
    limit = Limit(10, 1.0, burst=1)
    gcra = _LocalRate(limit, clock)
    gcra.reserve()
    wait, tat = gcra.reserve()
    assert wait > 0
    gcra.give_back(tat)
    assert gcra.reserve()[0] == wait  # the next caller gets the same slot, not a later one
    _, first = gcra.reserve()
    gcra.reserve()
    gcra.give_back(first)  # someone reserved after it: nothing to hand back
    assert gcra.reserve()[0] == pytest.approx(4 * limit.interval)


def test_a_replicas_share():
    limit = Limit(2000, 10.0, 400)
    assert limit.share(1) is limit
    assert limit.share(3) == Limit(666, 10.0, 133)
    assert Limit(2, 10.0).share(5) == Limit(1, 10.0)  # never below one


async def test_callers_over_the_rate_wait_in_arrival_order():
    clock = Clock()
    slept: list[tuple[int, float]] = []
    caller = [0]

    async def sleep(seconds: float) -> None:
        slept.append((caller[0], seconds))

    budget = Budget(Limit(10, 1.0, burst=2), clock=clock, sleep=sleep)
    for caller[0] in range(6):
        await budget.acquire()
        budget.release()
    assert [who for who, _ in slept] == [2, 3, 4, 5]  # the burst went at once; nobody failed
    interval = (1.0 + 0.25) / 9
    assert [s for _, s in slept] == pytest.approx([interval, 2 * interval, 3 * interval, 4 * interval])


async def test_the_concurrency_cap_holds_and_waiters_go_in_order():
    budget = Budget(Limit(0, 10.0, 2))
    order: list[int] = []
    gate = asyncio.Event()

    async def call(i: int) -> None:
        await budget.acquire()
        order.append(i)
        await gate.wait()
        budget.release()

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert order == [0, 1]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]


async def test_a_caller_deadline_ends_the_wait_and_frees_the_slot():
    budget = Budget(Limit(1, 60.0, 1, burst=1))  # one call a minute, one at a time
    await budget.acquire()
    budget.release()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await budget.acquire()  # would wait a minute
    with pytest.raises(TimeoutError):  # the slot was given back: the next waits no longer
        async with asyncio.timeout(0.05):
            await budget.acquire()
    assert not budget._slots.locked()  # type: ignore[union-attr]


def recording_upstream(seen: list[str], status: int = 200) -> HTTPUpstream:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(status, content=b'{"status":"IN_PROGRESS","stream":[]}')

    return HTTPUpstream(httpx.MockTransport(handler), "http://runpod.test/v2", "k")


async def test_the_seam_takes_every_call_from_its_endpoints_operation_budget():
    seen: list[str] = []
    budgets = Budgets("http://runpod.test/v2", {**DEFAULT_LIMITS, "stream": Limit(0, 10.0, 1)})
    upstream = BudgetedUpstream(recording_upstream(seen), budgets)
    stream_a = UpstreamRequest("GET", "a/stream/j1", "stream")
    stream_b = UpstreamRequest("GET", "b/stream/j2", "stream")
    body = await upstream.open(stream_a)  # holds endpoint a's only /stream slot until closed
    assert budgets.of(stream_a) is budgets.of(UpstreamRequest("GET", "a/stream/j9", "stream"))
    assert budgets.of(stream_a) is not budgets.of(stream_b)
    await upstream.send(stream_b)  # another endpoint: its own budget
    waiting = asyncio.create_task(upstream.send(stream_a))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await body.aclose()
    await body.aclose()  # closing twice gives back one slot
    await waiting
    assert seen == ["/v2/a/stream/j1", "/v2/b/stream/j2", "/v2/a/stream/j1"]
    assert not budgets.of(stream_a)._slots.locked()  # type: ignore[union-attr]
    # the gateway's routes share one budget per endpoint; /health has none
    chat = budgets.of(UpstreamRequest("POST", "a/openai/v1/chat/completions", "openai/v1/chat/completions"))
    assert chat is budgets.of(UpstreamRequest("POST", "a/openai/v1/embeddings", "openai/v1/embeddings"))
    assert chat is not None and chat.limit == DEFAULT_LIMITS["openai"]
    assert budgets.of(UpstreamRequest("GET", "a/health", "health")) is None
    await upstream.aclose()


async def test_a_failed_call_gives_its_slot_back():
    seen: list[str] = []
    budgets = Budgets("http://runpod.test/v2", {"run": Limit(0, 10.0, 1)})
    upstream = BudgetedUpstream(recording_upstream(seen, status=500), budgets)
    run = UpstreamRequest("POST", "a/run", "run", b"{}")
    for call in (upstream.send, upstream.open):
        with pytest.raises(RunPodError):
            await call(run)
    assert len(seen) == 2
    assert not budgets.of(run)._slots.locked()  # type: ignore[union-attr]
