"""The OpenAI routes. They know HTTP and OpenAI only: the job work lives in
``proxy.streaming`` (SSE) and ``proxy.nonstream`` (one object), the passthrough of
``format = "openai"`` models in ``proxy.passthrough``; models come from the settings, never
from RunPod.

- ``POST /v1/chat/completions``, ``POST /v1/completions`` (stream and not), as plain ASGI
  handlers (``_answer``: the hot path pays for no parameter parsing); a model's ``fallbacks``
  are tried in turn while its endpoint is swamped or refuses the submit
  (``proxy.fallback``, ``completion.candidates``: each through the queue or the passthrough,
  whichever serves it; ``x-podgate-served-by`` names the server)
- ``POST /v1/embeddings`` (``proxy.embeddings``, its fallbacks walked the same way)
- ``GET /v1/models``, ``GET /v1/models/{id}``
- ``GET /healthz`` (alive), ``GET /readyz`` (ready: the app's readiness check)
- ``GET /openapi.json`` (``proxy.openapi``)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator
from functools import partial

import msgspec
from litestar import Request, Response, asgi, get
from litestar.exceptions import ClientException, MethodNotAllowedException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Receive, Scope, Send
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest, Kind, Model, ModelList
from adapters.passthrough import usage_of
from proxy.completion import Completion, candidates, read_request
from proxy.context import get_context
from proxy.embeddings import embeddings
from proxy.errors import model_not_found
from proxy.fallback import serve_first
from proxy.jobs import ClientDisconnected
from proxy.nonstream import run_nonstream
from proxy.openapi import openapi_json
from proxy.passthrough import finalize as finalize_relay
from proxy.passthrough import halt_of, open_relay, relay_body, relay_nonstream
from proxy.streaming import SSE_HEADERS, StreamJob, sse_body, start_stream
from proxy.upstreams import ModelBinding

_JSON = "application/json"


async def _complete(request: Request, body: bytes, kind: Kind) -> Response:
    gateway = request.app.state.gateway
    ctx = get_context(request)
    params, binding = read_request(body, kind, gateway.upstreams, ctx)
    ctx.stream = bool(params.stream)
    timing = gateway.settings.timing
    chain = gateway.upstreams.chain(binding, ctx.key, gateway.health.latest, timing.fallback_queue_threshold)
    tries = ((served, partial(_pass_through, request, params, served, kind, binding.name) if completion is None
              else partial(_run_job, request, completion))
             for served, completion in candidates(params, binding, chain, kind, ctx))  # the model, then its fallbacks
    return await serve_first(binding, tries, ctx, gateway.upstreams.observer)


async def _run_job(request: Request, completion: Completion) -> Response:
    """A completion through the queue (``proxy.streaming``, ``proxy.nonstream``)."""
    gateway = request.app.state.gateway
    ctx = get_context(request)
    run_with = {"receive": request.receive, "cancels": gateway.cancels, "timing": gateway.settings.timing,
                "drain": gateway.drain}
    if completion.stream:
        stream = await start_stream(completion, ctx, **run_with)
        chunks = sse_body(stream)
        return Stream(chunks, media_type="text/event-stream", headers=SSE_HEADERS,
                      background=BackgroundTask(_finalize_stream, chunks, stream))
    answer = await run_nonstream(completion, ctx, **run_with)
    return Response(content=answer, status_code=200, media_type=_JSON)


async def _pass_through(request: Request, params: ChatCompletionRequest | CompletionRequest, binding: ModelBinding,
                        kind: Kind, model: str) -> Response:
    """A completion served by ``binding``'s endpoint's OpenAI gateway (``proxy.passthrough``),
    answered as ``model`` (the client's model name)."""
    gateway = request.app.state.gateway
    ctx = get_context(request)
    run_with = {"receive": request.receive, "timing": gateway.settings.timing, "drain": gateway.drain, "model": model,
                "halt": halt_of(ctx)}
    try:
        if params.stream:
            relay = await open_relay(params.to_body(), kind, binding, params.include_usage, **run_with)
            chunks = relay_body(relay, ctx)
            return Stream(chunks, media_type="text/event-stream", headers=SSE_HEADERS,
                          background=BackgroundTask(finalize_relay, chunks, relay))
        answer = await relay_nonstream(params.to_body(), kind, binding, **run_with)
    except ClientDisconnected:
        ctx.cancelled = True  # closing the upstream request cancelled the job
        raise
    if (usage := usage_of(answer)) is not None:
        ctx.record_usage(usage.prompt_tokens, usage.completion_tokens)
    return Response(content=answer, status_code=200, media_type=_JSON)


async def _finalize_stream(chunks: AsyncGenerator[bytes, None], stream: StreamJob) -> None:
    """After the response (also after a disconnect): close the generator (its ``finally``
    queues the job's cancel) — a backstop for a generator cancelled while suspended."""
    try:
        await chunks.aclose()
    except RuntimeError:
        pass
    stream.pending.cancel()
    stream.guard.release()


MAX_BODY = 20 * 1024 * 1024
"""The largest request body (413 beyond): every route's."""


async def _read_body(receive: Receive) -> bytes:
    """The request's body (413 beyond ``MAX_BODY``)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientException("The client closed the connection while sending the body.")
        part: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(part)
        if size > MAX_BODY:
            raise RequestEntityTooLarge()
        parts.append(part)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _answer(scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
    """A completions route as a plain ASGI handler: Litestar routes to it and renders what it
    raises, but builds no parameters for it (its signature model and response pipeline were
    a tenth of a passed-through request's CPU, ``bench/peers``)."""
    if scope["method"] != "POST":  # type: ignore[typeddict-item]
        raise MethodNotAllowedException(headers={"allow": "POST"})
    request: Request = Request(scope, receive)
    response = await _complete(request, await _read_body(receive), kind)
    await response.to_asgi_response(None, request)(scope, receive, send)


@asgi("/v1/chat/completions", copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(scope, receive, send, "chat")


@asgi("/v1/completions", copy_scope=False)
async def completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(scope, receive, send, "completion")


def _model(request: Request, binding: ModelBinding) -> Model:
    return Model(id=binding.name, created=request.app.state.gateway.created, owned_by="podgate")


@get("/v1/models")
async def list_models(request: Request) -> Response:
    gateway = request.app.state.gateway
    visible = gateway.upstreams.visible(get_context(request).key)
    body = msgspec.json.encode(ModelList(data=[_model(request, binding) for binding in visible]))
    return Response(content=body, media_type=_JSON)


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request) -> Response:
    name = str(request.path_params["model_id"]).lstrip("/")
    get_context(request).model = name
    binding = request.app.state.gateway.upstreams.binding(name, get_context(request).key)
    if binding is None:
        raise model_not_found(name)
    return Response(content=msgspec.json.encode(_model(request, binding)), media_type=_JSON)


@get("/healthz")
async def healthz() -> Response:
    return Response(content=b'{"status":"ok"}', media_type=_JSON)


@get("/readyz")
async def readyz(request: Request) -> Response:
    check = request.app.state.gateway.readiness
    ready = True
    if check is not None:
        ready = check()
        if inspect.isawaitable(ready):
            ready = await ready
    body = b'{"ready":true}' if ready else b'{"ready":false}'
    return Response(content=body, status_code=200 if ready else 503, media_type=_JSON)


ROUTES = [chat_completions, completions, embeddings, list_models, retrieve_model, healthz, readyz, openapi_json]
