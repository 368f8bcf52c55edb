"""Cancel on disconnect and on timeout: the RunPod job ends CANCELLED and the handler saw
its cancellation (``<job>.cancelled`` marker written on ``CancelledError``).

State is asserted within a bounded wait (``wait_status`` polls ``/status``: 1 s after a
disconnect, as the issue asks), not timed.
"""

from __future__ import annotations

import time

import httpx
import openai

from tests.proxy.conftest import start_proxy, write_config

SLOW = [{"role": "user", "content": "#slow"}]


def test_stream_closed_after_first_chunk_cancels_job(stack):
    client = openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="vllm-c", messages=SLOW, stream=True)
    job = raw.headers["x-runpod-job-id"]
    stream = raw.parse()
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant" or first.choices[0].delta.content
    stream.close()
    assert stack.wait_status(job, "CANCELLED", timeout=1.0) == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled"), "the handler did not see its cancellation"


def test_abandoned_nonstream_request_cancels_job(stack):
    """The client gives up while podgate waits for the job (during ``/status`` polling)."""
    body = {"model": "vllm-c", "messages": [{"role": "user", "content": "#slow_nonstream"}]}
    job = stack.abandon("/chat/completions", body)
    assert stack.wait_status(job, "CANCELLED", timeout=1.0) == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled")


def test_abandoned_during_runsync_cancels_job(stack, tmp_path):
    """The client leaves while ``/runsync`` itself is still held: the job id arrives
    later and the cancel queue cancels it then (bounded by ``runsync_wait_ms``)."""
    config = write_config(tmp_path / "long-runsync.toml", stack.endpoint.base, "ep",
                          timing={"runsync_wait_ms": 3000}, models={"vllm-c": ("vllm", "era-c")})
    proxy = start_proxy(config, stack.endpoint.api_key, tmp_path)
    try:
        before = set(stack.markers.glob("*.started"))
        body = {"model": "vllm-c", "messages": [{"role": "user", "content": "#slow_nonstream"}]}
        try:
            httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=1.0)
        except httpx.TimeoutException:
            pass
        started = []
        deadline = time.monotonic() + 10
        while not started and time.monotonic() < deadline:
            started = [p for p in stack.markers.glob("*.started") if p not in before]
            time.sleep(0.05)
        job = started[0].name.removesuffix(".started")
        assert stack.wait_status(job, "CANCELLED", timeout=8) == "CANCELLED"
        assert stack.wait_marker(f"{job}.cancelled")
    finally:
        proxy.stop()


def test_request_timeout_cancels_job(stack, tmp_path):
    config = write_config(tmp_path / "short-timeout.toml", stack.endpoint.base, "ep",
                          timing={"request_timeout_s": 1.5}, models={"vllm-c": ("vllm", "era-c")})
    proxy = start_proxy(config, stack.endpoint.api_key, tmp_path)
    try:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        # non-streaming: a 504 and the job cancelled
        before = set(stack.markers.glob("*.started"))
        try:
            client.chat.completions.create(model="vllm-c", messages=[{"role": "user", "content": "#slow_nonstream"}])
            raise AssertionError("expected a timeout error")
        except openai.InternalServerError as exc:
            assert exc.status_code == 504
        job = next(p for p in stack.markers.glob("*.started") if p not in before).name.removesuffix(".started")
        assert stack.wait_status(job, "CANCELLED", timeout=5) == "CANCELLED"
        # streaming: an in-stream error, [DONE], and the job cancelled
        raw = client.chat.completions.with_raw_response.create(model="vllm-c", messages=SLOW, stream=True)
        job = raw.headers["x-runpod-job-id"]
        try:
            for _ in raw.parse():
                pass
            raise AssertionError("expected an in-stream error")
        except openai.APIError as exc:
            assert "timed out" in str(exc)
        assert stack.wait_status(job, "CANCELLED", timeout=5) == "CANCELLED"
        assert stack.wait_marker(f"{job}.cancelled")
    finally:
        proxy.stop()
