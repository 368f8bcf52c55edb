"""Results podgate has read are not left on RunPod longer than needed (``[timing]
result_ttl_ms``, ``stream_result_ttl_ms``: ``/status?ttl=`` through the cancel queue's
``retain``), against the shared stack's local endpoint: a TTL of 1 ms makes the job vanish
(404 at ``/status``) right after the answer; with the default, a streamed job's result stays."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.conftest import ProxyProcess, start_proxy, write_config

USER = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def forgetful(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("retention")
    config = write_config(tmp / "forgetful.toml", stack.endpoint.base, "ep", models={"vllm-c": ("vllm", "era-c")},
                          timing={"result_ttl_ms": 1, "stream_result_ttl_ms": 1})
    proxy = start_proxy(config, stack.endpoint.api_key, tmp)
    try:
        yield proxy
    finally:
        proxy.stop()


def status_code(stack, job_id: str) -> int:
    with stack.endpoint.client() as c:
        return c.get(f"{stack.endpoint.url()}/status/{job_id}").status_code


def wait_gone(stack, job_id: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (code := status_code(stack, job_id)) == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    return code


@pytest.mark.parametrize("stream", [False, True], ids=["runsync", "stream"])
def test_a_read_result_is_removed_after_the_ttl(stack, forgetful, stream):
    with httpx.Client(base_url=forgetful.base_url, timeout=30) as http:
        r = http.post("/chat/completions", json={"model": "vllm-c", "messages": USER, "stream": stream})
        r.read()
    assert r.status_code == 200 and "[DONE]" in r.text if stream else r.json()["choices"]
    assert wait_gone(stack, r.headers["x-runpod-job-id"]) == 404


def test_by_default_a_streamed_result_is_left_to_runpods_retention(stack, http):
    with http.stream("POST", "/chat/completions", json={"model": "vllm-c", "messages": USER, "stream": True}) as r:
        r.read()
    time.sleep(0.5)  # time enough for a /status?ttl= that is not sent
    assert status_code(stack, r.headers["x-runpod-job-id"]) == 200
