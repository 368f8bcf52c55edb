"""The passthrough's answer handling (``adapters.passthrough``): model names, errors with
HTTP 200, SSE relayed whole-event at a time, usage chunks, cut streams."""

from __future__ import annotations

import json

import pytest

from adapters.errors import OpenAIError
from adapters.passthrough import ModelRename, SSERelay, answer_body, request_body, upstream_error
from adapters.upstream import RunPodError


def chunk(content: str, model: str = "served/m") -> bytes:
    obj = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


USAGE = b'data: {"id":"c1","object":"chat.completion.chunk","model":"served/m","choices":[],' \
        b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
DONE = b"data: [DONE]\n\n"


def relay_all(pieces: list[bytes], include_usage: bool = False,
              rename: ModelRename | None = None) -> tuple[bytes, object, SSERelay]:
    relay = SSERelay(rename or ModelRename("served/m", "client"), include_usage)
    out, error = b"", None
    for piece in pieces:
        data, error = relay.feed(piece)
        out += data
        if error is not None or relay.done:
            break
    return out, error, relay


def events(data: bytes) -> list[str]:
    return [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]


def test_request_body_names_the_served_model():
    assert json.loads(request_body({"model": "client", "x": [1]}, "served/m")) == {"model": "served/m", "x": [1]}


def test_rename_is_a_no_op_for_equal_names():
    body = b'{"model":"m"}'
    assert ModelRename("m", "m")(body) is body


@pytest.mark.parametrize("spacing", [b'"model":"served/m"', b'"model": "served/m"', b'"model" :  "served/m"'])
def test_rename_any_spacing_but_never_inside_strings(spacing):
    body = b'{"id":"x",' + spacing + b',"content":"say \\"model\\":\\"served/m\\" please"}'
    renamed = json.loads(ModelRename("served/m", "client")(body))
    assert renamed["model"] == "client"
    assert renamed["content"] == 'say "model":"served/m" please'


@pytest.mark.parametrize("cuts", [[], [7], [1, 2, 3, 50, 51], list(range(1, 400, 13))])
def test_events_pass_whole_whatever_the_network_cuts(cuts):
    stream = chunk("Hé") + chunk("llo") + chunk(" wörld") + DONE
    raw = stream
    pieces, last = [], 0
    for c in [c for c in cuts if c < len(raw)] + [len(raw)]:
        pieces.append(raw[last:c])
        last = c
    out, error, relay = relay_all(pieces)
    assert error is None and relay.done
    got = events(out)
    assert got[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in got[:-1]) == "Héllo wörld"
    assert {json.loads(e)["model"] for e in got[:-1]} == {"client"}


def test_crlf_and_lone_cr_line_endings_even_split_between_cr_and_lf():
    stream = (chunk("a") + chunk("b") + DONE).replace(b"\n", b"\r\n")
    middle = stream.index(b"\r\n") + 1  # between CR and LF
    out, error, relay = relay_all([stream[:middle], stream[middle:]])
    assert relay.done and error is None
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events(out)[:-1]] == ["a", "b"]
    out, error, relay = relay_all([(chunk("c") + DONE).replace(b"\n", b"\r")])
    assert relay.done and json.loads(events(out)[0])["choices"][0]["delta"]["content"] == "c"


def test_usage_chunk_only_when_asked():
    stream = [chunk("a") + USAGE + DONE]
    out, _, _ = relay_all(stream, include_usage=False)
    assert all("usage" not in e for e in events(out))
    out, _, _ = relay_all(stream, include_usage=True)
    usage = [json.loads(e) for e in events(out)[:-1] if "usage" in e]
    assert usage and usage[0]["usage"]["total_tokens"] == 5 and usage[0]["model"] == "client"


def test_a_batch_is_relayed_whole_around_the_events_that_need_a_look():
    # one read holding plain chunks, then a usage chunk not asked for, more chunks and [DONE]
    out, err, relay = relay_all([chunk("a") + chunk("b") + USAGE + chunk("c") + DONE])
    assert err is None and relay.done and events(out)[-1] == "[DONE]"
    relayed = [json.loads(e) for e in events(out)[:-1]]
    assert [(e["model"], e["choices"][0]["delta"]["content"]) for e in relayed] == [
        ("client", "a"), ("client", "b"), ("client", "c")]


@pytest.mark.parametrize("error", [
    b'{"error":{"message":"vLLM returned HTTP 400: too long","type":"worker_error","code":null}}',
    b'{"object":"error","message":"bad thing","type":"BadRequestError","param":null,"code":400}',
])
def test_an_error_event_ends_the_stream_with_that_error(error):
    out, err, relay = relay_all([chunk("a") + b"data: " + error + b"\n\n" + chunk("never") + DONE])
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events(out)] == ["a"]
    assert err is not None and err.status == 400 and not relay.done


def test_text_that_mentions_done_or_error_is_not_mistaken():
    out, err, relay = relay_all([chunk('the "error" was [DONE]') + DONE])
    assert err is None and relay.done
    assert json.loads(events(out)[0])["choices"][0]["delta"]["content"] == 'the "error" was [DONE]'


def test_nothing_after_done_is_relayed():
    out, _, relay = relay_all([chunk("a") + DONE + chunk("late")])
    assert relay.done and events(out)[-1] == "[DONE]" and len(events(out)) == 2


def test_answer_body_renames_and_unwraps_a_one_element_list():
    body = b'{"id":"x","object":"chat.completion","model":"served/m","choices":[]}'
    assert json.loads(answer_body(body, ModelRename("served/m", "client")))["model"] == "client"
    assert json.loads(answer_body(b"[" + body + b"]", ModelRename("served/m", "client")))["id"] == "x"


@pytest.mark.parametrize("body,status", [
    (b'{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}',
     404),
    (b'[{"object":"error","message":"input too long","type":"BadRequestError","param":null,"code":400}]', 400),
    (b'{"error":{"message":"boom","type":"server_error"}}', 500),
])
def test_errors_answered_with_200_get_their_status(body, status):
    with pytest.raises(OpenAIError) as info:
        answer_body(body, ModelRename("m", "m"))
    assert info.value.status == status


def test_an_answer_that_is_not_json_is_a_502():
    with pytest.raises(OpenAIError) as info:
        answer_body(b"<html>oops</html>", ModelRename("m", "m"))
    assert info.value.status == 502


def test_failed_job_500_carries_the_workers_status():
    body = b'{"error":"vLLM returned HTTP 400: {\\"object\\":\\"error\\",\\"message\\":\\"too many tokens\\"}"}'
    err = upstream_error(RunPodError(500, "x", operation="openai/v1/chat/completions", body=body))
    assert err.status == 400 and "too many tokens" in err.message and err.should_retry is False


@pytest.mark.parametrize("status,expected,retry", [(429, 429, True), (401, 500, False), (503, 502, True),
                                                   (404, 502, False)])
def test_runpod_answers_are_runpods(status, expected, retry):
    err = upstream_error(RunPodError(status, "nope", operation="openai/v1/completions", body=b'{"error":"nope"}'))
    assert err.status == expected and err.should_retry is retry


def test_unreachable_upstream_is_retryable():
    err = upstream_error(RunPodError(502, "down", operation="openai/v1/completions", answered=False, reached=False))
    assert err.status == 502 and err.should_retry is True
