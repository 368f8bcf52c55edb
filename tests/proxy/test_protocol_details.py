"""OpenAI protocol details as clients see them (issue 7: 6e, 6g, 7), through the real
``openai`` SDK and raw httpx against podgate → the local endpoint → real SDK workers
(``stack``, see conftest): OpenAI's ranges and their error messages, ``stream_options``
without ``stream``, deeply nested bodies, parameters a format drops, finish reasons of
text workers, custom tools and ``allowed_tools``, and the answers to unknown routes and
wrong methods."""

from __future__ import annotations

import json
from urllib.parse import unquote

import openai
import pytest

from tests.proxy.handlers.workers import COUNT, TEXT, WORD

EXPECTED_TEXT = "".join(TEXT)
USER = [{"role": "user", "content": "Say hello"}]
COUNT_MSG = [{"role": "user", "content": "#count now"}]  # the text worker yields COUNT × WORD, cut at the limit


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="anything", max_retries=0)


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- 6g: OpenAI's ranges ----------------------------------------------------------------

@pytest.mark.parametrize("field,value,message,code", [
    ("temperature", 3, "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
     "decimal_above_max_value"),
    ("temperature", -0.5, "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -0.5 "
     "instead.", "decimal_below_min_value"),
    ("top_p", 1.5, "Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 1.5 instead.",
     "decimal_above_max_value"),
    ("n", 129, "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 129 instead.",
     "integer_above_max_value"),
    ("n", 0, "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
     "integer_below_min_value"),
    ("max_tokens", 2**31, "Invalid 'max_tokens': integer above maximum value. Expected a value <= 2147483647, but got "
     "2147483648 instead.", "integer_above_max_value"),
    ("max_completion_tokens", 10**12, "Invalid 'max_completion_tokens': integer above maximum value. Expected a value "
     "<= 2147483647, but got 1000000000000 instead.", "integer_above_max_value"),
])
def test_out_of_range_is_400_as_openai_words_it(client, field, value, message, code):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="vllm-c", messages=USER, **{field: value})
    assert ei.value.status_code == 400
    assert ei.value.body == {"message": message, "type": "invalid_request_error", "param": field, "code": code}


def test_completions_ranges(http):
    for field, value in (("max_tokens", 2**31), ("temperature", 2.5), ("top_p", -1), ("n", 200)):
        r = http.post("/completions", json={"model": "vllm-c", "prompt": "Say hello", field: value})
        assert r.status_code == 400
        err = error_of(r)
        assert err["param"] == field and err["type"] == "invalid_request_error"
        assert err["message"].startswith(f"Invalid '{field}': ")
    ok = http.post("/completions", json={"model": "vllm-c", "prompt": "Say hello", "max_tokens": 2**31 - 1,
                                         "temperature": 2, "top_p": 1, "n": 1})
    assert ok.status_code == 200


# -- 7: stream_options without stream ---------------------------------------------------

@pytest.mark.parametrize("stream", [False, None])
def test_stream_options_without_stream_is_400(http, stream):
    body = {"model": "vllm-c", "messages": USER, "stream_options": {"include_usage": True}}
    if stream is not None:
        body["stream"] = stream
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 400
    assert error_of(r) == {"message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           "type": "invalid_request_error", "param": "stream_options", "code": None}


def test_stream_options_without_stream_sdk(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model="vllm-c", prompt="Say hello", stream_options={"include_usage": True})
    assert ei.value.body["param"] == "stream_options"


# -- 6e: deeply nested JSON -------------------------------------------------------------

@pytest.mark.parametrize("path,base", [
    ("/chat/completions", {"model": "vllm-c", "messages": USER}),
    ("/completions", {"model": "vllm-c", "prompt": "Say hello"}),
])
@pytest.mark.parametrize("depth", [980, 100_000])
def test_deeply_nested_body_is_400(http, path, base, depth):
    head = json.dumps(base)[:-1]
    body = head + ', "x": ' + "[" * depth + "]" * depth + "}"
    r = http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and "nested too deeply" in err["message"]


def test_nesting_within_the_limit_is_served(http):
    schema: dict = {"type": "string"}
    for _ in range(40):  # a deep but real JSON schema: 80 levels inside the tool
        schema = {"type": "object", "properties": {"a": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    r = http.post("/chat/completions", json={"model": "vllm-c", "messages": USER, "tools": tools})
    assert r.status_code == 200


# -- 7: parameters a format drops are named -----------------------------------------------

def test_tgi_names_the_sampling_params_it_drops(client):
    raw = client.chat.completions.with_raw_response.create(
        model="tgi", messages=USER, temperature=0.5, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.1,
        user="u1", extra_body={"min_p": 0.1, "top_k": 5, "not_a_param": 1})
    ignored = raw.headers["x-podgate-ignored-params"].split(",")
    assert set(ignored) == {"presence_penalty", "frequency_penalty", "min_p", "not_a_param"}
    assert raw.parse().choices[0].message.content == EXPECTED_TEXT


def test_ignored_names_are_percent_encoded_in_the_header(http):
    """A client's unknown key may hold any character (found by schemathesis: one outside
    latin-1 broke the response, a CR LF in one made the server drop the connection): the
    header names it percent-encoded, and no header of its own starts at the CR LF."""
    r = http.post("/chat/completions", json={"model": "tgi", "messages": USER, "日本\U000ab5aa": 1,
                                             "a,b\r\nx-injected: 1": 2})
    assert r.status_code == 200 and "x-injected" not in r.headers
    ignored = r.headers["x-podgate-ignored-params"].split(",")
    assert [unquote(name) for name in ignored] == ["a,b\r\nx-injected: 1", "日本\U000ab5aa"]


def test_passthrough_format_names_nothing(client):
    raw = client.chat.completions.with_raw_response.create(model="vllm-c", messages=USER, presence_penalty=0.5,
                                                           extra_body={"min_p": 0.1})
    assert "x-podgate-ignored-params" not in raw.headers


# -- 7: finish_reason "length" for tgi and text ---------------------------------------------

def _stream_finish(client, kind, model, **kw):
    text, finish = "", None
    if kind == "chat":
        for ch in client.chat.completions.create(model=model, messages=COUNT_MSG, stream=True, **kw):
            for c in ch.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
    else:
        for ch in client.completions.create(model=model, prompt="#count now", stream=True, **kw):
            for c in ch.choices:
                text += c.text
                finish = c.finish_reason or finish
    return text, finish


def _full_finish(client, kind, model, **kw):
    if kind == "chat":
        c = client.chat.completions.create(model=model, messages=COUNT_MSG, **kw).choices[0]
        return c.message.content, c.finish_reason
    c = client.completions.create(model=model, prompt="#count now", **kw).choices[0]
    return c.text, c.finish_reason


@pytest.mark.parametrize("model", ["tgi", "text"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_length_when_the_limit_was_reached(client, model, kind):
    text, finish = _full_finish(client, kind, model, max_tokens=5)
    assert (text, finish) == (WORD * 5, "length")
    if kind == "chat":
        text, finish = _full_finish(client, kind, model, max_completion_tokens=7)
        assert (text, finish) == (WORD * 7, "length")


@pytest.mark.parametrize("model", ["tgi", "text"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_stop_when_the_worker_stopped_before_the_limit(client, model, kind):
    assert _full_finish(client, kind, model, max_tokens=COUNT + 1) == (WORD * COUNT, "stop")
    assert _stream_finish(client, kind, model, max_tokens=COUNT + 1) == (WORD * COUNT, "stop")
    assert _full_finish(client, kind, model) == (WORD * COUNT, "stop")


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_length_in_streams_tgi(client, kind):
    assert _stream_finish(client, kind, "tgi", max_tokens=5) == (WORD * 5, "length")
    assert _stream_finish(client, kind, "tgi", max_tokens=5, stream_options={"include_usage": True}) == \
        (WORD * 5, "length")


def test_length_in_streams_text_with_usage(client):
    got = _stream_finish(client, "chat", "text", max_tokens=5, stream_options={"include_usage": True})
    assert got == (WORD * 5, "length")


def test_length_in_streams_text_without_usage(client):
    assert _stream_finish(client, "chat", "text", max_tokens=5) == (WORD * 5, "length")


# -- 7: custom tools and allowed_tools ------------------------------------------------------

CUSTOM_TOOL = {"type": "custom", "custom": {"name": "run_code", "description": "Runs code",
                                             "format": {"type": "text"}}}
FUNCTION_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def allowed(mode: str) -> dict:
    return {"type": "allowed_tools",
            "allowed_tools": {"mode": mode, "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}


@pytest.mark.parametrize("tool_choice", [None, "auto", "required", allowed("auto"), allowed("required"),
                                         {"type": "custom", "custom": {"name": "run_code"}}])
def test_tools_accepted_where_the_format_takes_them(http, tool_choice):
    body = {"model": "vllm-c", "messages": USER, "tools": [FUNCTION_TOOL, CUSTOM_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert "x-podgate-ignored-params" not in r.headers


@pytest.mark.parametrize("tool_choice,ignored", [(None, "tools"), (allowed("auto"), "tools,tool_choice")])
def test_custom_tools_ignored_where_the_format_has_none(http, tool_choice, ignored):
    body = {"model": "tgi", "messages": USER, "tools": [CUSTOM_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-podgate-ignored-params"] == ignored
    assert r.json()["choices"][0]["message"]["content"] == EXPECTED_TEXT


@pytest.mark.parametrize("tool_choice", [allowed("required"), {"type": "custom", "custom": {"name": "run_code"}}])
def test_forced_tool_choice_refused_where_the_format_has_no_tools(http, tool_choice):
    r = http.post("/chat/completions", json={"model": "tgi", "messages": USER, "tools": [CUSTOM_TOOL],
                                             "tool_choice": tool_choice})
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == "tool_choice" and err["code"] == "unsupported_parameter"


def test_custom_tool_call_in_history(client):
    msgs = [{"role": "user", "content": "run it"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "call_1", "type": "custom", "custom": {"name": "run_code", "input": "print(1)"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "1"},
            {"role": "user", "content": "Say hello"}]
    full = client.chat.completions.create(model="vllm-c", messages=msgs, tools=[CUSTOM_TOOL])
    assert full.choices[0].message.content == EXPECTED_TEXT


# -- 7: unknown routes and wrong methods ------------------------------------------------------

def test_unknown_route_is_openais_invalid_url(stack, http):
    r = http.get("/foo")
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "Invalid URL (GET /v1/foo)", "type": "invalid_request_error",
                                  "param": None, "code": None}}
    r = http.post("/nope/deeper", json={})
    assert r.status_code == 404 and error_of(r)["message"] == "Invalid URL (POST /v1/nope/deeper)"


@pytest.mark.parametrize("method,path,allow", [("GET", "/chat/completions", "POST"), ("DELETE", "/completions", "POST"),
                                               ("POST", "/models", "GET")])
def test_wrong_method_is_405_with_allow(http, method, path, allow):
    r = http.request(method, path)
    assert r.status_code == 405
    assert allow in r.headers["allow"].split(", ") and method not in r.headers["allow"]
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["code"] is None
    assert err["message"] == f"Invalid URL ({method} /v1{path}): the method must be {allow}"


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_a_body_over_20_mib_is_413(http, path):
    r = http.post(path, content=b'{"model": "vllm-c", "prompt": "' + b"x" * (20 * 1024 * 1024) + b'"}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert error_of(r)["type"] == "invalid_request_error"
