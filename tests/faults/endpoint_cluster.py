"""A local endpoint cluster for the outage faults: a Redis of the test's own (so that it can
be stopped, paused and started again without touching the shared one), ``podgate endpoint
--redis-url`` replicas on it (``tests.conftest``'s endpoint factory), real ``runpod`` SDK
workers running :mod:`tests.faults.outage_handlers`, and a ``podgate serve`` in front
(``tests.proxy.conftest``'s config writer and starter).

:class:`OwnRedis` keeps nothing on disk unless asked: ``stop(save=True)`` is ``SHUTDOWN
SAVE`` (an RDB in its own directory, loaded again by ``start()``: a restart of a Redis with
persistence, what a deployment runs), ``stop(save=False)`` is ``SHUTDOWN NOSAVE`` (every job
is gone when it is back), ``pause()`` is ``CLIENT PAUSE`` (the server answers nothing for a
while, connections stay open: a blip).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import _Factory, EndpointServer
from tests.proxy.conftest import ProxyProcess, start_proxy, write_config
from tests.proxy.test_rate_limits import free_port

HANDLER = "tests.faults.outage_handlers:tokens"
#: the proxy's model on the cluster's endpoint: the worker yields plain strings
MODELS = {"tok": ("text", None)}


class OwnRedis:
    """A ``redis-server`` of this test on a free port, with its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        """A client that does not retry (redis-py's default retries would resend SHUTDOWN
        to a server that is going, for seconds)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def stop(self, *, save: bool) -> None:
        """``SHUTDOWN SAVE`` (its data is back after :meth:`start`) or ``SHUTDOWN NOSAVE``."""
        assert self.proc is not None
        with self.client() as client:
            try:
                client.shutdown(save=save, nosave=not save)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
        self.proc.wait(10)
        self.proc = None

    def pause(self, seconds: float) -> None:
        """``CLIENT PAUSE``: every client's commands wait ``seconds`` (connections stay up)."""
        with self.client() as client:
            client.client_pause(int(seconds * 1000), all=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def replica(factory: _Factory, own: OwnRedis, prefix: str, **settings: object) -> EndpointServer:
    """A ``podgate endpoint`` on ``own`` (store "memory" for the factory: the Redis URL and
    prefix come as settings, so the factory neither checks nor cleans the shared Redis)."""
    return factory(redis_url=own.url, redis_prefix=prefix, **settings)


def new_prefix() -> str:
    return f"podgate-fault:{uuid.uuid4().hex}:"


def proxy_for(server: EndpointServer, logdir: Path, **timing: object) -> ProxyProcess:
    assert server.api_key is not None
    config = write_config(logdir / f"podgate-{uuid.uuid4().hex[:6]}.toml", server.base, server.endpoint,
                          models=MODELS, timing=timing or None)
    return start_proxy(config, server.api_key, logdir)


def log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def tracebacks(text: str) -> int:
    return len(re.findall(r"^Traceback \(most recent call last\)", text, re.MULTILINE))
