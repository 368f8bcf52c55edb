"""OpenAI serving on top of a local ``Engine``, in the dialect worker-vllm Era C speaks.

What this module owns: turning one OpenAI request (route, method, body) into what a
worker-vllm v2.24+ handler yields (reference/worker-formats.md §2.4):
- non-streaming: one yield, the response object (``chat.completion``, ``text_completion``,
  the model list);
- streaming: strings of whole SSE events (``data: {chunk}\\n\\n`` …, the last one ending with
  ``data: [DONE]\\n\\n``), as many events per yield as arrived while the previous yield was
  being posted; a ``choices: []`` usage chunk before ``[DONE]`` when
  ``stream_options.include_usage`` is set;
- errors as Era C reports them: ``{"error": {"message": "vLLM returned HTTP <status>:
  <vLLM's JSON error body>", "type": "worker_error", "code": null}}``, which the runpod SDK
  turns into a FAILED job and from which the status can be recovered.

Request and response shapes come from ``adapters.openai_protocol`` (their one home).
What this model cannot honour (``n`` > 1, logprobs, forced tool calls, structured output,
``logit_bias``, ``min_tokens``, images) is refused with a 400, as vLLM refuses what it
cannot serve; ``tools`` with ``tool_choice`` absent, ``"none"``, ``"auto"`` or
``allowed_tools`` in mode ``"auto"`` are ignored (the model never calls a tool, which ``auto``
allows).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec

from adapters.errors import InvalidRequest
from adapters.openai_protocol import (
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessageOut,
    CompletionChoice, CompletionChunkChoice, CompletionRequest, DeltaMessage, ErrorDetail, ErrorResponse, Model,
    ModelList, TextCompletion, TextCompletionChunk, UsageInfo, decode_chat_request, decode_completion_request,
)
from workers.llama_engine import ContextOverflow, Engine, Finished, SamplingParams

_Req = TypeVar("_Req", ChatCompletionRequest, CompletionRequest)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"

_encode = msgspec.json.Encoder().encode


class WorkerError(Exception):
    """An error to yield as the job's result, in Era C's shape.

    ``status`` set: an HTTP error of the (emulated) vLLM server, with vLLM's error body.
    ``status`` None: a problem outside any HTTP exchange (e.g. a job input that names no
    route), reported with the bare message as Era C does.
    """

    def __init__(self, message: str, status: int | None = 400, type: str = "BadRequestError",
                 param: str | None = None, body: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.body = message, status, type, param, body

    def output(self) -> dict[str, Any]:
        if self.status is None:
            text = self.message
        else:
            body = self.body or _encode(ErrorResponse(ErrorDetail(self.message, self.type, self.param, self.status))).decode()
            text = f"vLLM returned HTTP {self.status}: {body}"
        return {"error": {"message": text, "type": "worker_error", "code": None}}


def not_found() -> WorkerError:
    return WorkerError("Not Found", 404, body='{"detail":"Not Found"}')


def method_not_allowed() -> WorkerError:
    return WorkerError("Method Not Allowed", 405, body='{"detail":"Method Not Allowed"}')


class OpenAIServer:
    """One served model: answers the three routes for ``engine`` under the name ``model``."""

    def __init__(self, engine: Engine, model: str, *, stream_interval: float = 0.0):
        self.engine = engine
        self.model = model
        self.stream_interval = stream_interval  # seconds between streamed yields (0: every batch)
        self.created = int(time.time())

    async def handle(self, route: str, method: str, body: dict | None) -> AsyncIterator[Any]:
        """Everything the handler yields for one request. Request errors are raised as
        ``WorkerError`` before the first yield."""
        route = route.rstrip("/") or "/"
        if route == MODELS:
            if method != "GET":
                raise method_not_allowed()
            yield msgspec.to_builtins(ModelList(data=[Model(id=self.model, created=self.created, owned_by="podgate")]))
            return
        if route not in (CHAT, COMPLETIONS):
            raise not_found()
        if method != "POST":
            raise method_not_allowed()
        req: ChatCompletionRequest | CompletionRequest
        if route == CHAT:
            req = chat = self._decode(decode_chat_request, body)
            tokens, echo = self._chat_tokens(chat), ""
        else:
            req = completion = self._decode(decode_completion_request, body)
            tokens, echo = self._completion_tokens(completion)
        params = self._sampling(req, len(tokens))
        gen = _Generation(self, route == CHAT, req, tokens, params, echo)
        if req.is_stream:
            async for text in gen.sse():
                yield text
        else:
            yield await gen.response()

    # ---- validation -----------------------------------------------------------------------

    def _decode(self, decode: Callable[[dict], _Req], body: dict | None) -> _Req:
        try:
            req = decode(dict(body or {}, model=(body or {}).get("model") or self.model))
        except InvalidRequest as exc:
            raise WorkerError(exc.message, param=exc.param) from None
        if req.model != self.model:
            raise WorkerError(f"The model `{req.model}` does not exist.", 404, "NotFoundError", "model")
        if req.choices > 1 or getattr(req, "best_of", None) not in (None, 1):
            raise WorkerError("n > 1 is not supported by this worker (one sequence per request).", param="n")
        if req.logprobs or getattr(req, "top_logprobs", None):
            raise WorkerError("logprobs are not supported by this worker.", param="logprobs")
        if req.response_format is not None and req.response_format.type != "text":
            raise WorkerError("response_format other than text is not supported by this worker.", param="response_format")
        if req.logit_bias:
            raise WorkerError("logit_bias is not supported by this worker.", param="logit_bias")
        if req.min_tokens:
            raise WorkerError("min_tokens is not supported by this worker.", param="min_tokens")
        if req.top_p is not None and req.top_p <= 0:
            raise WorkerError("top_p must be in (0, 1], got 0.", param="top_p")
        return req

    def _chat_tokens(self, req: ChatCompletionRequest) -> list[int]:
        choice = req.tool_choice
        if choice == "required" or (choice is not None and not isinstance(choice, str) and choice.forces_call):
            raise WorkerError("This worker cannot call tools: tool_choice must be 'none', 'auto' or allowed_tools "
                              "in mode 'auto'.", param="tool_choice")
        messages = []
        for i, m in enumerate(req.messages):
            if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
                raise WorkerError("This model accepts text content only.", param=f"messages[{i}].content")
            messages.append({"role": m.role, "content": m.text()})
        try:
            return self.engine.chat_prompt(messages)
        except Exception as exc:  # a template that refuses the conversation (raise_exception)
            raise WorkerError(f"Cannot apply the chat template: {exc}", param="messages") from None

    def _completion_tokens(self, req: CompletionRequest) -> tuple[list[int], str]:
        prompt: Any = req.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            if req.suffix:
                raise WorkerError("suffix is not supported by this worker.", param="suffix")
            tokens = self.engine.text_prompt(prompt)
            if not tokens:
                raise WorkerError("The prompt is empty.", param="prompt")
            return tokens, (prompt if req.echo else "")
        if prompt and all(isinstance(t, int) for t in prompt):
            text = self.engine.llm.detokenize(prompt).decode("utf-8", "replace") if req.echo else ""
            return list(prompt), text
        raise WorkerError("Batched prompts are not supported by this worker (one prompt per request).", param="prompt")

    def _sampling(self, req: ChatCompletionRequest | CompletionRequest, n_prompt: int) -> SamplingParams:
        max_tokens = req.max_output_tokens
        if max_tokens is None and isinstance(req, CompletionRequest):
            max_tokens = 16  # vLLM's (and OpenAI's) completions default
        if max_tokens is not None and max_tokens < 1:
            raise WorkerError("max_tokens must be at least 1, got 0.", param="max_tokens")
        try:
            max_tokens = self.engine.check_fits(n_prompt, max_tokens)
        except ContextOverflow as exc:
            raise WorkerError(str(exc), param="messages" if isinstance(req, ChatCompletionRequest) else "prompt") from None
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(0, req.top_k or 0),
            min_p=req.min_p or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            presence_penalty=req.presence_penalty or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
            seed=req.seed,
            stop=[s for s in req.stop_list if s],
            ignore_eos=bool(req.ignore_eos),
        )


class _Generation:
    """One request's generation, rendered as one response or as SSE text."""

    def __init__(self, server: OpenAIServer, chat: bool, req: ChatCompletionRequest | CompletionRequest,
                 tokens: list[int], params: SamplingParams, echo: str):
        self.server, self.chat, self.req, self.tokens, self.params, self.echo = server, chat, req, tokens, params, echo
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def response(self) -> dict[str, Any]:
        parts: list[str] = [self.echo]
        fin: Finished | None = None
        async for batch in self.server.engine.stream(self.tokens, self.params):
            for item in batch:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    fin = item
        assert fin is not None
        text, usage = "".join(parts), _usage(fin)
        model = self.server.model
        obj: ChatCompletion | TextCompletion
        if self.chat:
            message = ChatChoice(0, ChatMessageOut(content=text), None, fin.finish_reason)
            obj = ChatCompletion(id=self.id, created=self.created, model=model, choices=[message], usage=usage)
        else:
            completion = CompletionChoice(0, text, None, fin.finish_reason)
            obj = TextCompletion(id=self.id, created=self.created, model=model, choices=[completion], usage=usage)
        return msgspec.to_builtins(obj)

    async def sse(self) -> AsyncIterator[str]:
        """The SSE text, in yields at least ``stream_interval`` apart after the first piece
        of text (each yield is one POST to the endpoint and one event downstream; at 80
        tokens/s one per token costs the model a tenth of its speed on a small machine)."""
        if self.chat:  # vLLM's first event: the role
            yield self._event(delta=DeltaMessage(role="assistant", content=""))
        pending = self.echo
        interval = self.server.stream_interval
        last = None  # when text was last yielded
        async for batch in self.server.engine.stream(self.tokens, self.params):
            pending += "".join(item for item in batch if isinstance(item, str))
            fin = batch[-1]
            now = time.monotonic()
            if not isinstance(fin, Finished) and last is not None and now - last < interval:
                continue  # keep gathering until the interval has passed
            out = []
            if pending:
                out.append(self._event(delta=DeltaMessage(content=pending), text=pending))
                pending = ""
                last = now
            if isinstance(fin, Finished):
                out.append(self._event(delta=DeltaMessage(), text="", finish=fin.finish_reason))
                if self.req.include_usage:
                    out.append(self._usage_event(fin))
                out.append("data: [DONE]\n\n")
            if out:
                yield "".join(out)

    def _event(self, *, delta: DeltaMessage, text: str = "", finish: str | None = None) -> str:
        usage: Any = None if self.req.include_usage else msgspec.UNSET
        m = self.server.model
        if self.chat:
            chunk: Any = ChatCompletionChunk(id=self.id, created=self.created, model=m,
                                             choices=[ChatChunkChoice(0, delta, None, finish)], usage=usage)
        else:
            chunk = TextCompletionChunk(id=self.id, created=self.created, model=m,
                                        choices=[CompletionChunkChoice(0, text, None, finish)], usage=usage)
        return f"data: {_encode(chunk).decode()}\n\n"

    def _usage_event(self, fin: Finished) -> str:
        cls = ChatCompletionChunk if self.chat else TextCompletionChunk
        chunk = cls(id=self.id, created=self.created, model=self.server.model, choices=[], usage=_usage(fin))
        return f"data: {_encode(chunk).decode()}\n\n"


def _usage(fin: Finished) -> UsageInfo:
    return UsageInfo(fin.prompt_tokens, fin.completion_tokens, fin.prompt_tokens + fin.completion_tokens)
