"""Worker output items → normalized events, for every shape in worker-formats.md."""

from __future__ import annotations

import json

import pytest

from adapters.events import (
    ErrorEvent, Finish, LogprobsDelta, ReasoningDelta, TextDelta, ToolCallDelta, Usage,
)
from adapters.formats import get_format
from adapters.openai_protocol import decode_chat_request, decode_completion_request

from . import shapes as S


def chat_req(**kw):
    return decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def stream(fmt: str, items, kind="chat", request=None):
    d = get_format(fmt).decoder(kind, request=request)
    out = []
    for it in items:
        out.extend(d.feed(it))
    out.extend(d.close())
    return out


def final(fmt: str, output, kind="chat", request=None):
    return get_format(fmt).decoder(kind, request=request).decode_final(output)


def text(events, index=0, cls=TextDelta):
    return "".join(e.text for e in events if type(e) is cls and e.index == index)


def of(events, cls):
    return [e for e in events if type(e) is cls]


HELLO_SSE = S.sse_text(S.hello_chunks())


def check_hello(events):
    assert text(events) == S.HELLO_TEXT
    assert of(events, Finish) == [Finish("stop", 0)]
    assert of(events, Usage) == [Usage(5, len(S.HELLO_PIECES))]
    assert not of(events, ErrorEvent)


# --- worker-vllm Era C: arbitrary slices of vLLM's SSE ------------------------------------

@pytest.mark.parametrize("sizes", [[1], [2, 3], [7], [13, 1, 40], [10_000]])
def test_era_c_slices_split_mid_event(sizes):
    # slices at byte boundaries that never split a UTF-8 character decode cleanly
    body = HELLO_SSE
    pieces, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        pieces.append(body[i:i + n])
        i, k = i + n, k + 1
    check_hello(stream("vllm", pieces))


def test_era_c_split_mid_utf8_character_as_bytes():
    raw = HELLO_SSE.encode()
    pieces = [raw[i:i + 1] for i in range(len(raw))]  # every multi-byte character split
    check_hello(stream("vllm", pieces))


def test_era_c_split_mid_utf8_character_as_replaced_str():
    # worker-vllm HEAD decodes each slice with errors="replace": the split char is lost
    # upstream; podgate must still produce a consistent stream (no crash, no drop).
    pieces = S.era_c_slices(HELLO_SSE, [3])
    events = stream("vllm", pieces)
    t = text(events)
    assert "\ufffd" in t and t.replace("\ufffd", "") != ""
    assert of(events, Finish) == [Finish("stop", 0)]
    assert final("vllm", pieces) == events


# --- worker-vllm Era B ---------------------------------------------------------------------

def test_era_b_growing_batches_of_whole_events():
    batches = S.era_b_batches(S.hello_chunks())
    assert len(batches) >= 3
    check_hello(stream("vllm", batches))
    check_hello(final("vllm", batches))  # aggregate output = the list of yields


def test_era_b_raw_openai_output_0_chunk_lists():
    lists = S.era_b_chunk_lists(S.hello_chunks())
    check_hello(stream("vllm", lists))
    check_hello(final("vllm", lists))


def test_non_stream_chat_completion_in_aggregate_list():
    out = [S.chat_completion("Paris is the capital of France.")]
    events = final("vllm", out)
    assert events == [TextDelta("Paris is the capital of France.", 0), Finish("stop", 0), Usage(23, 8)]


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_reasoning_both_names(key):
    events = final("vllm", [S.chat_completion("42", reasoning="think", reasoning_key=key)])
    assert text(events, cls=ReasoningDelta) == "think" and text(events) == "42"
    chunks = [S.chat_chunk(reasoning="th", reasoning_key=key), S.chat_chunk(reasoning="ink", reasoning_key=key),
              S.chat_chunk("42"), S.chat_chunk(finish="stop")]
    events = stream("vllm", [S.sse_text(chunks)])
    assert text(events, cls=ReasoningDelta) == "think" and text(events) == "42"


def test_tool_call_deltas_split():
    chunks = [
        S.chat_chunk(role="assistant", content=""),
        S.chat_chunk(tool_calls=[S.tool_call(0, id="call_a", name="get_weather", arguments="")]),
        S.chat_chunk(tool_calls=[S.tool_call(0, arguments='{"city": ')]),
        S.chat_chunk(tool_calls=[S.tool_call(0, arguments='"Paris"}')]),
        S.chat_chunk(tool_calls=[S.tool_call(1, id="call_b", name="get_time", arguments="{}")]),
        S.chat_chunk(finish="tool_calls"),
    ]
    events = stream("vllm", S.era_c_slices(S.sse_text(chunks), [17]))
    tcs = of(events, ToolCallDelta)
    assert tcs[0] == ToolCallDelta(tool_index=0, id="call_a", name="get_weather", arguments="")
    assert "".join(t.arguments for t in tcs if t.tool_index == 0) == '{"city": "Paris"}'
    assert tcs[-1] == ToolCallDelta(tool_index=1, id="call_b", name="get_time", arguments="{}")
    assert of(events, Finish) == [Finish("tool_calls", 0)]


def test_tool_call_whole_in_one_delta_and_non_stream():
    chunk = S.chat_chunk(tool_calls=[S.tool_call(0, id="call_x", name="f", arguments='{"a": 1}')], finish="tool_calls")
    events = stream("vllm", [S.sse_text([chunk])])
    assert of(events, ToolCallDelta) == [ToolCallDelta(tool_index=0, id="call_x", name="f", arguments='{"a": 1}')]
    msg_calls = [{"id": "call_y", "type": "function", "function": {"name": "g", "arguments": "{}"}}]
    events = final("vllm", [S.chat_completion(None, tool_calls=msg_calls, finish="tool_calls")])
    assert of(events, ToolCallDelta) == [ToolCallDelta(tool_index=0, id="call_y", name="g", arguments="{}")]
    assert of(events, Finish) == [Finish("tool_calls", 0)]


def test_logprobs_chat_stream():
    lp1 = {"content": [{"token": "A", "logprob": -0.1, "bytes": [65], "top_logprobs": []}]}
    lp2 = {"content": [{"token": "B", "logprob": -0.2, "bytes": [66], "top_logprobs": []}]}
    events = stream("vllm", [S.sse_text([S.chat_chunk("A", logprobs=lp1), S.chat_chunk("B", logprobs=lp2, finish="stop")])])
    assert of(events, LogprobsDelta) == [LogprobsDelta(lp1, 0), LogprobsDelta(lp2, 0)]


def test_n_greater_than_one_interleaved():
    chunks = [S.chat_chunk("a", index=0), S.chat_chunk("x", index=1), S.chat_chunk("b", index=0),
              S.chat_chunk("y", index=1, finish="length"), S.chat_chunk(index=0, finish="stop")]
    events = stream("vllm", [S.sse_text(chunks)], request=chat_req(n=2))
    assert text(events, 0) == "ab" and text(events, 1) == "xy"
    assert sorted(of(events, Finish), key=lambda f: f.index) == [Finish("stop", 0), Finish("length", 1)]


def test_completions_stream_and_non_stream():
    lp = {"tokens": ["a"], "token_logprobs": [-0.5], "top_logprobs": [None], "text_offset": [0]}
    chunks = [S.completion_chunk("Once", logprobs=lp), S.completion_chunk(" upon", finish="length")]
    events = stream("vllm", [S.sse_text(chunks)], kind="completion")
    assert text(events) == "Once upon" and of(events, Finish) == [Finish("length", 0)]
    assert of(events, LogprobsDelta) == [LogprobsDelta(lp, 0)]
    obj = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    assert final("vllm", [obj], kind="completion") == [TextDelta("Once upon", 0), Finish("length", 0), Usage(3, 2)]


def test_in_stream_error_event_after_text():
    body = S.sse_event(S.chat_chunk("partial")) + S.sse_event(
        {"error": {"message": "engine died", "type": "InternalServerError", "param": None, "code": 500}})
    events = stream("vllm", [body])
    assert text(events) == "partial"
    (err,) = of(events, ErrorEvent)
    assert err.status == 500 and err.message == "engine died"


def test_flat_error_object_in_output_completed_job():
    flat = {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "param": None, "code": 404}
    (err,) = final("vllm", [flat])
    assert err.status == 404
    (err,) = stream("vllm", [S.sse_event(flat)])
    assert err.status == 404


def test_unreadable_and_empty_output():
    (err,) = final("vllm", None)
    assert err.status == 502
    (err,) = final("vllm", [{"object": "list", "data": []}])
    assert err.status == 502 and "cannot read" in err.message
    (err,) = final("vllm", ["Internal Server Error"])
    assert err.status == 502 and "Internal Server Error" in err.message
    events = stream("vllm", ["data: {not json}\n\n"])
    assert of(events, ErrorEvent)[0].status == 502


# --- worker-vllm native (Era B / A) --------------------------------------------------------

def test_native_stream_growing_batches_and_finish_inference():
    items = [
        S.native_item([[" How"]], 23, 1),
        S.native_item([[" are", "", " you"]], 23, 4),
        S.native_item([["?"]], 23, 5),
    ]
    events = stream("vllm-native", items, request=chat_req(max_tokens=100))
    assert text(events) == " How are you?"
    assert of(events, Usage)[-1] == Usage(23, 5)
    assert of(events, Finish) == [Finish("stop", 0)]
    events = stream("vllm-native", items, request=chat_req(max_tokens=5))
    assert of(events, Finish) == [Finish("length", 0)]
    assert final("vllm-native", items, request=chat_req(max_tokens=5)) == events


def test_native_n2_with_empty_token_lists():
    items = [S.native_item([["a"], []], 7, 1), S.native_item([[], ["x", "y"]], 7, 3), S.native_item([["b"], []], 7, 4)]
    events = stream("vllm-native", items, request=chat_req(n=2, max_tokens=4))
    assert text(events, 0) == "ab" and text(events, 1) == "xy"
    # n > 1: the shared event count says nothing per choice → "stop"
    assert sorted(of(events, Finish), key=lambda f: f.index) == [Finish("stop", 0), Finish("stop", 1)]


def test_native_non_stream():
    out = [{"choices": [{"tokens": ["Paris is the capital of France."]}], "cost": 0.0001, "usage": {"input": 10, "output": 100}}]
    events = final("vllm-native", out, request=chat_req())
    assert events == [TextDelta("Paris is the capital of France.", 0), Usage(10, 100), Finish("stop", 0)]


def test_native_endpoint_updated_to_era_c_answers_openai():
    # same native input, Era C image: OpenAI JSON comes back
    events = final("vllm-native", [S.chat_completion("hi")])
    assert text(events) == "hi" and of(events, Finish) == [Finish("stop", 0)]


def test_era_a0_and_a1():
    items = [{"text": ["Hel"], "input_tokens": 5, "output_tokens": 1}, {"text": ["lo"], "input_tokens": 0, "output_tokens": 2}]
    events = stream("vllm-native", items)
    assert text(events) == "Hello" and of(events, Usage)[-1] == Usage(5, 2) and of(events, Finish) == [Finish("stop", 0)]
    events = stream("vllm-native", [{"text": "Hel"}, {"text": "lo"}])
    assert text(events) == "Hello" and of(events, Finish) == [Finish("stop", 0)]


# --- sglang --------------------------------------------------------------------------------

def test_sglang_multiline_events_one_per_yield():
    items = [S.sglang_event(c) for c in S.hello_chunks()] + ["data: [DONE]\n\n"]
    assert items[1].count("data: ") > 3  # really multi-line
    check_hello(stream("sglang", items))
    check_hello(final("sglang", items))


def test_sglang_non_stream_json_string_and_error_body():
    line = json.dumps(S.chat_completion("hello"))
    events = final("sglang", [line])
    assert text(events) == "hello" and of(events, Usage) == [Usage(23, 8)]
    (err,) = final("sglang", [json.dumps({"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": 400})])
    assert err.status == 400


def test_sglang_generate_meta_info():
    out = {"text": "abc", "meta_info": {"id": "1", "finish_reason": {"type": "length", "length": 16}, "prompt_tokens": 5, "completion_tokens": 16}}
    assert final("sglang", out) == [TextDelta("abc", 0), Finish("length", 0), Usage(5, 16)]


# --- tgi / text ----------------------------------------------------------------------------

def test_tgi_text_dicts_and_plain_strings():
    events = stream("tgi", [{"text": "Hel"}, {"text": "lo"}])
    assert text(events) == "Hello" and of(events, Finish) == [Finish("stop", 0)] and not of(events, Usage)
    events = stream("text", ["data: is ", "not SSE here"])
    assert text(events) == "data: is not SSE here"
    assert final("text", ["a", {"text": "b"}, "c"]) == [TextDelta("a", 0), TextDelta("b", 0), TextDelta("c", 0), Finish("stop", 0)]
    # aggregate from the old pinned SDK fork: {"text": joined}
    assert text(final("tgi", {"text": "joined"})) == "joined"


def test_text_format_length_inference_needs_a_count():
    # no usage: too short to reach the limit → "stop"; long enough → left open for
    # podgate's own count (tests/adapters/test_text_output.py)
    assert of(stream("text", ["abc"], request=chat_req(max_tokens=4)), Finish) == [Finish("stop", 0)]
    assert of(stream("text", ["abc"], request=chat_req(max_tokens=1)), Finish) == []


def test_completion_decoder_for_native():
    req = decode_completion_request({"model": "m", "prompt": "x", "max_tokens": 3})
    events = stream("vllm-native", [S.native_item([["a", "b", "c"]], 1, 3)], kind="completion", request=req)
    assert text(events) == "abc" and of(events, Finish) == [Finish("length", 0)]
