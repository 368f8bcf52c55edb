"""Benchmark: the passthrough's stream relay (``proxy.passthrough``) on one core, no network.

An upstream body (in memory) gives N ``chat.completion.chunk`` events and ``[DONE]``, in
reads of 1, 10 or 100 events, and yields to the event loop between reads as a socket does;
the relay's body generator (reader, ``SSERelay``, keep-alive timing) turns them into what
the client gets. Prints CPU µs per event and events per second for each read size, with and
without a model rename, and the median of rounds. Issue 9's target for the whole gateway is
≥ 50,000 chunks/s on one core, so this part should be far above it.

Run: .venv/bin/python bench/bench_relay.py [--events 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

from adapters.errors import KeyMask
from adapters.passthrough import ModelRename, SSERelay
from proxy.context import RequestContext
from proxy.passthrough import Relay, relay_body
from proxy.settings import TimingSettings

EVENT = (b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk","created":1760000000,'
         b'"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,'
         b'"finish_reason":null}]}\n\n')


class Body:
    content_type = "text/event-stream"

    def __init__(self, events: int, per_read: int):
        self.events, self.per_read = events, per_read

    async def __aiter__(self) -> Any:
        read = EVENT * self.per_read
        for _ in range(self.events // self.per_read):
            yield read
            await asyncio.sleep(0)
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        pass


async def one(events: int, per_read: int, rename: ModelRename) -> tuple[float, int]:
    binding: Any = SimpleNamespace(key_mask=KeyMask())
    relay = Relay(Body(events, per_read), SSERelay(rename, False), binding, TimingSettings())
    sent = 0
    start = time.process_time()
    async for data in relay_body(relay, RequestContext()):
        sent += data.count(b"\n\n")
    return time.process_time() - start, sent


async def main(events: int, rounds: int) -> None:
    cases = [(per_read, name, rename) for per_read in (1, 10, 100)
             for name, rename in (("same name", ModelRename("Qwen/Qwen3-8B", "Qwen/Qwen3-8B")),
                                  ("renamed", ModelRename("Qwen/Qwen3-8B", "qwen")))]
    print(f"passthrough relay, {events} events per stream, median of {rounds} rounds (CPU time, one core)")
    for per_read, name, rename in cases:
        times = []
        for _ in range(rounds):
            cpu, sent = await one(events, per_read, rename)
            assert sent == events + 1, sent
            times.append(cpu)
        cpu = statistics.median(times)
        print(f"  {per_read:>3} events per read, {name:<9}: {cpu / events * 1e6:6.2f} µs/event  "
              f"{events / cpu:>12,.0f} events/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.events, args.rounds))
