"""The poll scheduler (``adapters.budgets``: a budget's line of ordered calls, and
``proxy.jobs.JobEvents.order``): when the budget is the bottleneck, the smallest order goes
next whatever the arrival, equal orders go in arrival order, a waiter that gives up (or is
handed the head and then gives up) never blocks the line, and streams waiting for their first
output pass the flowing ones, which pass the idle ones, by a bounded lead (no starvation)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters.budgets import Budget, BudgetedUpstream, Budgets, Limit
from adapters.http_upstream import HTTPUpstream
from adapters.runpod_client import RunPodQueueClient
from adapters.upstream import UpstreamRequest
from proxy.jobs import FIRST_OUTPUT_LEAD_S, IDLE_LAG_S, JobEvents
from proxy.settings import TimingSettings


class Gate:
    """A concurrency cap of one held by the test: each ``open()`` lets exactly one call go."""

    def __init__(self) -> None:
        self.budget = Budget(Limit(0, 10.0, 1))
        self.went: list[str] = []

    async def call(self, name: str, order: float | None) -> None:
        await self.budget.acquire(order)
        self.went.append(name)

    async def open(self) -> None:
        self.budget.release()
        for _ in range(5):
            await asyncio.sleep(0)


async def queue(gate: Gate, calls: list[tuple[str, float | None]]) -> list[asyncio.Task]:
    tasks = []
    for name, order in calls:
        tasks.append(asyncio.create_task(gate.call(name, order)))
        await asyncio.sleep(0)
    return tasks


async def test_the_smallest_order_goes_next_whatever_its_arrival():
    gate = Gate()
    await gate.call("holder", 0.0)  # takes the only slot
    tasks = await queue(gate, [("late", 50.0), ("early", 10.0), ("tie-a", 20.0), ("tie-b", 20.0), ("middle", 30.0)])
    assert gate.budget.waiting == 4  # one head (waiting for the slot), four in the heap
    for _ in tasks:
        await gate.open()
    await asyncio.gather(*tasks)
    # the first arrival was already the head (holding the line while it waits for the slot)
    assert gate.went == ["holder", "late", "early", "tie-a", "tie-b", "middle"]


async def test_a_newcomer_with_a_smaller_order_passes_every_waiter():
    gate = Gate()
    await gate.call("holder", 0.0)
    tasks = await queue(gate, [("head", 5.0), ("a", 10.0), ("b", 11.0)])
    await gate.open()  # head goes; "a" becomes the head, waiting for the slot
    tasks += await queue(gate, [("first-token", 1.0)])
    for _ in range(3):
        await gate.open()
    await asyncio.gather(*tasks)
    assert gate.went == ["holder", "head", "a", "first-token", "b"]


async def test_a_waiter_that_gives_up_never_blocks_the_line():
    gate = Gate()
    await gate.call("holder", 0.0)
    tasks = await queue(gate, [("head", 1.0), ("quitter", 2.0), ("after", 3.0)])
    tasks[1].cancel()
    await gate.open()
    await gate.open()
    await asyncio.gather(tasks[0], tasks[2])
    assert gate.went == ["holder", "head", "after"]
    assert gate.budget.waiting == 0


async def test_a_waiter_handed_the_head_then_cancelled_passes_it_on():
    gate = Gate()
    await gate.call("holder", 0.0)
    tasks = await queue(gate, [("head", 1.0), ("next", 2.0), ("last", 3.0)])
    await gate.open()  # head goes: "next" is handed the head …
    tasks[1].cancel()  # … and gives up before it runs
    await gate.open()
    await asyncio.gather(tasks[0], tasks[2], return_exceptions=True)
    assert gate.went == ["holder", "head", "last"]


async def test_unordered_calls_are_untouched_by_the_line():
    budget = Budget(Limit(0, 10.0, 2))
    await budget.acquire()
    await budget.acquire(5.0)
    budget.release()
    budget.release()
    assert budget.waiting == 0


async def test_ordered_calls_keep_the_rate():
    clock_now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock_now[0] += seconds

    budget = Budget(Limit(10, 1.0, burst=1), clock=lambda: clock_now[0], sleep=sleep)
    for i in range(5):
        await budget.acquire(float(i))
        budget.release()
    interval = Limit(10, 1.0, burst=1).interval
    assert slept == pytest.approx([interval] * 4)
    assert budget.recent() == 5


def test_usage_is_the_share_of_the_rate_used_in_the_last_window():
    budgets = Budgets("http://runpod.test/v2", {"stream": Limit(100, 10.0, 0)})
    budget = budgets.of(UpstreamRequest("GET", "ep/stream/j", "stream", order=1.0))
    assert budget is not None

    async def twenty() -> None:
        for _ in range(20):
            await budget.acquire()
    asyncio.run(twenty())
    assert budgets.usage() == {"ep": {"stream": pytest.approx(0.2)}}


def events(saw_items: bool, flowing: bool) -> JobEvents:
    ev = JobEvents(None, "ep", "job", lambda: None, TimingSettings())  # type: ignore[arg-type]
    ev._saw_items, ev._flowing = saw_items, flowing
    return ev


def test_the_order_of_a_stream_by_its_state():
    before = time.monotonic()
    waiting, flowing, idle = events(False, False).order(), events(True, True).order(), events(True, False).order()
    after = time.monotonic()
    assert before - FIRST_OUTPUT_LEAD_S <= waiting <= after - FIRST_OUTPUT_LEAD_S
    assert before <= flowing <= after
    assert before + IDLE_LAG_S <= idle <= after + IDLE_LAG_S
    # the leads are bounded: a flowing stream that has waited longer than the lead goes before a
    # stream asking now for its first output, so no kind starves another
    assert flowing - FIRST_OUTPUT_LEAD_S - 0.01 < waiting
    # a non-streaming request's first output is seen by nobody: no lead
    quiet = JobEvents(None, "ep", "job", lambda: None, TimingSettings(), first_output_lead_s=0.0)  # type: ignore[arg-type]
    assert before <= quiet.order() <= time.monotonic()


class _Echo:
    """A decoder whose events are the items' outputs."""

    def feed(self, output):
        return [output]

    def close(self):
        return []


async def test_a_new_streams_first_poll_passes_the_flowing_streams_polls():
    """Through the real seam (queue client → budgets → HTTP upstream): with one poll at a time,
    a stream asking for its first output goes before flowing streams that asked earlier."""
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        job = request.url.path.rsplit("/", 1)[1]
        seen.append(job)
        if job == "blocker":
            await release.wait()
        return httpx.Response(200, json={"status": "IN_PROGRESS", "stream": [{"output": job}]})

    base = "http://runpod.test/v2"
    budgets = Budgets(base, {"stream": Limit(0, 10.0, 1)})
    client = RunPodQueueClient(BudgetedUpstream(HTTPUpstream(httpx.MockTransport(handler), base, "k"), budgets))
    timing = TimingSettings(stream_wait_ms=0)

    def job(name: str, flowing: bool) -> JobEvents:
        ev = JobEvents(client, "ep", name, _Echo, timing)
        ev._saw_items = ev._flowing = flowing
        return ev

    polls = []
    for name, flowing in [("blocker", True), ("flowing-1", True), ("flowing-2", True), ("flowing-3", True),
                          ("new", False)]:
        polls.append(asyncio.create_task(job(name, flowing).next()))
        for _ in range(10):
            await asyncio.sleep(0)
    release.set()
    batches = await asyncio.gather(*polls)
    assert [b for [b] in batches] == ["blocker", "flowing-1", "flowing-2", "flowing-3", "new"]
    # flowing-1 was already the line's head, waiting for the slot, when "new" came
    assert seen == ["blocker", "flowing-1", "new", "flowing-2", "flowing-3"]
