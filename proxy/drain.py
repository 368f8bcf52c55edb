"""Graceful shutdown of the proxy: the drain (``[server] drain_s``).

When the server is told to stop (SIGTERM/SIGINT: uvicorn closes its listeners and calls
``Drain.begin``), ``/readyz`` answers 503 at once and the requests already running may
finish for up to ``drain_s`` seconds. Then the drain *expires*: every request still
waiting for its job ends by itself — a stream with an in-stream ``server_shutting_down``
error and ``data: [DONE]`` (so that a client can tell it from a finished answer), a
non-streaming request with 503 and ``Retry-After`` — and hands its job to the app's cancel
queue, as a request whose client went away does. The app's lifespan shutdown then sends
those cancels (bounded: ``CancelQueue.close``) and the process exits.

The request paths take the drain as a parameter and watch it where they wait:

- ``expiry()`` is a future that resolves when the drain expires, to add to an
  ``asyncio.wait`` that is there anyway (a stream's wait for its next batch);
- ``bound(aw)`` awaits ``aw`` unless the drain expires first (``ShuttingDown``);
- ``check()`` raises ``ShuttingDown`` once expired (before a job is submitted).

Why not let uvicorn do it: its ``timeout_graceful_shutdown`` cancels the request tasks, which
cuts a stream without an error event or ``[DONE]`` and answers a waiting request with a
reset connection. It stays the backstop (``server_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from adapters.errors import OpenAIError

T = TypeVar("T")

log = logging.getLogger("podgate.drain")

LATE_S = 5.0
"""How long uvicorn still waits for the requests once the drain expired (they end at once
then; this is only the backstop before uvicorn cancels them)."""

RETRY_AFTER_S = 1.0
"""``Retry-After`` of the 503 a waiting request gets: another replica can take it now."""


class ShuttingDown(OpenAIError):
    """The server shut down before the request's job finished; the job was cancelled."""

    def __init__(self) -> None:
        super().__init__("The server is shutting down; the request's job was cancelled. Retry the request.",
                         status=503, type="server_error", code="server_shutting_down",
                         retry_after=RETRY_AFTER_S, should_retry=True)


class Drain:
    """The app's drain (module docstring). Built with the app; its future is made on the
    running loop when first asked for."""

    def __init__(self, drain_s: float):
        self.drain_s = drain_s
        self.draining = False
        """Shutdown began: not ready any more, running requests may finish."""
        self.expired = False
        """The drain time is over: requests still running end now."""
        self._expiry: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """Shutdown begins (idempotent): the drain expires in ``drain_s`` seconds."""
        if self.draining:
            return
        self.draining = True
        log.info("shutting down: running requests may finish within %.1f s", self.drain_s)
        self._timer = asyncio.get_running_loop().call_later(self.drain_s, self.expire)

    def expire(self) -> None:
        """End the drain now (idempotent): every request still waiting ends."""
        if self._timer is not None:
            self._timer.cancel()
        if not self.expired:
            self.expired = True
            self.draining = True
            if self._expiry is not None and not self._expiry.done():
                self._expiry.set_result(None)

    def expiry(self) -> asyncio.Future[None]:
        """A future that resolves when the drain expires (already done once it did)."""
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_future()
            if self.expired:
                self._expiry.set_result(None)
        return self._expiry

    def check(self) -> None:
        """Raise ``ShuttingDown`` once the drain expired (nothing new may start then)."""
        if self.expired:
            raise ShuttingDown()

    async def bound(self, aw: Awaitable[T]) -> T:
        """``aw``'s result, unless the drain expires first: then ``aw`` is cancelled (a caller
        that must keep it running shields it) and ``ShuttingDown`` raised."""
        return await until(self.expiry(), aw, ShuttingDown)

    def server_timeout(self) -> float:
        """uvicorn's ``timeout_graceful_shutdown`` for this drain (its backstop)."""
        return self.drain_s + LATE_S


async def until(stop: asyncio.Future[None], aw: Awaitable[T], error: Callable[[], Exception]) -> T:
    """``aw``'s result, unless ``stop`` resolves first: then ``aw`` is cancelled and
    ``error()`` raised (``Drain.bound``; a request an operator ends, ``proxy.passthrough``)."""
    work = asyncio.ensure_future(aw)
    try:
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    if work.done():
        return work.result()
    work.cancel()
    raise error()


__all__ = ["Drain", "ShuttingDown", "until", "LATE_S", "RETRY_AFTER_S"]
