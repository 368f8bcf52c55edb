"""A Redis reply lost on the wire: the store's client resends the call on a new connection
(its one quick retry), so the script runs twice. A worker's stream chunks must still be
stored once, and a take must hand out the jobs it took, not take more (those would sit
IN_PROGRESS on a worker that never got them). The other scripts are idempotent by their
nature (a set, a state change that happens once, a unique rate-window member).

The lost reply is real: a TCP forwarder in front of the real Redis passes the call through,
drops Redis' answer to it and closes the client's connection."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from serverless.store.redis import RedisStore
from tests.serverless.test_store_contract import EP, T0, submit

pytestmark = pytest.mark.usefixtures("redis_required")


class ReplyLosingForwarder:
    """Forwards to the Redis on 6379; the reply to the first command that carries
    ``marker`` never reaches the client, whose connection is closed instead."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.lost = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # the pipes see their ends closed and return
            writer.transport.abort()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        task.add_done_callback(self._pipes.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {writer, up_writer}
        doomed = asyncio.Event()  # this connection carried the marked command

        async def upward() -> None:
            while data := await reader.read(65536):
                if not self.lost and self.marker in data:
                    self.lost += 1
                    doomed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downward() -> None:
            while data := await up_reader.read(65536):
                if doomed.is_set():  # Redis ran the command; its answer is lost with the connection
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(upward(), downward())
        except OSError:
            pass
        finally:
            writer.close()
            up_writer.close()


@pytest.fixture
async def lossy():
    """A store behind a forwarder that loses the reply to the first command with ``b"lost-reply"``."""
    redis = ReplyLosingForwarder(b"lost-reply")
    await redis.start()
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", prefix=f"podgate-test:{uuid.uuid4().hex}:")
    try:
        yield redis, store
    finally:
        await store.delete_all()
        await store.close()
        await redis.stop()


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
