"""From an HTTP request to everything one completion needs (``Prepared``).

``prepare(request, kind)`` reads and validates the body (``adapters.openai_protocol``),
finds the model (404 when unknown), asks the model's worker format for the job input
(400 for parameters it cannot honour; ignored ones go to ``x-podgate-ignored-params``)
and bundles it with the request's context, the app's cancel queue and timing settings.

``Prepared`` is also where the proxy meets the OpenAI side of the adapters: it owns the
request's id/created/model for the response objects, builds the SSE chunk writer for
streams and the aggregated object for non-streamed answers, and podgate's own count
(tiktoken, in a thread) when the worker reports none: the usage estimate, and the finish
reason of a choice the worker's decoder left open (``"length"`` when the count reached
the request's token limit, else ``"stop"``). A stream ends with ``finish_stream(writer)``,
which counts only when the client asked for usage or a finish reason depends on it.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Request

from adapters import assemble
from adapters.events import Event, Usage
from adapters.formats.base import finish_for_count
from adapters.openai_protocol import decode_chat_request, decode_completion_request
from adapters.sse import encode_event
from adapters.usage import estimate_async
from proxy.cancel import CancelQueue
from proxy.context import RequestContext, get_context
from proxy.errors import model_not_found
from proxy.settings import TimingSettings
from proxy.upstreams import ModelRoute

Kind = Literal["chat", "completion"]

_enc = msgspec.json.Encoder()


class Prepared:
    __slots__ = ("kind", "req", "route", "ctx", "job_input", "ignored", "timing", "cancels", "receive",
                 "response_id", "created", "writer")

    def __init__(self, kind: Kind, req: Any, route: ModelRoute, ctx: RequestContext, job_input: Any,
                 ignored: list[str], timing: TimingSettings, cancels: CancelQueue, receive: Any):
        self.kind = kind
        self.req = req
        self.route = route
        self.ctx = ctx
        self.job_input = job_input
        self.ignored = ignored
        self.timing = timing
        self.cancels = cancels
        self.receive = receive
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        self.response_id = prefix + ctx.request_id.removeprefix("req_")
        self.created = int(time.time())
        self.writer: SSEWriter | None = None

    @property
    def stream(self) -> bool:
        return bool(self.req.stream)

    @property
    def include_usage(self) -> bool:
        return self.req.include_usage

    def decoder(self) -> Any:
        return self.route.format.decoder(self.kind, request=self.req)

    # -- OpenAI objects ---------------------------------------------------------------
    def stream_writer(self) -> SSEWriter:
        """The request's one SSE writer (also kept as ``self.writer``)."""
        self.writer = SSEWriter(assemble.StreamAssembler(
            self.kind, id=self.response_id, model=self.route.name, created=self.created,
            include_usage=self.include_usage,
        ))
        return self.writer

    async def aggregate(self, events: list[Event]) -> bytes:
        """One ``chat.completion`` / ``text_completion`` (JSON) from a job's events."""
        agg = assemble.Aggregator(self.kind, id=self.response_id, model=self.route.name, created=self.created,
                                  n=self.req.choices)
        agg.feed(events)
        usage, reasons = None, None
        if agg.usage is None:
            usage, reasons = await self._count(agg.completion_texts(), agg.open_choices())
        return _enc.encode(agg.result(usage, reasons))

    async def finish_stream(self, writer: SSEWriter) -> bytes:
        """The stream's closing chunks: podgate counts the completion first when the worker
        reported no usage and the client asked for usage or an open choice needs a finish
        reason."""
        usage = None
        if writer.usage is None and (self.include_usage or writer.open_choices()):
            usage = await self.estimate_usage(writer.completion_texts())
            if self.include_usage:
                self.ctx.note = "usage-estimated"
        return writer.finish(usage)

    async def estimate_usage(self, texts: list[str]) -> Usage:
        """tiktoken's count (one text per choice), off the event loop; flags the response
        as estimated (header ``x-podgate-usage-estimated: true`` when headers are not sent
        yet). The stream writer's open choices get their finish reasons from it."""
        writer = self.writer
        usage, reasons = await self._count(texts, writer.open_choices() if writer is not None else [])
        if writer is not None:
            writer.reasons = reasons
        return usage

    async def _count(self, texts: list[str], open_choices: list[int]) -> tuple[Usage, dict[int, str]]:
        self.ctx.headers["x-podgate-usage-estimated"] = "true"
        est = await estimate_async(self.req, texts)
        limit = self.req.max_output_tokens
        counts = est.completions
        return est.usage, {i: finish_for_count(counts[i] if i < len(counts) else 0, limit) for i in open_choices}


class SSEWriter:
    """Events → the assembler's chunk Structs → SSE bytes (``data: {json}\\n\\n`` each).
    ``reasons``: finish reasons for open choices, set by ``Prepared``'s count."""

    __slots__ = ("asm", "reasons")

    def __init__(self, asm: assemble.StreamAssembler):
        self.asm = asm
        self.reasons: dict[int, str] | None = None

    @property
    def usage(self) -> Usage | None:
        return self.asm.usage

    def completion_texts(self) -> list[str]:
        return self.asm.completion_texts()

    def open_choices(self) -> list[int]:
        return self.asm.open_choices()

    def feed(self, events: list[Event]) -> bytes:
        """Chunks for events that hold no error (the caller splits errors off)."""
        if not events:
            return b""
        return b"".join(map(encode_event, self.asm.feed(events)))

    def finish(self, usage: Usage | None = None) -> bytes:
        return b"".join(map(encode_event, self.asm.finish(usage, self.reasons)))


async def prepare(request: Request, kind: Kind) -> Prepared:
    gw = request.app.state.gateway
    ctx = get_context(request)
    body = await request.body()
    req = decode_chat_request(body) if kind == "chat" else decode_completion_request(body)
    ctx.model = req.model
    route = gw.upstreams.route(req.model)
    if route is None:
        raise model_not_found(req.model)
    ctx.endpoint = route.endpoint
    fmt = route.format
    make = fmt.chat_input if kind == "chat" else fmt.completion_input
    ji = make(req, route.served_model, stream=bool(req.stream))
    if ji.ignored:
        ctx.headers["x-podgate-ignored-params"] = ",".join(ji.ignored)
    return Prepared(kind, req, route, ctx, ji.input, ji.ignored, gw.settings.timing, gw.cancels, request.receive)
