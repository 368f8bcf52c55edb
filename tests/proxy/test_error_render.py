"""``proxy.errors`` only renders: an ``OpenAIError``, a ``RunPodError`` (mapped by
``adapters.errors.from_runpod``, which decides ``x-should-retry``) and a job's
``ErrorEvent`` all come out in OpenAI's shape, the configured keys masked."""

from __future__ import annotations

import msgspec

from adapters.errors import KeyMask, OpenAIError
from adapters.events import ErrorEvent
from adapters.sse import DONE
from adapters.upstream import RunPodError
from proxy.errors import error_response, sse_error

KEY = "odd-key-value-42"


def _sse_payload(data: bytes) -> dict:
    assert data.startswith(b"data: ") and data.endswith(DONE)
    return msgspec.json.decode(data[len(b"data: "):-len(DONE)])


def test_a_job_error_event_renders_in_the_stream_with_keys_masked():
    ev = ErrorEvent(f"worker said {KEY}", type="invalid_request_error", code="bad", param="p", status=400)
    body = _sse_payload(sse_error(ev, KeyMask([KEY])))
    assert body == {"error": {"message": "worker said ***", "type": "invalid_request_error", "param": "p",
                              "code": "bad"}}
    assert ev.message == f"worker said {KEY}"  # the event itself is left as it is


def test_a_runpod_failure_renders_as_its_mapped_error():
    refused = RunPodError(429, "slow down", operation="run", retry_after=2.5)
    response = error_response(refused, KeyMask([KEY]))
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "true" and response.headers["retry-after"] == "3"
    body = _sse_payload(sse_error(RunPodError(504, "timed out", operation="stream", answered=False)))
    assert body["error"]["code"] == "timeout" and body["error"]["type"] == "timeout"


def test_an_openai_error_renders_with_its_status_and_keys_masked():
    response = error_response(OpenAIError(f"bad {KEY}", status=418, type="x"), KeyMask([KEY]))
    assert response.status_code == 418 and KEY.encode() not in response.content
    assert msgspec.json.decode(response.content)["error"]["message"] == "bad ***"
