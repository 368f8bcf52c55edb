"""The llama.cpp engine behind the built-in chat handler: load a GGUF, turn a request into
prompt tokens, and generate text off the event loop with per-token cancellation.

What this module owns:
- how a model is loaded (``load_llama``; the benchmark uses the same function so that
  "llama.cpp called directly" runs with exactly the same settings; the default GGUF and
  context window come from ``workers.defaults``);
- ``Engine``: one loaded model, one generation at a time (a single-thread executor), the
  model's own chat template, and ``stream()``, an async iterator of text pieces fed by the
  generating thread through an asyncio queue. Leaving the iterator early (a stopped job's
  ``CancelledError``, or ``aclose()``) sets a flag that the thread checks before every token,
  so generation stops within one token.
- reproducibility: each generation starts from an empty KV cache (no prefix reuse across
  requests), so the same request with the same seed gives the same text whatever ran before.

It knows nothing of HTTP, RunPod or OpenAI wire shapes (``openai_serving`` does).
"""

from __future__ import annotations

import asyncio
import codecs
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.defaults import N_CTX, default_model_path

if TYPE_CHECKING:  # llama_cpp is imported only when a model is loaded
    from llama_cpp import Llama

def load_llama(model_path: str, *, n_ctx: int = N_CTX, n_threads: int | None = None) -> Llama:
    """Load a GGUF with llama.cpp, quietly.

    Extra buffer types (weight repacking, AMX) are switched off: llama-cpp-python built on a
    CPU that advertises AMX uses AMX tiles for prompt batches, and under hypervisors that do
    not grant the AMX state (this project's CI machines) that dies with SIGILL. The plain
    AVX2/AVX-512 kernels are as fast for a model this small.
    """
    import llama_cpp.llama_cpp as C
    from llama_cpp import Llama

    default_params = C.llama_model_default_params

    def params_without_extra_bufts() -> C.llama_model_params:
        p = default_params()
        p.use_extra_bufts = False
        return p

    with _LOAD_LOCK:  # the patch is process-wide for the duration of the load
        C.llama_model_default_params = params_without_extra_bufts
        try:
            return Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads,
                         n_threads_batch=n_threads, verbose=False)
        finally:
            C.llama_model_default_params = default_params


_LOAD_LOCK = threading.Lock()


@dataclass(slots=True)
class SamplingParams:
    """What one generation needs, already validated (``openai_serving`` builds it)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off (vLLM's -1)
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False


@dataclass(slots=True)
class Finished:
    """The end of one generation: why, and the token counts (the EOS token is not counted,
    as in llama.cpp's own usage)."""

    finish_reason: str  # "stop" | "length"
    stop_reason: str | None  # the stop string that ended it, if any
    prompt_tokens: int
    completion_tokens: int


class ContextOverflow(ValueError):
    """The prompt (plus the requested completion) does not fit in the context window."""


class Engine:
    """One loaded model. Generations run one at a time on a dedicated thread."""

    def __init__(self, llm: Llama, model_path: str):
        self.llm = llm
        self.model_path = model_path
        self.n_ctx = llm.n_ctx()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._formatter = _chat_formatter(llm)
        self.tokens_generated = 0  # over the engine's life (observable by tests and metrics)

    @classmethod
    def load(cls, model_path: str | None = None, *, n_ctx: int = N_CTX, n_threads: int | None = None) -> Engine:
        path = model_path or default_model_path()
        return cls(load_llama(path, n_ctx=n_ctx, n_threads=n_threads), path)

    def close(self) -> None:
        """Free the model now (a ``Llama`` left to the interpreter's exit is freed after
        llama_cpp's module is torn down, and prints a traceback)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.llm.close()

    # ---- prompts --------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Render messages with the model's own chat template (as llama-cpp-python's
        ``create_chat_completion`` does) and tokenize them."""
        rendered = self._formatter(messages=messages)
        return self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def text_prompt(self, prompt: str) -> list[int]:
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)

    def check_fits(self, n_prompt: int, max_tokens: int | None) -> int:
        """The max_tokens to use: the request's, or what is left of the context window.
        Raise ContextOverflow in vLLM's words when it does not fit."""
        room = self.n_ctx - n_prompt
        if max_tokens is None:
            if room < 1:
                raise ContextOverflow(
                    f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                    f"{n_prompt} input tokens. Please reduce the length of the input messages.")
            return room
        if max_tokens > room:
            raise ContextOverflow(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the completion). "
                f"Please reduce the length of the messages or completion.")
        return max_tokens

    # ---- generation -----------------------------------------------------------------------

    async def stream(self, tokens: list[int], params: SamplingParams) -> AsyncIterator[list[str | Finished]]:
        """Generate on the engine's thread; yield batches of what arrived since the last
        batch (text pieces, and last a ``Finished``). A consumer that is slower than the model
        gets several pieces per batch. Leaving early stops the generation within one token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Finished | BaseException] = asyncio.Queue()
        stop = threading.Event()

        def put(item: str | Finished | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                stop.set()

        def run() -> None:
            if stop.is_set():  # cancelled while waiting for the previous generation
                return
            try:
                put(self._generate(tokens, params, put, stop))
            except BaseException as exc:  # handed to the event loop, re-raised there
                put(exc)

        self._executor.submit(run)
        try:
            while True:
                batch: list[str | Finished] = []
                while True:
                    item = await queue.get() if not batch else queue.get_nowait()
                    if isinstance(item, BaseException):
                        raise item
                    batch.append(item)
                    if queue.empty():
                        break
                yield batch
                if isinstance(batch[-1], Finished):
                    return
        finally:
            stop.set()

    async def idle(self) -> None:
        """Wait until every generation submitted so far has ended."""
        await asyncio.wrap_future(self._executor.submit(lambda: None))

    def _generate(self, tokens: list[int], p: SamplingParams, emit: Callable[[str], None],
                  stop: threading.Event) -> Finished:
        """The generation loop (runs on the engine thread). Text is decoded incrementally
        (a UTF-8 character split across tokens is held until complete) and held back while it
        could be the start of a stop string, so a stop string never reaches the client."""
        llm = self.llm
        vocab = llm._model.vocab
        from llama_cpp import llama_cpp as C

        # Every prompt is evaluated from an empty KV cache, in one batch. llama-cpp-python
        # otherwise reuses the cached prefix of the previous request and evaluates only the
        # rest; multi-token batches and single tokens go through different matmul kernels
        # that round differently, so the logits (and with them a seeded sample, or even a
        # greedy one) would depend on which request ran before this one.
        llm.reset()
        llm.set_seed(p.seed & 0xFFFFFFFF if p.seed is not None else random.getrandbits(32))  # llama.cpp: uint32
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        sent = 0  # characters of text already emitted
        n_out = 0
        longest_stop = max((len(s) for s in p.stop), default=0)
        finish, stop_reason = "length", None
        if p.max_tokens < 1:
            return Finished("length", None, len(tokens), 0)
        for token in llm.generate(tokens, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, typical_p=1.0,
                                  temp=p.temperature, repeat_penalty=p.repetition_penalty,
                                  frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty):
            if stop.is_set():
                break
            if not p.ignore_eos and C.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            n_out += 1
            self.tokens_generated += 1
            text += decoder.decode(llm.detokenize([token]))
            if p.stop:
                start = max(0, sent - longest_stop)
                hits = [(i, s) for s in p.stop if (i := text.find(s, start)) >= 0]
                if hits:
                    end, stop_reason = min(hits)
                    if end > sent:
                        emit(text[sent:end])
                    sent = end
                    finish = "stop"
                    break
                end = len(text) - _held_back(text, p.stop)
            else:
                end = len(text)
            if end > sent:
                emit(text[sent:end])
                sent = end
            if n_out >= p.max_tokens:
                break
        if stop_reason is None and not stop.is_set():  # what was held back was not a stop string
            text += decoder.decode(b"", final=True)
            if len(text) > sent:
                emit(text[sent:])
        return Finished(finish, stop_reason, len(tokens), n_out)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of text could be the beginning of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _chat_formatter(llm: Llama) -> Any:
    """The model's chat template from its GGUF metadata, rendered the way llama-cpp-python
    renders it (``Jinja2ChatFormatter``); ChatML when the GGUF carries none."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return llama_chat_format.Jinja2ChatFormatter(template=_CHATML, eos_token="<|im_end|>", bos_token="")

    def token_text(key: str) -> str:
        token_id = int(llm.metadata.get(key, -1))
        return llm._model.token_get_text(token_id) if token_id >= 0 else ""

    return llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=token_text("tokenizer.ggml.eos_token_id"),
        bos_token=token_text("tokenizer.ggml.bos_token_id"))


_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
