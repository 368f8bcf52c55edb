"""Shared test fixtures: the self-hosted endpoint server and real ``runpod`` SDK workers.

Everything runs as real processes on loopback (free ports, random Redis prefixes), so any
test can use them alongside others on the same machine.

Fixtures
--------
``endpoint_factory`` (function scope) / ``module_endpoint_factory`` (module scope)
    ``start(endpoints=("ep",), store="memory", api_key="test-key", **settings)`` starts
    ``podgate endpoint`` as a subprocess on a free port and returns an :class:`EndpointServer`
    once it announced its URL (``supervisor.readiness``). ``settings`` are :class:`serverless.settings.EndpointSettings`
    field names (``take_hold=1.0``); :data:`FAST` holds the short timings used by default.
    ``store="redis"`` uses 127.0.0.1:6379 db 0 with a random key prefix, or the given
    ``redis_prefix`` (several replicas on one queue). If Redis is down the test fails with
    the reason (``make test`` and CI start Redis; a Redis test must not pass by skipping).
    Every server (and its workers) is stopped when the fixture's scope ends.

``EndpointServer``
    ``.base`` (``http://127.0.0.1:PORT/v2``), ``.url(ep)`` (``.../v2/ep``), ``.api_key``,
    ``.worker(handler, endpoint=None, concurrency=None, aggregate=False, wait=True, ...)``
    spawns ``podgate worker --handler handler`` and by default waits until the server's
    ``/health`` counts it (a :class:`WorkerProcess`: ``.stop()``, ``.kill()`` the process
    group, ``.kill_main()`` the main process alone); ``.sdk(ep)`` returns a
    ``runpod.Endpoint`` bound to this server; ``.client()`` an ``httpx.Client`` with the
    caller key; ``.health(ep)``.

``endpoint`` (function scope, parametrized over ``store_kind``)
    A server with one endpoint ``"ep"`` and the :data:`FAST` timings, on each store.

``store_kind``
    ``"memory"`` and ``"redis"``: parametrize a test over both stores by requesting it.

``runpod_env``
    Points the ``runpod`` SDK client at a server: ``runpod_env(server)`` sets
    ``runpod.api_key``, ``runpod.endpoint_url_base`` and ``RUNPOD_ENDPOINT_BASE_URL``
    (restored afterwards).

``job_store`` (function scope, parametrized over ``store_kind``)
    A fresh in-process :class:`~serverless.store.base.JobStore` (MemoryStore, or RedisStore
    on a random prefix) for store-contract tests; closed afterwards.

``redis_required``
    Fails the test (with the reason) when Redis does not answer: for modules that use Redis
    directly (``pytestmark = pytest.mark.usefixtures("redis_required")``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import httpx
import pytest

from supervisor.readiness import ReadyPipe

ROOT = Path(__file__).resolve().parent.parent
PODGATE = [sys.executable, "-m", "proxy.cli"]
REDIS_URL = "redis://127.0.0.1:6379/0"

#: Short timings for tests (seconds unless ``_ms``); override per server.
FAST: dict[str, Any] = {
    "take_hold": 0.5,
    "stop_hold": 0.5,
    "worker_timeout": 4.0,
    "sweep_interval": 0.05,
    "webhook_retry_interval": 0.2,
    "webhook_timeout": 2.0,
    "execution_timeout_min_ms": 100,
    "ttl_min_ms": 100,
    "ping_grace": 1.5,
}

WORKER_PING_MS = 1000


def require_redis() -> None:
    """Fail the calling test when Redis does not answer: the Redis tests must run (``make
    test`` and CI start a Redis), never pass by being skipped."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not answering ({exc}); start one (make redis)", pytrace=False)


def delete_redis_prefixes(prefixes: list[str]) -> None:
    """Delete every Redis key under each prefix (``RedisStore.delete_all``); runs its own event
    loop in a thread, so it works from sync teardown code whether or not a loop is running."""
    if not prefixes:
        return

    async def delete() -> None:
        from serverless.store.redis import RedisStore

        for prefix in prefixes:
            store = RedisStore(REDIS_URL, prefix=prefix)
            try:
                await store.delete_all()
            finally:
                await store.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(delete())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="redis-cleanup")
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, worker_id: str, log: Path, endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.log = log

    def stop(self, timeout: float = 5.0) -> None:
        _terminate(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL the worker and its heartbeat child (a lost worker, as far as the server knows)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def kill_main(self) -> None:
        """SIGKILL the worker's main process only, not its process group (as the OOM killer
        does): what becomes of its children is up to them."""
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # the worker's heartbeat child and anything else left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class EndpointServer:
    """A running ``podgate endpoint`` subprocess (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, port: int, endpoints: tuple[str, ...], api_key: str | None,
                 store: str, logdir: Path) -> None:
        self.proc = proc
        self.port = port
        self.endpoints = endpoints
        self.endpoint = endpoints[0]
        self.api_key = api_key
        self.store = store
        self.base = f"http://127.0.0.1:{port}/v2"
        self.logdir = logdir
        self.workers: list[WorkerProcess] = []

    def url(self, endpoint: str | None = None) -> str:
        return f"{self.base}/{endpoint or self.endpoint}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(headers=self.headers(), timeout=kw.pop("timeout", 30.0), **kw)

    def health(self, endpoint: str | None = None) -> dict:
        with self.client() as c:
            return c.get(f"{self.url(endpoint)}/health").raise_for_status().json()

    def worker(self, handler: str, endpoint: str | None = None, *, concurrency: int | None = None,
               aggregate: bool = False, worker_id: str | None = None, wait: bool = True,
               extra_env: dict[str, str] | None = None, timeout: float = 30.0) -> WorkerProcess:
        """Spawn a real SDK worker for ``handler`` (``module:function``) on ``endpoint``."""
        worker_id = worker_id or f"w-{uuid.uuid4().hex[:8]}"
        cmd = [*PODGATE, "worker", "--endpoint-url", self.url(endpoint), "--handler", handler,
               "--worker-id", worker_id, "--ping-interval", str(WORKER_PING_MS), "--log-level", "INFO"]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if concurrency is not None:
            cmd += ["--concurrency", str(concurrency)]
        if aggregate:
            cmd.append("--aggregate-stream")
        log = self.logdir / f"worker-{worker_id}.log"
        # unbuffered: a worker killed at teardown leaves its whole log (a test's failure reads it)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        env.pop("RUNPOD_ENDPOINT_BASE_URL", None)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        w = WorkerProcess(proc, worker_id, log, endpoint or self.endpoint)
        self.workers.append(w)
        if wait:
            self.wait_for_workers(endpoint, timeout=timeout, worker=w)
        return w

    def wait_for_workers(self, endpoint: str | None = None, count: int | None = None,
                         timeout: float = 30.0, worker: WorkerProcess | None = None) -> None:
        """Wait until the endpoint's ``/health`` counts ``count`` workers (default: every live
        worker this server spawned on it) as ready or unhealthy, i.e. they pinged or took."""
        ep = endpoint or self.endpoint
        if count is None:
            count = sum(1 for w in self.workers if w.endpoint == ep and w.proc.poll() is None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.proc.returncode}):\n{worker.output()[-3000:]}")
            h = self.health(ep)["workers"]
            if h["ready"] + h["unhealthy"] >= count:
                return
            time.sleep(0.1)
        raise TimeoutError("workers did not register in time:\n" + (worker.output()[-3000:] if worker else ""))

    def sdk(self, endpoint: str | None = None):
        """A ``runpod.Endpoint`` for this server (the SDK's base URL and key set)."""
        import runpod

        runpod.api_key = self.api_key or "none"
        runpod.endpoint_url_base = self.base
        return runpod.Endpoint(endpoint or self.endpoint)

    def stop(self) -> None:
        """SIGTERM every worker at once, give them 3 s together, then the server. The process
        group of every worker is killed, also of one whose main process already died (its
        children may live on)."""
        live = [w for w in self.workers if w.proc.poll() is None]
        for w in live:
            try:
                os.killpg(w.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3.0
        for w in self.workers:
            try:
                w.proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _terminate(w.proc, 0.01)
        _terminate(self.proc, 5.0)

    def stderr(self) -> str:
        p = self.logdir / f"endpoint-{self.port}.log"
        return p.read_text(errors="replace") if p.exists() else ""


def _settings_args(settings: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in settings.items():
        if name == "limits":
            for op, (per, conc) in value.items():
                args += ["--limit", f"{op}={per}:{conc}"]
            continue
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


class _Factory:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.servers: list[EndpointServer] = []
        self.redis_prefixes: list[str] = []  # deleted by close()

    def __call__(self, endpoints: tuple[str, ...] | list[str] = ("ep",), store: str = "memory",
                 api_key: str | None = "test-key", **settings: Any) -> EndpointServer:
        if store == "redis":
            require_redis()
        merged = {**FAST, **settings}
        cmd = [*PODGATE, "endpoint", "--host", "127.0.0.1", "--port", "0"]
        for ep in endpoints:
            cmd += ["--endpoint", ep]
        if store == "redis":  # a random key prefix unless the caller shares one between servers
            cmd += ["--redis-url", REDIS_URL]
            merged.setdefault("redis_prefix", f"podgate-test:{uuid.uuid4().hex}:")
            if merged["redis_prefix"] not in self.redis_prefixes:
                self.redis_prefixes.append(merged["redis_prefix"])
        cmd += _settings_args(merged)
        env = dict(os.environ)
        if api_key:
            env["PODGATE_EP_API_KEY"] = api_key
        else:
            env.pop("PODGATE_EP_API_KEY", None)
        errlog = self.logdir / f"endpoint-{uuid.uuid4().hex[:8]}.log"
        pipe = ReadyPipe()
        with open(errlog, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, **pipe.env}, pass_fds=(pipe.fd,),
                                    stdout=log, stderr=log, start_new_session=True)
        pipe.child_started()
        port = _read_ready_port(proc, pipe, errlog, timeout=20.0)
        errlog.rename(self.logdir / f"endpoint-{port}.log")
        server = EndpointServer(proc, port, tuple(endpoints), api_key, store, self.logdir)
        self.servers.append(server)
        return server

    def close(self) -> None:
        try:
            for s in self.servers:
                s.stop()
        finally:
            delete_redis_prefixes(self.redis_prefixes)


def _read_ready_port(proc: subprocess.Popen, pipe: ReadyPipe, errlog: Path, timeout: float) -> int:
    """The port the endpoint announced; fails with its output when it exited or timed out first."""
    try:
        ready = pipe.read(timeout)
    finally:
        pipe.close()
    if ready is not None and ready.url:
        return ready.port
    _terminate(proc, 2.0)
    raise RuntimeError(f"podgate endpoint did not start:\n{errlog.read_text(errors='replace')[-3000:]}")


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def endpoint_factory(tmp_path: Path) -> Iterator[_Factory]:
    factory = _Factory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_endpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Factory]:
    factory = _Factory(tmp_path_factory.mktemp("endpoint"))
    yield factory
    factory.close()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def endpoint(endpoint_factory: _Factory, store_kind: str) -> EndpointServer:
    return endpoint_factory(store=store_kind)


@pytest.fixture
def redis_required() -> None:
    require_redis()


@pytest.fixture
def runpod_env(monkeypatch: pytest.MonkeyPatch):
    import runpod

    def point(server: EndpointServer) -> None:
        monkeypatch.setattr(runpod, "api_key", server.api_key or "none")
        monkeypatch.setattr(runpod, "endpoint_url_base", server.base)
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", server.base)

    return point


@pytest.fixture
async def job_store(store_kind: str):
    if store_kind == "redis":
        require_redis()
        from serverless.store.redis import RedisStore

        store = RedisStore(REDIS_URL, prefix=f"podgate-test:{uuid.uuid4().hex}:")
    else:
        from serverless.store.memory import MemoryStore

        store = MemoryStore()
    try:
        yield store
    finally:
        try:
            if store_kind == "redis":
                await store.delete_all()
        finally:
            await store.close()
