"""The JobStore contract (serverless/store/base.py), run against every store implementation
with explicit times: each test drives the store directly and checks one documented rule."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from serverless.jobs import (
    CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, Job,
)

EP = "ep"
T0 = 1_000_000.0


def make_job(now: float = T0, *, ttl_ms: int = 86_400_000, exec_ms: int = 600_000, retention_ms: int = 1_800_000,
             endpoint: str = EP) -> Job:
    job_id = f"{uuid.uuid4()}-u1"
    return Job(id=job_id, endpoint=endpoint, payload=b'{"id":"' + job_id.encode() + b'","input":{}}',
               execution_timeout_ms=exec_ms, ttl_ms=ttl_ms, retention_ms=retention_ms, created_at=now,
               expires_at=now + ttl_ms / 1000)


async def submit(store, n: int = 1, now: float = T0, **kw) -> list[Job]:
    jobs = [make_job(now, **kw) for _ in range(n)]
    for job in jobs:
        assert await store.submit(job, max_queue=None, now=now)
    return jobs


async def test_fifo_take_marks_in_progress(job_store):
    jobs = await submit(job_store, 3)
    taken = await job_store.take(EP, "w1", 2, now=T0 + 1)
    assert [j.id for j in taken] == [jobs[0].id, jobs[1].id]
    got = await job_store.get(EP, jobs[0].id, now=T0 + 1)
    assert got.status == IN_PROGRESS and got.worker_id == "w1" and got.started_at == T0 + 1
    assert got.payload == jobs[0].payload
    rest = await job_store.take(EP, "w2", 5, now=T0 + 2)
    assert [j.id for j in rest] == [jobs[2].id]
    assert await job_store.take(EP, "w2", 5, now=T0 + 2) == []


async def test_jobs_are_per_endpoint(job_store):
    [job] = await submit(job_store)
    assert await job_store.get("other", job.id, now=T0) is None
    assert await job_store.take("other", "w1", 1, now=T0) == []


async def test_queue_cap(job_store):
    for _ in range(3):
        assert await job_store.submit(make_job(), max_queue=3, now=T0)
    assert not await job_store.submit(make_job(), max_queue=3, now=T0)
    health = await job_store.health(EP, now=T0, worker_timeout=10)
    assert health.jobs.in_queue == 3


async def test_concurrent_takes_never_share_a_job(job_store):
    await submit(job_store, 40)
    results = await asyncio.gather(*[job_store.take(EP, f"w{i}", 3, now=T0) for i in range(20)])
    ids = [j.id for batch in results for j in batch]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_stream_chunks_consumed_once_in_order(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    assert await job_store.append_chunks(EP, job.id, "w1", [b'"a"', b'"b"'], now=T0)
    assert await job_store.append_chunks(EP, job.id, "w1", [b'{"c":1}'], now=T0)
    j, chunks = await job_store.read_stream(EP, job.id, now=T0)
    assert j.status == IN_PROGRESS and chunks == [b'"a"', b'"b"', b'{"c":1}']
    j, chunks = await job_store.read_stream(EP, job.id, now=T0)
    assert chunks == []
    assert not await job_store.append_chunks(EP, job.id, "other-worker", [b'"x"'], now=T0)


async def test_a_chunk_of_a_job_the_worker_does_not_hold_stops_its_run(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    assert not await job_store.append_chunks(EP, job.id, "w2", [b'"x"'], now=T0)  # re-queued elsewhere
    assert not await job_store.append_chunks(EP, "gone-job", "w2", [b'"y"'], now=T0)  # lost with its store
    assert await job_store.take_stop_signals(EP, "w2", now=T0) == [job.id, "gone-job"]
    assert await job_store.take_stop_signals(EP, "w1", now=T0) == []
    assert (await job_store.get(EP, job.id, now=T0)).status == IN_PROGRESS  # the owner's run goes on


async def test_progress_then_finish(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    assert await job_store.progress(EP, job.id, "w1", b'{"step":1}', now=T0 + 1)
    j = await job_store.get(EP, job.id, now=T0 + 1)
    assert j.status == IN_PROGRESS and j.output == b'{"step":1}'
    out = await job_store.finish(EP, job.id, "w1", COMPLETED, output=b'"ok"', error=None, now=T0 + 2)
    assert out.changed and out.job.status == COMPLETED and out.job.output == b'"ok"'
    assert out.job.finished_at == T0 + 2
    # a second finish (or a late progress) does not apply
    assert await job_store.finish(EP, job.id, "w1", FAILED, output=None, error="x", now=T0 + 3) is None
    assert not await job_store.progress(EP, job.id, "w1", b"1", now=T0 + 3)
    health = await job_store.health(EP, now=T0 + 3, worker_timeout=100)
    assert health.jobs.completed == 1 and health.jobs.in_progress == 0


async def test_finish_only_by_owner(job_store):
    [job] = await submit(job_store)
    assert await job_store.finish(EP, job.id, "w1", COMPLETED, output=None, error=None, now=T0) is None  # queued
    await job_store.take(EP, "w1", 1, now=T0)
    assert await job_store.finish(EP, job.id, "w2", COMPLETED, output=None, error=None, now=T0) is None
    out = await job_store.finish(EP, job.id, "w1", FAILED, output=None, error="bad", now=T0)
    assert out.job.status == FAILED and out.job.error == "bad"


async def test_retention_after_finish(job_store):
    [job] = await submit(job_store, retention_ms=60_000)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.finish(EP, job.id, "w1", COMPLETED, output=None, error=None, now=T0 + 10)
    assert (await job_store.get(EP, job.id, now=T0 + 69)) is not None
    assert (await job_store.get(EP, job.id, now=T0 + 70.01)) is None


async def test_set_ttl_resets_expiry(job_store):
    [job] = await submit(job_store)
    assert (await job_store.set_ttl(EP, job.id, 5_000, now=T0 + 1)) is not None
    assert (await job_store.get(EP, job.id, now=T0 + 5.9)) is not None
    assert (await job_store.get(EP, job.id, now=T0 + 6.1)) is None
    assert (await job_store.set_ttl(EP, "nope", 5_000, now=T0)) is None


async def test_cancel_queued_and_running(job_store):
    q, r = await submit(job_store, 2)
    await job_store.take(EP, "w1", 1, now=T0)  # takes q (FIFO)
    out = await job_store.cancel(EP, q.id, now=T0 + 1)
    assert out.changed and out.job.status == CANCELLED
    assert await job_store.take_stop_signals(EP, "w1", now=T0 + 1) == [q.id]
    assert await job_store.take_stop_signals(EP, "w1", now=T0 + 1) == []
    out = await job_store.cancel(EP, r.id, now=T0 + 1)  # still queued: removed from the queue
    assert out.changed and out.job.status == CANCELLED
    assert await job_store.take(EP, "w2", 5, now=T0 + 2) == []
    again = await job_store.cancel(EP, r.id, now=T0 + 2)
    assert not again.changed and again.job.status == CANCELLED
    assert await job_store.cancel(EP, "nope", now=T0) is None
    # a cancelled job's worker can no longer finish it
    assert await job_store.finish(EP, q.id, "w1", COMPLETED, output=None, error=None, now=T0 + 3) is None


async def test_retry_failed_only(job_store):
    [job] = await submit(job_store)
    assert not (await job_store.retry(EP, job.id, now=T0)).changed  # IN_QUEUE
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.append_chunks(EP, job.id, "w1", [b"1"], now=T0)
    await job_store.finish(EP, job.id, "w1", FAILED, output=b"1", error="e", now=T0 + 1)
    out = await job_store.retry(EP, job.id, now=T0 + 2)
    assert out.changed and out.job.status == IN_QUEUE and out.job.output is None and out.job.error is None
    _, chunks = await job_store.read_stream(EP, job.id, now=T0 + 2)
    assert chunks == []
    [again] = await job_store.take(EP, "w2", 1, now=T0 + 3)
    assert again.id == job.id and again.worker_id == "w2"
    health = await job_store.health(EP, now=T0 + 3, worker_timeout=100)
    assert health.jobs.retried == 1 and health.jobs.failed == 1


async def test_purge_removes_queued_only(job_store):
    a, b, _c = await submit(job_store, 3)
    await job_store.take(EP, "w1", 1, now=T0)
    assert await job_store.purge(EP, now=T0) == 2
    assert await job_store.get(EP, b.id, now=T0) is None
    assert (await job_store.get(EP, a.id, now=T0)).status == IN_PROGRESS
    assert await job_store.purge(EP, now=T0) == 0


async def test_sweep_execution_timeout(job_store):
    [job] = await submit(job_store, exec_ms=2_000)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.touch_worker(EP, "w1", now=T0 + 1.5, job_ids=[job.id])
    assert await job_store.sweep(EP, now=T0 + 1.9, worker_timeout=10, max_attempts=1) == []
    done = await job_store.sweep(EP, now=T0 + 2.1, worker_timeout=10, max_attempts=1)
    assert [j.id for j in done] == [job.id] and done[0].status == TIMED_OUT
    assert await job_store.take_stop_signals(EP, "w1", now=T0 + 2.2) == [job.id]
    assert await job_store.sweep(EP, now=T0 + 2.3, worker_timeout=10, max_attempts=1) == []


async def test_sweep_ttl_deletes_running_job_and_stops_it(job_store):
    [job] = await submit(job_store, ttl_ms=3_000)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.touch_worker(EP, "w1", now=T0 + 2.9, job_ids=[job.id])
    assert await job_store.sweep(EP, now=T0 + 3.1, worker_timeout=10, max_attempts=1) == []
    assert await job_store.get(EP, job.id, now=T0 + 3.1) is None
    assert await job_store.take_stop_signals(EP, "w1", now=T0 + 3.1) == [job.id]


async def test_sweep_requeues_then_fails_lost_worker_jobs(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    assert await job_store.sweep(EP, now=T0 + 4.9, worker_timeout=5, max_attempts=1) == []
    assert await job_store.sweep(EP, now=T0 + 5.1, worker_timeout=5, max_attempts=1) == []
    j = await job_store.get(EP, job.id, now=T0 + 5.1)
    assert j.status == IN_QUEUE and j.attempts == 1 and j.worker_id is None
    [again] = await job_store.take(EP, "w2", 1, now=T0 + 6)
    assert again.id == job.id
    done = await job_store.sweep(EP, now=T0 + 12, worker_timeout=5, max_attempts=1)
    assert [j.id for j in done] == [job.id] and done[0].status == FAILED and done[0].error


async def test_ping_keeps_worker_alive_and_health_counts(job_store):
    jobs = await submit(job_store, 2)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.touch_worker(EP, "w2", now=T0, job_ids=[])
    await job_store.touch_worker(EP, "w3", now=T0, job_ids=[], unhealthy=True)
    for t in (3, 6, 9):
        await job_store.touch_worker(EP, "w1", now=T0 + t, job_ids=[jobs[0].id])
    assert await job_store.sweep(EP, now=T0 + 10, worker_timeout=5, max_attempts=1) == []
    assert (await job_store.get(EP, jobs[0].id, now=T0 + 10)).status == IN_PROGRESS
    h = await job_store.health(EP, now=T0 + 1, worker_timeout=5)
    assert (h.workers.running, h.workers.idle, h.workers.unhealthy) == (1, 1, 1)
    assert h.jobs.in_queue == 1 and h.jobs.in_progress == 1
    h = await job_store.health(EP, now=T0 + 10, worker_timeout=5)
    assert (h.workers.running, h.workers.idle, h.workers.unhealthy) == (1, 0, 0)


async def test_expired_queued_job_is_not_taken(job_store):
    [job] = await submit(job_store, ttl_ms=1_000)
    assert await job_store.take(EP, "w1", 1, now=T0 + 2) == []
    assert await job_store.get(EP, job.id, now=T0 + 2) is None


async def pending_wait(wait, *, tries: int = 5, settle: float = 0.05) -> asyncio.Task:
    """Start ``wait()`` (a store wait with a long timeout) and return its task once it is
    still pending ``settle`` seconds later, so that a test can then prove that its trigger,
    not the passing of time, ended it. The contract allows spurious early returns (e.g. the
    Redis store ends the first wait once its subscription is up, or one that follows an
    event nobody was waiting for), so a wait that returns early is started again; a store
    whose waits always return at once fails here."""
    for _ in range(tries):
        task = asyncio.create_task(wait())
        await asyncio.sleep(settle)
        if not task.done():
            return task
        await task
    pytest.fail(f"the wait returned before its trigger {tries} times in a row")


async def test_wait_queue_wakes_on_submit(job_store):
    waiter = await pending_wait(lambda: job_store.wait_queue(EP, 30.0))
    await submit(job_store)
    await asyncio.wait_for(waiter, 2.0)


async def test_wait_job_wakes_on_chunk_and_finish(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    waiter = await pending_wait(lambda: job_store.wait_job(EP, job.id, 30.0))
    await job_store.append_chunks(EP, job.id, "w1", [b"1"], now=T0)
    await asyncio.wait_for(waiter, 2.0)
    waiter = await pending_wait(lambda: job_store.wait_job(EP, job.id, 30.0))
    await job_store.finish(EP, job.id, "w1", COMPLETED, output=None, error=None, now=T0)
    await asyncio.wait_for(waiter, 2.0)


async def test_a_change_between_the_check_and_the_wait_is_not_missed(job_store):
    """A long-poll checks, then waits: a change in between (a worker's result, handled by
    another request before the waiter exists) ends the wait at once, not after its timeout
    (a /runsync held past its client's read timeout on a job long done)."""
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    check = await job_store.get(EP, job.id, now=T0)
    assert check is not None and not check.terminal
    await job_store.finish(EP, job.id, "w1", COMPLETED, output=None, error=None, now=T0)
    await asyncio.sleep(0.1)  # the Redis store's event comes through its subscription
    await asyncio.wait_for(job_store.wait_job(EP, job.id, 30.0), 2.0)


async def test_wait_stop_wakes_on_cancel(job_store):
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    waiter = await pending_wait(lambda: job_store.wait_stop(EP, "w1", 30.0))
    await job_store.cancel(EP, job.id, now=T0)
    await asyncio.wait_for(waiter, 2.0)


async def test_wait_returns_after_timeout(job_store):
    """With nothing happening, a wait holds (it is still pending well before its timeout)
    and then ends by itself once the timeout has passed."""
    for wait in (lambda: job_store.wait_queue(EP, 1.0), lambda: job_store.wait_job(EP, "x", 1.0),
                 lambda: job_store.wait_stop(EP, "w", 1.0)):
        waiter = await pending_wait(wait)
        await asyncio.wait_for(waiter, 3.0)


@pytest.mark.parametrize("n", [1])
async def test_jobs_survive_requeue_roundtrip(job_store, n):
    """A re-queued job goes to the head of the queue (it waited longest)."""
    first, second = await submit(job_store, 2)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.sweep(EP, now=T0 + 100, worker_timeout=5, max_attempts=3)
    taken = await job_store.take(EP, "w2", 2, now=T0 + 101)
    assert [j.id for j in taken] == [first.id, second.id]


async def test_requeue_unreported_jobs_of_a_live_worker(job_store):
    """A live worker whose pings stop listing a job has lost it."""
    a, b = await submit(job_store, 2)
    await job_store.take(EP, "w1", 2, now=T0)
    await job_store.touch_worker(EP, "w1", now=T0 + 1, job_ids=[a.id, b.id])
    await job_store.touch_worker(EP, "w1", now=T0 + 2, job_ids=[a.id])  # within grace: kept
    assert await job_store.requeue_unreported(EP, now=T0 + 2, grace=5, max_attempts=1) == []
    assert (await job_store.get(EP, b.id, now=T0 + 2)).status == IN_PROGRESS
    await job_store.touch_worker(EP, "w1", now=T0 + 6, job_ids=[a.id])  # after grace, b missing
    assert await job_store.requeue_unreported(EP, now=T0 + 6, grace=5, max_attempts=1) == []
    assert (await job_store.get(EP, b.id, now=T0 + 6)).status == IN_QUEUE
    assert (await job_store.get(EP, a.id, now=T0 + 6)).status == IN_PROGRESS
    # a worker that never reported any job id is left alone (it may not report jobs at all)
    [c] = await submit(job_store, 1, now=T0 + 7)
    await job_store.take(EP, "w9", 5, now=T0 + 7)  # takes b (head) and c
    await job_store.touch_worker(EP, "w9", now=T0 + 20, job_ids=[])
    assert await job_store.requeue_unreported(EP, now=T0 + 20, grace=5, max_attempts=1) == []
    assert (await job_store.get(EP, c.id, now=T0 + 20)).status == IN_PROGRESS


async def test_abandoned_poll_hands_its_jobs_back_to_the_head(job_store):
    """A take whose answer cannot be delivered puts its jobs back first in line, in order, as
    if never taken (no attempt counted); a job the worker does not hold is left alone."""
    a, b, c, d = await submit(job_store, 4)
    assert [j.id for j in await job_store.take(EP, "w1", 2, now=T0 + 1)] == [a.id, b.id]
    [other] = await job_store.take(EP, "w2", 1, now=T0 + 1)
    assert other.id == c.id
    await job_store.abandon_poll(EP, "w1", [a.id, b.id, c.id], now=T0 + 2)
    for job in (a, b):
        j = await job_store.get(EP, job.id, now=T0 + 2)
        assert (j.status, j.worker_id, j.started_at, j.attempts) == (IN_QUEUE, None, None, 0)
    assert (await job_store.get(EP, c.id, now=T0 + 2)).worker_id == "w2"
    assert [j.id for j in await job_store.take(EP, "w3", 5, now=T0 + 3)] == [a.id, b.id, d.id]


async def test_worker_whose_poll_was_cut_and_that_only_pings_is_gone(job_store):
    """A worker whose held poll it closed itself, and which then only pings (an orphaned
    heartbeat), loses its jobs once the grace has passed and leaves /health; a worker that
    makes any other request after its cut is left alone."""
    [job] = await submit(job_store)
    await job_store.take(EP, "w1", 1, now=T0)
    await job_store.touch_worker(EP, "w1", now=T0 + 0.5, job_ids=[job.id])
    await job_store.abandon_poll(EP, "w1", [], now=T0 + 1)
    await job_store.touch_worker(EP, "w1", now=T0 + 1.5, job_ids=[job.id])
    assert await job_store.requeue_unreported(EP, now=T0 + 1.9, grace=1, max_attempts=3) == []
    assert (await job_store.get(EP, job.id, now=T0 + 1.9)).status == IN_PROGRESS
    assert (await job_store.health(EP, now=T0 + 1.9, worker_timeout=10)).workers.running == 1
    assert await job_store.requeue_unreported(EP, now=T0 + 2.1, grace=1, max_attempts=3) == []
    j = await job_store.get(EP, job.id, now=T0 + 2.1)
    assert (j.status, j.attempts) == (IN_QUEUE, 1)
    await job_store.touch_worker(EP, "w1", now=T0 + 2.5, job_ids=[job.id])  # the orphan pings on
    h = await job_store.health(EP, now=T0 + 2.5, worker_timeout=10)
    assert (h.workers.ready, h.workers.running, h.workers.idle) == (0, 0, 0)
    # a request other than a ping: its main process is there after all
    assert await job_store.take_stop_signals(EP, "w1", now=T0 + 3) == []
    assert (await job_store.health(EP, now=T0 + 3, worker_timeout=10)).workers.ready == 1
    # a cut followed by a request (the SDK polls again at once after an error): nothing lost
    [again] = await job_store.take(EP, "w2", 1, now=T0 + 4)
    await job_store.abandon_poll(EP, "w2", [], now=T0 + 4.1)
    assert await job_store.take(EP, "w2", 1, now=T0 + 4.2) == []
    assert await job_store.requeue_unreported(EP, now=T0 + 9, grace=1, max_attempts=3) == []
    assert (await job_store.get(EP, again.id, now=T0 + 9)).worker_id == "w2"
    # past max_attempts, a gone worker's job fails as "worker lost"
    await job_store.abandon_poll(EP, "w2", [], now=T0 + 10)
    [failed] = await job_store.requeue_unreported(EP, now=T0 + 12, grace=1, max_attempts=1)
    assert failed.id == job.id and failed.status == FAILED and failed.error == "worker lost"
