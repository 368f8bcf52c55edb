"""Submits RunPod refused are retried before the first byte (issue 11, part 4; ``proxy.submit``).

A raw HTTP server on loopback plays RunPod (``tests.proxy.fake_runpod``): each endpoint id
names its misbehaviour (the part before the dash) and the path podgate takes (after it:
``stream`` → ``/run`` then ``/stream``, ``sync`` → ``/runsync``, ``pstream`` / ``psync`` →
the ``/openai/v1`` passthrough). It counts every submit it sees and when. podgate is the real ``podgate serve`` process, the
client the real ``openai`` SDK with its own retries off, so every retry counted is podgate's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.proxy.conftest import start_proxy, write_config
from tests.proxy.fake_runpod import FAILING_RUNS, FAULTS

USER = [{"role": "user", "content": "hi"}]
MODES = ("stream", "sync", "pstream", "psync")


@pytest.fixture(scope="module")
def client(fake_runpod, tmp_path_factory) -> Iterator[openai.OpenAI]:
    tmp: Path = tmp_path_factory.mktemp("submits")
    extra = {f"{fault}-{mode}": {f"{fault}-{mode}": ("openai" if mode.startswith("p") else "text", "served")}
             for fault in FAULTS for mode in MODES}
    for fault in FAILING_RUNS:  # jobs that fail: run again once (retries = 1), or never
        for mode in ("stream", "sync"):
            extra[f"{fault}-{mode}"] = {f"{fault}-{mode}": ("text", None, {"retries": 1})}
            extra[f"{fault}-once-{mode}"] = {f"{fault}-once-{mode}": ("text", None)}
    first, *_ = extra
    config = write_config(tmp / "submits.toml", fake_runpod.base, first, models={}, extra_endpoints=extra)
    proxy = start_proxy(config, "rp_submit_key_0123456789", tmp)
    try:
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


def _ask(client: openai.OpenAI, model: str) -> str:
    if model.endswith("stream"):
        chunks = client.chat.completions.create(model=model, messages=USER, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=USER).choices[0].message.content or ""


@pytest.mark.parametrize("mode", MODES)
def test_a_429_is_retried_after_its_retry_after(client, fake_runpod, mode):
    model = f"after-{mode}"
    assert _ask(client, model) == "hello"
    first, second = fake_runpod.submits[model]
    assert second - first >= 1.0  # Retry-After: 1 was honoured (jitter only lengthens it)


@pytest.mark.parametrize("mode", MODES)
def test_a_503_is_retried_with_backoff(client, fake_runpod, mode):
    model = f"unavail-{mode}"
    assert _ask(client, model) == "hello"
    assert len(fake_runpod.submits[model]) == 3


@pytest.mark.parametrize("mode", MODES)
def test_always_429_reaches_the_client_after_the_retries(client, fake_runpod, mode):
    model = f"limited-{mode}"
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, model)
    assert info.value.status_code == 429
    assert info.value.response.headers["x-should-retry"] == "true"
    assert "retry-after" in info.value.response.headers
    assert len(fake_runpod.submits[model]) == 3  # the first try and submit_retries = 2


@pytest.mark.parametrize("mode", MODES)
def test_a_500_is_not_retried(client, fake_runpod, mode):
    """The request reached RunPod and failed: the job may exist, so it is not sent again."""
    model = f"broken-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert info.value.status_code >= 500
    assert len(fake_runpod.submits[model]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_client_leaving_ends_the_retrying(client, fake_runpod, mode):
    model = f"patient-{mode}"
    with pytest.raises(openai.APITimeoutError):
        _ask(client.with_options(timeout=0.5), model)  # gone while podgate waits out Retry-After: 2
    time.sleep(3.0)  # past Retry-After and its jitter: a retry still going would have come by now
    assert len(fake_runpod.submits[model]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_after_longer_than_podgate_waits_goes_to_the_client_at_once(client, fake_runpod, mode):
    model = f"far-{mode}"
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, model)
    assert info.value.response.headers["retry-after"] == "120"
    assert len(fake_runpod.submits[model]) == 1


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_a_job_that_failed_before_any_output_is_run_again(client, fake_runpod, mode):
    """``retries = 1``: the job's first run FAILED, ``/retry`` ran it again (same job), and
    the client got its answer; nothing was submitted twice."""
    model = f"flaky-{mode}"
    assert _ask(client, model) == "hello"
    assert len(fake_runpod.submits[model]) == 1
    assert fake_runpod.retries[f"{model}.1"] == 1


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_a_job_that_keeps_failing_is_run_again_only_retries_times(client, fake_runpod, mode):
    model = f"doomed-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert "the worker crashed" in info.value.message
    assert fake_runpod.retries[f"{model}.1"] == 1


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_without_retries_a_failed_job_is_not_run_again(client, fake_runpod, mode):
    model = f"flaky-once-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert "the worker crashed" in info.value.message
    assert fake_runpod.retries[f"{model}.1"] == 0
