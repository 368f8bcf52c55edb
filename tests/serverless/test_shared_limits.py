"""The endpoint's rate limits with the Redis store: two ``podgate endpoint`` replicas on one
Redis (one prefix) admit a tiny ``/run`` limit once between them, where two replicas with
their own counts admit it once each; and a limiter whose Redis is out counts on its own
rather than refusing or failing.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from serverless.limits import Limiter, RateLimited
from serverless.settings import OpLimit
from serverless.store.redis import RedisStore
from tests.redis_forwarder import Forwarder

pytestmark = pytest.mark.usefixtures("redis_required")

RUN_LIMIT = 5
PER_REPLICA = 12  # /run calls sent to each replica, all at once
LIMITS = {"run": (RUN_LIMIT, 0)}
WINDOW = 120.0  # far longer than the test: no request leaves the window while it runs


async def _burst(servers) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers=servers[0].headers(), timeout=30) as client:
        return await asyncio.gather(*(client.post(f"{server.url()}/run", json={"input": {"n": i}})
                                      for server in servers for i in range(PER_REPLICA)))


async def test_two_replicas_on_one_redis_admit_the_run_limit_once_between_them(endpoint_factory):
    prefix = f"podgate-test:{uuid.uuid4().hex}:"
    servers = [endpoint_factory(store="redis", redis_prefix=prefix, limits=LIMITS, rate_window=WINDOW)
               for _ in range(2)]
    answers = await _burst(servers)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * RUN_LIMIT + [429] * (2 * PER_REPLICA - RUN_LIMIT), [
        (r.status_code, r.text) for r in answers if r.status_code not in (200, 429)]
    refused = [r for r in answers if r.status_code == 429]
    # the oldest admitted request leaves the window about WINDOW seconds from now
    assert all(WINDOW - 30 <= int(r.headers["retry-after"]) <= WINDOW for r in refused), [
        r.headers["retry-after"] for r in refused]
    assert all("error" in r.json() for r in refused)


async def test_replicas_with_their_own_stores_admit_the_limit_each(endpoint_factory):
    servers = [endpoint_factory(store="redis", limits=LIMITS, rate_window=WINDOW) for _ in range(2)]
    answers = await _burst(servers)
    assert sum(r.status_code == 200 for r in answers) == 2 * RUN_LIMIT


async def test_a_limiter_whose_redis_is_out_counts_on_its_own():
    redis = Forwarder()
    await redis.start()
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", prefix=f"podgate-test:{uuid.uuid4().hex}:")
    limiter = Limiter({"run": OpLimit(3, 0)}, 60.0, shared=store)
    try:
        with await limiter.acquire("ep", "run", 1000.0):  # counted in Redis
            pass
        assert not store.out
        await redis.cut()
        for t in (1001.0, 1002.0):  # the first call finds Redis out; both counted here
            with await limiter.acquire("ep", "run", t):
                pass
        assert store.out
        with pytest.raises(RateLimited) as refused:  # this replica's own window is full
            await limiter.acquire("ep", "run", 1003.0)
        assert refused.value.retry_after == 57
        await redis.start()
        assert await store.take_rate("ep", "run", 3, 60.0, now=1004.0) == 0  # back, and shared again
        assert not store.out
    finally:
        await store.delete_all()
        await store.close()
        await redis.cut()


async def test_a_stamp_newer_than_the_callers_clock_never_asks_for_more_than_the_window():
    # replica B read its clock, then replica A's request reached Redis first with a later stamp
    store = RedisStore("redis://127.0.0.1:6379/0", prefix=f"podgate-test:{uuid.uuid4().hex}:")
    limiter = Limiter({"run": OpLimit(1, 0)}, 60.0, shared=store)
    try:
        assert await store.take_rate("ep", "run", 1, 60.0, now=1000.5) == 0  # replica A
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire("ep", "run", 1000.0)  # replica B
        assert refused.value.retry_after == 60
    finally:
        await store.delete_all()
        await store.close()
