"""The passthrough when RunPod's gateway misbehaves in ways the local endpoint does not: a
stream cut short (RunPod has cut gateway streams at 60 s to 5 min), a connection broken
mid-chunk, an answer that is not JSON. RunPod's cloud cannot run here, so a small raw HTTP
server on loopback plays the gateway; podgate is the real ``podgate serve`` process, the
client the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.proxy.conftest import TIMING, start_proxy

EVENT = "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served",
                               "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]})


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request per connection: the first word of the last message picks the misbehaviour."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    body = json.loads(await reader.readexactly(length)) if length else {}
    fault = body.get("messages", [{}])[-1].get("content", "")
    if fault == "cut":  # a clean end of the body, before [DONE]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                     + (EVENT + "\n\n").encode() * 2)
    elif fault == "broken":  # chunked, and the connection drops inside a chunk (after the first event went)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = (EVENT + "\n\n").encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"400\r\ndata: {")
    elif fault == "html":
        page = b"<html>502 Bad Gateway</html>"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s" % (len(page), page))
    await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def faulty_gateway() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_answer, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v2"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def client(faulty_gateway, tmp_path_factory) -> Iterator[openai.OpenAI]:
    tmp: Path = tmp_path_factory.mktemp("faulty")
    timing = "\n".join(f"{k} = {v!r}" for k, v in TIMING.items())
    config = tmp / "faulty.toml"
    config.write_text(f'[server]\nport = 0\n[runpod]\nbase_url = "{faulty_gateway}"\napi_key_env = "PODGATE_TEST_RUNPOD_KEY"\n'
                      f'[timing]\n{timing}\n[[models]]\nname = "m"\nendpoint = "ep"\nformat = "openai"\n'
                      f'served_model = "served"\n')
    proxy = start_proxy(config, "rp_fault_key_0123456789", tmp)
    try:
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


@pytest.mark.parametrize("fault,words", [("cut", "closed the stream before it finished"),
                                         ("broken", "upstream connection failed")])
def test_a_stream_that_ends_early_ends_with_an_error_never_silently(client, fault, words):
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": fault}], stream=True)
    text = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            assert chunk.model == "m"
            text += chunk.choices[0].delta.content or ""
    assert text.startswith("partial")
    assert words in info.value.message


def test_an_answer_that_is_not_an_event_stream_is_a_502(client):
    with pytest.raises(openai.InternalServerError) as info:
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "html"}], stream=True))
    assert info.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "html"}])
    assert info.value.status_code == 502
