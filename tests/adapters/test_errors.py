"""Every error form of reference/worker-formats.md §8.6 → OpenAI error with a real status."""

from __future__ import annotations

import json
import traceback

import msgspec
import pytest

from adapters.errors import (
    InvalidRequest, OpenAIError, UnsupportedParameter, UpstreamError, clean_message,
    find_output_error, from_job_status, from_runpod, from_worker_error, to_exception,
)
from adapters.upstream import RunPodError
from adapters.events import ErrorEvent

VLLM_NESTED = {"error": {"message": "This model's maximum context length is 2048 tokens.", "type": "BadRequestError", "param": None, "code": 400}}
VLLM_FLAT = {"object": "error", "message": "The model `gpt-4` does not exist.", "type": "NotFoundError", "param": None, "code": 404}


def runpod_generator_error(yielded_error):
    """What runpod-python stores for a generator that yields {"error": value}: str(value)."""
    return str(yielded_error)


def test_failed_era_b_nested_python_repr():
    # worker-vllm >= v2.12.1 yields {"error": ErrorResponse.model_dump()} → str() of the nested dict
    ev = from_worker_error(runpod_generator_error(VLLM_NESTED))
    assert ev.status == 400 and ev.type == "invalid_request_error"
    assert ev.message == "This model's maximum context length is 2048 tokens."


def test_failed_era_b_flat_python_repr():
    ev = from_worker_error(runpod_generator_error(VLLM_FLAT))
    assert ev.status == 404 and ev.code == "model_not_found"
    assert "does not exist" in ev.message


def test_a_failed_jobs_error_wrapped_as_a_message_by_a_gateway():
    # the gateway's in-stream error for a FAILED job: its error text as the message
    wrapped = {"error": {"message": runpod_generator_error(VLLM_NESTED["error"]), "type": "server_error", "code": 500}}
    ev = find_output_error(wrapped)
    assert ev is not None and ev.status == 400
    assert ev.message == "This model's maximum context length is 2048 tokens."


@pytest.mark.parametrize("inner_msg", ['prompt is "too" long', "it's too long"])
def test_failed_era_c_vllm_returned_http(inner_msg):
    body = json.dumps({"error": {"message": inner_msg, "type": "BadRequestError", "param": "messages", "code": 400}})
    yielded = {"message": f"vLLM returned HTTP 400: {body}", "type": "worker_error", "code": None}
    ev = from_worker_error(runpod_generator_error(yielded))
    assert ev.status == 400
    assert ev.message == inner_msg
    assert ev.param == "messages"


def test_vllm_returned_http_with_plain_text_body():
    ev = from_worker_error("{'message': 'vLLM returned HTTP 503: Service Unavailable', 'type': 'worker_error', 'code': None}")
    assert ev.status == 503 and ev.message == "Service Unavailable" and ev.type == "server_error"


def test_plain_handler_exception_json_string():
    try:
        raise ValueError("bad input value")
    except ValueError as err:
        error = json.dumps({
            "error_type": str(type(err)), "error_message": str(err),
            "error_traceback": traceback.format_exc(), "hostname": "h", "worker_id": "w", "runpod_version": "1.12.0",
        })
    ev = from_worker_error(error)
    assert ev.message == "bad input value" and ev.status == 500
    assert "Traceback" not in ev.message


def test_generator_handler_exception_traceback_dropped():
    error = "handler: CUDA out of memory \ntraceback: Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA"
    ev = from_worker_error(error)
    assert ev.message == "CUDA out of memory" and ev.status == 500


def test_plain_error_string():
    ev = from_worker_error("Invalid prompt")
    assert ev == ErrorEvent(message="Invalid prompt", type="server_error", code=None, param=None, status=500)


def test_output_error_dicts():
    assert find_output_error({"choices": []}) is None
    assert find_output_error("text") is None
    ev = find_output_error(VLLM_FLAT)
    assert ev.status == 404
    ev = find_output_error(VLLM_NESTED)
    assert ev.status == 400
    ev = find_output_error({"error": "Generate request failed with status code 500", "details": "boom"})
    assert ev.status == 500 and "status code 500" in ev.message
    ev = find_output_error({"error": ["width must be <= 1024", "seed must be int"]})
    assert "width" in ev.message and "seed" in ev.message
    # vLLM-omni: {"error": <parsed JSON>, "status": code}
    ev = find_output_error({"error": {"message": "nope"}, "status": 422})
    assert ev.status == 422 and ev.message == "nope"
    # infinity flat error
    ev = find_output_error({"object": "error", "message": "model not loaded", "type": "BadRequestError", "param": None, "code": 400})
    assert ev.status == 400


def test_error_inside_error_value_json_string():
    ev = from_worker_error('{"error": {"message": "m", "code": 429, "type": "RateLimitError"}}')
    assert ev.status == 429 and ev.type == "rate_limit_error"


def test_unparseable_repr_uses_regex():
    # a repr that literal_eval cannot read (an object repr inside)
    s = "{'message': \"can't do it\", 'code': 400, 'obj': <object at 0x1>}"
    ev = from_worker_error(s)
    assert ev.message == "can't do it" and ev.status == 400


def test_huge_error_is_bounded_and_secrets_masked():
    s = "rpa_ABCDEFGHIJKLMNOPQRSTUV failed with Authorization: Bearer sk-abcdefghijklmnop " + "x" * 10000
    ev = from_worker_error(s)
    assert len(ev.message) <= 2000
    assert "ABCDEFGHIJKLMNOP" not in ev.message and "abcdefghijklmnop" not in ev.message
    assert clean_message("api_key=supersecretvalue123 ok") == "api_key=*** ok"


def test_job_status_errors():
    assert from_job_status("COMPLETED") is None
    assert from_job_status("IN_PROGRESS") is None
    assert from_job_status("TIMED_OUT").status == 504
    assert from_job_status("CANCELLED").status == 502
    assert from_job_status("FAILED").status == 500
    assert from_job_status("FAILED", runpod_generator_error(VLLM_NESTED)).status == 400


@pytest.mark.parametrize(
    "status,expected",
    [(401, 500), (403, 500), (404, 502), (429, 429), (400, 400), (413, 413), (500, 502), (502, 502), (503, 502), (408, 504)],
)
def test_runpod_http_errors(status, expected):
    err = from_runpod(RunPodError(status, "something", operation="run", retry_after=3.0))
    assert isinstance(err, UpstreamError)
    assert err.status == expected
    body = msgspec.json.decode(msgspec.json.encode(err.response()))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert err.retry_after == 3.0 and err.type == "rate_limit_error"


def test_runpod_401_never_echoes_key():
    err = from_runpod(RunPodError(401, "Bearer rpa_SECRETSECRETSECRET", operation="run"))
    assert "SECRET" not in err.message


@pytest.mark.parametrize("exc,status,code,should_retry", [
    # RunPod turned the submit away before accepting a job: safe and useful to retry
    (RunPodError(502, "upstream unreachable (ConnectError)", operation="run", answered=False, reached=False),
     502, "upstream_unreachable", True),
    (RunPodError(429, "slow down", operation="runsync", retry_after=2.0), 429, "rate_limit_exceeded", True),
    (RunPodError(503, "busy", operation="run"), 502, "upstream_error", True),
    # the submit may have reached RunPod (timed out after sending): its fate is unknown
    (RunPodError(504, "upstream timed out (ReadTimeout)", operation="run", answered=False), 504, "timeout", False),
    (RunPodError(500, "internal error", operation="run"), 502, "upstream_error", False),  # it may have acted
    (RunPodError(504, "gateway timeout", operation="runsync"), 502, "upstream_error", False),
    # after the job was accepted (a poll), or an answer that will not change
    (RunPodError(429, "slow down", operation="stream"), 429, "rate_limit_exceeded", False),
    (RunPodError(502, "upstream connection failed (RemoteProtocolError)", operation="status", answered=False),
     502, "upstream_unreachable", False),
    (RunPodError(401, "unauthorized", operation="run"), 500, "upstream_auth", False),
    (RunPodError(404, "endpoint not found", operation="run"), 502, "upstream_not_found", False),
])
def test_runpod_failure_maps_once_with_its_retry_advice(exc, status, code, should_retry):
    err = from_runpod(exc)
    assert isinstance(err, UpstreamError)
    assert (err.status, err.code, err.should_retry) == (status, code, should_retry)


def test_runpod_message_is_used_as_read_not_parsed_again():
    # the client read RunPod's message from its body once; the mapping quotes it as it is
    err = from_runpod(RunPodError(400, "bad input: expected {'prompt': str}", operation="run"))
    assert err.message == "RunPod rejected the request: bad input: expected {'prompt': str}"
    err = from_runpod(RunPodError(404, "", operation="status"))
    assert err.message == "RunPod answered 404: the endpoint or job does not exist."


def test_exceptions_shapes():
    u = UnsupportedParameter("logprobs")
    assert u.status == 400 and u.param == "logprobs" and u.code == "unsupported_parameter"
    assert isinstance(u, OpenAIError) and isinstance(InvalidRequest("x"), OpenAIError)
    ev = ErrorEvent("m", "invalid_request_error", None, "p", 400)
    e = to_exception(ev)
    assert e.status == 400 and e.param == "p"
    assert (e.message, e.type, e.code, e.param, e.status) == (ev.message, ev.type, ev.code, ev.param, ev.status)


def test_failed_era_b_openai_route_inner_dict_repr_and_era_c_other_failures():
    ev = from_worker_error(str({"message": "Input too long", "type": "BadRequestError", "param": None, "code": 400}))
    assert (ev.status, ev.message) == (400, "Input too long")
    ev = from_worker_error(str({"message": "vLLM server is not running", "type": "worker_error", "code": None}))
    assert (ev.status, ev.message) == (500, "vLLM server is not running")
    body = json.dumps({"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}})
    ev = from_worker_error(str({"message": f"vLLM returned HTTP 404: {body}", "type": "worker_error", "code": None}))
    assert (ev.status, ev.code, ev.param) == (404, "model_not_found", "model")
