"""OpenAI requests → RunPod job inputs for every worker format, and the policy for
parameters a format cannot honour."""

from __future__ import annotations

import pytest

from adapters.errors import UnsupportedParameter
from adapters.formats import FORMATS, JobInput, get_format
from adapters.openai_protocol import decode_chat_request, decode_completion_request

MSG = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def chat(**kw):
    return decode_chat_request({"model": "client-name", "messages": MSG, **kw})


def comp(**kw):
    return decode_completion_request({"model": "client-name", "prompt": "Once", **kw})


def test_registry():
    assert set(FORMATS) == {"vllm", "vllm-native", "sglang", "tgi", "text", "infinity", "infinity-native"}
    for name, f in FORMATS.items():
        assert get_format(name) is f and f.name == name
    with pytest.raises(KeyError) as ei:
        get_format("llama")
    assert "vllm-native" in str(ei.value)


@pytest.mark.parametrize("fmt", ["vllm", "sglang"])
def test_openai_route_stream_forces_usage_and_keeps_everything(fmt):
    req = chat(stream=True, stream_options={"continuous_usage_stats": True}, tools=TOOLS, tool_choice="required",
               logprobs=True, top_logprobs=2, top_k=4, chat_template_kwargs={"enable_thinking": False}, x_extra=1)
    ji = get_format(fmt).chat_input(req, "served", stream=True)
    assert isinstance(ji, JobInput) and ji.ignored == []
    assert ji.input["openai_route"] == "/v1/chat/completions"
    body = ji.input["openai_input"]
    assert body["model"] == "served" and body["stream"] is True
    assert body["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    assert body["tools"] == TOOLS and body["tool_choice"] == "required" and body["top_k"] == 4
    assert body["x_extra"] == 1 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["messages"] == MSG
    assert req.to_body()["model"] == "client-name"  # the request itself is not modified


def test_openai_route_non_stream_drops_stream_options():
    req = chat(stream=True, stream_options={"include_usage": True})
    body = get_format("vllm").chat_input(req, "served", stream=False).input["openai_input"]
    assert body["stream"] is False and "stream_options" not in body


def test_openai_route_completions():
    ji = get_format("vllm").completion_input(comp(logprobs=2, echo=True, max_tokens=5), "served", stream=True)
    assert ji.input["openai_route"] == "/v1/completions"
    assert ji.input["openai_input"]["prompt"] == "Once" and ji.input["openai_input"]["logprobs"] == 2


def test_native_chat_input():
    req = chat(
        messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        max_completion_tokens=7, temperature=0.3, top_p=0.9, n=2, seed=1, stop="END",
        presence_penalty=0.1, frequency_penalty=0.2, top_k=5, min_p=0.05, repetition_penalty=1.1,
        user="u", stream_options={"include_usage": True}, stream=True,
    )
    ji = get_format("vllm-native").chat_input(req, "served", stream=True)
    assert ji.ignored == []
    assert ji.input["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert ji.input["sampling_params"] == {
        "max_tokens": 7, "temperature": 0.3, "top_p": 0.9, "n": 2, "seed": 1, "stop": ["END"],
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1,
    }
    assert ji.input["stream"] is True and ji.input["max_batch_size"] == 8


def test_native_always_sends_max_tokens():
    sp = get_format("vllm-native").chat_input(chat(), "served", stream=False).input["sampling_params"]
    assert "max_tokens" in sp and sp["max_tokens"] is None


@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_tools_ignored_when_choice_allows(choice):
    kw = {"tools": TOOLS, "parallel_tool_calls": True}
    if choice:
        kw["tool_choice"] = choice
    for fmt in ("vllm-native", "tgi", "text"):
        ji = get_format(fmt).chat_input(chat(**kw), "served", stream=False)
        assert "tools" in ji.ignored
        assert "tools" not in ji.input and "tools" not in ji.input.get("sampling_params", {})


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "f"}}])
def test_tools_rejected_when_required(choice):
    for fmt in ("vllm-native", "tgi", "text"):
        with pytest.raises(UnsupportedParameter) as ei:
            get_format(fmt).chat_input(chat(tools=TOOLS, tool_choice=choice), "served", stream=False)
        assert ei.value.param == "tool_choice" and ei.value.status == 400


@pytest.mark.parametrize(
    "fmt,kw,param",
    [
        ("vllm-native", {"logprobs": True}, "logprobs"),
        ("vllm-native", {"top_logprobs": 2, "logprobs": True}, "logprobs"),
        ("vllm-native", {"response_format": {"type": "json_object"}}, "response_format"),
        ("vllm-native", {"logit_bias": {"1": 5}}, "logit_bias"),
        ("vllm-native", {"chat_template_kwargs": {"enable_thinking": True}}, "chat_template_kwargs"),
        ("vllm-native", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0].content"),
        ("vllm-native", {"messages": [{"role": "tool", "content": "1", "tool_call_id": "c"}]}, "messages[0]"),
        ("tgi", {"n": 2}, "n"),
        ("text", {"n": 3}, "n"),
        ("text", {"logprobs": True}, "logprobs"),
    ],
)
def test_unsupported_parameters_rejected(fmt, kw, param):
    with pytest.raises(UnsupportedParameter) as ei:
        get_format(fmt).chat_input(chat(**kw), "served", stream=False)
    assert ei.value.param == param


def test_harmless_and_unknown_params():
    ji = get_format("vllm-native").chat_input(chat(user="u", metadata={"a": "b"}, store=False, response_format={"type": "text"}, reasoning_effort="low", mystery=1), "s", stream=False)
    assert ji.ignored == ["mystery", "reasoning_effort"]


def test_native_completion_input_and_rejections():
    ji = get_format("vllm-native").completion_input(comp(max_tokens=3, stop=["x"]), "served", stream=False)
    assert ji.input == {"prompt": "Once", "sampling_params": {"max_tokens": 3, "stop": ["x"]}, "stream": False}
    ji = get_format("vllm-native").completion_input(decode_completion_request({"model": "m", "prompt": ["only"]}), "s", stream=False)
    assert ji.input["prompt"] == "only"
    for kw, param in [({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2]}, "prompt"), ({"echo": True}, "echo"),
                      ({"logprobs": 1}, "logprobs"), ({"suffix": "s"}, "suffix"), ({"best_of": 3}, "best_of")]:
        with pytest.raises(UnsupportedParameter) as ei:
            get_format("vllm-native").completion_input(decode_completion_request({"model": "m", "prompt": "p", **kw}), "s", stream=False)
        assert ei.value.param == param


def test_tgi_input():
    req = chat(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], max_tokens=9, temperature=0.0, stop=["\n"], seed=3)
    ji = get_format("tgi").chat_input(req, "served", stream=True)
    assert ji.input["prompt"] == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert ji.input["sampling_params"] == {"max_new_tokens": 9, "do_sample": False, "stop_sequences": ["\n"], "seed": 3}
    ji = get_format("tgi").completion_input(comp(temperature=0.7), "served", stream=True)
    assert ji.input == {"prompt": "Once", "sampling_params": {"temperature": 0.7, "do_sample": True}}


def test_text_input_is_the_openai_body():
    ji = get_format("text").chat_input(chat(temperature=0.1, stream=True, stream_options={"include_usage": True}, foo=1), "served", stream=True)
    assert ji.input == {"model": "served", "messages": MSG, "temperature": 0.1, "stream": True, "foo": 1}


# --- sampling parameters a format drops; custom tools and allowed_tools (issue 7) ----------

SAMPLING_KW = dict(temperature=0.5, top_p=0.9, seed=1, stop=["x"], presence_penalty=0.1, frequency_penalty=0.2,
                   top_k=5, min_p=0.05, repetition_penalty=1.1, min_tokens=2, ignore_eos=True,
                   skip_special_tokens=False, include_stop_str_in_output=True, stop_token_ids=[7])


def test_tgi_names_the_sampling_params_it_drops():
    dropped = ["presence_penalty", "frequency_penalty", "min_p", "min_tokens", "ignore_eos", "skip_special_tokens",
               "include_stop_str_in_output", "stop_token_ids"]
    ji = get_format("tgi").chat_input(chat(**SAMPLING_KW, user="u"), "served", stream=False)
    assert ji.ignored == dropped
    assert ji.input["sampling_params"] == {"temperature": 0.5, "do_sample": True, "top_p": 0.9, "top_k": 5,
                                           "repetition_penalty": 1.1, "seed": 1, "stop_sequences": ["x"]}
    ji = get_format("tgi").completion_input(comp(presence_penalty=0.0, top_k=3), "served", stream=False)
    assert ji.ignored == ["presence_penalty"]  # set, even to its default: the worker never saw it


@pytest.mark.parametrize("fmt", ["vllm", "sglang", "text"])
def test_formats_that_pass_the_body_drop_nothing(fmt):
    assert get_format(fmt).chat_input(chat(**SAMPLING_KW), "served", stream=False).ignored == []


def test_native_drops_only_what_sampling_params_lack():
    # every sampling parameter of a vLLM SamplingParams is passed
    assert get_format("vllm-native").chat_input(chat(**SAMPLING_KW), "served", stream=False).ignored == []


CUSTOM = {"type": "custom", "custom": {"name": "run", "format": {"type": "text"}}}
ALLOWED_AUTO = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "custom", "custom": {"name": "run"}}]}}
ALLOWED_REQUIRED = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}
NAMED_CUSTOM = {"type": "custom", "custom": {"name": "run"}}


@pytest.mark.parametrize("choice", [None, "auto", "required", ALLOWED_AUTO, ALLOWED_REQUIRED, NAMED_CUSTOM])
def test_custom_tools_passed_where_the_format_takes_tools(choice):
    kw = {"tools": [CUSTOM, *TOOLS]} | ({"tool_choice": choice} if choice else {})
    ji = get_format("vllm").chat_input(chat(**kw), "served", stream=False)
    assert ji.ignored == []
    assert ji.input["openai_input"]["tools"] == [CUSTOM, *TOOLS]
    if choice:
        assert ji.input["openai_input"]["tool_choice"] == choice


@pytest.mark.parametrize("choice,ignored", [(None, ["tools"]), ("none", ["tools", "tool_choice"]),
                                            (ALLOWED_AUTO, ["tools", "tool_choice"])])
def test_custom_tools_ignored_where_the_format_has_none(choice, ignored):
    kw = {"tools": [CUSTOM]} | ({"tool_choice": choice} if choice else {})
    for fmt in ("vllm-native", "tgi", "text"):
        ji = get_format(fmt).chat_input(chat(**kw), "served", stream=False)
        assert ji.ignored == ignored
        assert "tools" not in ji.input and "tool_choice" not in ji.input


@pytest.mark.parametrize("choice", [ALLOWED_REQUIRED, NAMED_CUSTOM])
def test_forced_choices_refused_where_the_format_has_no_tools(choice):
    for fmt in ("vllm-native", "tgi", "text"):
        with pytest.raises(UnsupportedParameter) as ei:
            get_format(fmt).chat_input(chat(tools=[CUSTOM], tool_choice=choice), "served", stream=False)
        assert ei.value.param == "tool_choice"
        with pytest.raises(UnsupportedParameter):  # a forced choice without tools, anywhere
            get_format(fmt).chat_input(chat(tool_choice=choice), "served", stream=False)
    assert get_format("tgi").chat_input(chat(tool_choice=ALLOWED_AUTO), "s", stream=False).ignored == []
