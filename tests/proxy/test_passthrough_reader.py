"""The passthrough's reader (``proxy.passthrough._Reader``): it reads the upstream body a
bounded amount ahead of the client, hands over everything that arrived at once, and says
when nothing came in time (a keep-alive is due) or when the body ended."""

from __future__ import annotations

import asyncio

from adapters.upstream import RunPodError
from proxy.passthrough import _Reader
from proxy.streaming import TIMEOUT

CHUNK = b"x" * 65536


class Endless:
    """An upstream body that never ends; counts the chunks read from it."""

    content_type = "text/event-stream"

    def __init__(self) -> None:
        self.read = 0

    async def __aiter__(self):
        while True:
            self.read += 1
            yield CHUNK
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        pass


async def test_a_slow_client_holds_the_reader_back(monkeypatch):
    monkeypatch.setattr(_Reader, "AHEAD", 4 * len(CHUNK))
    body = Endless()
    reader = _Reader(body)
    await asyncio.sleep(0.2)  # the client takes nothing meanwhile
    ahead = body.read
    assert ahead <= 6  # the bound, and the chunk that crossed it
    taken = await reader.take(1.0)
    assert len(taken) == ahead * len(CHUNK)  # all of it, at once
    await asyncio.sleep(0.05)
    assert body.read > ahead  # and the reader went on
    reader.cancel()


class Finite:
    content_type = "text/event-stream"

    def __init__(self, *pieces: bytes, error: RunPodError | None = None, pause: float = 0.0) -> None:
        self.pieces, self.error, self.pause = pieces, error, pause

    async def __aiter__(self):
        await asyncio.sleep(self.pause)
        for piece in self.pieces:
            yield piece
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        pass


async def test_nothing_in_time_then_the_end():
    reader = _Reader(Finite(b"a", b"b", pause=0.3))
    assert await reader.take(0.05) is TIMEOUT
    got = b""
    while not reader.exhausted:
        chunk = await reader.take(1.0)
        assert chunk is not TIMEOUT
        got += chunk
    assert got == b"ab" and reader.error is None


async def test_a_broken_body_is_reported_after_what_came_before_it():
    broken = RunPodError(502, "connection failed", operation="openai/v1/chat/completions", answered=False)
    reader = _Reader(Finite(b"data: 1\n\n", error=broken))
    await asyncio.sleep(0.05)
    assert await reader.take(1.0) == b"data: 1\n\n"
    assert reader.exhausted and reader.error is broken
