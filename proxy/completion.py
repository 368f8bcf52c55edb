"""One completion request (chat or text) as podgate runs it: ``Completion``, an immutable value.

``read_request(body, kind, upstreams, ctx)`` reads and validates the body
(``adapters.openai_protocol``) and finds the model's binding (404 when unknown); a model
passed through to RunPod's OpenAI gateway goes on from there (``proxy.passthrough``).
``completion_for(params, binding, kind, ctx)`` asks the model's worker format for the job input (400 for parameters it cannot honour; ignored
ones go to ``x-podgate-ignored-params``, percent-encoded) and returns the ``Completion``: what the client
asked for (``params``), the model's binding (``binding``: its settings, worker format,
RunPod client and key mask), the encoded job input, and the response's id and creation
time. ``new_decoder`` is the factory of the worker format's output decoders.

What a request runs with — the client's ASGI ``receive``, the app's cancel queue, the
timing settings, the request's ``RequestContext`` — is passed beside it, never kept in it
(``proxy.streaming``, ``proxy.nonstream``).

``candidates`` gives the ways to try in turn when the model has ``fallbacks``: the model's
own completion, then each fallback's (its own worker format, the client's model name), or
None for a model that passes the request through (``proxy.passthrough``).

``count`` is podgate's own count (tiktoken, in a thread) when the worker reports none: the
usage estimate, and the finish reason of a choice the worker's decoder left open
(``"length"`` when the count reached the request's token limit, else ``"stop"``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from adapters.errors import OpenAIError
from adapters.events import Usage
from adapters.formats.base import WorkerFormat, finish_for_count
from adapters.openai_protocol import (
    ChatCompletionRequest, CompletionRequest, Kind, decode_chat_request, decode_completion_request,
)
from adapters.usage import estimate_async
from proxy.context import RequestContext
from proxy.errors import model_not_found
from proxy.upstreams import ModelBinding, Upstreams


class Completion(msgspec.Struct, frozen=True):
    """One completion request, immutable once read (module docstring)."""

    kind: Kind
    params: Any
    """What the client asked for: the decoded ``ChatCompletionRequest`` / ``CompletionRequest``."""
    binding: ModelBinding
    """The model's binding: its settings, RunPod client and key mask."""
    format: WorkerFormat
    """The model's worker format, which encoded ``job_input`` and decodes the output."""
    job_input: Any
    """The RunPod job's ``input``, as the model's worker format encodes the request."""
    response_id: str
    created: int
    model: str
    """The model name the answer carries: the one the client asked for, also when one of its
    fallbacks (``binding``) serves it."""

    @property
    def stream(self) -> bool:
        return bool(self.params.stream)

    @property
    def include_usage(self) -> bool:
        return self.params.include_usage

    def new_decoder(self) -> Any:
        """A fresh decoder of the worker's output (one per run of the job)."""
        return self.format.decoder(self.kind, request=self.params)

    async def count(self, ctx: RequestContext, texts: list[str],
                    open_choices: list[int]) -> tuple[Usage, dict[int, str]]:
        """tiktoken's count (one text per choice), off the event loop, and the finish
        reasons of ``open_choices`` from it; flags the response as estimated (header
        ``x-podgate-usage-estimated: true`` when headers are not sent yet)."""
        ctx.headers["x-podgate-usage-estimated"] = "true"
        est = await estimate_async(self.params, texts)
        limit = self.params.max_output_tokens
        counts = est.completions
        return est.usage, {i: finish_for_count(counts[i] if i < len(counts) else 0, limit) for i in open_choices}


def read_request(body: bytes, kind: Kind, upstreams: Upstreams,
                 ctx: RequestContext) -> tuple[ChatCompletionRequest | CompletionRequest, ModelBinding]:
    """The validated request and its model's binding (raises ``OpenAIError`` for a bad body
    or an unknown model); notes the model and endpoint in ``ctx``."""
    params: ChatCompletionRequest | CompletionRequest = (
        decode_chat_request(body) if kind == "chat" else decode_completion_request(body))
    ctx.model = params.model
    ctx.max_tokens = params.max_output_tokens
    binding = upstreams.binding(params.model, ctx.key)
    if binding is None:
        raise model_not_found(params.model)
    ctx.endpoint = binding.endpoint
    return params, binding


def completion_for(params: ChatCompletionRequest | CompletionRequest, binding: ModelBinding, fmt: WorkerFormat,
                   kind: Kind, ctx: RequestContext, *, model: str | None = None) -> Completion:
    """The ``Completion`` of a request for a model that ``fmt`` translates (raises
    ``OpenAIError`` for a parameter the worker cannot honour); notes ignored parameters in
    ``ctx``. ``model``: the name the answer carries (default: the binding's; a fallback's
    answer carries the name the client asked for)."""
    stream = bool(params.stream)
    if isinstance(params, ChatCompletionRequest):
        job_input = fmt.chat_input(params, binding.served_model, stream=stream)
    else:
        job_input = fmt.completion_input(params, binding.served_model, stream=stream)
    if job_input.ignored:  # a client's own key may hold any character: percent-encoded, as a header allows
        ctx.headers["x-podgate-ignored-params"] = ",".join(quote(name, safe="") for name in job_input.ignored)
    else:  # another model's completion (a fallback's) may have said otherwise
        ctx.headers.pop("x-podgate-ignored-params", None)
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    return Completion(kind, params, binding, fmt, job_input.input, prefix + ctx.request_id.removeprefix("req_"),
                      int(time.time()), model or binding.name)


def candidates(params: ChatCompletionRequest | CompletionRequest, binding: ModelBinding,
               chain: list[ModelBinding], kind: Kind, ctx: RequestContext) -> Iterator[tuple[ModelBinding, Completion | None]]:
    """The ways to try in turn a request for ``binding``'s model, one per model of ``chain``
    (``Upstreams.chain``: the model and its fallbacks that may take it): the model and its
    ``Completion`` — None when the model passes this request through to its endpoint's
    OpenAI gateway (``ModelBinding.passes_through``) — each answering under the client's
    model name. The model's own refusal of a parameter is the client's 400 (raised at once);
    a fallback whose worker cannot honour the request is passed over. When every model of the
    chain is passed over, the model itself is tried."""
    own_format = _format_for(binding, params)
    own = None if own_format is None else completion_for(params, binding, own_format, kind, ctx)
    tried = False
    for served in chain:
        completion: Completion | None = None
        fmt = _format_for(served, params)
        if served is binding:
            completion = own
        elif fmt is not None:
            try:
                completion = completion_for(params, served, fmt, kind, ctx, model=binding.name)
            except OpenAIError:
                continue
        else:  # passed through: nothing is ignored (another model's completion may have said otherwise)
            ctx.headers.pop("x-podgate-ignored-params", None)
        tried = True
        yield served, completion
    if not tried:
        yield binding, own


def _format_for(binding: ModelBinding, params: ChatCompletionRequest | CompletionRequest) -> WorkerFormat | None:
    """The worker format that turns this request into the model's job; None when the model
    passes it through to its endpoint's OpenAI gateway."""
    return None if binding.passes_through(params.max_output_tokens) else binding.format


def read_completion(body: bytes, kind: Kind, upstreams: Upstreams, ctx: RequestContext) -> Completion:
    """``read_request`` then ``completion_for``, for a model podgate translates."""
    params, binding = read_request(body, kind, upstreams, ctx)
    if binding.format is None:
        raise TypeError(f"model {binding.name!r} is passed through, not translated")
    return completion_for(params, binding, binding.format, kind, ctx)
