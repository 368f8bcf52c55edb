"""The live requests: every completion request from its arrival to its end, for the console.

``LiveTracker`` is an ASGI middleware around the routes: it puts the request's
``RequestContext`` in ``LiveRequests.running`` when a completion route is called and takes it
out when the route returns — after the last byte, a disconnect or an error, whichever ends it;
a streaming (200, ``ctx.stream``) response also counts in ``podgate_active_streams{model}``
(``proxy.metrics``) from its start to that same end. The routes do not know of it; what the
console shows of a live request is what the request paths note in its context anyway (model, key, job id, the first token's
time) plus ``ctx.streamed``, the tokens sent so far (one ``+=`` per batch in
``proxy.streaming`` and ``proxy.passthrough``), an estimate: a worker's event may carry many
tokens (worker-vllm and podgate's SmolLM2 worker gather what came in ~50 ms), and counting
them exactly would mean a tokenizer call per batch on the event loop, so the queue path counts
the content's characters (``tokens_in``: ``CHARS_PER_TOKEN`` a token, close for English with
the usual BPE vocabularies); the passthrough counts SSE events (an OpenAI server's event is
one token, unless it too gathers them).

Memory is bounded by the requests in flight: an entry lives exactly as long as its request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapters.events import Event, ReasoningDelta, TextDelta, ToolCallDelta
from proxy.context import RequestContext, get_context
from proxy.savings import token_rate

_LIVE_ROUTES = frozenset({"chat_completions", "completions"})

CHARS_PER_TOKEN = 4.0


def tokens_in(events: list[Event]) -> float:
    """The tokens a batch of events carries, estimated from its characters (module docstring)."""
    chars = 0
    for ev in events:
        if isinstance(ev, (TextDelta, ReasoningDelta)):
            chars += len(ev.text)
        elif isinstance(ev, ToolCallDelta):
            chars += len(ev.arguments)
    return chars / CHARS_PER_TOKEN


class LiveRequests:
    """request id → the context of a completion request in flight."""

    def __init__(self) -> None:
        self.running: dict[str, RequestContext] = {}

    def __len__(self) -> int:
        return len(self.running)

    def get(self, request_id: str) -> RequestContext | None:
        return self.running.get(request_id)

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """The console's table: one row per request, oldest first; never a key, only its name."""
        now = time.monotonic() if now is None else now
        rows = []
        for ctx in list(self.running.values()):
            tokens = ctx.streamed
            rate = token_rate(tokens, ctx.first_token_at, now)
            rows.append({"request_id": ctx.request_id, "model": ctx.model, "key": ctx.key.name if ctx.key else None,
                         "age_s": round(now - ctx.started, 2), "tokens": round(tokens),
                         "tokens_per_s": None if rate is None else round(rate, 1), "job_id": ctx.job_id,
                         "stream": ctx.stream, "cancelling": ctx.note == "console-cancel",
                         "cancellable": ctx.job_id is not None or ctx.halt is not None})
        return rows


class LiveTracker:
    """ASGI middleware that keeps ``LiveRequests`` and the gauge of active streams, whose
    child per model ``active_streams(model)`` gives (``Metrics.active_streams``; module
    docstring)."""

    def __init__(self, app: Any, live: LiveRequests, active_streams: Callable[[str | None], Any]):
        self.app = app
        self.live = live
        self.active_streams = active_streams

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = get_context(scope) if scope["type"] == "http" else None
        if ctx is None or ctx.route not in _LIVE_ROUTES:
            await self.app(scope, receive, send)
            return
        gauge = None

        async def watch(message: Any) -> None:
            nonlocal gauge
            if gauge is None and message["type"] == "http.response.start" and message["status"] == 200 and ctx.stream:
                gauge = self.active_streams(ctx.model)
                gauge.inc()
            await send(message)

        running = self.live.running
        running[ctx.request_id] = ctx
        try:
            await self.app(scope, receive, watch)
        finally:
            running.pop(ctx.request_id, None)
            if gauge is not None:
                gauge.dec()


__all__ = ["LiveRequests", "LiveTracker", "tokens_in", "CHARS_PER_TOKEN"]
