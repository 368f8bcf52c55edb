"""Budgets: RunPod's per-endpoint, per-operation limits, kept by podgate before it calls.

RunPod limits each endpoint per operation (reference/runpod-protocol.md §1.5): ``/runsync``,
``/status`` and ``/stream`` 2,000 requests per 10 s and 400 at once, ``/run`` 1,000 per 10 s
and 200 at once, ``/cancel`` 100 per 10 s and 20 at once, ``/purge-queue`` 2 per 10 s, the
``/openai/*`` gateway 2,000 per 10 s and 400 at once. Past them it answers 429. podgate keeps
one ``Budget`` per (base URL, endpoint id, operation) and takes from it before every call, so
that its own calls never earn a 429: a call over budget **waits** its turn (first come, first
served), it never fails for the budget; a caller's own deadline (a cancelled task) still ends
the wait. ``BudgetedUpstream`` is the upstream seam (``adapters.upstream.Upstream``) with the
budgets in front of it: every ``send`` and ``open`` goes through the budget of its endpoint
(the first segment of the path) and operation (``UpstreamRequest.operation``; the gateway's
``openai/v1/<route>`` calls share one ``openai`` budget). A streamed answer (``open``) holds
its concurrency slot until its body is closed.

**Rate: GCRA** (the generic cell rate algorithm, as in ATM and redis-cell): one number per
budget, the theoretical arrival time (TAT). A call reserves the next slot at once: it goes at
``max(TAT, now) - tolerance`` and moves TAT one interval on. Reserving (rather than trying
again later) makes the wait first-come, first-served and costs one step per call. The interval
and the tolerance are chosen so that **no window of ``per_s`` seconds ever holds more than
``rate`` calls** (RunPod's window is not documented; this is the strictest reading), even when
each call reaches RunPod up to ``headroom_s`` (0.25 s) later than its slot — a call's lateness
varies (the network, a busy event loop, a cold connection), and a late call can land in the
next call's window: a burst of ``burst`` calls goes at once, then one per
``(per_s + headroom_s) / (rate - burst + 1)`` (``Limit.interval``; about 98 % of RunPod's rate for
``/stream``). A waiter that gives up hands its slot back when nobody reserved after it.

**Concurrency**: an ``asyncio.Semaphore`` (FIFO since Python 3.11.1: a newcomer never passes
a waiter), taken before the rate, so a call is sent the moment its rate slot comes (taking the
rate first and then waiting for a slot would bunch the sends past the rate).

**Ordered calls: the poll scheduler.** A call may come with an ``order`` (``UpstreamRequest.order``,
a point on the ``time.monotonic`` clock: smaller goes first). Ordered calls of one budget queue
in one ``_Line``, a heap by ``(order, arrival)``: only its head takes the concurrency slot and
the rate (and sleeps for its slot); the others wait in the heap, so a call that arrives later
with a smaller order passes every waiter behind it — at most one interval after it came, the
time the head needs to take its slot. For ``/stream`` this makes the budget of each endpoint
one scheduler shared by all its live streams: ``proxy.jobs`` sets each poll's order (when it
was asked for, moved earlier for a stream still waiting for its first output and later for an
idle one), so that within that lead the streams are served in the order they asked —
round-robin, since a stream asks again only after its poll came back — and no stream starves
(a waiter's order is fixed, newcomers' orders grow with the clock). Unordered calls take the
budget as before (first come, first served by reservation).

**Across replicas** (``SharedRates``, with ``[redis] url``): the rate part lives in Redis,
one key per budget, kept by one Lua script (``_GCRA``) that reads Redis's clock, reserves the
slot and answers the wait — one round trip (EVALSHA, EVAL again on NOSCRIPT: redis-py's
``Script``), atomic, so every replica queues in one line. **Concurrency stays per replica**:
a shared one needs a lease per call (with an expiry, for a replica that dies holding it), a
second round trip to give it back and a way to wake the waiters of other replicas (pub/sub or
polling); for ``/stream`` polls that is two to three times the Redis traffic of the rate, for
a limit that ``rate`` mostly keeps anyway (a poll is short). Each replica's cap is the cap
divided by ``replicas`` (the assumed number of replicas, ``[budgets] replicas``).

**Redis out** (unreachable, slow past ``redis_link.TIMEOUT_S``, or an error): each replica
degrades to its share, ``rate / replicas``, in memory — never a refused or failed call — logs
one warning for the outage, tries Redis again (one call at a time) every ``redis_link.RETRY_S``, and
logs once when it is back. ``replicas`` defaults to 1: a lone replica (the default
deployment) must not be throttled for a guess, while a deployment of N replicas that leaves
it at 1 risks, during an outage only, RunPod's 429s, which the retry policy absorbs; a Helm
deployment sets it to its replica count.

Cost in memory: no lock, a few µs per call (``bench/bench_budgets.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from redis.asyncio import Redis

from adapters import redis_link
from adapters.upstream import Upstream, UpstreamBody, UpstreamRequest

__all__ = ["Limit", "DEFAULT_LIMITS", "Budget", "Budgets", "BudgetedUpstream", "SharedRates", "budget_operation"]

log = logging.getLogger("podgate.budgets")



@dataclass(frozen=True, slots=True)
class Limit:
    """One operation's limit: ``rate`` calls per ``per_s`` seconds (0: no rate limit), of which
    ``burst`` may go at once (default: a tenth of the rate), and ``concurrency`` calls at once
    (0: no cap); ``headroom_s``: how much later than its slot a call may reach the upstream
    with the rate still kept."""

    rate: int = 0
    per_s: float = 10.0
    concurrency: int = 0
    burst: int | None = None
    headroom_s: float = 0.25

    @property
    def bursting(self) -> int:
        return min(self.rate, self.burst if self.burst is not None else max(1, self.rate // 10))

    @property
    def interval(self) -> float:
        """Seconds between calls after a burst: a window of ``per_s + headroom_s`` holds the
        burst and ``rate - burst`` more (GCRA lets ``burst + span / interval`` calls into a
        span)."""
        return (self.per_s + self.headroom_s) / (self.rate - self.bursting + 1)

    @property
    def tolerance(self) -> float:
        """How far ahead of TAT a call may go: room for the burst."""
        return (self.bursting - 1) * self.interval

    def share(self, replicas: int) -> Limit:
        """One replica's share of the limit: the rate and the cap divided by ``replicas``
        (never below 1)."""
        if replicas <= 1:
            return self
        rate = max(1, self.rate // replicas) if self.rate else 0
        burst = None if self.burst is None else max(1, self.burst // replicas)
        return replace(self, rate=rate, burst=burst,
                       concurrency=max(1, self.concurrency // replicas) if self.concurrency else 0)


_QUERIES = Limit(2000, 10.0, 400)
DEFAULT_LIMITS: Mapping[str, Limit] = {
    "runsync": _QUERIES,
    "status": _QUERIES,
    "stream": _QUERIES,
    "run": Limit(1000, 10.0, 200),
    "retry": Limit(1000, 10.0, 200),
    "cancel": Limit(100, 10.0, 20),
    "purge-queue": Limit(2, 10.0, 0),
    "openai": _QUERIES,
}
"""RunPod's table (§1.5). ``/retry`` is not in it: it re-queues a job, so it gets ``/run``'s
limits (a guess on the safe side). ``/health`` is not in it either and stays unbudgeted:
podgate calls it once per endpoint every ``health_interval_s``. Both can be set
(``[budgets.<operation>]``)."""


def budget_operation(operation: str) -> str:
    """The budget an ``UpstreamRequest.operation`` counts against: itself, or ``openai`` for
    the gateway's ``openai/v1/<route>`` calls (RunPod limits ``/openai/*`` as one)."""
    return operation.partition("/")[0]


class _LocalRate:
    """GCRA in this process's memory (see the module docstring)."""

    __slots__ = ("_interval", "_tolerance", "_tat", "_clock")

    def __init__(self, limit: Limit, clock: Callable[[], float]):
        self._interval = limit.interval
        self._tolerance = limit.tolerance
        self._tat = -math.inf
        self._clock = clock

    def reserve(self) -> tuple[float, float]:
        """Reserve the next slot: ``(wait in seconds, the slot's TAT)``."""
        now = self._clock()
        tat = self._tat if self._tat > now else now
        self._tat = tat + self._interval
        return max(0.0, tat - self._tolerance - now), self._tat

    def give_back(self, tat: float) -> None:
        """A waiter gave up: its slot is free again if nobody reserved after it."""
        if self._tat == tat:
            self._tat -= self._interval


_GCRA = """
-- KEYS[1]: the budget's TAT (µs, Redis's clock); ARGV[1]: interval (µs); ARGV[2]: tolerance (µs)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return math.max(0, tat - tonumber(ARGV[2]) - now)
"""


class SharedRates:
    """The rates of every budget in Redis (one per process; ``aclose`` at shutdown).
    ``reserve`` answers the wait, or None while Redis is out (the caller uses its share)."""

    def __init__(self, url: str, *, key_prefix: str = "podgate", shown_url: str = "Redis"):
        self._pool = redis_link.pool(url)
        self._script = Redis(connection_pool=self._pool).register_script(_GCRA)
        self.key_prefix = key_prefix
        self._outage = redis_link.Outage(shown_url, fallback="each process keeps its share of the upstream budgets",
                                         back="upstream budgets are shared again", logger=log)

    def key(self, base_url: str, endpoint: str, operation: str) -> str:
        """The Redis key of one budget's rate (the base URL as a short hash)."""
        base = hashlib.sha256(base_url.encode()).hexdigest()[:12]
        return f"{self.key_prefix}:budget:{base}:{endpoint}:{operation}"

    @property
    def out(self) -> bool:
        return self._outage.out

    async def reserve(self, key: str, limit: Limit) -> float | None:
        wait_us = await self._outage.attempt(
            lambda: self._script(keys=[key], args=[round(limit.interval * 1e6), round(limit.tolerance * 1e6)]))
        return None if wait_us is redis_link.OUT else int(wait_us) / 1e6

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Line:
    """The queue of one budget's ordered calls (module docstring): ``enter(order)`` returns
    when this call is the head, ``leave()`` hands the head on to the smallest waiting order."""

    __slots__ = ("_heap", "_busy", "_arrivals")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._busy = False
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._heap)

    async def enter(self, order: float) -> None:
        if not self._busy:
            self._busy = True
            return
        turn = asyncio.get_running_loop().create_future()
        self._arrivals += 1
        heapq.heappush(self._heap, (order, self._arrivals, turn))
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # handed the head, then cancelled: pass it on
                self.leave()
            raise  # else its entry is skipped when it comes up (a cancelled future)

    def leave(self) -> None:
        heap = self._heap
        while heap:
            turn = heapq.heappop(heap)[2]
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False


class Budget:
    """One (base URL, endpoint, operation) budget: ``await acquire()`` before the call (it
    waits its turn; ``order``: an ordered call, see the module docstring), ``release()`` after
    it. ``limit`` is the whole limit (shared through ``shared`` when given); this process's cap,
    and its rate without Redis, are its share of ``replicas``. ``recent()`` counts the calls of
    the last ``limit.per_s`` seconds that took from it (this process's)."""

    __slots__ = ("limit", "_slots", "_local", "_shared", "_key", "_sleep", "_clock", "_line", "_sent")

    def __init__(self, limit: Limit, *, replicas: int = 1, shared: SharedRates | None = None, key: str = "",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep):
        self.limit = limit
        own = limit.share(replicas)
        self._slots = asyncio.Semaphore(own.concurrency) if own.concurrency else None
        self._local = _LocalRate(own, clock) if limit.rate else None
        self._shared = shared if limit.rate else None
        self._key = key
        self._sleep = sleep
        self._clock = clock
        self._line = _Line()
        self._sent: deque[float] = deque(maxlen=2 * limit.rate or 4096)  # when the last calls went

    @property
    def waiting(self) -> int:
        """Ordered calls waiting behind the head."""
        return len(self._line)

    def recent(self) -> int:
        """Calls that went in the last ``limit.per_s`` seconds (at most twice the rate are
        remembered)."""
        sent, since = self._sent, self._clock() - self.limit.per_s
        while sent and sent[0] < since:
            sent.popleft()
        return len(sent)

    async def acquire(self, order: float | None = None) -> None:
        if order is None:
            await self._take()
        else:
            await self._line.enter(order)
            try:
                await self._take()
            finally:
                self._line.leave()
        self._sent.append(self._clock())

    async def _take(self) -> None:
        if self._slots is not None:
            await self._slots.acquire()
        if self._local is None:
            return
        try:
            await self._take_rate()
        except BaseException:
            self.release()
            raise

    async def _take_rate(self) -> None:
        assert self._local is not None
        if self._shared is not None:
            wait = await self._shared.reserve(self._key, self.limit)
            if wait is not None:
                if wait > 0:
                    await self._sleep(wait)  # a shared slot given up is not handed back (see reserve)
                return
        wait, tat = self._local.reserve()
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self._local.give_back(tat)
                raise

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


class Budgets:
    """The budgets of the endpoints under one base URL, made on first use: the limits per
    operation (``DEFAULT_LIMITS`` with the settings' overrides; an operation without one is
    not budgeted), shared through ``shared`` when given."""

    def __init__(self, base_url: str, limits: Mapping[str, Limit] = DEFAULT_LIMITS, *, replicas: int = 1,
                 shared: SharedRates | None = None):
        self._base_url = base_url
        self._limits = limits
        self._replicas = replicas
        self._shared = shared
        self._budgets: dict[tuple[str, str], Budget | None] = {}  # by (endpoint, request operation)
        self._made: dict[tuple[str, str], Budget | None] = {}  # by (endpoint, budget operation)

    def of(self, request: UpstreamRequest) -> Budget | None:
        """The budget ``request`` takes from (None: unbudgeted)."""
        endpoint = request.path.partition("/")[0]
        try:
            return self._budgets[endpoint, request.operation]
        except KeyError:
            name = budget_operation(request.operation)
            if (endpoint, name) not in self._made:
                self._made[endpoint, name] = self._make(endpoint, name)
            budget = self._budgets[endpoint, request.operation] = self._made[endpoint, name]
            return budget

    def _make(self, endpoint: str, name: str) -> Budget | None:
        limit = self._limits.get(name)
        if limit is None or not (limit.rate or limit.concurrency):
            return None
        key = self._shared.key(self._base_url, endpoint, name) if self._shared is not None else ""
        return Budget(limit, replicas=self._replicas, shared=self._shared, key=key)

    def usage(self) -> dict[str, dict[str, float]]:
        """Per endpoint and operation, the share of the rate this process used in the last
        window (``Budget.recent() / rate``; operations with no rate are left out)."""
        used: dict[str, dict[str, float]] = {}
        for (endpoint, name), budget in self._made.items():
            if budget is not None and budget.limit.rate:
                used.setdefault(endpoint, {})[name] = budget.recent() / budget.limit.rate
        return used


WaitHook = Callable[[str, float], None]
"""Hears how long each budgeted call waited for its budget: (budget operation, seconds)."""


class BudgetedUpstream:
    """An ``Upstream`` whose calls take from their budgets first (see the module docstring);
    ``on_wait`` hears each call's wait (metrics)."""

    def __init__(self, upstream: Upstream, budgets: Budgets, *, on_wait: WaitHook | None = None):
        self._upstream = upstream
        self.budgets = budgets
        self._on_wait = on_wait

    async def _acquire(self, budget: Budget, request: UpstreamRequest) -> None:
        if self._on_wait is None:
            await budget.acquire(request.order)
            return
        started = time.monotonic()
        await budget.acquire(request.order)
        self._on_wait(budget_operation(request.operation), time.monotonic() - started)

    async def send(self, request: UpstreamRequest) -> bytes:
        budget = self.budgets.of(request)
        if budget is None:
            return await self._upstream.send(request)
        await self._acquire(budget, request)
        try:
            return await self._upstream.send(request)
        finally:
            budget.release()

    async def open(self, request: UpstreamRequest) -> UpstreamBody:
        budget = self.budgets.of(request)
        if budget is None:
            return await self._upstream.open(request)
        await self._acquire(budget, request)
        try:
            body = await self._upstream.open(request)
        except BaseException:
            budget.release()
            raise
        return _HeldBody(body, budget)

    async def aclose(self) -> None:
        await self._upstream.aclose()


class _HeldBody:
    """A streamed answer that holds its budget's concurrency slot until it is closed."""

    __slots__ = ("_body", "_budget", "content_type")

    def __init__(self, body: UpstreamBody, budget: Budget):
        self._body = body
        self._budget: Budget | None = budget
        self.content_type = body.content_type

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body.__aiter__()

    async def aclose(self) -> None:
        budget, self._budget = self._budget, None
        try:
            await self._body.aclose()
        finally:
            if budget is not None:
                budget.release()
