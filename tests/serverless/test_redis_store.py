"""RedisStore across replicas, in one process: two stores on one Redis prefix behave as one
store — exclusive takes, transitions decided once, wake-ups from the other replica, keys
under the prefix with native TTLs, and nothing left behind.

The store contract itself (the same tests for MemoryStore and RedisStore) runs through the
``job_store`` fixture of tests/conftest.py; these tests cover what only a shared store has.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from serverless.jobs import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, Job
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.usefixtures("redis_required")

EP = "ep"
T0 = 1_000_000.0  # a fixed clock: the store never reads time itself


def make_job(n: int, *, now: float = T0, ttl_ms: int = 3_600_000, timeout_ms: int = 600_000,
             endpoint: str = EP) -> Job:
    job_id = f"job-{n}"
    return Job(id=job_id, endpoint=endpoint, payload=b'{"id":"%s","input":{"n":%d}}' % (job_id.encode(), n),
               execution_timeout_ms=timeout_ms, ttl_ms=ttl_ms, retention_ms=60_000, created_at=now,
               expires_at=now + ttl_ms / 1000)


@pytest.fixture
async def replicas():
    """Two RedisStores on one random prefix (two server replicas), removed afterwards."""
    from serverless.store.redis import RedisStore

    prefix = f"podgate-test:{uuid.uuid4().hex}:"
    # a long fallback poll: a wake-up seen in these tests can only come from an event
    a = RedisStore(REDIS_URL, prefix=prefix, poll_interval=30.0)
    b = RedisStore(REDIS_URL, prefix=prefix, poll_interval=30.0)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.delete_all()
        await a.close()
        await b.close()


async def test_take_is_exclusive_across_replicas(replicas):
    a, b = replicas
    n_jobs = 600
    for n in range(n_jobs):
        assert await (a if n % 2 else b).submit(make_job(n), max_queue=None, now=T0)
    rng = random.Random(7)

    async def worker(store, wid: str) -> list[str]:
        got: list[str] = []
        while True:
            jobs = await store.take(EP, wid, rng.randint(1, 7), now=T0 + 1)
            if not jobs:
                return got
            assert all(j.status == IN_PROGRESS and j.worker_id == wid for j in jobs)
            got += [j.id for j in jobs]

    results = await asyncio.gather(*(worker(a if i % 2 else b, f"w{i}") for i in range(12)))
    taken = [job_id for ids in results for job_id in ids]
    assert len(taken) == n_jobs, "a job was handed out twice or lost"
    assert set(taken) == {f"job-{n}" for n in range(n_jobs)}
    health = await b.health(EP, now=T0 + 1, worker_timeout=60)
    holders = sum(1 for ids in results if ids)
    assert (health.jobs.in_queue, health.jobs.in_progress, health.workers.running) == (0, n_jobs, holders)


async def test_queue_order_and_head_requeue(replicas):
    a, b = replicas
    for n in range(3):
        await a.submit(make_job(n), max_queue=None, now=T0)
    [first] = await b.take(EP, "w-lost", 1, now=T0)
    assert first.id == "job-0"
    # the worker never comes back: the job goes back to the *head* of the queue
    assert await a.sweep(EP, now=T0 + 100, worker_timeout=10, max_attempts=1) == []
    order = [j.id for j in await b.take(EP, "w2", 10, now=T0 + 100)]
    assert order == ["job-0", "job-1", "job-2"]
    assert (await a.get(EP, "job-0", now=T0 + 100)).attempts == 1


async def test_max_queue_counts_every_replica(replicas):
    a, b = replicas
    assert await a.submit(make_job(0), max_queue=2, now=T0)
    assert await b.submit(make_job(1), max_queue=2, now=T0)
    assert not await a.submit(make_job(2), max_queue=2, now=T0)
    assert await a.get(EP, "job-2", now=T0) is None


async def test_cancel_finish_race_decided_once(replicas):
    a, b = replicas
    n_jobs = 200
    for n in range(n_jobs):
        await a.submit(make_job(n), max_queue=None, now=T0)
    taken = await b.take(EP, "w1", n_jobs, now=T0 + 1)
    assert len(taken) == n_jobs

    async def finish(job_id: str):
        return await b.finish(EP, job_id, "w1", COMPLETED, output=b'"ok"', error=None, now=T0 + 2)

    async def cancel(job_id: str):
        return await a.cancel(EP, job_id, now=T0 + 2)

    pairs = await asyncio.gather(*(asyncio.gather(finish(j.id), cancel(j.id)) for j in taken))
    completed = cancelled = 0
    for done, cancelled_outcome in pairs:
        if done is not None:  # the worker's result won; the cancel found a terminal job
            completed += 1
            assert not cancelled_outcome.changed and cancelled_outcome.job.status == COMPLETED
        else:  # the cancel won; the late result is refused (404)
            cancelled += 1
            assert cancelled_outcome.changed and cancelled_outcome.job.status == CANCELLED
    assert completed + cancelled == n_jobs
    stops = await a.take_stop_signals(EP, "w1", now=T0 + 3)
    assert len(stops) == cancelled and len(set(stops)) == cancelled
    health = await a.health(EP, now=T0 + 3, worker_timeout=60)
    assert (health.jobs.completed, health.jobs.in_progress, health.jobs.failed) == (completed, 0, 0)


async def test_concurrent_sweeps_report_each_transition_once(replicas):
    a, b = replicas
    for n in range(40):
        await a.submit(make_job(n, timeout_ms=1000), max_queue=None, now=T0)
    await a.take(EP, "w1", 20, now=T0)  # these 20 time out at T0 + 1
    await b.take(EP, "w2", 20, now=T0)
    await a.touch_worker(EP, "w1", now=T0 + 5, job_ids=[])
    await a.touch_worker(EP, "w2", now=T0 + 5, job_ids=[])
    results = await asyncio.gather(*(s.sweep(EP, now=T0 + 5, worker_timeout=60, max_attempts=3)
                                     for s in (a, b, a, b)))
    finished = [job.id for jobs in results for job in jobs]
    assert sorted(finished) == sorted(f"job-{n}" for n in range(40)), "a webhook would fire twice or never"
    assert {job.status for jobs in results for job in jobs} == {TIMED_OUT}
    stops = await a.take_stop_signals(EP, "w1", now=T0 + 5) + await b.take_stop_signals(EP, "w2", now=T0 + 5)
    assert sorted(stops) == sorted(finished)
    assert (await b.health(EP, now=T0 + 5, worker_timeout=60)).jobs.failed == 40


async def test_worker_lost_fails_after_max_attempts(replicas):
    a, b = replicas
    await a.submit(make_job(0), max_queue=None, now=T0)
    await b.take(EP, "w1", 1, now=T0)
    assert await a.sweep(EP, now=T0 + 20, worker_timeout=10, max_attempts=1) == []  # re-queued
    [job] = await b.take(EP, "w2", 1, now=T0 + 20)
    assert job.attempts == 1
    finished = await a.sweep(EP, now=T0 + 40, worker_timeout=10, max_attempts=1)
    assert [(j.id, j.status, j.error, j.attempts) for j in finished] == [("job-0", FAILED, "worker lost", 2)]
    assert await b.sweep(EP, now=T0 + 40, worker_timeout=10, max_attempts=1) == []


async def test_requeue_unreported_matches_memory_store(replicas):
    """requeue_unreported and retry on two replicas give what MemoryStore gives, step by step:
    the grace period, reports_jobs kept after an empty ping, head re-queue order, FAILED after
    max_attempts decided once, and retry starting a fresh attempts budget."""
    from serverless.store.memory import MemoryStore

    async def scenario(a, b) -> list:
        seen: list = []

        def snap(jobs) -> list:
            return [(j.id, j.status, j.attempts, j.retries, j.error, j.worker_id) for j in jobs]

        for n in range(4):
            await a.submit(make_job(n), max_queue=None, now=T0)
        seen.append(snap(await b.take(EP, "w1", 3, now=T0)))
        await a.touch_worker(EP, "w1", now=T0 + 1, job_ids=["job-0"])
        await b.touch_worker(EP, "w1", now=T0 + 2, job_ids=[])  # idle ping: still reports jobs
        seen.append(snap(await a.requeue_unreported(EP, now=T0 + 2, grace=5, max_attempts=1)))
        await b.touch_worker(EP, "w1", now=T0 + 6, job_ids=["job-2"])
        await a.touch_worker(EP, "w1", now=T0 + 6.5)  # not a ping: the last report stays
        seen.append(snap(await b.requeue_unreported(EP, now=T0 + 7, grace=5, max_attempts=1)))
        seen.append(snap(await a.requeue_unreported(EP, now=T0 + 7, grace=5, max_attempts=1)))
        seen.append(snap(await a.take(EP, "w1", 4, now=T0 + 8)))  # head re-queues first
        await b.touch_worker(EP, "w1", now=T0 + 14, job_ids=["job-2"])
        seen.append(snap(await a.requeue_unreported(EP, now=T0 + 14, grace=5, max_attempts=1)))
        seen.append(snap(await b.requeue_unreported(EP, now=T0 + 14, grace=5, max_attempts=1)))
        outcome = await b.retry(EP, "job-0", now=T0 + 15)
        seen.append((outcome.changed, snap([outcome.job])))
        seen.append(snap([await a.get(EP, f"job-{n}", now=T0 + 15) for n in range(4)]))
        h = await a.health(EP, now=T0 + 15, worker_timeout=60)
        seen.append((h.jobs.in_queue, h.jobs.in_progress, h.jobs.failed, h.jobs.retried))
        seen.append(snap(await b.take(EP, "w2", 2, now=T0 + 16)))
        # both workers lost: sweep re-queues/fails in take order, as MemoryStore does
        seen.append(snap(await a.sweep(EP, now=T0 + 100, worker_timeout=10, max_attempts=1)))
        seen.append(snap(await b.take(EP, "w3", 5, now=T0 + 100)))
        return seen

    memory = MemoryStore()
    expected = await scenario(memory, memory)
    assert expected[5] and all(j[1] == FAILED and j[4] == "worker lost" for j in expected[5])  # not vacuous
    assert expected[7][1][0][1:3] == (IN_QUEUE, 0)
    assert [j[0] for j in expected[-1]] == ["job-0", "job-2"]
    assert await scenario(*replicas) == expected


async def test_wakeups_come_from_the_other_replica(replicas):
    a, b = replicas

    async def woken(waiter, action) -> None:
        task = asyncio.ensure_future(waiter)
        await asyncio.sleep(0.2)  # the waiter is parked (its poll interval is 30 s)
        assert not task.done()
        await action
        await asyncio.wait_for(task, 10)  # woken by the event, not by its 30 s timeout

    await woken(a.wait_queue(EP, 60), b.submit(make_job(0), max_queue=None, now=T0))
    await woken(a.wait_job(EP, "job-0", 60), b.take(EP, "w1", 1, now=T0))
    await woken(a.wait_job(EP, "job-0", 60), b.append_chunks(EP, "job-0", "w1", [b"1"], now=T0))
    assert (await a.read_stream(EP, "job-0", now=T0))[1] == [b"1"]
    await woken(a.wait_job(EP, "job-0", 60), b.append_chunks(EP, "job-0", "w1", [b"2"], now=T0))
    await woken(a.wait_job(EP, "job-0", 60), b.progress(EP, "job-0", "w1", b'{"p":1}', now=T0))
    await woken(a.wait_stop(EP, "w1", 60), b.cancel(EP, "job-0", now=T0))
    assert await a.take_stop_signals(EP, "w1", now=T0) == ["job-0"]


async def test_event_between_check_and_wait_is_not_lost(replicas):
    a, b = replicas
    # the check found an empty queue; the job arrives before the wait starts
    assert await a.take(EP, "w1", 1, now=T0) == []
    await b.submit(make_job(0), max_queue=None, now=T0)
    await asyncio.sleep(0.05)  # the event reaches replica a before anybody waits on it
    await asyncio.wait_for(a.wait_queue(EP, 60), 10)
    assert [j.id for j in await a.take(EP, "w1", 1, now=T0)] == ["job-0"]


async def test_stream_chunks_are_delivered_once_across_replicas(replicas):
    a, b = replicas
    await a.submit(make_job(0), max_queue=None, now=T0)
    await a.take(EP, "w1", 1, now=T0)
    sent = [b'{"i":%d}' % i for i in range(300)]
    received: list[bytes] = []

    async def produce():
        for i in range(0, len(sent), 3):
            assert await b.append_chunks(EP, "job-0", "w1", sent[i:i + 3], now=T0)
        await b.finish(EP, "job-0", "w1", COMPLETED, output=b"[]", error=None, now=T0 + 1)

    async def consume(store):
        while True:
            job, chunks = await store.read_stream(EP, "job-0", now=T0 + 1)
            received.extend(chunks)
            if job.status == COMPLETED and not chunks:
                return
            await store.wait_job(EP, "job-0", 60)

    await asyncio.wait_for(asyncio.gather(produce(), consume(a), consume(b)), 30)
    assert sorted(received) == sorted(sent) and len(received) == len(sent)


async def test_keys_live_under_the_prefix_with_native_ttls(replicas):
    import redis.asyncio as aioredis

    a, b = replicas
    await a.submit(make_job(0, ttl_ms=100_000), max_queue=None, now=T0)
    await a.submit(make_job(1), max_queue=None, now=T0)
    await b.take(EP, "w1", 1, now=T0)
    await b.append_chunks(EP, "job-0", "w1", [b"1"], now=T0)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=a._ns + "*")]
        assert keys and all(k.startswith(a._ns) for k in keys)
        job_key, chunk_key = f"{a._ns}{{{EP}}}:j:job-0", f"{a._ns}{{{EP}}}:c:job-0"
        grace_ms = 60_000
        for key in (job_key, chunk_key):  # ttl 100 s + grace
            assert 0 < await client.pttl(key) <= 100_000 + grace_ms
        # a result is kept for its retention (60 s here) once terminal
        await a.finish(EP, "job-0", "w1", COMPLETED, output=None, error=None, now=T0 + 1)
        assert 0 < await client.pttl(job_key) <= 60_000 + grace_ms
        # /status?ttl= re-sets it
        await b.set_ttl(EP, "job-0", 5_000, now=T0 + 1)
        assert 0 < await client.pttl(job_key) <= 5_000 + grace_ms
        present = len(await client.keys(a._ns + "*"))
        assert await a.delete_all() == present > 0
        assert [k async for k in client.scan_iter(match=a._ns + "*")] == []
    finally:
        await client.aclose()


async def test_expiry_deletes_running_job_and_stops_it(replicas):
    a, b = replicas
    await a.submit(make_job(0, ttl_ms=10_000), max_queue=None, now=T0)
    await a.submit(make_job(1, ttl_ms=10_000), max_queue=None, now=T0)
    await b.take(EP, "w1", 1, now=T0)
    await b.touch_worker(EP, "w1", now=T0 + 10, job_ids=["job-0"])
    assert await a.sweep(EP, now=T0 + 10, worker_timeout=60, max_attempts=1) == []
    assert await b.get(EP, "job-0", now=T0 + 10) is None
    assert await b.get(EP, "job-1", now=T0 + 10) is None
    assert await a.take_stop_signals(EP, "w1", now=T0 + 10) == ["job-0"]
    assert not await b.append_chunks(EP, "job-0", "w1", [b"1"], now=T0 + 10)
    health = await a.health(EP, now=T0 + 10, worker_timeout=60)
    assert (health.jobs.in_queue, health.jobs.in_progress) == (0, 0)


async def test_retry_and_purge_across_replicas(replicas):
    a, b = replicas
    for n in range(4):
        await a.submit(make_job(n), max_queue=None, now=T0)
    [job] = await b.take(EP, "w1", 1, now=T0)
    failed = await b.finish(EP, job.id, "w1", FAILED, output=None, error="boom", now=T0 + 1)
    assert failed.changed and failed.job.status == FAILED
    retried = await a.retry(EP, job.id, now=T0 + 2)
    assert retried.changed and retried.job.status == IN_QUEUE and retried.job.retries == 1
    assert (retried.job.error, retried.job.worker_id, retried.job.output) == (None, None, None)
    assert not (await b.retry(EP, job.id, now=T0 + 2)).changed
    assert await b.purge(EP, now=T0 + 3) == 4
    assert await a.get(EP, job.id, now=T0 + 3) is None
    health = await a.health(EP, now=T0 + 3, worker_timeout=60)
    assert (health.jobs.in_queue, health.jobs.failed, health.jobs.retried) == (0, 1, 1)


async def test_endpoints_are_separate(replicas):
    a, b = replicas
    await a.submit(make_job(0, endpoint="one"), max_queue=None, now=T0)
    assert await b.take("two", "w1", 5, now=T0) == []
    assert await b.get("two", "job-0", now=T0) is None
    assert [j.id for j in await b.take("one", "w1", 5, now=T0)] == ["job-0"]


async def test_wakeups_survive_a_lost_subscription():
    """The subscriber connection is killed: waiters are released to re-check, the store
    subscribes again, and events from the other replica wake waiters as before."""
    import redis.asyncio as aioredis

    from serverless.store.redis import RedisStore

    prefix = f"podgate-test:{uuid.uuid4().hex}:"
    name = f"h2-test-{uuid.uuid4().hex[:8]}"
    a = RedisStore(REDIS_URL, prefix=prefix, poll_interval=30.0, client_name=name)
    b = RedisStore(REDIS_URL, prefix=prefix, poll_interval=30.0)
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        await a.start()
        await b.start()
        waiter = asyncio.ensure_future(a.wait_queue(EP, 60))
        await asyncio.sleep(0.1)
        subscribers = [c for c in await admin.client_list(_type="pubsub") if c.get("name") == name]
        assert len(subscribers) == 1
        await admin.client_kill_filter(_id=subscribers[0]["id"])
        await asyncio.wait_for(waiter, 10)  # released to re-check (events may have been missed)
        await asyncio.wait_for(a._events.wait_ready(10), 10)
        waiter = asyncio.ensure_future(a.wait_queue(EP, 60))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await b.submit(make_job(0), max_queue=None, now=T0)
        await asyncio.wait_for(waiter, 10)
        assert [j.id for j in await a.take(EP, "w1", 1, now=T0)] == ["job-0"]
    finally:
        await a.delete_all()
        await admin.aclose()
        await a.close()
        await b.close()
