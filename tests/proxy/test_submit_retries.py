"""Submits RunPod refused are retried before the first byte (issue 11, part 4; ``proxy.submit``).

A raw HTTP server on loopback plays RunPod: each endpoint id names its misbehaviour (the
part before the dash) and the path podgate takes (after it: ``stream`` → ``/run`` then
``/stream``, ``sync`` → ``/runsync``, ``pstream`` / ``psync`` → the ``/openai/v1`` passthrough).
It counts every submit it sees and when. podgate is the real ``podgate serve`` process, the
client the real ``openai`` SDK with its own retries off, so every retry counted is podgate's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from tests.proxy.conftest import start_proxy, write_config

USER = [{"role": "user", "content": "hi"}]
MODES = ("stream", "sync", "pstream", "psync")

#: misbehaviour → the answers to a submit, in order (the last one repeats): (status, Retry-After)
FAULTS: dict[str, list[tuple[int, str | None]]] = {
    "after": [(429, "1"), (200, None)],  # 429 with Retry-After, then accepted
    "unavail": [(503, None), (503, None), (200, None)],  # 503 twice (no Retry-After: backoff), then accepted
    "limited": [(429, "0.3")],  # always 429
    "broken": [(500, None), (200, None)],  # 500 once: the job may exist, so never repeated
    "patient": [(429, "2")],  # always 429, come back in 2 s: the client leaves before that
    "far": [(429, "120")],  # always 429, come back in 2 minutes: longer than podgate waits
}

CHUNK = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served",
                    "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]})
ANSWER = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "served",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@dataclass
class FakeRunPod:
    base: str = ""
    submits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """endpoint → when each submit (``/run``, ``/runsync``, ``/openai/…``) came (monotonic)."""
    streamed: set[str] = field(default_factory=set)
    """The endpoints whose job's chunk ``/stream`` delivered (one job per endpoint)."""


def _response(status: int, body: str, content_type: str = "application/json", extra: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n"
            f"connection: close\r\n{extra}\r\n").encode() + data


def _make_handler(fake: FakeRunPod):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1]
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        body = json.loads(await reader.readexactly(length)) if length else {}
        path = target.decode().split("?")[0].split("/")[2:]  # [endpoint, operation, …]
        endpoint, op = path[0], path[1]
        if op in ("run", "runsync", "openai"):
            fake.submits[endpoint].append(time.monotonic())
            answers = FAULTS[endpoint.split("-")[0]]
            status, retry_after = answers[min(len(fake.submits[endpoint]), len(answers)) - 1]
            if status != 200:
                extra = f"retry-after: {retry_after}\r\n" if retry_after else ""
                writer.write(_response(status, json.dumps({"error": "refused"}), extra=extra))
            elif op == "run":
                writer.write(_response(200, json.dumps({"id": endpoint, "status": "IN_QUEUE"})))
            elif op == "runsync":
                writer.write(_response(200, json.dumps({"id": "job-1", "status": "COMPLETED", "output": "hello"})))
            elif body.get("stream"):
                writer.write(_response(200, f"data: {CHUNK}\n\ndata: [DONE]\n\n", "text/event-stream"))
            else:
                writer.write(_response(200, ANSWER))
        elif op == "stream":  # the job's one chunk, once
            items = [] if endpoint in fake.streamed else [{"output": "hello"}]
            fake.streamed.add(endpoint)
            writer.write(_response(200, json.dumps({"status": "COMPLETED", "stream": items})))
        elif op == "health":
            writer.write(_response(200, json.dumps({"jobs": {}, "workers": {}})))
        else:  # /status, /cancel
            writer.write(_response(200, json.dumps({"id": "job-1", "status": "COMPLETED", "output": "hello"})))
        await writer.drain()
        writer.close()

    return answer


@pytest.fixture(scope="module")
def fake_runpod() -> Iterator[FakeRunPod]:
    fake = FakeRunPod()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_make_handler(fake), "127.0.0.1", 0))
    fake.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v2"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def client(fake_runpod, tmp_path_factory) -> Iterator[openai.OpenAI]:
    tmp: Path = tmp_path_factory.mktemp("submits")
    extra = {f"{fault}-{mode}": {f"{fault}-{mode}": ("openai" if mode.startswith("p") else "text", "served")}
             for fault in FAULTS for mode in MODES}
    first, *_ = extra
    config = write_config(tmp / "submits.toml", fake_runpod.base, first, models={}, extra_endpoints=extra)
    proxy = start_proxy(config, "rp_submit_key_0123456789", tmp)
    try:
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


def _ask(client: openai.OpenAI, model: str) -> str:
    if model.endswith("stream"):
        chunks = client.chat.completions.create(model=model, messages=USER, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=USER).choices[0].message.content or ""


@pytest.mark.parametrize("mode", MODES)
def test_a_429_is_retried_after_its_retry_after(client, fake_runpod, mode):
    model = f"after-{mode}"
    assert _ask(client, model) == "hello"
    first, second = fake_runpod.submits[model]
    assert second - first >= 1.0  # Retry-After: 1 was honoured (jitter only lengthens it)


@pytest.mark.parametrize("mode", MODES)
def test_a_503_is_retried_with_backoff(client, fake_runpod, mode):
    model = f"unavail-{mode}"
    assert _ask(client, model) == "hello"
    assert len(fake_runpod.submits[model]) == 3


@pytest.mark.parametrize("mode", MODES)
def test_always_429_reaches_the_client_after_the_retries(client, fake_runpod, mode):
    model = f"limited-{mode}"
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, model)
    assert info.value.status_code == 429
    assert info.value.response.headers["x-should-retry"] == "true"
    assert "retry-after" in info.value.response.headers
    assert len(fake_runpod.submits[model]) == 3  # the first try and submit_retries = 2


@pytest.mark.parametrize("mode", MODES)
def test_a_500_is_not_retried(client, fake_runpod, mode):
    """The request reached RunPod and failed: the job may exist, so it is not sent again."""
    model = f"broken-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert info.value.status_code >= 500
    assert len(fake_runpod.submits[model]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_client_leaving_ends_the_retrying(client, fake_runpod, mode):
    model = f"patient-{mode}"
    with pytest.raises(openai.APITimeoutError):
        _ask(client.with_options(timeout=0.5), model)  # gone while podgate waits out Retry-After: 2
    time.sleep(3.0)  # past Retry-After and its jitter: a retry still going would have come by now
    assert len(fake_runpod.submits[model]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_after_longer_than_podgate_waits_goes_to_the_client_at_once(client, fake_runpod, mode):
    model = f"far-{mode}"
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, model)
    assert info.value.response.headers["retry-after"] == "120"
    assert len(fake_runpod.submits[model]) == 1
