"""Non-streaming requests to a generator worker without ``return_aggregate_stream``
(issue 7 item 3): RunPod's final output of its jobs is ``[]`` and the tokens exist only on
``/stream``, so podgate reads the job's stream to answer. A real SDK worker
(``handlers/faults.py:handler``, aggregate off) emits every worker format of
``conftest.MODELS``; the client is the real ``openai`` SDK, not streaming.
"""

from __future__ import annotations

import openai
import pytest

from tests.proxy.conftest import MODELS, start_proxy, write_config
from tests.proxy.handlers.faults import NUMBERS
from tests.proxy.handlers.workers import TEXT

FAULTS = "tests.proxy.handlers.faults:handler"
EXPECTED = "".join(TEXT)
USER = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def client(module_endpoint_factory, tmp_path_factory):
    server = module_endpoint_factory(endpoints=("so",))
    server.worker(FAULTS, endpoint="so", concurrency=4)
    tmp = tmp_path_factory.mktemp("stream-only")
    proxy = start_proxy(write_config(tmp / "so.toml", server.base, "so"), server.api_key, tmp)
    try:
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


@pytest.mark.parametrize("model", [m for m, spec in MODELS.items() if spec[0] != "openai"])
def test_chat(client, model):
    full = client.chat.completions.create(model=model, messages=USER)
    assert full.object == "chat.completion"
    assert full.choices[0].message.content == EXPECTED
    assert full.choices[0].finish_reason == "stop"
    assert full.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["vllm-c", "sglang", "native", "tgi", "text"])
def test_completions(client, model):
    full = client.completions.create(model=model, prompt="Say hello", max_tokens=50)
    assert full.object == "text_completion"
    assert full.choices[0].text == EXPECTED
    assert full.choices[0].finish_reason == "stop"


def test_job_still_running_after_runsync_wait(client):
    """The job outlives ``/runsync``'s wait (1 s here): its stream is read to the end."""
    full = client.chat.completions.create(model="text", messages=[{"role": "user", "content": "#numbers"}])
    assert full.choices[0].message.content == "".join(NUMBERS)


def test_worker_error_still_reported(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="vllm-c", messages=[{"role": "user", "content": "#error_raise"}])
    assert "engine crashed" in info.value.message
