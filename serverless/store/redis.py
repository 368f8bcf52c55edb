"""RedisStore: the job store shared by several endpoint-server replicas through one Redis.

Every operation is one Lua script (``serverless.store.redis_scripts``, which also documents
the key layout), so each state transition is atomic across replicas: a job is handed out at
most once, and a terminal transition happens in exactly one call. Long-polls are woken by
pub/sub: scripts publish on one channel per store prefix, and one subscriber connection per
store dispatches the events to local waiters (:class:`_Notifier`), with a bounded fallback
poll so that a lost event only delays a wake-up. Semantics are those of
:class:`serverless.store.base.JobStore` and match ``MemoryStore``.

Outages: a call that cannot reach Redis raises :class:`StoreUnavailable` (the server answers
503 with ``Retry-After``). :class:`_Link` logs one warning when the first call fails and one
line when a call begun after that succeeds again, however many requests fail in between (a
request that fails does not log; the pub/sub subscription's failures count as the same
outage). While out, :attr:`RedisStore.out` is true: the rate limiter counts locally
(``serverless.limits``) without trying Redis first; every store call still tries, so the first
one after Redis is back ends the outage.

Encoding: the fields of a job that never change are one msgpack blob (:class:`_Spec`, typed
decoder); the fields that scripts change are plain hash fields, parsed by :func:`_job`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from serverless.jobs import EndpointHealth, Job, JobCounts, Outcome, WorkerCounts
from serverless.store import redis_scripts as lua
from serverless.store.base import JobStore, StoreUnavailable
from serverless.store.waiters import Waiters

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: what a failed call to Redis raises (a refused or cut connection, a timeout, an error reply)
_FAILURES = (RedisError, OSError)


def _shown(url: str) -> str:
    """``url`` without its user and password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


class _Link:
    """Whether Redis is out, logged once per outage (see the module docstring)."""

    __slots__ = ("_shown_url", "out", "_out_since")

    def __init__(self, url: str) -> None:
        self._shown_url = _shown(url)
        self.out = False
        self._out_since = 0.0

    async def call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``await call()``, or :class:`StoreUnavailable` when it cannot reach Redis."""
        began = time.monotonic()
        try:
            result = await call()
        except _FAILURES as exc:
            self.failed(exc)
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from None
        if self.out and began > self._out_since:  # a call begun before the outage proves nothing
            self.out = False
            log.warning("Redis store at %s is back", self._shown_url)
        return result

    def failed(self, exc: BaseException) -> None:
        if not self.out:
            self.out = True
            self._out_since = time.monotonic()
            log.warning("Redis store at %s is unreachable (%s); answering 503 with Retry-After until it is back",
                        self._shown_url, type(exc).__name__)


class _Spec(msgspec.Struct, array_like=True):
    """The immutable part of a job, stored as one msgpack blob (hash field ``spec``)."""

    id: str
    endpoint: str
    payload: bytes
    webhook: str | None
    execution_timeout_ms: int
    ttl_ms: int
    retention_ms: int
    created_at: float


_spec_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(_Spec)
_event_decoder = msgspec.msgpack.Decoder(tuple[str, str, str])


def _str(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _job(rec: list[Any]) -> Job:
    """A :class:`Job` from a script's record (the hash fields ``redis_scripts.FIELDS``)."""
    spec_raw, st, w, sa, fa, ex, o, e, at, rt = rec
    spec = _spec_decoder.decode(spec_raw)
    return Job(
        id=spec.id, endpoint=spec.endpoint, payload=spec.payload, status=st.decode(),
        webhook=spec.webhook, execution_timeout_ms=spec.execution_timeout_ms, ttl_ms=spec.ttl_ms,
        retention_ms=spec.retention_ms, created_at=spec.created_at, started_at=_float(sa),
        finished_at=_float(fa), expires_at=float(ex), worker_id=_str(w), output=o, error=_str(e),
        attempts=int(at or 0), retries=int(rt or 0),
    )


def _outcome(res: list[Any] | None) -> Outcome | None:
    return None if res is None else Outcome(_job(res[1]), bool(res[0]))


def _opt(value: bytes | str | None) -> tuple[str, bytes | str]:
    """Flag and value for a script argument that may be absent (``None``)."""
    return ("0", b"") if value is None else ("1", value)


class _Notifier:
    """One pub/sub subscription per store, dispatching events to local waiters.

    Waiters are futures keyed by an event key ``(kind, endpoint, id)`` (``Waiters``: an event
    that arrives when nobody waits on its key ends the next wait on that key at once, which
    closes the gap between a caller's check and its wait). Each wait lasts at most
    ``poll_interval`` (the fallback poll); while the subscription is down a wait ends as soon
    as it is back (events may have been missed meanwhile).
    """

    def __init__(self, client: aioredis.Redis, channel: str, poll_interval: float, link: _Link) -> None:
        self._client = client
        self._link = link
        self._channel = channel
        self._poll = poll_interval
        self._waiters = Waiters()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-store-events")

    async def wait_ready(self, timeout: float) -> bool:
        """Start the subscription if needed and wait until it is active (or ``timeout``)."""
        self.start()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._wake_all()

    async def wait(self, key: tuple[str, str, str], timeout: float) -> None:
        if timeout <= 0:
            return
        if not self._ready.is_set():  # events may be missed until subscribed: re-check then
            await self.wait_ready(min(timeout, self._poll))
            return
        await self._waiters.wait(key, min(timeout, self._poll))

    def _dispatch(self, data: bytes) -> None:
        self._waiters.notify(_event_decoder.decode(data))

    def _wake_all(self) -> None:
        self._waiters.notify_all()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._ready.set()
                delay = 0.05
                self._wake_all()  # events may have been missed while unsubscribed
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        try:
                            self._dispatch(message["data"])
                        except msgspec.DecodeError:
                            log.warning("ignoring a malformed store event")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: resubscribe with back-off
                self._link.failed(exc)  # logged once per outage
                log.debug("redis store event subscription failed (%s); retrying", type(exc).__name__)
            finally:
                self._ready.clear()
                try:
                    await pubsub.aclose()
                except Exception:  # pragma: no cover - best effort on a broken connection
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)  # resubscribed within half a second of Redis coming back


class RedisStore(JobStore):
    """:class:`JobStore` on Redis, shared by any number of server processes.

    ``prefix`` starts every key and the event channel, so several stores (tests) can share one
    Redis. ``poll_interval`` bounds every wait (the fallback poll when an event is lost);
    ``expiry_grace`` is added to the native TTL of job keys beyond ``expires_at`` (sweeps do
    the deletion on time; native expiry is the safety net); ``stop_signal_ttl`` is how long
    undelivered stop signals are kept; ``sweep_limit`` caps the jobs one sweep pass handles
    (the next sweep continues); ``max_connections`` sizes the one connection pool, whose
    connections carry ``client_name`` (``CLIENT LIST`` shows it). ``command_timeout`` bounds
    each command (a Redis that hangs, rather than refuses, fails the call as an outage does,
    instead of holding every request for as long as it hangs); the subscription has none.
    """

    def __init__(self, url: str, prefix: str = "podgate", *, max_connections: int = 64,
                 poll_interval: float = 1.0, expiry_grace: float = 60.0,
                 stop_signal_ttl: float = 3600.0, sweep_limit: int = 2000,
                 client_name: str = "podgate-store", command_timeout: float = 5.0) -> None:
        self.prefix = prefix
        self._ns = prefix if prefix.endswith(":") else prefix + ":"  # "podgate" and "podgate:" alike
        # one quick retry: a pooled connection that an outage closed reconnects instead of failing
        self._pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30,
                                                              client_name=client_name, retry=Retry(NoBackoff(), 1),
                                                              socket_timeout=command_timeout,
                                                              socket_connect_timeout=command_timeout)
        # the subscription has its own connection, without that retry: redis-py would otherwise
        # resubscribe silently, and waiters must learn that events may have been missed
        self._sub_pool = aioredis.ConnectionPool.from_url(url, max_connections=2, client_name=client_name)
        self._sub_client = aioredis.Redis(connection_pool=self._sub_pool)
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._channel = f"{self._ns}events"
        self._common = (self._channel, int(expiry_grace * 1000), int(stop_signal_ttl * 1000))
        self._sweep_limit = sweep_limit
        self._link = _Link(url)
        self._events = _Notifier(self._sub_client, self._channel, poll_interval, self._link)
        self._scripts = {name: self._client.register_script(lua.PRELUDE + getattr(lua, name))
                         for name in lua.SCRIPTS}

    def _base(self, endpoint: str) -> str:
        return f"{self._ns}{{{endpoint}}}:"

    async def _run(self, name: str, endpoint: str, now: float, *args: Any) -> Any:
        """Run script ``name`` for ``endpoint`` with the common arguments, then ``args``."""
        self._events.start()
        channel, grace, stop_ttl = self._common
        script = self._scripts[name]
        return await self._link.call(lambda: script(keys=[self._base(endpoint)],
                                                    args=[channel, endpoint, now, grace, stop_ttl, *args]))

    @property
    def out(self) -> bool:
        """Redis is out (since a call failed, until one succeeds again)."""
        return self._link.out

    async def take_rate(self, endpoint: str, operation: str, per_window: int, window: float, *,
                        now: float) -> float:
        """The shared rate window of ``serverless.limits`` (:class:`~serverless.limits.SharedRate`;
        the ``RATE`` script)."""
        wait = await self._run("RATE", endpoint, now, operation, per_window, window, secrets.token_hex(8))
        return float(wait)

    # --- callers ---------------------------------------------------------------------------

    async def submit(self, job: Job, *, max_queue: int | None, now: float) -> bool:
        spec = _spec_encoder.encode(_Spec(
            id=job.id, endpoint=job.endpoint, payload=job.payload, webhook=job.webhook,
            execution_timeout_ms=job.execution_timeout_ms, ttl_ms=job.ttl_ms,
            retention_ms=job.retention_ms, created_at=job.created_at))
        added = await self._run("SUBMIT", job.endpoint, now, "" if max_queue is None else max_queue, job.id,
                                spec, job.expires_at, job.execution_timeout_ms, job.retention_ms, job.ttl_ms,
                                job.attempts, job.retries)
        return bool(added)

    async def get(self, endpoint: str, job_id: str, *, now: float) -> Job | None:
        self._events.start()
        key = f"{self._base(endpoint)}j:{job_id}"
        rec: list[Any] = await self._link.call(lambda: self._client.hmget(key, lua.FIELDS))
        if rec[0] is None or float(rec[5]) <= now:
            return None
        return _job(rec)

    async def set_ttl(self, endpoint: str, job_id: str, ttl_ms: int, *, now: float) -> Job | None:
        rec = await self._run("SET_TTL", endpoint, now, ttl_ms, job_id)
        return None if rec is None else _job(rec)

    async def read_stream(self, endpoint: str, job_id: str, *, now: float) -> tuple[Job, list[bytes]] | None:
        res = await self._run("READ_STREAM", endpoint, now, job_id)
        return None if res is None else (_job(res[0]), res[1])

    async def cancel(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        return _outcome(await self._run("CANCEL", endpoint, now, job_id))

    async def retry(self, endpoint: str, job_id: str, *, now: float) -> Outcome | None:
        return _outcome(await self._run("RETRY", endpoint, now, job_id))

    async def purge(self, endpoint: str, *, now: float) -> int:
        return int(await self._run("PURGE", endpoint, now))

    async def health(self, endpoint: str, *, now: float, worker_timeout: float) -> EndpointHealth:
        completed, failed, retried, in_queue, in_progress, idle, running, unhealthy = await self._run(
            "HEALTH", endpoint, now, worker_timeout)
        return EndpointHealth(
            jobs=JobCounts(completed=completed, failed=failed, in_progress=in_progress, in_queue=in_queue,
                           retried=retried),
            workers=WorkerCounts(idle=idle, running=running, unhealthy=unhealthy, ready=idle + running))

    # --- workers ---------------------------------------------------------------------------

    async def take(self, endpoint: str, worker_id: str, count: int, *, now: float) -> list[Job]:
        token = secrets.token_hex(8)  # the same in a resent call (the scripts' TAKE)
        return [_job(rec) for rec in await self._run("TAKE", endpoint, now, worker_id, count, token)]

    async def append_chunks(self, endpoint: str, job_id: str, worker_id: str, chunks: list[bytes], *,
                            now: float) -> bool:
        token = secrets.token_hex(8)  # the same in a resent call (the scripts' APPEND_CHUNKS)
        return bool(await self._run("APPEND_CHUNKS", endpoint, now, job_id, worker_id, token, *chunks))

    async def progress(self, endpoint: str, job_id: str, worker_id: str, output: bytes | None, *,
                       now: float) -> bool:
        return bool(await self._run("PROGRESS", endpoint, now, job_id, worker_id, *_opt(output)))

    async def finish(self, endpoint: str, job_id: str, worker_id: str, status: str, *,
                     output: bytes | None, error: str | None, now: float) -> Outcome | None:
        rec = await self._run("FINISH", endpoint, now, job_id, worker_id, status, *_opt(output), *_opt(error))
        return None if rec is None else Outcome(_job(rec), True)

    async def abandon_poll(self, endpoint: str, worker_id: str, job_ids: list[str], *, now: float) -> None:
        await self._run("ABANDON_POLL", endpoint, now, worker_id, *job_ids)

    async def take_stop_signals(self, endpoint: str, worker_id: str, *, now: float) -> list[str]:
        ids = await self._run("TAKE_STOPS", endpoint, now, worker_id)
        return list(dict.fromkeys(raw.decode() for raw in ids))

    async def touch_worker(self, endpoint: str, worker_id: str, *, now: float,
                           job_ids: list[str] | None = None, unhealthy: bool = False) -> None:
        report = "-" if job_ids is None else "u" if unhealthy else "r" if job_ids else ""
        await self._run("TOUCH", endpoint, now, worker_id, report, *(job_ids or ()))

    # --- time-driven ----------------------------------------------------------------------

    async def sweep(self, endpoint: str, *, now: float, worker_timeout: float, max_attempts: int) -> list[Job]:
        recs = await self._run("SWEEP", endpoint, now, worker_timeout, max_attempts, self._sweep_limit)
        return [_job(rec) for rec in recs]

    async def requeue_unreported(self, endpoint: str, *, now: float, grace: float, max_attempts: int) -> list[Job]:
        recs = await self._run("REQUEUE_UNREPORTED", endpoint, now, grace, max_attempts)
        return [_job(rec) for rec in recs]

    # --- waiting ---------------------------------------------------------------------------

    async def wait_queue(self, endpoint: str, timeout: float) -> None:
        await self._events.wait(("q", endpoint, ""), timeout)

    async def wait_job(self, endpoint: str, job_id: str, timeout: float) -> None:
        await self._events.wait(("j", endpoint, job_id), timeout)

    async def wait_stop(self, endpoint: str, worker_id: str, timeout: float) -> None:
        await self._events.wait(("s", endpoint, worker_id), timeout)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Check that Redis answers and subscribe to wake-up events now (otherwise both happen
        on first use); raises ``redis.exceptions.ConnectionError`` / ``TimeoutError``."""
        await self._client.ping()
        if not await self._events.wait_ready(timeout):
            raise TimeoutError("redis store: event subscription not ready")

    async def close(self) -> None:
        await self._events.close()
        await self._client.aclose()
        await self._pool.aclose()
        await self._sub_client.aclose()
        await self._sub_pool.aclose()

    async def delete_all(self) -> int:
        """Delete every key under this store's prefix (tests, resets); returns how many."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=_glob_escape(self._ns) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self._client.unlink(*batch)
        return deleted


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so that ``text`` matches only itself."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
