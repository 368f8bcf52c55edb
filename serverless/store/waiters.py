"""Waiters: the one home of "wait until this key may have changed, or a timeout".

Both stores wake long-polls (job-take, job-stop, /stream, /runsync, /status-sync) through
it: the memory store notifies keys directly, the Redis store from its pub/sub listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class Waiters:
    """Futures keyed by a name; ``notify(key)`` resolves every waiter of that key."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[Hashable, set[asyncio.Future[None]]] = {}

    async def wait(self, key: Hashable, timeout: float) -> None:
        """Return when ``key`` is notified or ``timeout`` seconds have passed."""
        if timeout <= 0:
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

    def notify(self, key: Hashable) -> bool:
        """Wake every waiter of ``key``; False when nobody was waiting."""
        waiters = self._by_key.pop(key, None)
        if not waiters:
            return False
        for fut in waiters:
            _resolve(fut)
        return True

    def notify_all(self) -> None:
        """Wake every waiter of every key (they re-check, then wait again if need be)."""
        by_key, self._by_key = self._by_key, {}
        for waiters in by_key.values():
            for fut in waiters:
                _resolve(fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
