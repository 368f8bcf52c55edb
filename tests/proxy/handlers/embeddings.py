"""worker-infinity-embedding's handler as reference/worker-formats.md §5 documents it (and as
its ``src/handler.py`` / ``embedding_service.py`` behave), without the model: run by
``podgate worker --handler tests.proxy.handlers.embeddings:handler``.

A coroutine, not a generator: its output exists only in the job's final status.
- ``{"openai_route": "/v1/embeddings", "openai_input": {"model", "input"}}`` → a
  **one-element list** holding the embeddings object; ``openai_input`` missing → the
  handler raises (``.get`` on None, as infinity does) → the job FAILED;
- ``{"openai_route": "/v1/models"}`` → the model list, a bare dict;
- ``{"model", "input"}`` (native) → the embeddings object, bare;
- errors → a flat ``{"object": "error", "message", "type", "param", "code"}`` (COMPLETED).

Vectors are ``vector(text)``: ``DIM`` multiples of 1/64 (exact in float32, so that base64
and floats compare equal). ``usage`` counts words. The first input's ``#word`` picks a
scenario (``SCENARIOS``); ``#slow`` writes ``<job id>.started`` and, when cancelled,
``<job id>.cancelled`` into ``$PODGATE_TEST_MARKERS``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from typing import Any

RUNPOD_CONFIG = {"concurrency_modifier": lambda current: 8}

DIM = 8
MODEL = "BAAI/bge-small-en-v1.5"
SCENARIOS = ("slow", "error_bad", "error_notfound", "error_wrapped", "no_usage", "base64")


def vector(text: str) -> list[float]:
    return [(b - 128) / 64 for b in hashlib.sha256(text.encode()).digest()[:DIM]]


def _error(message: str, type_: str = "BadRequestError", code: int = 400) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def _scenario(texts: list[str]) -> str:
    for word in texts[0].split() if texts else ():
        if word.startswith("#") and word[1:] in SCENARIOS:
            return word[1:]
    return ""


async def _embed(job_id: str, model: Any, embedding_input: Any) -> dict[str, Any] | list[Any]:
    texts = embedding_input if isinstance(embedding_input, list) else [embedding_input]
    if model != MODEL:  # infinity: engine_array[model_name] raises, the handler answers the error
        return _error(f"'{model}' is not a loaded model", code=400)
    if not all(isinstance(t, str) for t in texts):  # infinity takes text only
        return _error("input must be a string or a list of strings", code=400)
    scenario = _scenario(texts)
    if scenario == "slow":
        _marker(job_id, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _marker(job_id, "cancelled")
            raise
    if scenario == "error_bad":
        return _error("input is too long for this model", code=400)
    if scenario == "error_notfound":
        return _error("The model does not exist.", "NotFoundError", 404)
    if scenario == "error_wrapped":  # an error in OpenAI's nested shape, list-wrapped
        return [{"error": {"message": "the engine is overloaded", "type": "ServiceUnavailable", "code": 503}}]
    data = []
    for i, t in enumerate(texts):
        vec: Any = vector(t)
        if scenario == "base64":
            vec = base64.b64encode(struct.pack(f"<{DIM}f", *vec)).decode()
        data.append({"object": "embedding", "embedding": vec, "index": i})
    out: dict[str, Any] = {"object": "list", "model": model, "data": data}
    if scenario != "no_usage":
        tokens = sum(len(t.split()) for t in texts)
        out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return out


def _marker(job_id: str, what: str) -> None:
    d = os.environ.get("PODGATE_TEST_MARKERS")
    if d:
        with open(os.path.join(d, f"{job_id}.{what}"), "w") as f:
            f.write(what)


async def handler(job: dict[str, Any]) -> Any:
    job_input = job["input"]
    if job_input.get("openai_route"):
        route, openai_input = job_input.get("openai_route"), job_input.get("openai_input")
        if route == "/v1/models":
            return {"data": [{"id": MODEL, "stats": {}, "object": "model", "owned_by": "infinity",
                              "created": int(time.time()), "backend": ""}], "object": "list"}
        if route == "/v1/embeddings":
            model = openai_input.get("model")  # before the None check, as infinity: FAILED without openai_input
            if not openai_input:
                return _error("Missing input")
            out = await _embed(job["id"], model, openai_input.get("input"))
            return [out] if isinstance(out, dict) and out["object"] == "list" else out  # return_as_list=True
        return _error(f"Invalid OpenAI Route: {route}")
    if job_input.get("input"):
        return await _embed(job["id"], job_input.get("model"), job_input.get("input"))
    return _error(f"Invalid input: {job}")
