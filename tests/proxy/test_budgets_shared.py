"""Two podgate replicas on one Redis share one budget (issue 11): two ``Upstreams`` built from
the settings, each with its own Redis connections (as two processes would have), poll one
endpoint's ``/stream`` as fast as they can through a tiny budget (20 per 2 s) on the real
Redis at 127.0.0.1:6379 (a key prefix of their own per test). A raw loopback server plays the
endpoint and notes when each call reaches it: no window of 2 s ever holds more than 20, and
both replicas get through. With Redis unreachable the calls still go, each replica keeping its
share (``replicas = 2``: 10 per 2 s each), and each logs one warning for the whole outage;
when Redis comes back (through a forwarder that is cut and restored) the budget is shared
again, and that is logged once too."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from redis.asyncio import Redis

import adapters.redis_link
from proxy.settings import parse_settings
from proxy.upstreams import Upstreams
from tests.adapters.test_budgets import most_in_a_window
from tests.redis_forwarder import Forwarder

RATE, PER_S = 20, 2.0
RUN_S = 3.0
"""How long the replicas poll: long enough for the budget to matter more than its burst."""


@dataclass
class Endpoint:
    """The raw loopback endpoint: when each ``/stream`` call arrived, and from which job."""

    url: str
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def times(self) -> list[float]:
        return sorted(t for t, _ in self.arrivals)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint("")

    async def stream(request: web.Request) -> web.Response:
        ep.arrivals.append((time.monotonic(), request.match_info["job"]))
        return web.json_response({"status": "IN_PROGRESS", "stream": []})

    app = web.Application()
    app.router.add_get("/v2/{endpoint}/stream/{job}", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ep.url = f"http://127.0.0.1:{port}/v2"
    yield ep
    await runner.cleanup()


def replica(endpoint: Endpoint, redis_url: str, prefix: str, replicas: int = 1) -> Upstreams:
    toml = f"""
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
[budgets]
replicas = {replicas}
[budgets.stream]
rate = {RATE}
per_s = {PER_S}
[[models]]
name = "m"
endpoint = "ep"
format = "vllm"
base_url = "{endpoint.url}"
"""
    return Upstreams(parse_settings(toml, {"RUNPOD_API_KEY": "rp-key"}))


async def poll_hard(upstreams: Upstreams, name: str, callers: int = 5) -> None:
    """``callers`` tasks each polling ``/stream`` back to back for ``RUN_S``."""
    binding = upstreams.binding("m")
    assert binding is not None
    deadline = time.monotonic() + RUN_S

    async def caller(i: int) -> None:
        while time.monotonic() < deadline:
            await binding.client.stream("ep", f"{name}-{i}")

    tasks = [asyncio.create_task(caller(i)) for i in range(callers)]
    await asyncio.sleep(RUN_S)
    for task in tasks:  # those still waiting for their turn give up (the callers' deadline)
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)  # none failed for the budget
    await upstreams.aclose()


async def test_two_replicas_on_one_redis_share_one_budget(endpoint: Endpoint):
    prefix = f"podgate-test-{uuid.uuid4().hex}"
    a = replica(endpoint, "redis://127.0.0.1:6379/0", prefix)
    b = replica(endpoint, "redis://127.0.0.1:6379/0", prefix)
    await asyncio.gather(poll_hard(a, "a"), poll_hard(b, "b"))
    times = endpoint.times()
    assert most_in_a_window(times, PER_S) <= RATE
    # 10 callers polling back to back would make hundreds of calls; the budget let through
    # its burst and then one call per interval, in turn: every caller of both replicas
    assert len(times) >= RATE
    assert {job for _, job in endpoint.arrivals} == {f"{r}-{i}" for r in "ab" for i in range(5)}


async def test_each_replica_takes_its_own_share_of_the_budget_without_redis_sharing(endpoint: Endpoint):
    """Control: two replicas that each believe they are alone (no Redis, ``replicas = 1``)
    send twice the rate — what the shared budget prevents."""
    toml_a = replica(endpoint, "redis://127.0.0.1:6379/0", f"podgate-test-{uuid.uuid4().hex}")
    toml_b = replica(endpoint, "redis://127.0.0.1:6379/0", f"podgate-test-{uuid.uuid4().hex}")
    await asyncio.gather(poll_hard(toml_a, "a"), poll_hard(toml_b, "b"))
    assert most_in_a_window(endpoint.times(), PER_S) > RATE


async def test_with_redis_down_calls_go_at_each_replicas_share_with_one_warning(
        endpoint: Endpoint, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(adapters.redis_link, "RETRY_S", 0.2)  # Redis is tried again (and again fails) in the run
    caplog.set_level(logging.WARNING, logger="podgate.budgets")
    down = "redis://127.0.0.1:1/0"  # nothing listens there
    a = replica(endpoint, down, "podgate-test-down", replicas=2)
    b = replica(endpoint, down, "podgate-test-down", replicas=2)
    await asyncio.gather(poll_hard(a, "a"), poll_hard(b, "b"))
    times = endpoint.times()
    assert len(times) >= RATE  # the calls went
    for name in "ab":  # each replica kept its share: half the rate (the whole rate would be 20)
        mine = sorted(t for t, job in endpoint.arrivals if job.startswith(name))
        # + 1: the share's spacing allows 0.25 s of lateness per call (Limit.headroom_s); on a
        # loaded 2-core machine a call reaching the server later than that puts one more in a window
        assert 0 < most_in_a_window(mine, PER_S) <= RATE // 2 + 1
    assert most_in_a_window(times, PER_S) <= RATE
    warnings = [r for r in caplog.records if r.name == "podgate.budgets"]
    assert len(warnings) == 2  # one per replica for the whole outage
    assert all("unreachable" in r.getMessage() and "127.0.0.1:1" in r.getMessage() for r in warnings)


async def test_a_redis_outage_falls_back_and_recovers(endpoint: Endpoint, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(adapters.redis_link, "RETRY_S", 0.1)
    caplog.set_level(logging.WARNING, logger="podgate.budgets")
    redis = Forwarder()
    await redis.start()
    prefix = f"podgate-test-{uuid.uuid4().hex}"
    upstreams = replica(endpoint, f"redis://127.0.0.1:{redis.port}/0", prefix)
    binding = upstreams.binding("m")
    assert binding is not None
    direct = Redis.from_url("redis://127.0.0.1:6379/0")
    assert await direct.keys(f"{prefix}:budget:*") == []
    await binding.client.stream("ep", "j")  # shared: the budget's TAT is in Redis
    [tat_key] = await direct.keys(f"{prefix}:budget:*")
    shared_tat = await direct.get(tat_key)

    await redis.cut()
    for _ in range(5):  # the calls still go, on this replica's share
        await binding.client.stream("ep", "j")
        await asyncio.sleep(0.05)
    assert await direct.get(tat_key) == shared_tat
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        f"Redis at redis://127.0.0.1:{redis.port}/0 is unreachable (ConnectionError)"]

    await redis.start()  # back on the same port
    await asyncio.sleep(0.15)
    await binding.client.stream("ep", "j")
    assert await direct.get(tat_key) != shared_tat  # shared again
    assert "is back" in caplog.records[-1].getMessage() and len(caplog.records) == 2
    assert len(endpoint.arrivals) == 7
    await upstreams.aclose()
    await redis.cut()
    await direct.delete(tat_key)
    await direct.aclose()
