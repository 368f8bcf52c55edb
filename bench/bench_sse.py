"""Benchmark: the adapters' hot path on one core.

Prints events (chunks) per second for
  1. the SSE parser alone (whole events, Era C arbitrary slices, bytes one event at a time),
  2. the whole translation of one streamed chunk: SSE text → decoder → normalized events →
     StreamAssembler → ``data: {...}\\n\\n`` bytes (what podgate writes per token),
  3. the same for worker-vllm native dict items and for sglang multi-line events.
Target: the whole proxy ≥ 10,000 chunks/s on one core, so this part should be far above.

Run: .venv/bin/python bench/bench_sse.py [--events 50000]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from adapters.assemble import StreamAssembler
from adapters.formats import get_format
from adapters.openai_protocol import decode_chat_request
from adapters.sse import SSEParser, encode_event


def vllm_chunk(i: int) -> dict:
    return {"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk", "created": 1760000000,
            "model": "Qwen/Qwen3-8B", "choices": [{"index": 0, "delta": {"content": f" tok{i % 97}é"},
                                                     "logprobs": None, "finish_reason": None, "stop_reason": None}]}


def body(n: int) -> str:
    return "".join("data: " + json.dumps(vllm_chunk(i), ensure_ascii=False) + "\n\n" for i in range(n)) + "data: [DONE]\n\n"


def rate(label: str, count: int, seconds: float) -> None:
    print(f"{label:<58} {count / seconds:>12,.0f} /s   ({seconds * 1e6 / count:.2f} µs each)")


def bench_parser(n: int) -> None:
    text = body(n)
    events = [e for e in text.split("\n\n") if e]
    whole = [e + "\n\n" for e in events]
    rng = random.Random(1)
    slices, i = [], 0
    while i < len(text):
        k = rng.randint(1, 400)
        slices.append(text[i:i + k])
        i += k
    raw = [w.encode() for w in whole]
    for label, items in (("SSE parser: one whole event per feed (str)", whole),
                         ("SSE parser: Era C random slices 1-400 chars (str)", slices),
                         ("SSE parser: one event per feed (bytes)", raw),
                         ("SSE parser: whole body in one feed", [text])):
        p = SSEParser()
        t = time.perf_counter()
        got = 0
        for it in items:
            got += len(p.feed(it))
        dt = time.perf_counter() - t
        assert got == len(events), (got, len(events))
        rate(label, got, dt)


def bench_pipeline(label: str, fmt: str, items: list, n_chunks: int) -> None:
    req = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    dec = get_format(fmt).decoder("chat", request=req)
    asm = StreamAssembler(id="chatcmpl-podgate", model="m", include_usage=False)
    out = 0
    t = time.perf_counter()
    for it in items:
        for chunk in asm.feed(dec.feed(it)):
            out += len(encode_event(chunk))
    for chunk in asm.feed(dec.close()) + asm.finish():
        out += len(encode_event(chunk))
    dt = time.perf_counter() - t
    rate(label, n_chunks, dt)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    n = ap.parse_args().events
    print(f"{n:,} chat.completion.chunk events (~{len(body(1))} bytes each)\n")
    bench_parser(n)
    print()
    whole = [e + "\n\n" for e in body(n).split("\n\n") if e]
    bench_pipeline("pipeline vllm: SSE event → decoder → chunk → bytes", "vllm", whole, n)
    text = body(n)
    slices = [text[i:i + 8192] for i in range(0, len(text), 8192)]
    bench_pipeline("pipeline vllm: Era C 8 KiB slices → … → bytes", "vllm", slices, n)
    natives = [{"choices": [{"tokens": [f" tok{i % 97}"]}], "usage": {"input": 10, "output": i + 1}} for i in range(n)]
    bench_pipeline("pipeline vllm-native: dict item → … → bytes", "vllm-native", natives, n)
    sg = []
    for i in range(n):
        lines = json.dumps(vllm_chunk(i), indent=4).split("\n")
        sg.append("".join(f"data: {ln}\n" for ln in lines) + "\n")
    bench_pipeline("pipeline sglang: multi-line event → … → bytes", "sglang", sg, n)


if __name__ == "__main__":
    main()
