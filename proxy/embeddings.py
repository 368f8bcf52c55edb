"""``POST /v1/embeddings``: the route, and the queue path's runner.

The route reads the body (``adapters.openai_protocol.decode_embedding_request``: 400 for a
bad one), finds the model (404 when unknown) and answers what the runner returns, or — for a
model passed through (``format = "openai"``) — what the endpoint's ``/openai/v1/embeddings``
answered, through the same ``embeddings_response``. A model's ``fallbacks`` that embed take
its requests as on the completions routes (``proxy.fallback``: when its endpoint is swamped
or refuses the submit), each through its own path, the answer under the client's model name.
``run_embeddings`` is the queue path: the model's worker format must embed (403 as OpenAI
answers otherwise); its job input goes through ``/runsync`` and the job's events until
done (``proxy.nonstream.run_job``: cancelled when the client leaves or the request times
out), and the job's output becomes the client's answer through
``adapters.embeddings.embeddings_response``, which the ``/openai/*`` passthrough uses too.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Request, Response, post

from adapters.embeddings import EmbeddingFormat, embeddings_response, not_an_embeddings_model
from adapters.events import JobOutput
from adapters.openai_protocol import EmbeddingRequest, decode_embedding_request
from adapters.passthrough import usage_of
from proxy.cancel import CancelQueue
from proxy import passthrough
from proxy.context import RequestContext, get_context
from proxy.drain import Drain
from proxy.errors import model_not_found
from proxy.fallback import serve_first
from proxy.nonstream import run_job
from proxy.settings import TimingSettings
from proxy.upstreams import ModelBinding

_JSON = "application/json"


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request) -> Response:
    gateway = request.app.state.gateway
    ctx = get_context(request)
    params = decode_embedding_request(await request.body())
    ctx.model = params.model
    binding = gateway.upstreams.binding(params.model, ctx.key)
    if binding is None:
        raise model_not_found(params.model)
    ctx.endpoint = binding.endpoint
    if not embeds(binding):
        raise not_an_embeddings_model()
    chain = gateway.upstreams.chain(binding, ctx.key, gateway.health.latest, gateway.settings.timing.fallback_queue_threshold)
    tries = ((served, partial(_embed, request, params, served, binding.name))
             for served in [b for b in chain if embeds(b)] or [binding])  # the model, then its fallbacks
    body = await serve_first(binding, tries, ctx, gateway.upstreams.observer)
    if (usage := usage_of(body)) is not None:
        ctx.record_usage(usage.prompt_tokens, 0, estimated="x-podgate-usage-estimated" in ctx.headers)
    return Response(content=body, status_code=200, media_type=_JSON)


def embeds(binding: ModelBinding) -> bool:
    """The model answers embeddings: passed through (its endpoint's gateway decides), or its
    worker format embeds."""
    return binding.passthrough or isinstance(binding.format, EmbeddingFormat)


async def _embed(request: Request, params: EmbeddingRequest, binding: ModelBinding, model: str) -> bytes:
    """The response body from ``binding``'s endpoint, answered as ``model`` (the client's)."""
    gateway = request.app.state.gateway
    ctx = get_context(request)
    timing = gateway.settings.timing
    if binding.passthrough:  # embeddings are never cut: no queue fallback
        answer = await passthrough.post(params.to_body(), "embeddings", binding, receive=request.receive,
                                        timing=timing, drain=gateway.drain, halt=passthrough.halt_of(ctx))
        return await embeddings_response(answer, params, model, headers=ctx.headers)
    return await run_embeddings(params, binding, ctx, receive=request.receive, cancels=gateway.cancels,
                                timing=timing, drain=gateway.drain, model=model)


async def run_embeddings(params: EmbeddingRequest, binding: ModelBinding, ctx: RequestContext, *, receive: Any,
                         cancels: CancelQueue, timing: TimingSettings, drain: Drain, model: str | None = None) -> bytes:
    """The response body for an embeddings request on the queue path (module docstring),
    answered as ``model`` (default: the binding's name)."""
    fmt = binding.format
    if fmt is None or not isinstance(fmt, EmbeddingFormat):
        raise not_an_embeddings_model()
    job_input = await fmt.embeddings_input(params, binding.served_model)
    events = await run_job(binding, job_input, lambda: fmt.decoder("completion"), ctx, receive=receive,
                           cancels=cancels, timing=timing, drain=drain)
    output = next((ev.value for ev in reversed(events) if type(ev) is JobOutput), None)
    return await embeddings_response(output, params, model or binding.name, headers=ctx.headers)
