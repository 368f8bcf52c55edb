"""Submits RunPod refused are retried before the first byte (issue 11, part 4; ``proxy.submit``).

A raw HTTP server on loopback plays RunPod (``tests.proxy.fake_runpod``): each endpoint id
names its misbehaviour (the part before the dash) and the path podgate takes (after it:
``stream`` → ``/run`` then ``/stream``, ``sync`` → ``/runsync``, ``pstream`` / ``psync`` →
the ``/openai/v1`` passthrough). It counts every submit it sees and when. podgate is the real ``podgate serve`` process, the
client the real ``openai`` SDK with its own retries off, so every retry counted is podgate's.
Each test asks its own models, so their ``podgate_submit_retries_total`` and
``podgate_reruns_total`` series (``/metrics``) are the test's alone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.proxy.conftest import ProxyProcess, start_proxy, write_config
from tests.proxy.fake_runpod import FAILING_RUNS, FAULTS
from tests.proxy.test_metrics import scrape

USER = [{"role": "user", "content": "hi"}]
MODES = ("stream", "sync", "pstream", "psync")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(fake_runpod, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp: Path = tmp_path_factory.mktemp("submits")
    extra = {f"{fault}-{mode}": {f"{fault}-{mode}": ("openai" if mode.startswith("p") else "text", "served")}
             for fault in FAULTS for mode in MODES}
    for fault in FAILING_RUNS:  # jobs that fail: run again once (retries = 1), or never
        for mode in ("stream", "sync"):
            extra[f"{fault}-{mode}"] = {f"{fault}-{mode}": ("text", None, {"retries": 1})}
            extra[f"{fault}-once-{mode}"] = {f"{fault}-once-{mode}": ("text", None)}
    for mode in MODES:  # nothing listens there: every submit fails to connect
        extra[f"gone-{mode}"] = {f"gone-{mode}": ("openai" if mode.startswith("p") else "text", "served",
                                                  {"base_url": f"http://127.0.0.1:{_closed_port()}/v2"})}
    first, *_ = extra
    config = write_config(tmp / "submits.toml", fake_runpod.base, first, models={}, extra_endpoints=extra)
    proxy = start_proxy(config, "rp_submit_key_0123456789", tmp)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def retries(proxy: ProxyProcess, model: str) -> dict[str, float]:
    """``podgate_submit_retries_total`` of ``model``, by reason (the non-zero ones)."""
    return {dict(labels)["reason"]: v for (name, labels), v in scrape(proxy).items()
            if name == "podgate_submit_retries_total" and dict(labels)["model"] == model and v}


def reruns(proxy: ProxyProcess, model: str) -> dict[str, float]:
    """``podgate_reruns_total`` of ``model``, by result (every series present)."""
    return {dict(labels)["result"]: v for (name, labels), v in scrape(proxy).items()
            if name == "podgate_reruns_total" and dict(labels)["model"] == model}


def _ask(client: openai.OpenAI, model: str) -> str:
    if model.endswith("stream"):
        chunks = client.chat.completions.create(model=model, messages=USER, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=USER).choices[0].message.content or ""


@pytest.mark.parametrize("mode", MODES)
def test_a_429_is_retried_after_its_retry_after(client, proxy, fake_runpod, mode):
    model = f"after-{mode}"
    assert _ask(client, model) == "hello"
    first, second = fake_runpod.submits[model]
    assert second - first >= 1.0  # Retry-After: 1 was honoured (jitter only lengthens it)
    assert retries(proxy, model) == {"429": 1}


@pytest.mark.parametrize("mode", MODES)
def test_a_503_is_retried_with_backoff(client, proxy, fake_runpod, mode):
    model = f"unavail-{mode}"
    assert _ask(client, model) == "hello"
    assert len(fake_runpod.submits[model]) == 3
    assert retries(proxy, model) == {"5xx": 2}


@pytest.mark.parametrize("mode", MODES)
def test_a_submit_that_cannot_connect_is_retried(client, proxy, mode):
    model = f"gone-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert info.value.status_code == 502
    assert info.value.response.headers["x-should-retry"] == "true"
    assert retries(proxy, model) == {"connect": 2}


@pytest.mark.parametrize("mode", MODES)
def test_always_429_reaches_the_client_after_the_retries(client, proxy, fake_runpod, mode):
    model = f"limited-{mode}"
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, model)
    assert info.value.status_code == 429
    assert info.value.response.headers["x-should-retry"] == "true"
    assert "retry-after" in info.value.response.headers
    assert len(fake_runpod.submits[model]) == 3  # the first try and submit_retries = 2
    assert retries(proxy, model) == {"429": 2}


@pytest.mark.parametrize("mode", MODES)
def test_a_500_is_not_retried(client, proxy, fake_runpod, mode):
    """The request reached RunPod and failed: the job may exist, so it is not sent again."""
    model = f"broken-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert info.value.status_code >= 500
    assert len(fake_runpod.submits[model]) == 1
    assert retries(proxy, model) == {}


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
def test_a_job_that_failed_before_any_output_is_run_again(client, proxy, fake_runpod, mode):
    """``retries = 1``: the job's first run FAILED, ``/retry`` ran it again (same job), and
    the client got its answer; nothing was submitted twice."""
    model = f"flaky-{mode}"
    assert _ask(client, model) == "hello"
    assert len(fake_runpod.submits[model]) == 1
    assert fake_runpod.retries[f"{model}.1"] == 1
    assert reruns(proxy, model) == {"queued": 1, "failed": 0}


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_a_job_that_keeps_failing_is_run_again_only_retries_times(client, proxy, fake_runpod, mode):
    model = f"doomed-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert "the worker crashed" in info.value.message
    assert fake_runpod.retries[f"{model}.1"] == 1
    assert reruns(proxy, model) == {"queued": 1, "failed": 0}


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_a_job_runpod_will_not_run_again_keeps_its_error(client, proxy, mode):
    """``/retry`` answered 404 (the job expired): the job's own error is the client's."""
    model = f"expired-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert "the worker crashed" in info.value.message
    assert reruns(proxy, model) == {"queued": 0, "failed": 1}


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_without_retries_a_failed_job_is_not_run_again(client, proxy, fake_runpod, mode):
    model = f"flaky-once-{mode}"
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, model)
    assert "the worker crashed" in info.value.message
    assert fake_runpod.retries[f"{model}.1"] == 0
    assert reruns(proxy, model) == {}  # no retries: no series
