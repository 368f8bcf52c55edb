"""A Redis reply lost on the wire: the store's client resends the call on a new connection
(its one quick retry), so the script runs twice. A worker's stream chunks must still be
stored once, and a take must hand out the jobs it took, not take more (those would sit
IN_PROGRESS on a worker that never got them). The other scripts are idempotent by their
nature (a set, a state change that happens once, a unique rate-window member).

The lost reply is real: a TCP forwarder in front of the real Redis (``tests.redis_forwarder``)
passes the call through, drops Redis' answer to it and closes the client's connection."""

from __future__ import annotations

import uuid

import pytest

from serverless.store.redis import RedisStore
from tests.redis_forwarder import Forwarder
from tests.serverless.test_store_contract import EP, T0, submit

pytestmark = pytest.mark.usefixtures("redis_required")


@pytest.fixture
async def lossy():
    """A store behind a forwarder that loses the reply to the first command with ``b"lost-reply"``."""
    redis = Forwarder(lose_reply_to=b"lost-reply")
    await redis.start()
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", prefix=f"podgate-test:{uuid.uuid4().hex}:")
    try:
        yield redis, store
    finally:
        await store.delete_all()
        await store.close()
        await redis.cut()


async def test_chunks_whose_reply_was_lost_are_stored_once(lossy):
    redis, store = lossy
    [job] = await submit(store)
    await store.take(EP, "w1", 1, now=T0)
    assert await store.append_chunks(EP, job.id, "w1", [b'"first"'], now=T0)  # Redis has the script now
    assert await store.append_chunks(EP, job.id, "w1", [b'"lost-reply-chunk"', b'"and-its-pair"'], now=T0)
    assert redis.lost == 1  # the reply was lost, and the call answered all the same (resent)
    assert await store.append_chunks(EP, job.id, "w1", [b'"last"'], now=T0)
    _, chunks = await store.read_stream(EP, job.id, now=T0)
    assert chunks == [b'"first"', b'"lost-reply-chunk"', b'"and-its-pair"', b'"last"']


async def test_a_take_whose_reply_was_lost_hands_out_what_it_took(lossy):
    redis, store = lossy
    assert await store.take(EP, "w0", 1, now=T0) == []  # Redis has the script: the lost call runs it
    jobs = await submit(store, 5)
    taken = await store.take(EP, "lost-reply-worker", 2, now=T0 + 1)
    assert redis.lost == 1
    assert [j.id for j in taken] == [j.id for j in jobs[:2]]
    health = await store.health(EP, now=T0 + 1, worker_timeout=100)
    assert (health.jobs.in_progress, health.jobs.in_queue) == (2, 3)
    again = await store.take(EP, "lost-reply-worker", 2, now=T0 + 2)  # a new call takes anew
    assert [j.id for j in again] == [j.id for j in jobs[2:4]]
