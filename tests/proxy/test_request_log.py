"""The one log line per request (``proxy.context``), as JSON (``proxy.logs``): the shared
stack's proxy logs to a file, not a terminal, so ``log_format = "auto"`` gives JSON there.
Each test finds its request's line by the ``x-request-id`` it was answered with."""

from __future__ import annotations

import json
import logging
import time

import httpx
import openai
import pytest

from proxy.logs import formatter

USER = [{"role": "user", "content": "Say hello"}]


def logged_lines(stack, since: int = 0) -> list[str]:
    """The proxy's log lines written whole so far (the last one may be half written), from
    character ``since`` on."""
    text = stack.proxy.output()[since:]
    return text[:text.rfind("\n") + 1].splitlines()


def request_line(stack, request_id: str, timeout: float = 10.0) -> dict:
    """The access line of ``request_id`` in the proxy's log (written after the response ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in logged_lines(stack):
            if request_id in line:
                record = json.loads(line)
                if record.get("request_id") == request_id:
                    return record
        time.sleep(0.05)
    raise AssertionError(f"no log line for {request_id}")


def test_every_line_of_a_non_terminal_log_is_a_json_object(stack, http):
    http.get("/models")
    lines = [line for line in logged_lines(stack)
             if line.strip() and not line.startswith("podgate proxy listening on")]  # the banner, on stdout
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys(), record


def test_a_completion_carries_ids_model_status_tokens(stack, http):
    r = http.post("/chat/completions", json={"model": "vllm-c", "messages": USER})
    assert r.status_code == 200
    line = request_line(stack, r.headers["x-request-id"])
    usage = r.json()["usage"]
    assert line["job_id"] == r.headers["x-runpod-job-id"]
    assert (line["model"], line["route"], line["status"], line["stream"]) == ("vllm-c", "chat_completions", 200, False)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert line["cancelled"] is False and line["ttft_ms"] is None and line["duration_ms"] > 0
    assert line["key_name"] is None and line["logger"] == "podgate.access"


@pytest.mark.parametrize("model", ["vllm-c", "pass-c"])
def test_a_stream_has_its_time_to_first_token_and_tokens(stack, model):
    client = openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=USER, stream=True, stream_options={"include_usage": True}) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    usage = chunks[-1].usage
    line = request_line(stack, request_id)
    assert line["stream"] is True and line["status"] == 200 and line["model"] == model
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)


def test_a_stream_without_usage_asked_still_logs_podgates_count(stack, http):
    with http.stream("POST", "/chat/completions", json={"model": "text", "messages": USER, "stream": True}) as r:
        body = r.read().decode()
    assert "usage" not in body  # the client did not ask
    line = request_line(stack, r.headers["x-request-id"])
    assert line["completion_tokens"] > 0 and line["tokens_estimated"] is True


def test_an_error_is_logged_with_its_status(stack, http):
    r = http.post("/chat/completions", json={"model": "no-such-model", "messages": USER})
    assert r.status_code == 404
    line = request_line(stack, r.headers["x-request-id"])
    assert (line["status"], line["route"], line["job_id"], line["prompt_tokens"]) == (404, "chat_completions", None, None)


def test_a_client_that_leaves_is_logged_cancelled(stack):
    before = set(stack.markers.glob("*.started"))
    with httpx.Client(base_url=stack.base_url, timeout=10) as c, \
            c.stream("POST", "/chat/completions",
                     json={"model": "vllm-c", "messages": [{"role": "user", "content": "#slow"}], "stream": True}) as r:
        request_id = r.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while not set(stack.markers.glob("*.started")) - before and time.monotonic() < deadline:
            time.sleep(0.05)
    assert set(stack.markers.glob("*.started")) - before  # the job ran when the client left
    line = request_line(stack, request_id)
    assert line["cancelled"] is True and line["note"] in ("cancelled", "client-disconnected")
    stack.wait_status(line["job_id"], "CANCELLED")


@pytest.mark.parametrize("model", ["vllm-c", "pass-c"])  # through the queue, and passed through
def test_a_client_that_leaves_before_the_answer_is_logged_499(stack, model):
    seen = len(stack.proxy.output())
    body = {"model": model, "messages": [{"role": "user", "content": "#slow_nonstream"}]}
    job = stack.abandon("/chat/completions", body)
    stack.wait_status(job, "CANCELLED")
    deadline = time.monotonic() + 10
    while not (lines := [json.loads(line) for line in logged_lines(stack, seen)
                         if '"podgate.access"' in line]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(line["model"], line["status"], line["note"], line["cancelled"]) for line in lines] == [
        (model, 499, "client-disconnected", True)]


def test_text_on_a_terminal_json_elsewhere():
    class Tty:
        def isatty(self) -> bool:
            return True

    record = logging.LogRecord("podgate.access", logging.INFO, __file__, 1, "GET /healthz 200", None, None)
    record.request_id = "req_1"
    assert formatter("auto", Tty()).format(record).endswith("INFO podgate.access: GET /healthz 200")
    line = json.loads(formatter("auto", object()).format(record))
    assert (line["message"], line["request_id"], line["level"]) == ("GET /healthz 200", "req_1", "INFO")
    assert json.loads(formatter("json").format(record))["logger"] == "podgate.access"
