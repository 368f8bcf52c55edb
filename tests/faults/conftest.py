"""Fixtures of the fault suite: podgate → ``FaultLayer`` → local endpoint ← real SDK workers.

``fault_rig`` (session scope): one ``podgate endpoint`` (``tests.conftest``'s factory) with
endpoint ``ep`` and two real ``runpod`` SDK workers running
``tests.proxy.handlers.faults:handler`` (a generator without aggregation: podgate reads its
tokens on ``/stream`` also for non-streaming requests), a ``FaultLayer`` in front of the
endpoint, and one ``podgate serve`` whose ``[runpod] base_url`` is the layer's. Models:
``text`` (format ``text``, the queue: ``/run`` / ``/runsync`` / ``/stream`` / ``/cancel``)
and ``pass`` (the ``/openai/v1`` passthrough).

``rig`` (function scope): the same rig with the layer's rules and records cleared before and
after the test. ``rig.proxy_with(timing)`` starts one more ``podgate serve`` on the same
layer with other ``[timing]`` (stopped with the session).

The checks every fault test makes on the endpoint's side (``Rig.settled``): every job the
endpoint accepted through the layer ends (COMPLETED, FAILED or CANCELLED: none lost), and
its queue holds nothing in progress (no job left running, also none whose id podgate never
learnt).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import EndpointServer, _Factory
from tests.faults.fault_layer import FaultLayer, serve_fault_layer
from tests.proxy.conftest import ProxyProcess, start_proxy, write_config
from tests.proxy.handlers.faults import NUMBERS

HANDLER = "tests.proxy.handlers.faults:handler"
MODELS = {"text": ("text", None), "pass": ("openai", "era-c")}
#: ``[timing]`` of the rig's podgate: results kept as the endpoint keeps them (the checks read
#: every job's final status after the test); an error known within 1.5 s still gets its HTTP
#: status on a loaded machine; a re-run told from the first run after a pause of 1 s.
TIMING = {"result_ttl_ms": 0, "first_byte_wait_s": 1.5, "restart_check_s": 1.0}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
#: The whole answer of ``#numbers`` (40 tokens, 0.1 s apart: long enough to fault mid-stream).
COUNTED = "".join(NUMBERS)


@dataclass
class Outcome:
    """What the client saw: the HTTP status, the text, an error (the body's or the in-stream
    one), and for a stream whether ``data: [DONE]`` ended it."""

    status: int
    text: str = ""
    error: dict | None = None
    done: bool = False
    left: bool = False
    """The client closed the stream before its end (``on_text`` said so)."""
    headers: httpx.Headers | dict = field(default_factory=dict)

    @property
    def job(self) -> str | None:
        return self.headers.get("x-runpod-job-id")


@dataclass
class Rig:
    endpoint: EndpointServer
    layer: FaultLayer
    proxy: ProxyProcess
    markers: Path
    tmp: Path
    proxies: list[ProxyProcess] = field(default_factory=list)

    def client(self, proxy: ProxyProcess | None = None) -> openai.OpenAI:
        """The real ``openai`` SDK, its own retries off: every retry seen is podgate's."""
        return openai.OpenAI(base_url=(proxy or self.proxy).base_url, api_key="x", max_retries=0, timeout=60)

    def proxy_with(self, **timing: Any) -> ProxyProcess:
        config = write_config(self.tmp / f"podgate-{len(self.proxies)}.toml", self.layer.base, "ep", models=MODELS,
                              timing={**TIMING, **timing})
        proxy = start_proxy(config, self.endpoint.api_key or "", self.tmp)
        self.proxies.append(proxy)
        return proxy

    def chat(self, content: str, *, stream: bool, model: str = "text", proxy: ProxyProcess | None = None,
             on_text: Callable[[Outcome], bool | None] | None = None) -> Outcome:
        """One chat completion through the real ``openai`` SDK. A stream is read raw from the
        SDK's HTTP response (to see an in-stream error and ``[DONE]``); ``on_text`` hears the
        outcome so far (its ``text``, its ``job``) after each chunk, and when it returns True
        the client leaves (closes the stream)."""
        client = self.client(proxy)
        messages = [{"role": "user", "content": content}]
        try:
            if not stream:
                raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
                return Outcome(raw.status_code, raw.parse().choices[0].message.content or "", headers=raw.headers)
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True)
        except openai.APIStatusError as exc:
            return Outcome(exc.status_code, error=exc.body if isinstance(exc.body, dict) else None,
                           headers=exc.response.headers)
        return _read_sse(raw.http_response, on_text)

    def fault_mid_stream(self, op: str = "stream", *, proxy: ProxyProcess | None = None, **fault: Any) -> Outcome:
        """Stream ``#numbers`` and inject ``fault`` on ``op`` once its first text arrived."""
        return self.chat("#numbers", stream=True, proxy=proxy,
                         on_text=on_first_text(lambda: self.layer.inject(op, **fault)))

    def job_status(self, job_id: str) -> str:
        with self.endpoint.client() as c:
            r = c.get(f"{self.endpoint.url()}/status/{job_id}")
        return r.json().get("status", "") if r.status_code == 200 else f"HTTP {r.status_code}"

    def settled(self, timeout: float = 30.0) -> dict[str, str]:
        """Wait until every job the endpoint accepted through the layer ended and nothing is
        queued or in progress on the endpoint; every job's final status. Fails the test with
        what is still open when that does not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = {job: self.job_status(job) for job in list(self.layer.jobs)}
            jobs = self.endpoint.health()["jobs"]
            open_jobs = {j: s for j, s in statuses.items() if s not in TERMINAL}
            if not open_jobs and jobs.get("inQueue", 0) == 0 and jobs.get("inProgress", 0) == 0:
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs lost or left running: {open_jobs}, endpoint health {jobs}")
            time.sleep(0.1)


def assert_cut_cleanly(rig: Rig, out: Outcome, error_type: str) -> None:
    """A stream a fault ended after its first byte: an in-stream error then ``[DONE]``, the
    text a strict prefix of the answer (never passed off as whole), the job cancelled."""
    assert out.status == 200 and out.done, out
    assert out.error is not None and out.error["type"] == error_type, out.error
    assert COUNTED.startswith(out.text) and len(out.text) < len(COUNTED), out.text
    assert rig.settled()[out.job] == "CANCELLED"


def assert_failed_and_cancelled(rig: Rig, out: Outcome, status: int) -> None:
    """A non-streaming request a fault ended after its job was accepted: ``status``, not to
    be retried by the client, the job cancelled."""
    assert out.status == status and out.headers["x-should-retry"] == "false", out
    [job] = rig.layer.jobs
    assert rig.settled()[job] == "CANCELLED"


def on_first_text(action: Callable[[], object] | None = None, *, leave: bool = False) -> Callable[[Outcome], bool]:
    """An ``on_text`` hook: ``action()`` once the first text arrived (a fault injected
    mid-stream, after the first byte), then the client leaves when ``leave``."""
    fired: list[bool] = []

    def hook(out: Outcome) -> bool:
        if out.text and not fired:
            fired.append(True)
            if action is not None:
                action()
        return bool(fired) and leave

    return hook


def _read_sse(response: httpx.Response, on_text: Callable[[Outcome], bool | None] | None) -> Outcome:
    out = Outcome(response.status_code, headers=response.headers)
    try:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if out.done:
                raise AssertionError(f"data after [DONE]: {data}")
            if data == "[DONE]":
                out.done = True
                continue
            payload = json.loads(data)
            if "error" in payload:
                assert out.error is None, f"two errors in one stream: {out.error}, {payload}"
                out.error = payload["error"]
                continue
            assert out.error is None, f"content after the in-stream error: {payload}"
            for choice in payload.get("choices", []):
                out.text += (choice.get("delta") or {}).get("content") or ""
            if on_text is not None and on_text(out):
                out.left = True
                break
    finally:
        response.close()
    return out


@pytest.fixture(scope="session")
def fault_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    factory = _Factory(tmp_path_factory.mktemp("fault-endpoint"))
    try:
        server = factory(endpoints=("ep",))
        markers = tmp_path_factory.mktemp("fault-markers")
        for _ in range(2):
            server.worker(HANDLER, concurrency=4, wait=False, extra_env={"PODGATE_TEST_MARKERS": str(markers)})
        server.wait_for_workers(count=2)
        tmp = tmp_path_factory.mktemp("fault-proxy")
        with serve_fault_layer(server.base) as layer:
            config = write_config(tmp / "podgate.toml", layer.base, "ep", models=MODELS, timing=TIMING)
            rig = Rig(server, layer, start_proxy(config, server.api_key or "", tmp), markers, tmp)
            try:
                yield rig
            finally:
                for proxy in [rig.proxy, *rig.proxies]:
                    proxy.stop()
    finally:
        factory.close()


@pytest.fixture
def rig(fault_rig: Rig) -> Iterator[Rig]:
    fault_rig.layer.clear()
    yield fault_rig
    fault_rig.layer.clear()
