"""Fixtures for the proxy's contract tests: podgate → local endpoint → real SDK workers.

``stack`` (session scope): one ``podgate endpoint`` (H1's fixture) with endpoints ``ep``,
``plain`` and ``emb``; on ``ep`` two real ``runpod`` SDK workers running
``tests.proxy.handlers.workers:handler`` (8 jobs each at once), on ``plain`` one running the
non-generator ``workers:plain``, on ``emb`` one running the infinity-embedding handler
``tests.proxy.handlers.embeddings:handler``; and one ``podgate serve --config`` subprocess
whose models cover every worker format and wire style (``MODELS``, ``PLAIN_MODELS``,
``EMBED_MODELS``). ``stack.base_url`` is the proxy's ``/v1``; ``stack.markers`` the
directory where slow handlers leave ``<job>.started`` / ``<job>.cancelled``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from supervisor.readiness import ReadyPipe

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.proxy.handlers.workers:handler"
PLAIN_HANDLER = "tests.proxy.handlers.workers:plain"
EMBED_HANDLER = "tests.proxy.handlers.embeddings:handler"

#: model name → (format, served_model[, more model settings]). The served model picks the
#: worker's wire style; ``pass-*`` models go through the endpoint's ``/openai/v1`` gateway (not
#: ``chunk-list``: with RAW_OPENAI_OUTPUT=0 worker-vllm drops ``[DONE]``, and its docs call
#: RAW_OPENAI_OUTPUT=1 required for the gateway; podgate reports such a stream as cut).
MODELS: dict[str, tuple] = {
    "vllm-c": ("vllm", "era-c"),
    "vllm-b": ("vllm", "era-b"),
    "vllm-list": ("vllm", "chunk-list"),
    "sglang": ("sglang", "sglang"),
    "native": ("vllm-native", None),
    "tgi": ("tgi", None),
    "text": ("text", None),
    "pass-c": ("openai", "era-c"),
    "pass-b": ("openai", "era-b"),
    "pass-same": ("openai", None),  # served under the client's own name: bytes pass untouched
    "pass-queue": ("openai", "era-c", {"queue_format": "vllm", "passthrough_max_tokens": 100}),
}
#: models on the second endpoint ("plain"), served by a non-generator handler
PLAIN_MODELS = {"plain-text": ("text", None)}
#: models on the third endpoint ("emb"), served by the infinity-embedding handler
EMBED_MODELS = {"embed": ("infinity", "BAAI/bge-small-en-v1.5"), "embed-native": ("infinity-native", "BAAI/bge-small-en-v1.5"),
                "embed-unloaded": ("infinity", "not-loaded"),
                "embed-pass": ("openai", "BAAI/bge-small-en-v1.5")}  # through the /openai/v1 gateway

TIMING = {
    "keepalive_s": 0.3,
    "first_byte_wait_s": 0.5,
    "stream_wait_ms": 500,
    "runsync_wait_ms": 1000,
    "request_timeout_s": 30.0,
    "upstream_timeout_s": 10.0,
}


def write_config(path: Path, endpoint_base: str, endpoint: str, *, timing: dict | None = None,
                 models: dict | None = None, extra_endpoints: dict[str, dict] | None = None, extra: str = "") -> Path:
    """A podgate.toml for the tests' endpoint: the test timing, the models (name → (format,
    served model[, more settings])) on ``endpoint`` and on ``extra_endpoints``, then ``extra``
    (more TOML: keys, [metrics], [console] …)."""
    lines = ["[server]", 'host = "127.0.0.1"', "port = 0", "", "[runpod]", f'base_url = "{endpoint_base}"',
             'api_key_env = "PODGATE_TEST_RUNPOD_KEY"', "", "[timing]"]
    for k, v in {**TIMING, **(timing or {})}.items():
        lines.append(f"{k} = {v!r}")
    entries = [(name, spec, endpoint) for name, spec in (models or MODELS).items()]
    entries += [(name, spec, ep) for ep, extra in (extra_endpoints or {}).items() for name, spec in extra.items()]
    for name, (fmt, served, *more), ep in entries:
        lines += ["", "[[models]]", f'name = "{name}"', f'endpoint = "{ep}"', f'format = "{fmt}"']
        if served:
            lines.append(f'served_model = "{served}"')
        for key, value in (more[0] if more else {}).items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class ProxyProcess:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_proxy(config: Path, api_key: str, logdir: Path) -> Iterator[ProxyProcess]:
    """``start_proxy``, stopped when the block ends."""
    proxy = start_proxy(config, api_key, logdir)
    try:
        yield proxy
    finally:
        proxy.stop()


def start_proxy(config: Path, api_key: str, logdir: Path) -> ProxyProcess:
    log = logdir / f"proxy-{config.stem}.log"
    env = {**os.environ, "PODGATE_TEST_RUNPOD_KEY": api_key}
    pipe = ReadyPipe()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)], cwd=ROOT,
                                env={**env, **pipe.env}, pass_fds=(pipe.fd,), stdout=fh, stderr=fh,
                                start_new_session=True)
    pipe.child_started()
    try:
        ready = pipe.read(timeout=30)  # None: it exited (or hung) before listening
    finally:
        pipe.close()
    if ready is not None and ready.url:
        return ProxyProcess(proc, ready.port, log)
    proc.kill()
    raise RuntimeError("podgate serve did not start:\n" + log.read_text(errors="replace")[-3000:])


@dataclass
class Stack:
    endpoint: object  # conftest.EndpointServer
    proxy: ProxyProcess
    markers: Path

    @property
    def base_url(self) -> str:
        return self.proxy.base_url

    def job_status(self, job_id: str, endpoint: str | None = None) -> dict:
        with self.endpoint.client() as c:
            return c.get(f"{self.endpoint.url(endpoint)}/status/{job_id}").json()

    def wait_status(self, job_id: str, want: str, timeout: float = 10.0, endpoint: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.job_status(job_id, endpoint).get("status")
            if status == want:
                return status
            time.sleep(0.05)
        return status

    def abandon(self, path: str, body: dict, timeout: float = 2.0) -> str:
        """POST ``body`` to the proxy's ``path`` and give up after ``timeout`` seconds (the
        client closes the connection, as one that stops waiting does); the id of the one
        slow job that started meanwhile (its ``<job>.started`` marker)."""
        before = set(self.markers.glob("*.started"))
        try:
            with httpx.Client(base_url=self.base_url, timeout=timeout) as c:
                r = c.post(path, json=body)
            raise AssertionError(f"answered before the client gave up: {r.status_code} {r.text[:200]}")
        except httpx.TimeoutException:
            pass
        started = [p for p in self.wait_marker("*.started") if p not in before]
        assert len(started) == 1, started
        return started[0].name.removesuffix(".started")

    def wait_marker(self, pattern: str, timeout: float = 15.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = sorted(self.markers.glob(pattern))
            if found:
                return found
            time.sleep(0.05)
        return []


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    """Session scope: every proxy test module shares one endpoint, its workers and proxy."""
    from tests.conftest import _Factory  # H1's endpoint-server factory

    factory = _Factory(tmp_path_factory.mktemp("endpoint"))
    try:
        server = factory(endpoints=("ep", "plain", "emb"))
        markers = tmp_path_factory.mktemp("markers")
        for _ in range(2):
            server.worker(HANDLER, concurrency=8, wait=False, extra_env={"PODGATE_TEST_MARKERS": str(markers)})
        server.worker(PLAIN_HANDLER, endpoint="plain", concurrency=4, wait=False)
        server.worker(EMBED_HANDLER, endpoint="emb", wait=False, extra_env={"PODGATE_TEST_MARKERS": str(markers)})
        server.wait_for_workers(count=2)
        server.wait_for_workers("plain", count=1)
        server.wait_for_workers("emb", count=1)
        logdir = tmp_path_factory.mktemp("proxy")
        config = write_config(logdir / "podgate.toml", server.base, "ep", extra_endpoints={"plain": PLAIN_MODELS, "emb": EMBED_MODELS})
        proxy = start_proxy(config, server.api_key, logdir)
        try:
            yield Stack(server, proxy, markers)
        finally:
            proxy.stop()
    finally:
        factory.close()


@pytest.fixture
def http(stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def fake_runpod():
    """A raw loopback server playing RunPod (``tests.proxy.fake_runpod``), one per module."""
    from tests.proxy.fake_runpod import serve_fake_runpod

    with serve_fake_runpod() as fake:
        yield fake
