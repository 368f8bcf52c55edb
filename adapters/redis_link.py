"""podgate's link to a shared Redis, for the counters that replicas share (per-key limits in
``proxy.ratelimit``, upstream budgets in ``adapters.budgets``): how to connect, and what to do
while Redis is out.

Redis is a shared convenience, never a gate. ``pool(url)`` connects with short timeouts
(``TIMEOUT_S``) and one quick retry, so an unreachable Redis costs a request half a second
once, not redis-py's default ten retries with backoff. ``Outage`` is one user's view of the
link: ``await outage.attempt(call)`` runs a Redis call, or answers ``OUT`` when Redis is out
(the call failed, or it failed before and no new try is due): the caller then counts on its
own. The first failure logs one warning for the whole outage; while out, one call at a time
tries Redis again every ``RETRY_S``, and the one that succeeds logs that it is back.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeVar

from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["pool", "Outage", "OUT", "Out", "RETRY_S", "TIMEOUT_S"]

log = logging.getLogger("podgate.redis")

RETRY_S = 5.0
"""While Redis is out, how often one call tries it again."""
TIMEOUT_S = 0.5
"""Connect and read timeout of a Redis call; slower counts as an outage."""

_T = TypeVar("_T")


class _Out(enum.Enum):
    OUT = enum.auto()


OUT: Final = _Out.OUT
"""What ``Outage.attempt`` answers while Redis is out."""
Out = Literal[_Out.OUT]


def pool(url: str) -> ConnectionPool:
    """A connection pool to ``url`` with podgate's short timeouts and a single quick retry."""
    return ConnectionPool.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
                                   retry=Retry(NoBackoff(), 1))


class Outage:
    """One user's view of the Redis link: ``shown_url`` (the URL without its password) and
    ``fallback`` (what the user does meanwhile, for the warning: "rate limits are counted by
    each process alone") go into the two log lines; ``back`` says what works again."""

    __slots__ = ("_shown_url", "_fallback", "_back", "_logger", "out", "_retry_at", "_probing")

    def __init__(self, shown_url: str, *, fallback: str, back: str, logger: logging.Logger = log):
        self._shown_url, self._fallback, self._back, self._logger = shown_url, fallback, back, logger
        self.out = False
        self._retry_at = 0.0  # monotonic: while out, when Redis is tried again
        self._probing = False

    def may_try(self) -> bool:
        """Redis is not out; or it is, a new try is due and no other call is trying."""
        return not self.out or (time.monotonic() >= self._retry_at and not self._probing)

    async def attempt(self, call: Callable[[], Awaitable[_T]]) -> _T | Out:
        """``call()``'s answer, or ``OUT`` (not tried, or it failed: whatever Redis does,
        nothing is refused or failed for it)."""
        if not self.may_try():
            return OUT
        probe = self.out  # only a probe ends an outage (not a call that began before it)
        self._probing = self._probing or probe
        try:
            result = await call()
        except Exception as exc:
            self._went_out(exc)
            return OUT
        finally:
            if probe:
                self._probing = False
        if probe:
            self.out = False
            self._logger.warning("Redis at %s is back: %s", self._shown_url, self._back)
        return result

    def _went_out(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        if not self.out:
            self.out = True
            self._logger.warning("Redis at %s is unreachable (%s); %s until it answers again", self._shown_url,
                                 type(exc).__name__, self._fallback)
