"""A Redis restart under load: ``podgate serve`` → ``podgate endpoint --redis-url`` (on a Redis
of this test's own) → two real ``runpod`` SDK workers, and openai-SDK clients (streaming and
not, no SDK retries) whose jobs span the outage, plus clients that arrive during it.

What an outage is, and what the clients see:

- **A restart with persistence** (``SHUTDOWN SAVE``, down ``OUTAGE`` seconds, started again
  on the same port, its RDB loaded): every job survives in Redis, and the endpoint rides the
  outage out (``serverless.outage``): held caller requests, held result posts of the workers.
  No client fails, every answer is whole and right, every job completes once, the sweeper
  re-queues none (though the outage lasts ``worker_timeout``).
- **A pause** (``CLIENT PAUSE``): connections stay up and commands wait; the same outcome.
- **A restart that loses the data** (``--save ""`` and ``SHUTDOWN NOSAVE``): the jobs in
  flight are gone for good: nothing can finish them. A client then gets a clean error (an
  HTTP error status, or an in-stream error event), never a hang and never a wrong or cut
  answer passed off as whole; the workers' runs of those jobs are stopped (their next
  stream post is refused with a stop signal); the endpoint serves new requests at once.

In every case the endpoint logs a bounded number of lines (the store's one warning per
outage and one when it is back) and no traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.conftest import EndpointServer
from tests.faults.endpoint_cluster import HANDLER, OwnRedis, log_lines, new_prefix, proxy_for, replica, tracebacks
from tests.faults.outage_handlers import ANSWER
from tests.proxy.conftest import ProxyProcess

N_EARLY = 16   # clients whose jobs run when Redis goes (half of them stream)
N_LATE = 8     # clients that arrive while Redis is away
OUTAGE = 3.0   # seconds without Redis
BOUND = 90.0   # every client has an answer within this (a hang guard)
MESSAGES = [{"role": "user", "content": "count"}]


@dataclass
class Cluster:
    redis: OwnRedis
    endpoint: EndpointServer
    proxy: ProxyProcess

    def health(self) -> dict:
        return self.endpoint.health()


@pytest.fixture
def cluster(endpoint_factory, tmp_path: Path) -> Iterator[Cluster]:
    own = OwnRedis(tmp_path)
    own.start()
    proxy = None
    try:
        # the outage is as long as worker_timeout: counted against the workers, it would make
        # the sweeper re-queue every running job
        server = replica(endpoint_factory, own, new_prefix(), workers_max=100, worker_timeout=OUTAGE)
        for _ in range(2):
            server.worker(HANDLER, wait=False)
        server.wait_for_workers(count=2)
        proxy = proxy_for(server, tmp_path)
        yield Cluster(own, server, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        endpoint_factory.close()
        own.close()


async def _ask(client: openai.AsyncOpenAI, stream: bool) -> str:
    """One chat completion; the text of the answer (a stream's deltas joined)."""
    if not stream:
        answer = await client.chat.completions.create(model="tok", messages=MESSAGES)  # type: ignore[arg-type]
        return answer.choices[0].message.content or ""
    text = ""
    chunks = await client.chat.completions.create(model="tok", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    async for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return text


async def _settled(tasks: list[asyncio.Task[str]]) -> list[str | BaseException]:
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
    return list(done)


def _wait(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


async def _under_load(cluster: Cluster, outage: Callable[[], None]) -> list[str | BaseException]:
    """``N_EARLY`` clients, ``outage()`` once all their jobs run, ``N_LATE`` clients during it."""
    async with openai.AsyncOpenAI(base_url=cluster.proxy.base_url, api_key="none", max_retries=0,
                                  timeout=BOUND) as client:
        early = [asyncio.create_task(_ask(client, k % 2 == 0)) for k in range(N_EARLY)]
        await asyncio.to_thread(_wait, lambda: cluster.health()["jobs"]["inProgress"] >= N_EARLY)
        went = asyncio.create_task(asyncio.to_thread(outage))
        await asyncio.sleep(0.5)
        late = [asyncio.create_task(_ask(client, k % 2 == 0)) for k in range(N_LATE)]
        await went
        return await _settled(early + late)


def _restart(redis: OwnRedis, *, save: bool) -> Callable[[], None]:
    def outage() -> None:
        redis.stop(save=save)
        time.sleep(OUTAGE)
        redis.start()
    return outage


def _quiet_logs(cluster: Cluster) -> None:
    """The endpoint logged the outage in a few lines and no traceback; the proxy no traceback."""
    endpoint_log = cluster.endpoint.stderr()
    assert tracebacks(endpoint_log) == 0, endpoint_log[-5000:]
    assert len(log_lines(endpoint_log)) <= 10, endpoint_log[-5000:]
    assert tracebacks(cluster.proxy.output()) == 0, cluster.proxy.output()[-5000:]
    for worker in cluster.endpoint.workers:  # paced to about one failed poll a second
        failed = worker.output().count("Failed to get job")
        assert failed <= 2 * (OUTAGE + 5), worker.output()[-3000:]


def _all_completed(cluster: Cluster, count: int) -> None:
    """Every job completed once: none failed, none lost, none left running or queued."""
    def settled() -> bool:
        jobs = cluster.health()["jobs"]
        return jobs["inProgress"] == 0 and jobs["inQueue"] == 0
    _wait(settled)
    jobs = cluster.health()["jobs"]
    assert (jobs["completed"], jobs["failed"], jobs["retried"]) == (count, 0, 0), jobs


@pytest.mark.parametrize("fault", ["restart-with-data", "pause"])
async def test_a_short_outage_fails_no_request_and_loses_no_job(cluster: Cluster, fault: str):
    outage = _restart(cluster.redis, save=True) if fault == "restart-with-data" \
        else (lambda: cluster.redis.pause(OUTAGE))
    answers = await _under_load(cluster, outage)
    assert answers == [ANSWER] * (N_EARLY + N_LATE), answers
    _all_completed(cluster, N_EARLY + N_LATE)
    _quiet_logs(cluster)


async def test_a_restart_that_loses_the_data_ends_requests_cleanly(cluster: Cluster):
    answers = await _under_load(cluster, _restart(cluster.redis, save=False))
    for answer in answers:  # whole and right, or a clean error: never cut short silently
        assert answer == ANSWER or isinstance(answer, openai.APIError), answer
    assert any(isinstance(a, openai.APIError) for a in answers[:N_EARLY])  # their jobs are gone
    # and their runs are stopped: the workers' next stream post for them is refused and
    # stops the run (most of them, before they end on their own)
    _wait(lambda: sum(w.output().count("Job stopped.") for w in cluster.endpoint.workers) >= N_EARLY // 2)
    async with openai.AsyncOpenAI(base_url=cluster.proxy.base_url, api_key="none", max_retries=0,
                                  timeout=BOUND) as client:  # and the next requests are served
        assert await _settled([asyncio.create_task(_ask(client, s)) for s in (True, False)]) == [ANSWER] * 2
    _quiet_logs(cluster)
