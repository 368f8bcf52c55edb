"""Waiters: the one home of "wait until this key may have changed, or a timeout".

Both stores wake long-polls (job-take, job-stop, /stream, /runsync, /status-sync) through
it: the memory store notifies keys directly, the Redis store from its pub/sub listener.

A long-poll checks, then waits; an event may come in between — the waiter does not exist yet
(a coroutine's wait registers only once its task first runs, after other ready callbacks,
such as the handler of the worker's result, have run). Such an event, notified while nobody
waits on its key, is remembered for ``MISSED_EVENT_WINDOW_S`` and ends the next wait on that
key at once (the caller checks again, and waits again if nothing changed). Without it the
waiter would sleep its whole timeout on a job that is long done: a ``/runsync`` held past
its client's read timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable

MISSED_EVENT_WINDOW_S = 1.0
"""How long a notify that found no waiter ends the next wait on its key at once."""


class Waiters:
    """Futures keyed by a name; ``notify(key)`` resolves every waiter of that key, or, when
    there is none, ends the next wait on it within ``window`` seconds (module docstring)."""

    __slots__ = ("_by_key", "_window", "_missed", "_missed_order")

    def __init__(self, window: float = MISSED_EVENT_WINDOW_S) -> None:
        self._by_key: dict[Hashable, set[asyncio.Future[None]]] = {}
        self._window = window
        self._missed: dict[Hashable, float] = {}
        self._missed_order: deque[tuple[float, Hashable]] = deque()

    async def wait(self, key: Hashable, timeout: float) -> None:
        """Return when ``key`` is notified or ``timeout`` seconds have passed (at once when it
        was notified within the window while nobody waited)."""
        if timeout <= 0:
            return
        missed = self._missed.pop(key, None)
        if missed is not None and time.monotonic() - missed < self._window:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._by_key.setdefault(key, set())
        waiters.add(fut)
        handle = loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            waiters.discard(fut)
            if not waiters and self._by_key.get(key) is waiters:
                del self._by_key[key]

    def notify(self, key: Hashable) -> None:
        """Wake every waiter of ``key``; when nobody was waiting, the event is remembered for
        the window."""
        waiters = self._by_key.pop(key, None)
        if not waiters:
            self._remember(key)
            return
        for fut in waiters:
            _resolve(fut)

    def _remember(self, key: Hashable) -> None:
        if self._window <= 0:
            return
        now = time.monotonic()
        self._missed[key] = now
        order = self._missed_order
        order.append((now, key))
        while order and order[0][0] < now - self._window:  # forget what is older than the window
            then, old = order.popleft()
            if self._missed.get(old) == then:
                del self._missed[old]

    def notify_all(self) -> None:
        """Wake every waiter of every key (they re-check, then wait again if need be)."""
        by_key, self._by_key = self._by_key, {}
        for waiters in by_key.values():
            for fut in waiters:
                _resolve(fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
