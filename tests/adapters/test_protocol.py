"""OpenAI request decoding and response encoding (peers-and-clients.md §d)."""

from __future__ import annotations

import msgspec
import pytest

from adapters.errors import InvalidRequest
from adapters.openai_protocol import (
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatMessageOut,
    CompletionChunkChoice, DeltaFunction, DeltaMessage, DeltaToolCall, ErrorDetail, ErrorResponse,
    Model, ModelList, NamedToolChoice, TextCompletionChunk, UsageInfo, decode_chat_request,
    decode_completion_request,
)

FULL_CHAT = {
    "model": "m",
    "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "http://x"}}], "name": "bob"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ],
    "max_tokens": 10,
    "max_completion_tokens": 20,
    "stop": ["a", "b"],
    "n": 2,
    "seed": 1,
    "temperature": 0.5,
    "top_p": 0.9,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 3,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u",
    "top_k": 5,
    "min_p": 0.1,
    "repetition_penalty": 1.1,
    "chat_template_kwargs": {"enable_thinking": False},
    "some_future_param": {"x": [1]},
}


def test_every_checklist_parameter_is_accepted():
    body = msgspec.json.encode(FULL_CHAT)
    r = decode_chat_request(body)
    assert r.max_output_tokens == 20  # max_completion_tokens wins, as in vLLM
    assert r.stop_list == ["a", "b"]
    assert r.include_usage and r.is_stream and r.choices == 2
    assert isinstance(r.tool_choice, NamedToolChoice) and r.tool_choice.function.name == "f"
    assert r.messages[2].text() == "a"
    assert r.messages[3].tool_calls[0].function.arguments == "{}"
    assert r.extra_body() == {"some_future_param": {"x": [1]}}
    assert r.to_body() == FULL_CHAT  # passthrough keeps the client's body as sent


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_strings(choice):
    r = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice})
    assert r.tool_choice == choice


def test_stop_as_string_and_logprobs_alone():
    r = decode_chat_request(b'{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END","logprobs":true}')
    assert r.stop_list == ["END"] and r.logprobs is True and r.top_logprobs is None
    assert not r.include_usage and r.max_output_tokens is None


def test_stream_options_require_stream():
    for stream in ({}, {"stream": False}, {"stream": None}):
        with pytest.raises(InvalidRequest) as ei:
            decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                 "stream_options": {"include_usage": True}, **stream})
        assert ei.value.param == "stream_options" and ei.value.code is None
        assert ei.value.message == "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    r = decode_completion_request({"model": "m", "prompt": "x", "stream_options": None})
    assert not r.include_usage


def test_completion_request_prompts():
    for prompt in ["p", ["a", "b"], [1, 2, 3], [[1, 2], [3]]]:
        r = decode_completion_request({"model": "m", "prompt": prompt, "logprobs": 2, "echo": True, "extra": 1})
        assert r.prompt == prompt and r.logprobs == 2 and r.extra_body() == {"extra": 1}


@pytest.mark.parametrize(
    "body,param",
    [
        (b"{", None),
        (b"[]", None),
        (b'{"messages":[{"role":"user","content":"x"}]}', "model"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"model":"m"}', "messages"),
        (b'{"model":"m","messages":[{"role":"robot","content":"x"}]}', "messages[0].role"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}', "max_tokens"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}', "n"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-1}', "temperature"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}', "tool_choice"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"stop":5}', "stop"),
    ],
)
def test_invalid_requests_are_400_with_param(body, param):
    with pytest.raises(InvalidRequest) as ei:
        decode_chat_request(body)
    err = ei.value
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.param == param
    assert msgspec.json.decode(msgspec.json.encode(err.response()))["error"]["message"]


def enc(obj):
    return msgspec.json.decode(msgspec.json.encode(obj))


def test_chunk_shape_without_include_usage():
    c = enc(ChatCompletionChunk(id="i", created=1, model="m", choices=[ChatChunkChoice(0, DeltaMessage())]))
    assert c == {
        "id": "i", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}],
        "system_fingerprint": None,
    }
    assert list(c)[:2] == ["id", "object"]


def test_chunk_usage_null_then_usage_chunk():
    c = enc(ChatCompletionChunk(id="i", created=1, model="m", choices=[], usage=None))
    assert c["usage"] is None
    c = enc(ChatCompletionChunk(id="i", created=1, model="m", choices=[], usage=UsageInfo(1, 2, 3)))
    assert c["choices"] == [] and c["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_tool_call_delta_shapes():
    first = enc(DeltaToolCall(index=0, id="call_1", type="function", function=DeltaFunction(name="f", arguments="")))
    assert first == {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    later = enc(DeltaToolCall(index=0, function=DeltaFunction(arguments='{"a"')))
    assert later == {"index": 0, "function": {"arguments": '{"a"'}}


def test_completion_message_content_null_written():
    msg = ChatMessageOut(content=None)
    c = enc(ChatCompletion(id="i", created=1, model="m", choices=[ChatChoice(0, msg, None, "stop")], usage=UsageInfo(1, 1, 2)))
    assert c["object"] == "chat.completion"
    assert c["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": None, "refusal": None}, "logprobs": None, "finish_reason": "stop"}
    assert c["system_fingerprint"] is None


def test_text_completion_chunk_and_models_and_error():
    c = enc(TextCompletionChunk(id="i", created=1, model="m", choices=[CompletionChunkChoice(0, "x")]))
    assert c["object"] == "text_completion" and c["choices"][0] == {"index": 0, "text": "x", "logprobs": None, "finish_reason": None}
    assert "usage" not in c
    assert enc(ModelList(data=[Model(id="a", created=1, owned_by="podgate")])) == {
        "object": "list", "data": [{"id": "a", "object": "model", "created": 1, "owned_by": "podgate"}]}
    assert enc(ErrorResponse(ErrorDetail("bad", "invalid_request_error"))) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}


# --- OpenAI's ranges, nesting, tools (issue 7) ---------------------------------------------

@pytest.mark.parametrize("decode,extra", [(decode_chat_request, {"messages": [{"role": "user", "content": "x"}]}),
                                          (decode_completion_request, {"prompt": "x"})])
@pytest.mark.parametrize("field,value,code,expected", [
    ("temperature", 2.01, "decimal_above_max_value", "<= 2, but got 2.01"),
    ("temperature", -1, "decimal_below_min_value", ">= 0, but got -1"),
    ("top_p", 1.5, "decimal_above_max_value", "<= 1, but got 1.5"),
    ("n", 129, "integer_above_max_value", "<= 128, but got 129"),
    ("n", 0, "integer_below_min_value", ">= 1, but got 0"),
    ("max_tokens", 2**31, "integer_above_max_value", "<= 2147483647, but got 2147483648"),
    ("max_tokens", 10**40, "integer_above_max_value", f"<= 2147483647, but got {10**40}"),
])
def test_out_of_range_as_openai_words_it(decode, extra, field, value, code, expected):
    with pytest.raises(InvalidRequest) as ei:
        decode({"model": "m", **extra, field: value})
    err = ei.value
    kind, where = code.split("_")[0], "above maximum" if "above" in code else "below minimum"
    assert (err.status, err.type, err.param, err.code) == (400, "invalid_request_error", field, code)
    assert err.message == f"Invalid '{field}': {kind} {where} value. Expected a value {expected} instead."


def test_range_edges_are_accepted():
    r = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 2,
                             "top_p": 0, "n": 128, "max_tokens": 2**31 - 1, "max_completion_tokens": 0})
    assert r.temperature == 2 and r.n == 128 and r.max_output_tokens == 0
    with pytest.raises(InvalidRequest) as ei:
        decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 2**31})
    assert ei.value.param == "max_completion_tokens"


def nested(depth: int) -> bytes:
    """A chat body whose extra key nests ``depth`` levels in all (the body is level 1)."""
    return (b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":'
            + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")


def test_nesting_limit():
    from adapters.openai_protocol import MAX_DEPTH

    assert decode_chat_request(nested(MAX_DEPTH)).extra_body()["x"]
    for depth in (MAX_DEPTH + 1, 980, 100_000):  # 100 000 overflows msgspec's own recursion
        with pytest.raises(InvalidRequest) as ei:
            decode_chat_request(nested(depth))
        assert ei.value.status == 400 and "nested too deeply" in ei.value.message
    deep_dict = {"model": "m", "prompt": "x", "x": {}}
    node = deep_dict["x"]
    for _ in range(MAX_DEPTH):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(InvalidRequest):
        decode_completion_request(deep_dict)


def test_custom_tools_and_tool_choices():
    custom = {"type": "custom", "custom": {"name": "run", "description": "d", "format": {"type": "text"}}}
    fn = {"type": "function", "function": {"name": "f"}}
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "run", "input": "1"}},
                                                 {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    choices = {
        "auto": False, "none": False, "required": True,
        '{"type":"function","function":{"name":"f"}}': True,
        '{"type":"custom","custom":{"name":"run"}}': True,
        '{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[{"type":"function","function":{"name":"f"}}]}}': False,
        '{"type":"allowed_tools","allowed_tools":{"mode":"required","tools":[]}}': True,
    }
    for choice, forces in choices.items():
        body = {"model": "m", "messages": msgs, "tools": [custom, fn],
                "tool_choice": choice if choice[0] != "{" else msgspec.json.decode(choice)}
        r = decode_chat_request(body)
        assert r.tools[0].custom.name == "run" and r.tools[1].function.name == "f"
        assert r.messages[1].tool_calls[0].custom.input == "1"
        assert r.to_body() == body
        if not isinstance(r.tool_choice, str):
            assert isinstance(r.tool_choice, NamedToolChoice) and r.tool_choice.forces_call is forces


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "custom"}]}, "tools[0].custom"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice.allowed_tools"),
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "sometimes", "tools": []}}},
     "tool_choice.allowed_tools.mode"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom"}]}]}, "messages[0].tool_calls[0].custom"),
])
def test_tool_shapes_missing_their_member(body, param):
    with pytest.raises(InvalidRequest) as ei:
        decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], **body})
    assert ei.value.param == param
