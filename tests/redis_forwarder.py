"""A TCP forwarder in front of the real Redis on 6379, for the tests of what podgate does when
its link to Redis fails: ``cut()`` is an outage (the listener and every connection closed),
``start()`` again brings it back on the same port, and ``lose_reply_to`` loses one reply on
the wire (the call reaches Redis and runs; its answer never reaches the client, whose
connection is closed instead)."""

from __future__ import annotations

import asyncio


class Forwarder:
    """Forwards to the Redis on 6379. With ``lose_reply_to``, the reply to the first command
    whose bytes carry it is dropped and the client's connection aborted (``lost`` counts it)."""

    def __init__(self, lose_reply_to: bytes | None = None) -> None:
        self.port = 0
        self.lose_reply_to = lose_reply_to
        self.lost = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {writer, up_writer}
        doomed = False  # this connection carried the command whose reply is lost

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upward: bool) -> None:
            nonlocal doomed
            try:
                while data := await src.read(65536):
                    if upward and self.lose_reply_to is not None and not self.lost and self.lose_reply_to in data:
                        self.lost += 1
                        doomed = True
                    elif not upward and doomed:  # Redis ran the command; its answer is lost with the connection
                        writer.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer, upward=True), copy(up_reader, writer, upward=False))
