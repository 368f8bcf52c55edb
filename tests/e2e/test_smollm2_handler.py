"""The built-in SmolLM2 handler, driven directly as the runpod SDK drives it (an async
generator called with the job dict), on the real model: what it yields for each route,
that it honours the sampling parameters, its Era C errors, and that a stopped job stops
the generation."""

from __future__ import annotations

import asyncio
import json

import pytest

from workers import smollm2

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def server():
    return smollm2.get_server(threads=1)  # the suite shares two cores with other processes


async def run(inp) -> list:
    return [y async for y in smollm2.handler({"id": "job-1", "input": inp})]


def sse_events(yields: list[str]) -> list:
    """The data payloads of the SSE text the handler yielded ("[DONE]" kept as a string)."""
    text = "".join(yields)
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_models_is_a_get(server):
    for inp in ({"openai_route": "/v1/models"}, {"openai_route": "/v1/models", "openai_input": {}}):
        (out,) = await run(inp)
        assert out["object"] == "list"
        assert [m["id"] for m in out["data"]] == ["smollm2-135m-instruct"]


async def test_chat_non_stream_has_text_usage_and_finish(server):
    (out,) = await run({"openai_route": CHAT, "openai_input": {"messages": HELLO, "max_tokens": 12, "temperature": 0}})
    assert out["object"] == "chat.completion"
    assert out["model"] == "smollm2-135m-instruct"  # filled in when the body names none
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_stream_is_sse_with_role_text_finish_usage_done(server):
    body = {"messages": HELLO, "max_tokens": 12, "temperature": 0, "seed": 3}
    (whole,) = await run({"openai_route": CHAT, "openai_input": body})
    yields = await run({"openai_route": CHAT, "openai_input": {**body, "stream": True,
                                                               "stream_options": {"include_usage": True}}})
    assert all(isinstance(y, str) for y in yields)
    events = sse_events(yields)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1] == "[DONE]"
    usage_chunk, finish_chunk = events[-2], events[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
    assert finish_chunk["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == whole["choices"][0]["message"]["content"]  # streamed == non-streamed
    assert {e["id"] for e in events[:-1]} == {events[0]["id"]}


async def test_stream_without_include_usage_has_no_usage(server):
    events = sse_events(await run({"openai_route": CHAT, "openai_input": {
        "messages": HELLO, "max_tokens": 4, "temperature": 0, "stream": True}}))
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_max_tokens_and_max_completion_tokens_are_honoured(server):
    (out,) = await run({"openai_route": COMPLETIONS, "openai_input": {
        "prompt": "Once upon a time", "max_tokens": 5, "ignore_eos": True}})
    assert out["object"] == "text_completion"
    assert out["usage"]["completion_tokens"] == 5 and out["choices"][0]["finish_reason"] == "length"
    (out,) = await run({"openai_route": CHAT, "openai_input": {
        "messages": HELLO, "max_completion_tokens": 3, "ignore_eos": True}})
    assert out["usage"]["completion_tokens"] == 3


async def test_stop_string_ends_the_text_before_it(server):
    body = {"prompt": "The sea is", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    (free,) = await run({"openai_route": COMPLETIONS, "openai_input": body})
    text = free["choices"][0]["text"]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert len(stop) == 3
    for stream in (False, True):
        inp = {"openai_route": COMPLETIONS, "openai_input": {**body, "stop": [stop, "never-seen"], "stream": stream}}
        if stream:
            events = sse_events(await run(inp))
            got = "".join(e["choices"][0]["text"] for e in events[:-1])
            finish = events[-2]["choices"][0]["finish_reason"]
        else:
            (out,) = await run(inp)
            got, finish = out["choices"][0]["text"], out["choices"][0]["finish_reason"]
        assert got == text[: text.index(stop)]
        assert finish == "stop"


async def chat_text(**body) -> str:
    (out,) = await run({"openai_route": CHAT, "openai_input": {"messages": HELLO, "max_tokens": 16, **body}})
    return out["choices"][0]["message"]["content"]


async def test_seed_temperature_and_top_p_are_honoured(server):
    # the same seed samples the same text; other seeds (almost surely) other texts
    assert await chat_text(temperature=1.0, top_p=0.9, seed=1234) == await chat_text(temperature=1.0, top_p=0.9, seed=1234)
    assert len({await chat_text(temperature=1.5, seed=s) for s in (1, 2, 3)}) > 1
    # a vanishing top_p leaves only the likeliest token: greedy, whatever the seed or temperature
    greedy = await chat_text(temperature=0)
    assert await chat_text(temperature=1.5, top_p=1e-9, seed=7) == greedy


async def test_a_generation_does_not_depend_on_the_request_before_it(server):
    # llama-cpp-python reuses the KV cache of the previous prompt's common prefix; the logits
    # then depend on how that prefix was evaluated (in which batch), and so does the text
    other = {"openai_route": COMPLETIONS, "openai_input": {"prompt": "Name a colour:", "max_tokens": 2}}
    texts = []
    for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 2}):
        await run(other)
        after_other = await chat_text(**sampling)
        after_same = await chat_text(**sampling)  # its whole prompt is the cached prefix
        assert after_other == after_same
        texts.append(after_same)
    assert texts[0] != texts[1]  # the sampled text is not the greedy one: sampling was on


async def test_tools_the_model_may_leave_uncalled_are_ignored(server):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for choice in ("auto", {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "f"}}]}}):
        (out,) = await run({"openai_route": CHAT, "openai_input": {
            "messages": HELLO, "max_tokens": 2, "tools": tools, "tool_choice": choice}})
        assert out["object"] == "chat.completion", out


async def test_shorthand_messages_input_maps_to_chat(server):
    (out,) = await run({"messages": HELLO, "sampling_params": {"max_tokens": 4, "temperature": 0}})
    assert out["object"] == "chat.completion" and out["usage"]["completion_tokens"] <= 4


@pytest.mark.parametrize("inp, status, needle", [
    ({"openai_route": CHAT, "openai_input": {"messages": HELLO, "n": 2}}, 400, '"param":"n"'),
    ({"openai_route": CHAT, "openai_input": {"messages": HELLO, "model": "gpt-4"}}, 404, "does not exist"),
    ({"openai_route": CHAT, "openai_input": {"messages": "hi"}}, 400, '"param":"messages"'),
    ({"openai_route": CHAT, "openai_input": {"messages": HELLO, "max_tokens": 10**6}}, 400, "maximum context length"),
    ({"openai_route": CHAT, "openai_input": {"messages": HELLO, "logprobs": True}}, 400, "logprobs"),
    ({"openai_route": CHAT, "openai_input": {"messages": HELLO, "tool_choice": "required",
                                              "tools": [{"type": "function", "function": {"name": "f"}}]}},
     400, "tool_choice"),
    ({"openai_route": CHAT}, 405, "Method Not Allowed"),
    ({"openai_route": "/v1/embeddings", "openai_input": {"input": "x"}}, 404, "Not Found"),
    ({"openai_route": COMPLETIONS, "openai_input": {"prompt": ["a", "b"]}}, 400, "Batched prompts"),
    ({"openai_route": COMPLETIONS, "openai_input": {"prompt": ""}}, 400, "The prompt is empty"),
    ({"something": "else"}, None, "none of openai_route"),
    ("not an object", None, "must be a JSON object"),
])
async def test_errors_take_era_c_shape(server, inp, status, needle):
    (out,) = await run(inp)
    assert set(out) == {"error"}  # a dict with a truthy "error": the SDK marks the job FAILED
    err = out["error"]
    assert err["type"] == "worker_error" and err["code"] is None
    if status is not None:
        assert err["message"].startswith(f"vLLM returned HTTP {status}: ")
        json.loads(err["message"].split(": ", 1)[1])  # vLLM's body survives as JSON
    assert needle in err["message"]


async def test_closing_the_stream_stops_generation(server):
    """The SDK cancels a stopped job's task; the handler's generator is then closed. Either
    way the generating thread must stop within a token, not run to max_tokens."""
    engine = server.engine
    await engine.idle()
    before = engine.tokens_generated
    agen = smollm2.handler({"id": "j", "input": {"openai_route": CHAT, "openai_input": {
        "messages": HELLO, "max_tokens": 2000, "ignore_eos": True, "stream": True}}})
    seen = 0
    async for item in agen:
        seen += item.count('"content":')
        if seen >= 3:
            break
    await agen.aclose()
    await engine.idle()
    assert engine.tokens_generated - before < 200


async def test_cancelling_the_job_task_stops_generation(server):
    engine = server.engine
    await engine.idle()
    before = engine.tokens_generated
    first = asyncio.Event()

    async def job():
        async for _ in smollm2.handler({"id": "j", "input": {"openai_route": CHAT, "openai_input": {
                "messages": HELLO, "max_tokens": 2000, "ignore_eos": True, "stream": True}}}):
            if engine.tokens_generated > before:
                first.set()

    task = asyncio.create_task(job())
    await asyncio.wait_for(first.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await engine.idle()
    assert engine.tokens_generated - before < 200
    # and the engine serves the next request at once
    (out,) = await run({"openai_route": CHAT, "openai_input": {"messages": HELLO, "max_tokens": 2}})
    assert out["usage"]["completion_tokens"] <= 2
