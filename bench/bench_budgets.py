"""Benchmark: what a budget (``adapters.budgets``) adds to every upstream call.

Measures, on one core, the CPU time per call of
  1. ``Budget.acquire`` + ``release`` in memory (RunPod's ``/stream`` limit: a rate that is
     never reached in the run, and a concurrency cap), against an empty ``await`` as the floor;
  2. ``BudgetedUpstream.send`` over a do-nothing upstream, against the bare upstream: the
     whole cost of the seam's wrapper (budget lookup by endpoint and operation included);
  3. with ``--redis URL``: the shared rate, one EVALSHA of the GCRA script per call (a round
     trip: wall time per call, sequential, and throughput with 50 callers at once).
Prints µs per call (median of rounds).

Run: .venv/bin/python bench/bench_budgets.py [--calls 100000] [--rounds 5] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from adapters.budgets import Budget, BudgetedUpstream, Budgets, Limit, SharedRates
from adapters.upstream import UpstreamBody, UpstreamRequest

UNREACHED = Limit(10**9, 10.0, 400)
"""``/stream``'s shape with a rate the run never reaches: the cost of taking, not of waiting."""


class NullUpstream:
    async def send(self, request: UpstreamRequest) -> bytes:
        return b""

    async def open(self, request: UpstreamRequest) -> UpstreamBody:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def per_call(fn, calls: int) -> float:
    """CPU µs per ``await fn()``."""
    start = time.process_time()
    for _ in range(calls):
        await fn()
    return (time.process_time() - start) * 1e6 / calls


def median_of(rounds: int, calls: int, make) -> float:
    return statistics.median(asyncio.run(per_call(make(), calls)) for _ in range(rounds))


def bench_memory(calls: int, rounds: int) -> None:
    async def nothing() -> None:
        pass

    def budget_call():
        budget = Budget(UNREACHED)

        async def call() -> None:
            await budget.acquire()
            budget.release()
        return call

    request = UpstreamRequest("GET", "abc123/stream/job-1", "stream")

    def bare():
        up = NullUpstream()
        return lambda: up.send(request)

    def wrapped():
        up = BudgetedUpstream(NullUpstream(), Budgets("https://api.runpod.ai/v2", {"stream": UNREACHED}))
        return lambda: up.send(request)

    floor = median_of(rounds, calls, lambda: nothing)
    take = median_of(rounds, calls, budget_call)
    b, w = median_of(rounds, calls, bare), median_of(rounds, calls, wrapped)
    print(f"{'empty await (floor)':<52} {floor:8.2f} µs")
    print(f"{'Budget.acquire + release, in memory':<52} {take:8.2f} µs   (+{take - floor:.2f})")
    print(f"{'upstream.send, bare':<52} {b:8.2f} µs")
    print(f"{'upstream.send through BudgetedUpstream':<52} {w:8.2f} µs   (+{w - b:.2f} per call)")


async def bench_redis(url: str, calls: int) -> None:
    shared = SharedRates(url, key_prefix=f"podgate-bench-{uuid.uuid4().hex}")
    budget = Budget(UNREACHED, shared=shared, key=shared.key("https://api.runpod.ai/v2", "abc123", "stream"))

    async def call() -> None:
        await budget.acquire()
        budget.release()

    await call()  # the script loaded, a connection open
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{'shared rate (Redis), one caller':<52} {wall * 1e6 / calls:8.1f} µs wall   "
          f"{cpu * 1e6 / calls:6.1f} µs CPU per call")
    callers = 50
    start = time.perf_counter()

    async def caller() -> None:
        for _ in range(calls // callers):
            await call()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall = time.perf_counter() - start
    print(f"{f'shared rate (Redis), {callers} callers at once':<52} {calls / wall:8.0f} calls/s")
    assert not shared.out, "Redis was unreachable: the figures are the fallback's"
    await shared.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", help="also measure the shared rate on this Redis")
    args = parser.parse_args()
    bench_memory(args.calls, args.rounds)
    if args.redis:
        asyncio.run(bench_redis(args.redis, min(args.calls, 5000)))


if __name__ == "__main__":
    main()
