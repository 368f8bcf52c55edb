"""Per-key request and token limits (``[[keys]] rpm`` / ``tpm``), shared through Redis.

The counting is the ``limits`` library's (``limits.aio``): in this process's memory, or, with
``[redis] url``, in Redis through its Lua scripts, so that every replica sees the same
counters and each check-and-count is one atomic call.

- ``rpm``: one hit per request, taken before the request runs (the context middleware calls
  ``RateLimits.admit`` right after it knows the key). Strategy: the *moving window*, which is
  exact (never more than ``rpm`` requests in any 60 s) at the price of one timestamp per
  request of the last minute, a few thousand at most.
- ``tpm``: before the request, a key whose tokens of the last minute already reach the limit is
  refused; after it (``RateLimits.observe``, a ``RequestContextMiddleware`` observer), the
  request's prompt + completion tokens are added. Strategy: the *sliding-window counter*
  (two counters per key: this minute and the last one, weighted by how much of the last one
  is still inside the window), because a moving window would store one entry per token
  (200,000 for a tpm of 200,000); its estimate assumes the last minute's tokens were spread
  evenly, which is what a per-minute budget means anyway.

Over a limit: 429 in OpenAI's shape (``type`` ``requests`` or ``tokens``, ``code``
``rate_limit_exceeded``) with ``Retry-After``. Every answer to a limited key carries OpenAI's
``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers (reset:
when the next request or token frees up, as ``1s``, ``6m0s``, ``20ms``).

Redis is a shared convenience, never a gate: when it is unreachable or errs, the counting falls
back to this process's memory (so each replica enforces the limits alone), one warning is
logged for the whole outage, and Redis is tried again (by one request at a time) every
``redis_link.RETRY_S`` until it answers. Keys without rpm/tpm, and an open podgate, never reach this
module. Counters are kept under the key's name, never the key or its hash.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.util import WindowStats
from redis.asyncio import ConnectionPool

from adapters import redis_link
from adapters.openai_protocol import ErrorDetail, ErrorResponse
from proxy.keys import Refusal
from proxy.settings import KeySettings, RedisSettings, redacted_url

if TYPE_CHECKING:
    from proxy.context import RequestContext

__all__ = ["RateLimits", "limited"]

log = logging.getLogger("podgate.ratelimit")

_UNBOUNDED = 2**52
"""A limit no count reaches: ``_Counters.add_tokens`` adds tokens without a check."""

_T = TypeVar("_T")


def limited(key: KeySettings | None) -> bool:
    """Whether ``key`` has a limit to check (cheap: the middleware asks it for every request)."""
    return key is not None and (key.rpm is not None or key.tpm is not None)


class _Counters:
    """The two strategies over one storage (memory or Redis)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = SlidingWindowCounterRateLimiter(storage)

    async def add_tokens(self, item: RateLimitItem, name: str, tokens: int) -> None:
        """Count ``tokens`` already spent, whatever the limit: the strategy's own acquire with a
        limit nothing reaches, so the window shift and the atomicity stay the library's."""
        await self.tokens.storage.acquire_sliding_window_entry(  # type: ignore[attr-defined]
            item.key_for(name), _UNBOUNDED, item.get_expiry(), tokens)


class _KeyLimits:
    """One key's limit items (the namespace keeps requests and tokens apart)."""

    __slots__ = ("requests", "tokens")

    def __init__(self, key: KeySettings):
        self.requests = RateLimitItemPerMinute(key.rpm, namespace="requests") if key.rpm else None
        self.tokens = RateLimitItemPerMinute(key.tpm, namespace="tokens") if key.tpm else None


class RateLimits:
    """The per-key limits of one podgate process; ``aclose`` at shutdown."""

    def __init__(self, keys: list[KeySettings], redis: RedisSettings):
        self._limits = {k.name: _KeyLimits(k) for k in keys if limited(k)}
        self._local = _Counters(MemoryStorage())
        self._pool: ConnectionPool | None = None
        self._shared: _Counters | None = None
        if redis.url and self._limits:
            self._pool = redis_link.pool(redis.url)
            self._shared = _Counters(_redis_storage(redis.url, redis.key_prefix, self._pool))
        self._outage = redis_link.Outage(redacted_url(redis.url) if redis.url else "",
                                         fallback="rate limits are counted by each process alone",
                                         back="rate limits are shared again", logger=log)
        self._recording: dict[str, set[asyncio.Task[None]]] = {}

    async def admit(self, ctx: RequestContext) -> Refusal | None:
        """Before a request of a limited key (``ctx.key``): a 429 when it is over a limit, else
        None with the request counted. Either way ``ctx.headers`` gets the x-ratelimit headers."""
        key = ctx.key
        assert key is not None
        limits = self._limits[key.name]
        if limits.tokens is not None:
            await self._settled(key.name)
        return await self._counting(lambda counters: _admit(counters, key, limits, ctx.headers))

    def observe(self, ctx: RequestContext) -> None:
        """The context middleware's observer: count a finished request's tokens (in a task;
        the key's next ``admit`` waits for it, so a process never misses its own count)."""
        key = ctx.key
        limits = self._limits.get(key.name) if key is not None else None
        tokens = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
        if key is None or limits is None or limits.tokens is None or tokens <= 0:
            return
        item = limits.tokens
        task = asyncio.get_running_loop().create_task(
            self._counting(lambda counters: counters.add_tokens(item, key.name, tokens)))
        pending = self._recording.setdefault(key.name, set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _settled(self, name: str) -> None:
        pending = self._recording.get(name)
        if pending:
            await asyncio.wait(pending)

    async def _counting(self, count: Callable[[_Counters], Awaitable[_T]]) -> _T:
        """``count`` on Redis, or on this process's memory while Redis is out (or not set)."""
        shared = self._shared
        if shared is not None:
            result = await self._outage.attempt(lambda: count(shared))
            if result is not redis_link.OUT:
                return result
        return await count(self._local)

    async def aclose(self) -> None:
        """Finish the token counts under way, then close the Redis connections."""
        pending = [t for tasks in self._recording.values() for t in tasks]
        if pending:
            await asyncio.wait(pending, timeout=2 * redis_link.TIMEOUT_S + 1)
        if self._pool is not None:
            await self._pool.aclose()


def _redis_storage(url: str, key_prefix: str, pool: ConnectionPool) -> RedisStorage:
    """``limits``' Redis storage on redis-py's asyncio client, over a pool of our own (closed
    at shutdown) with short timeouts and one immediate retry (for a pooled connection that
    Redis closed), where redis-py's default retries ten times with backoff while the client
    waits."""
    scheme, _, rest = url.partition("://")
    uri = f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{url}"
    return RedisStorage(uri, implementation="redispy", key_prefix=key_prefix,
                        connection_pool=pool)  # type: ignore[arg-type]  # documented, typed narrower


async def _admit(counters: _Counters, key: KeySettings, limits: _KeyLimits, headers: dict[str, str]) -> Refusal | None:
    now = time.time()
    if limits.tokens is not None:  # checked first: a request refused for tokens takes no request slot
        stats = await counters.tokens.get_window_stats(limits.tokens, key.name)
        _put_headers(headers, "tokens", limits.tokens.amount, stats, now)
        if stats.remaining <= 0:
            return _refuse("tokens", key.name, limits.tokens.amount, stats, now, headers)
    if limits.requests is not None:
        admitted = await counters.requests.hit(limits.requests, key.name)
        stats = await counters.requests.get_window_stats(limits.requests, key.name)
        _put_headers(headers, "requests", limits.requests.amount, stats, now)
        if not admitted:
            return _refuse("requests", key.name, limits.requests.amount, stats, now, headers)
    return None


_LABELS = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}
_enc = msgspec.json.Encoder()


def _refuse(kind: str, name: str, limit: int, stats: WindowStats, now: float, headers: dict[str, str]) -> Refusal:
    wait = max(0.0, stats.reset_time - now)
    headers["retry-after"] = str(max(1, math.ceil(wait)))
    message = (f"Rate limit reached for {_LABELS[kind]} on key {name}: Limit {limit}, "
               f"Used {limit - max(0, stats.remaining)}. Please try again in {duration(max(wait, 0.001))}.")
    body = _enc.encode(ErrorResponse(ErrorDetail(message, kind, None, "rate_limit_exceeded")))
    return Refusal(429, body, "rate-limited")


def _put_headers(headers: dict[str, str], kind: str, limit: int, stats: WindowStats, now: float) -> None:
    headers[f"x-ratelimit-limit-{kind}"] = str(limit)
    headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, stats.remaining))
    headers[f"x-ratelimit-reset-{kind}"] = duration(max(0.0, stats.reset_time - now))


def duration(seconds: float) -> str:
    """A span as OpenAI writes it in ``x-ratelimit-reset-*`` (Go's style): ``20ms``, ``1.5s``,
    ``6m0s``."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis / 1000, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
