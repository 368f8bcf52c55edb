"""Finish reasons for text-only workers (tgi, text) that report none: ``"length"`` when the
completion reached the token limit (issue 7), by the worker's items (tgi: one per token)
or by podgate's own count on the OpenAI side (text), never when it did not."""

from __future__ import annotations

import msgspec

from adapters.assemble import Aggregator, StreamAssembler
from adapters.events import Finish, TextDelta, Usage
from adapters.formats import get_format
from adapters.formats.base import finish_for_count
from adapters.openai_protocol import decode_chat_request, decode_completion_request


def chat_req(**kw):
    return decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def stream(fmt, items, request):
    d = get_format(fmt).decoder("chat", request=request)
    out = []
    for it in items:
        out.extend(d.feed(it))
    return out + d.close()


def finishes(events):
    return [e for e in events if type(e) is Finish]


def test_finish_for_count():
    assert finish_for_count(5, 5) == finish_for_count(6, 5) == "length"
    assert finish_for_count(4, 5) == finish_for_count(0, None) == finish_for_count(9, 0) == "stop"


def test_tgi_counts_its_items():
    tokens = [{"text": t} for t in ["a", "b", "", "c"]]  # an empty token text is still a token
    assert finishes(stream("tgi", tokens, chat_req(max_tokens=4))) == [Finish("length", 0)]
    assert finishes(stream("tgi", tokens, chat_req(max_completion_tokens=5, max_tokens=4))) == [Finish("stop", 0)]
    assert finishes(stream("tgi", tokens, chat_req())) == [Finish("stop", 0)]
    # non-stream: the aggregate list, and the completions route
    req = decode_completion_request({"model": "m", "prompt": "p", "max_tokens": 4})
    events = get_format("tgi").decoder("completion", request=req).decode_final(tokens)
    assert finishes(events) == [Finish("length", 0)]
    assert finishes(get_format("tgi").decoder("chat", request=chat_req(max_tokens=5)).decode_final(tokens)) == \
        [Finish("stop", 0)]


def test_what_the_worker_reports_is_kept():
    # a worker that sends usage (A0 shape) decides with its own count; a finish reason stays
    a0 = [{"text": ["ab"], "input_tokens": 3, "output_tokens": 1}]
    assert finishes(stream("tgi", a0, chat_req(max_tokens=1))) == [Finish("length", 0)]
    assert finishes(stream("tgi", a0 * 3, chat_req(max_tokens=5))) == [Finish("stop", 0)]
    sglang = {"text": "abcdef", "meta_info": {"finish_reason": {"type": "stop"}}}
    assert finishes(stream("text", [sglang], chat_req(max_tokens=1))) == [Finish("stop", 0)]


def test_text_leaves_the_reason_open_only_when_the_limit_may_have_been_reached():
    # at least one byte per token: 3 bytes cannot hold 4 tokens
    assert finishes(stream("text", ["a", "bc"], chat_req(max_tokens=4))) == [Finish("stop", 0)]
    assert finishes(stream("text", ["a", "bc"], chat_req(max_tokens=3))) == []
    assert finishes(stream("text", ["a", "bc"], chat_req())) == [Finish("stop", 0)]
    assert finishes(get_format("text").decoder("chat", request=chat_req(max_tokens=2)).decode_final(["a", "bc"])) == []


def test_assemblers_close_open_choices_with_the_given_reasons():
    agg = Aggregator("chat", id="x", model="m")
    agg.feed([TextDelta("abc", 0)])
    assert agg.open_choices() == [0]
    assert agg.result(reasons={0: "length"}).choices[0].finish_reason == "length"
    assert agg.result().choices[0].finish_reason == "stop"
    done = Aggregator("completion", id="x", model="m", n=2)
    done.feed([TextDelta("a", 0), Finish("stop", 0), TextDelta("b", 1)])
    assert done.open_choices() == [1]
    assert [c.finish_reason for c in done.result(reasons={0: "length", 1: "length"}).choices] == ["stop", "length"]

    asm = StreamAssembler("chat", id="x", model="m", include_usage=True)
    asm.feed([TextDelta("abc", 0)])
    assert asm.open_choices() == [0]
    chunks = msgspec.to_builtins(asm.finish(Usage(1, 3), {0: "length"}))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == ["length"]
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert asm.open_choices() == []
