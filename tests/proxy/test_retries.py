"""Retries: what podgate tells the OpenAI SDKs (``x-should-retry``, issue 7 item 5), and
the polls podgate retries itself (a refused ``/status``, item 6d).

The SDK's retries are observed through the real ``openai`` client with ``max_retries=2``,
counting the requests its own httpx client sends to podgate.
"""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.proxy.conftest import HANDLER, start_proxy, write_config
from tests.proxy.handlers.workers import TEXT

USER = [{"role": "user", "content": "Say hello"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingClient:
    """An ``openai.OpenAI`` that retries (``max_retries=2``) and counts what it sends."""

    def __init__(self, base_url: str):
        self.sent: list[str] = []
        http = httpx.Client(timeout=30, event_hooks={"request": [lambda r: self.sent.append(r.url.path)]})
        self.sdk = openai.OpenAI(base_url=base_url, api_key="x", max_retries=2, http_client=http)

    def ask(self, content: str, *, model: str = "m", stream: bool = False) -> str:
        self.sent.clear()
        messages = [{"role": "user", "content": content}]
        if not stream:
            return self.sdk.chat.completions.create(model=model, messages=messages).choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in
                       self.sdk.chat.completions.create(model=model, messages=messages, stream=True) if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_sdk_retries_when_runpod_cannot_be_reached(tmp_path, stream):
    """No job was accepted: a retry is safe, and the SDK makes it."""
    down = f"http://127.0.0.1:{_free_port()}/v2"
    config = write_config(tmp_path / "down.toml", down, "ep", models={"m": ("vllm", "era-c")})
    proxy = start_proxy(config, "k", tmp_path)
    try:
        client = CountingClient(proxy.base_url)
        with pytest.raises(openai.InternalServerError) as info:
            client.ask("x", stream=stream)
        assert info.value.response.headers["x-should-retry"] == "true"
        assert len(client.sent) == 3  # the first try and the SDK's two retries
    finally:
        proxy.stop()


def test_sdk_retries_a_submit_runpod_refused(module_endpoint_factory, tmp_path):
    """RunPod answered /run with 429: retryable, said explicitly; the retry succeeds once
    the rate window has room again. (podgate's own retries of refused submits are off here,
    ``submit_retries = 0``: they are tested in test_submit_retries.)"""
    server = module_endpoint_factory(endpoints=("rl",), limits={"run": (1, 0), "runsync": (1, 0)}, rate_window=4)
    server.worker(HANDLER, endpoint="rl", concurrency=2)
    config = write_config(tmp_path / "rl.toml", server.base, "rl", models={"m": ("vllm", "era-c")},
                          timing={"submit_retries": 0})
    proxy = start_proxy(config, server.api_key, tmp_path)
    try:
        with httpx.Client(base_url=proxy.base_url, timeout=10) as c:
            body = {"model": "m", "messages": USER, "stream": True}
            answers = []
            for _ in range(2):
                with c.stream("POST", "/chat/completions", json=body) as s:
                    answers.append((s.status_code, s.headers.get("x-should-retry")))
        assert answers[-1] == (429, "true")
        client = CountingClient(proxy.base_url)
        assert client.ask("x", stream=True) == "".join(TEXT)
        assert len(client.sent) >= 2  # refused at least once (the window was spent), then retried
    finally:
        proxy.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_sdk_does_not_retry_a_failed_job(stack, stream):
    """The job ran and failed: a retry would fail the same way, so the SDK is told not to."""
    client = CountingClient(stack.base_url)
    with pytest.raises(openai.InternalServerError) as info:
        client.ask("#error_raise", model="vllm-c", stream=stream)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(client.sent) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_refused_status_poll_is_retried(module_endpoint_factory, tmp_path, stream):
    """``/status`` is refused (the endpoint's status budget, 1 per 5 s, is spent) when podgate
    asks for the output of a job that streams nothing: it retries after ``Retry-After``
    instead of failing the request (and cancelling the job)."""
    server = module_endpoint_factory(endpoints=("st",), limits={"status": (1, 0)}, rate_window=5)
    server.worker("tests.proxy.handlers.faults:plain_slow", endpoint="st", concurrency=2)
    proxy = start_proxy(write_config(tmp_path / "st.toml", server.base, "st", models={"m": ("text", None)}),
                        server.api_key, tmp_path)
    try:
        with server.client() as c:  # spend the window's one /status
            assert c.get(f"{server.url('st')}/status/nobody").status_code == 404
            assert c.get(f"{server.url('st')}/status/nobody").status_code == 429
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        if stream:
            got = "".join(c.choices[0].delta.content or "" for c in
                          client.chat.completions.create(model="m", messages=USER, stream=True) if c.choices)
        else:
            got = client.chat.completions.create(model="m", messages=USER).choices[0].message.content
        assert got == "".join(TEXT)
    finally:
        proxy.stop()
