"""The fast OpenAI-compatible upstream of the peers bench: a raw asyncio Protocol server
with httptools' request parser on uvloop, so that it is never the bottleneck.

It serves ``POST …/chat/completions`` both at ``/v1/chat/completions`` (direct, LiteLLM)
and at ``/v2/{endpoint}/openai/v1/chat/completions`` (podgate's passthrough, RunPod's
gateway path): any path ending in ``/v1/chat/completions`` or ``/v1/completions`` is
answered. Non-stream: one canned ``chat.completion`` (Content-Length). Stream (the body has
``"stream": true``): ``--chunks`` ``chat.completion.chunk`` events, then a finish chunk,
then ``data: [DONE]``, as chunked transfer encoding with one HTTP chunk per SSE event, all
bytes prepared once at start and written in one call. ``GET …/v1/models`` lists the model.
Keep-alive HTTP/1.1; anything else is a 404.

    python bench/peers/upstream.py --port P [--chunks 100] [--model bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Canned:
    """Every answer the upstream gives, as bytes built once."""

    def __init__(self, model: str, chunks: int):
        completion = {
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }
        self.completion = _json_response(json.dumps(completion, separators=(",", ":")).encode())
        text_completion = {"id": "cmpl-bench", "object": "text_completion", "created": 1700000000, "model": model,
                           "choices": [{"index": 0, "text": " world", "logprobs": None, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self.text_completion = _json_response(json.dumps(text_completion, separators=(",", ":")).encode())
        models = {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "bench"}]}
        self.models = _json_response(json.dumps(models).encode())
        self.not_found = _json_response(b'{"error":{"message":"not found","type":"invalid_request_error"}}',
                                        b"404 Not Found")

        def event(delta: dict, finish: str | None = None) -> bytes:
            chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return _chunk(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": " tok"}) for _ in range(chunks)]
        events += [event({}, "stop"), _chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
        self.stream = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                       b"transfer-encoding: chunked\r\n\r\n" + b"".join(events))


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests, answer each when its body is complete."""

    def __init__(self, canned: Canned):
        self.canned = canned
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        c = self.canned
        if method == b"POST" and path.endswith(b"/v1/chat/completions"):
            body = b"".join(self.body)
            streamed = b'"stream":true' in body or b'"stream": true' in body
            answer = c.stream if streamed else c.completion
        elif method == b"POST" and path.endswith(b"/v1/completions"):
            answer = c.text_completion
        elif method == b"GET" and path.endswith(b"/v1/models"):
            answer = c.models
        else:
            answer = c.not_found
        assert self.transport is not None
        self.transport.write(answer)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int, canned: Canned) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(canned), host, port, backlog=1024)
    print(f"bench upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description="the peers bench's fast OpenAI-compatible upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=100, help="content chunks per streamed answer")
    ap.add_argument("--model", default="bench")
    args = ap.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, Canned(args.model, args.chunks)))


if __name__ == "__main__":
    main()
