"""Readiness between processes: a pipe from child to parent carrying one JSON message per line.

The parent makes a :class:`ReadyPipe` per child and starts the child with ``pipe.env`` in its
environment and ``pipe.fd`` passed to it (``pass_fds``). The child calls :func:`announce`
when it is ready (``podgate endpoint`` once it listens, with its URL; ``podgate worker`` once
its handler's fitness checks passed, i.e. its model is loaded, just before the SDK starts
pinging and taking jobs). Without the variable (a child started by hand) ``announce`` does
nothing. The parent reads :class:`Ready` messages, blocking (:meth:`ReadyPipe.read`) or from
its event loop (:meth:`ReadyPipe.messages`); end of file means the child (and everything it
passed the pipe to) is gone.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import msgspec

ENV = "PODGATE_READY_FD"


class Ready(msgspec.Struct, omit_defaults=True):
    """One readiness message. ``what``: ``"listening"`` (a server, with its ``url``: ``podgate
    endpoint``, ``podgate serve --config``), ``"ready"`` (``podgate worker`` about to take jobs;
    the embedded ``podgate serve`` once it printed its banner, with the proxy's base URL) or
    ``"endpoint"`` (the embedded ``podgate serve``'s local endpoint, with its URL)."""

    what: str
    url: str | None = None

    @property
    def port(self) -> int:
        """The port of ``url``."""
        port = urlsplit(self.url or "").port
        if port is None:
            raise ValueError(f"no port in {self.url!r}")
        return port


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Ready).decode


def announce(what: str, url: str | None = None) -> None:
    """Tell the parent (if one listens: ``$PODGATE_READY_FD``) that this process is ready."""
    fd = os.environ.get(ENV)
    if not fd:
        return
    try:
        os.write(int(fd), _encode(Ready(what, url)) + b"\n")
    except (OSError, ValueError):  # the parent is gone or stopped listening: nothing to tell
        pass


class ReadyPipe:
    """The parent's side of one child's readiness channel."""

    def __init__(self) -> None:
        self._read_fd, self.fd = os.pipe()  # self.fd: the write end, for the child
        self._buffer = b""

    @property
    def env(self) -> dict[str, str]:
        """What the child's environment needs (with ``pass_fds=(pipe.fd,)``)."""
        return {ENV: str(self.fd)}

    def child_started(self) -> None:
        """Close the parent's copy of the write end, so that the child's exit is end of file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, timeout: float) -> Ready | None:
        """The next message, blocking up to ``timeout`` seconds; None on end of file or timeout."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._read_fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                data = os.read(self._read_fd, 4096)
                if not data:
                    return None
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return _decode(line)

    async def messages(self) -> AsyncIterator[Ready]:
        """Every message until end of file (the child and its descendants closed the pipe).
        The read end stays open until :meth:`close`."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(self._read_fd, "rb", buffering=0, closefd=False))
        try:
            while line := await reader.readline():
                if line.endswith(b"\n"):
                    yield _decode(line)
        finally:
            transport.close()

    def close(self) -> None:
        self.child_started()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
