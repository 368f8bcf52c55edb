"""Events → OpenAI chunks and aggregated responses; streamed text == non-streamed text."""

from __future__ import annotations

import msgspec
import pytest

from adapters.assemble import Aggregator, StreamAssembler, aggregate
from adapters.events import (
    Finish, LogprobsDelta, ReasoningDelta, TextDelta, ToolCallDelta, Usage,
)
from adapters.formats import get_format
from adapters.openai_protocol import decode_chat_request

from . import shapes as S


def js(objs):
    return [msgspec.json.decode(msgspec.json.encode(o)) for o in objs]


def run_stream(events_batches, **kw):
    a = StreamAssembler(kw.pop("kind", "chat"), id="chatcmpl-pg", model="client-model", created=7, **kw)
    out = []
    for batch in events_batches:
        out.extend(a.feed(batch))
    out.extend(a.finish())
    return a, js(out)


def streamed_content(chunks, index=0, field="content"):
    return "".join(c["choices"][0]["delta"].get(field, "") for c in chunks
                   if c.get("choices") and c["choices"][0]["index"] == index)


def test_basic_chat_stream_rules():
    evs = [[TextDelta("Hel"), TextDelta("lo")], [Finish("stop"), Usage(3, 2)]]
    _, chunks = run_stream(evs)
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": "Hel"}, {"content": "lo"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for c in chunks:
        assert (c["id"], c["object"], c["created"], c["model"]) == ("chatcmpl-pg", "chat.completion.chunk", 7, "client-model")
        assert "usage" not in c and c["choices"][0]["logprobs"] is None


def test_include_usage_final_chunk_and_null_usage():
    _, chunks = run_stream([[TextDelta("a"), Finish("stop"), Usage(3, 1)]], include_usage=True)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_usage_estimate_passed_to_finish_when_worker_has_none():
    a = StreamAssembler(id="i", model="m", include_usage=True)
    a.feed([TextDelta("abc")])
    assert a.usage is None and a.completion_texts() == ["abc"]
    out = js(a.finish(usage=Usage(9, 1)))
    assert out[0]["choices"][0]["finish_reason"] == "stop"
    assert out[-1]["usage"]["total_tokens"] == 10


def test_first_chunk_role_for_each_choice_and_empty_choice():
    evs = [[TextDelta("a", 0), TextDelta("x", 1), TextDelta("b", 0), Finish("stop", 0), Finish("length", 1), Finish("stop", 2)]]
    _, chunks = run_stream(evs)
    roles = [(c["choices"][0]["index"], c["choices"][0]["delta"].get("role")) for c in chunks]
    assert roles[:3] == [(0, "assistant"), (1, "assistant"), (0, None)]
    last = chunks[-1]["choices"][0]
    assert last == {"index": 2, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": "stop"}


def test_tool_call_deltas_first_fragment_complete_later_minimal():
    evs = [[ToolCallDelta(0, id="call_a", name="f", arguments=""), ToolCallDelta(0, arguments='{"x":'),
            ToolCallDelta(0, arguments="1}"), ToolCallDelta(1, name="g"), ToolCallDelta(1, arguments="{}"),
            ToolCallDelta(1, arguments="")]]
    _, chunks = run_stream(evs)
    tcs = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "content" not in chunks[0]["choices"][0]["delta"]
    assert tcs[0] == {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert tcs[1] == {"index": 0, "function": {"arguments": '{"x":'}}
    assert tcs[3]["id"].startswith("call_") and tcs[3]["type"] == "function" and tcs[3]["function"] == {"name": "g", "arguments": ""}
    assert tcs[5] == {"index": 1, "function": {"arguments": ""}}  # empty fragments are fine
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # synthesised by finish()


def test_tool_name_arriving_after_the_first_fragment_is_kept():
    _, chunks = run_stream([[ToolCallDelta(0, id="c", arguments=""), ToolCallDelta(0, name="late", arguments="{}"),
                             ToolCallDelta(0, name="late", arguments="")]])
    tcs = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-1]]
    assert tcs[0] == {"index": 0, "id": "c", "type": "function", "function": {"arguments": ""}}
    assert tcs[1] == {"index": 0, "function": {"name": "late", "arguments": "{}"}}
    assert tcs[2] == {"index": 0, "function": {"arguments": ""}}


def test_whole_tool_call_in_one_delta_keeps_id_and_name():
    _, chunks = run_stream([[ToolCallDelta(0, id="call_z", name="f", arguments='{"a":1}'), Finish("tool_calls")]])
    assert chunks[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_z", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    assert chunks[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_logprobs_and_reasoning_in_chunks():
    lp = {"content": [{"token": "A", "logprob": -0.1, "bytes": [65], "top_logprobs": []}]}
    _, chunks = run_stream([[ReasoningDelta("hm"), TextDelta("A"), LogprobsDelta(lp), Finish("stop")]])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "A", "reasoning_content": "hm"}
    assert chunks[0]["choices"][0]["logprobs"] == lp and chunks[0]["choices"][0]["finish_reason"] == "stop"
    _, chunks = run_stream([[ReasoningDelta("hm"), TextDelta("A")]], reasoning_field="reasoning")
    assert chunks[0]["choices"][0]["delta"]["reasoning"] == "hm"
    _, chunks = run_stream([[ReasoningDelta("hm"), TextDelta("A")]], reasoning_field="none")
    assert "reasoning" not in chunks[0]["choices"][0]["delta"] and "reasoning_content" not in chunks[0]["choices"][0]["delta"]


def test_completion_kind_chunks_and_aggregate():
    _, chunks = run_stream([[TextDelta("Once"), TextDelta(" upon"), Finish("length")]], kind="completion")
    assert [c["choices"][0]["text"] for c in chunks] == ["Once", " upon"]
    assert chunks[0]["object"] == "text_completion" and chunks[-1]["choices"][0]["finish_reason"] == "length"
    res = js([aggregate([TextDelta("Once"), TextDelta(" upon"), Finish("length"), Usage(1, 2)], "completion", id="cmpl", model="m", created=1)])[0]
    assert res["choices"] == [{"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"}]
    assert res["usage"]["total_tokens"] == 3


def test_aggregate_tool_calls_reasoning_logprobs_and_missing_choice():
    lp1 = {"content": [{"token": "a"}]}
    lp2 = {"content": [{"token": "b"}]}
    evs = [ReasoningDelta("r1"), ReasoningDelta("r2"), ToolCallDelta(0, id="c1", name="f", arguments='{"a":'),
           ToolCallDelta(0, arguments="1}"), ToolCallDelta(1, name="g", arguments="{}"),
           LogprobsDelta(lp1), LogprobsDelta(lp2), Finish("tool_calls")]
    res = js([aggregate(evs, id="x", model="m", created=1, n=2)])[0]
    m0 = res["choices"][0]["message"]
    assert m0["content"] is None and m0["reasoning_content"] == "r1r2"
    assert m0["tool_calls"][0] == {"id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}, "type": "function"}
    assert m0["tool_calls"][1]["id"].startswith("call_") and m0["tool_calls"][1]["function"]["name"] == "g"
    assert res["choices"][0]["logprobs"] == {"content": [{"token": "a"}, {"token": "b"}]}
    assert res["choices"][1] == {"index": 1, "message": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None, "finish_reason": "stop"}
    assert res["usage"] is None


def test_aggregate_usage_override():
    agg = Aggregator(id="i", model="m")
    agg.feed([TextDelta("abc")])
    assert agg.completion_texts() == ["abc"]
    assert agg.result(usage=Usage(2, 1)).usage.total_tokens == 3


# --- streamed == non-streamed, end to end through the decoders ---------------------------

def _chat_req(**kw):
    return decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


SCENARIOS = {
    "era_c_slices": ("vllm", lambda: S.era_c_slices(S.sse_text(S.hello_chunks()), [5, 11, 2])),
    "era_c_bytes": ("vllm", lambda: [b[i:i + 3] for b in [S.sse_text(S.hello_chunks()).encode()] for i in range(0, len(b), 3)]),
    "era_b_batches": ("vllm", lambda: S.era_b_batches(S.hello_chunks())),
    "era_b_lists": ("vllm", lambda: S.era_b_chunk_lists(S.hello_chunks())),
    "sglang": ("sglang", lambda: [S.sglang_event(c) for c in S.hello_chunks()] + ["data: [DONE]\n\n"]),
    "native": ("vllm-native", lambda: [S.native_item([["Hé", "llo"], ["x"]], 3, 2), S.native_item([[" 世界🎉"], ["", "y"]], 3, 5)]),
    "tools_split": ("vllm", lambda: S.era_c_slices(S.sse_text([
        S.chat_chunk("Let me check. "),
        S.chat_chunk(tool_calls=[S.tool_call(0, id="call_q", name="lookup", arguments="")]),
        S.chat_chunk(tool_calls=[S.tool_call(0, arguments='{"q": "é"}')]),
        S.chat_chunk(finish="tool_calls"), S.usage_chunk(4, 9)]), [9])),
    "tgi": ("tgi", lambda: [{"text": "Hel"}, {"text": "lo 🎉"}]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_streamed_equals_non_streamed(name):
    fmt, items = SCENARIOS[name]
    req = _chat_req(n=2) if name == "native" else _chat_req()
    f = get_format(fmt)
    # streaming path: feed items as they come, assemble chunks
    dec = f.decoder("chat", request=req)
    a = StreamAssembler(id="i", model="m", include_usage=True)
    chunks = []
    for it in items():
        chunks.extend(a.feed(dec.feed(it)))
    chunks.extend(a.feed(dec.close()))
    chunks.extend(a.finish())
    chunks = js(chunks)
    # non-stream path: the aggregated output (list of every yield)
    res = js([aggregate(f.decoder("chat", request=req).decode_final(items()), id="i", model="m", n=req.choices)])[0]
    for ch in res["choices"]:
        i = ch["index"]
        assert streamed_content(chunks, i) == (ch["message"]["content"] or "")
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["index"] == i and c["choices"][0]["finish_reason"]]
        assert finishes == [ch["finish_reason"]]
        streamed_args = "".join(tc["function"].get("arguments", "") for c in chunks if c["choices"] and c["choices"][0]["index"] == i
                                for tc in c["choices"][0]["delta"].get("tool_calls", []))
        assert streamed_args == "".join(tc["function"]["arguments"] for tc in ch["message"].get("tool_calls", []))
    if res["usage"] is not None:
        assert chunks[-1]["usage"] == res["usage"]
    if name in ("era_c_bytes", "era_b_batches", "era_b_lists", "sglang"):  # era_c_slices: U+FFFD upstream
        assert res["choices"][0]["message"]["content"] == S.HELLO_TEXT
