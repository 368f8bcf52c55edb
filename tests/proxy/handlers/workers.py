"""One RunPod handler that emits every worker format exactly as reference/worker-formats.md
documents, run by ``podgate worker --handler tests.proxy.handlers.workers:handler``.

What it does is chosen by the job input:
- the *shape* of the input picks the format: ``openai_route`` + ``openai_input`` (vllm /
  sglang OpenAI mode), ``messages``/``prompt`` + ``sampling_params`` (vllm-native), or
  ``prompt`` + TGI ``sampling_params`` (tgi / text);
- in OpenAI mode the served ``model`` picks the wire style: ``era-c`` (raw SSE text in
  arbitrary slices, split mid-event and inside characters and JSON escapes), ``era-b``
  (strings of whole events, batches growing 1, 3, 9 …), ``chunk-list`` (lists of chunk
  dicts, RAW_OPENAI_OUTPUT=0), ``sglang`` (multi-line ``data:`` events; non-stream as a
  JSON string);
- the first word of the last user message (or prompt) picks the scenario (``SCENARIOS``);
- ``openai_route`` ``/v1/models`` (a GET on the gateway: no ``openai_input``) lists the wire
  styles as models (``SERVED``).

``slow`` scenarios write ``<job id>.started`` and, when cancelled, ``<job id>.cancelled``
into ``$PODGATE_TEST_MARKERS``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

RUNPOD_CONFIG = {"return_aggregate_stream": True, "concurrency_modifier": lambda current: 8}

SERVED = ("era-c", "era-b", "chunk-list", "sglang")
TEXT = ["Hé", "llo", ", wö", "rld", " 👩‍💻", " 日本", "語", " \"quoted\"", " done."]
REASONING = ["Let me ", "think ", "about it."]
TOOLS = [("call_abc123", "get_weather", ['{"city": ', '"Paris', 'é", "unit": ', '"c"}']),
         ("call_def456", "get_time", ['{"tz": "CET"}'])]


def _last_text(inp: dict) -> str:
    if "openai_input" in inp:
        body = inp.get("openai_input") or {}
        msgs = body.get("messages")
        if msgs:
            c = msgs[-1].get("content") or ""
            return c if isinstance(c, str) else " ".join(p.get("text") or "" for p in c)  # text may be null
        p = body.get("prompt", "")
        return p if isinstance(p, str) else str(p[0])
    if inp.get("messages"):
        return str(inp["messages"][-1].get("content") or "")
    return str(inp.get("prompt", ""))


def _scenario(inp: dict) -> str:
    words = _last_text(inp).split()
    for w in words:
        if w.startswith("#"):
            return w[1:]
    return "hello"


def _markers(job_id: str, what: str) -> None:
    d = os.environ.get("PODGATE_TEST_MARKERS")
    if d:
        with open(os.path.join(d, f"{job_id}.{what}"), "w") as f:
            f.write(what)


# -- OpenAI-style chunks ---------------------------------------------------------------

def _plan(scenario: str, body: dict) -> dict:
    """What the model 'generates', per choice: the same for stream and non-stream."""
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        c: dict[str, Any] = {"content": [f"[{i}] " if n > 1 else "", *TEXT], "finish": "stop"}
        if scenario == "reasoning":
            c["reasoning"] = REASONING
        if scenario in ("tools_whole", "tools_split"):
            c = {"content": [], "finish": "tool_calls", "tools": TOOLS, "split": scenario == "tools_split"}
        if scenario == "length":
            c["content"] = TEXT[:3]
            c["finish"] = "length"
        choices.append(c)
    return {"choices": choices, "logprobs": bool(body.get("logprobs")), "usage": (11, 7 * n)}


def _lp(tok: str) -> dict:
    return {"token": tok, "logprob": -0.25, "bytes": list(tok.encode()), "top_logprobs": [{"token": tok, "logprob": -0.25, "bytes": list(tok.encode())}]}


def _chat_chunks(plan: dict, model: str, include_usage: bool) -> list[dict]:
    base = {"id": "chatcmpl-w", "object": "chat.completion.chunk", "created": 1760000000, "model": model}
    out = []

    def ch(i, delta, finish=None, logprobs=None):
        out.append({**base, "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None}]})

    for i in range(len(plan["choices"])):
        ch(i, {"role": "assistant", "content": ""})
    longest = max(len(c.get("content", [])) + len(c.get("reasoning", [])) for c in plan["choices"])
    for k in range(longest):  # interleave choices
        for i, c in enumerate(plan["choices"]):
            pieces = [("reasoning", p) for p in c.get("reasoning", [])] + [("content", p) for p in c["content"]]
            if k < len(pieces):
                kind, p = pieces[k]
                if kind == "content" and p == "":
                    continue
                lp = {"content": [_lp(p)]} if plan["logprobs"] and kind == "content" else None
                ch(i, {kind: p}, logprobs=lp)
    for i, c in enumerate(plan["choices"]):
        for ti, (tid, name, args) in enumerate(c.get("tools", [])):
            if c["split"]:
                ch(i, {"tool_calls": [{"index": ti, "id": tid, "type": "function", "function": {"name": name, "arguments": ""}}]})
                for a in args:
                    ch(i, {"tool_calls": [{"index": ti, "function": {"arguments": a}}]})
            else:
                ch(i, {"tool_calls": [{"index": ti, "id": tid, "type": "function", "function": {"name": name, "arguments": "".join(args)}}]})
        ch(i, {}, finish=c["finish"])
    if include_usage:
        p, n = plan["usage"]
        out.append({**base, "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}})
    return out


def _completion_chunks(plan: dict, model: str, include_usage: bool) -> list[dict]:
    base = {"id": "cmpl-w", "object": "text_completion", "created": 1760000000, "model": model}
    out = []
    for i, c in enumerate(plan["choices"]):
        for p in c["content"]:
            if p:
                out.append({**base, "choices": [{"index": i, "text": p, "logprobs": None, "finish_reason": None}]})
        out.append({**base, "choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": c["finish"]}]})
    if include_usage:
        p, n = plan["usage"]
        out.append({**base, "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}})
    return out


def _chat_response(plan: dict, model: str) -> dict:
    choices = []
    for i, c in enumerate(plan["choices"]):
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(c["content"]) or None, "tool_calls": [],
                               "reasoning": "".join(c["reasoning"]) if c.get("reasoning") else None}
        for tid, name, args in c.get("tools", []):
            msg["tool_calls"].append({"id": tid, "type": "function", "function": {"name": name, "arguments": "".join(args)}})
        lp = {"content": [_lp(p) for p in c["content"] if p]} if plan["logprobs"] else None
        choices.append({"index": i, "message": msg, "logprobs": lp, "finish_reason": c["finish"], "stop_reason": None})
    p, n = plan["usage"]
    return {"id": "chatcmpl-w", "object": "chat.completion", "created": 1760000000, "model": model, "choices": choices,
            "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n, "prompt_tokens_details": None},
            "system_fingerprint": None, "prompt_logprobs": None, "kv_transfer_params": None}


def _completion_response(plan: dict, model: str) -> dict:
    p, n = plan["usage"]
    return {"id": "cmpl-w", "object": "text_completion", "created": 1760000000, "model": model,
            "choices": [{"index": i, "text": "".join(c["content"]), "logprobs": None, "finish_reason": c["finish"]}
                        for i, c in enumerate(plan["choices"])],
            "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}}


def _sse(chunks: list[dict], *, ascii_escapes: bool) -> list[str]:
    return [f"data: {json.dumps(c, ensure_ascii=ascii_escapes)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]


def _era_c_slices(text: str) -> list[str]:
    """Arbitrary slices: cut every 7 chars, and also right inside each JSON escape
    (``\\ud83d|\\udc69``) and between the code points of a ZWJ emoji."""
    cuts = set(range(7, len(text), 7))
    for needle in ("\\ud83d", "\\u200d", "\U0001f469", "\u200d", "\\u00e9", "\n\nda"):
        start = 0
        while (j := text.find(needle, start)) != -1:
            cuts.add(j + 3)
            start = j + 1
    cuts = sorted(c for c in cuts if 0 < c < len(text))
    out, prev = [], 0
    for c in cuts:
        out.append(text[prev:c])
        prev = c
    out.append(text[prev:])
    return [s for s in out if s]


def _growing_batches(items: list, factor: int = 3, cap: int = 50) -> list[list]:
    out, size, k = [], 1, 0
    while k < len(items):
        out.append(items[k:k + size])
        k += size
        size = min(size * factor, cap)
    return out


async def _openai_mode(job_id: str, inp: dict):
    route = inp.get("openai_route", "/v1/chat/completions")
    if route == "/v1/models":
        yield {"object": "list", "data": [{"id": m, "object": "model", "created": 1760000000, "owned_by": "vllm"}
                                          for m in SERVED]}
        return
    body = inp.get("openai_input") or {}
    model = body.get("model", "")
    scenario = _scenario(inp)
    chat = route.endswith("/chat/completions")
    if scenario.startswith("error") and not scenario.endswith("midstream"):
        async for y in _errors(scenario):
            yield y
        return
    if scenario in ("slow", "slow_nonstream"):
        _markers(job_id, "started")
        try:
            if body.get("stream"):  # the role chunk and the first text delta, then silence
                yield "".join(_sse(_chat_chunks(_plan("hello", body), model, False), ascii_escapes=False)[:2])
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _markers(job_id, "cancelled")
            raise
        return
    plan = _plan(scenario, body)
    if not body.get("stream"):
        obj = _chat_response(plan, model) if chat else _completion_response(plan, model)
        yield json.dumps(obj) if model == "sglang" else obj
        return
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = (_chat_chunks if chat else _completion_chunks)(plan, model, include_usage)
    if scenario == "error_midstream":
        chunks = chunks[:4]
    if model == "chunk-list":
        for batch in _growing_batches(chunks):
            yield batch
        return
    if model == "sglang":
        for c in chunks:
            pretty = json.dumps(c, indent=4, ensure_ascii=False)
            yield "".join(f"data: {line}\n" for line in pretty.split("\n")) + "\n"
        if scenario == "error_midstream":
            yield 'data: {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}\n\n'
        yield "data: [DONE]\n\n"
        return
    events = _sse(chunks, ascii_escapes=(model == "era-c"))
    if scenario == "error_midstream":
        events.insert(-1, 'data: {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}\n\n')
    if model == "era-b":
        for batch in _growing_batches(events):
            yield "".join(batch)
        return
    for piece in _era_c_slices("".join(events)):
        yield piece
        if scenario == "dribble":  # a stream that spans many /stream polls
            await asyncio.sleep(0.05)


async def _errors(scenario: str):
    if scenario == "error_nested":  # worker-vllm >= v2.12.1: FAILED, repr of the inner dict
        yield {"error": {"message": "This model's maximum context length is 4096 tokens.", "type": "BadRequestError", "param": None, "code": 400}}
    elif scenario == "error_flat":  # worker-vllm <= v2.12.0: COMPLETED with a flat error object
        yield {"object": "error", "message": "The model `nope` does not exist.", "type": "NotFoundError", "param": None, "code": 404}
    elif scenario == "error_vllm_http":  # Era C
        yield {"error": {"message": 'vLLM returned HTTP 400: {"error": {"message": "top_p must be in (0, 1]", "type": "BadRequestError", "param": "top_p", "code": 400}}', "type": "worker_error", "code": None}}
    elif scenario == "error_raise":
        raise RuntimeError("the engine crashed")
    elif scenario == "error_string":
        yield {"error": "Invalid prompt"}


async def _native_mode(inp: dict):
    """worker-vllm Era B native: {"choices":[{"tokens":[...]}],"usage":{"input","output"}}."""
    scenario = _scenario(inp)
    if scenario.startswith("error"):
        async for y in _errors(scenario):
            yield y
        return
    sp = inp.get("sampling_params") or {}
    n = int(sp.get("n") or 1)
    toks = [TEXT[:] for _ in range(n)]
    if not inp.get("stream"):
        yield {"choices": [{"tokens": ["".join(t)]} for t in toks], "usage": {"input": 11, "output": len(TEXT) * n}}
        return
    count = 0
    for batch in _growing_batches(list(range(len(TEXT)))):
        count += len(batch) * n
        yield {"choices": [{"tokens": [t[k] for k in batch]} for t in toks], "usage": {"input": 11, "output": count}}


#: scenario ``count``: a text worker generates COUNT tokens of WORD, cut at the request's limit
COUNT = 20
WORD = " word"  # one token, for tiktoken too


async def _text_mode(inp: dict):
    """worker-tgi: {"text": delta} per token (``sampling_params``); plain strings otherwise."""
    scenario = _scenario(inp)
    if scenario.startswith("error"):
        async for y in _errors(scenario):
            yield y
        return
    tgi = isinstance(inp.get("sampling_params"), dict)
    tokens = TEXT
    if scenario == "count":  # like a real worker: stops at max_new_tokens / max_tokens, says nothing
        limit = inp["sampling_params"].get("max_new_tokens") if tgi else \
            (inp.get("max_completion_tokens") or inp.get("max_tokens"))
        tokens = [WORD] * min(COUNT, limit or COUNT)
    for t in tokens:
        yield {"text": t} if tgi else t


async def handler(job):
    inp = job["input"]
    if "openai_route" in inp:
        gen = _openai_mode(job["id"], inp)
    elif "sampling_params" in inp and "stream" in inp:
        gen = _native_mode(inp)
    else:
        gen = _text_mode(inp)
    async for y in gen:
        yield y


async def plain(job):
    """A non-generator handler (nothing reaches ``/stream``; the output exists only in
    ``/status``): the whole text at once, as custom text workers often do."""
    return "".join(TEXT)
