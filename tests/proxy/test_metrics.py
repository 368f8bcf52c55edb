"""``GET /metrics`` (``proxy.metrics``, ``proxy.health``): a podgate with a client key and a
short ``/health`` interval in front of the shared stack's endpoint (real SDK workers), driven
by the real ``openai`` SDK; a second podgate on an endpoint that rate-limits ``/run``.

Every test reads the counters before and after (the module's proxy is shared) and parses the
output with ``prometheus_client.parser``. The observer runs just after a response ended, so
an expected value is waited for (``wait_for``: bounded, it fails with the last scrape)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http_upstream import HTTPUpstream, make_transport
from adapters.runpod_client import RunPodQueueClient
from adapters.upstream import RunPodError, UpstreamRequest
from proxy.cancel import CancelQueue
from proxy.keys import hash_key
from proxy.metrics import Metrics
from proxy.settings import SettingsError, parse_settings
from tests.proxy.conftest import ProxyProcess, running_proxy, start_proxy, write_config

KEY = "pg-metrics-team-0123456789abcdef"
USER = [{"role": "user", "content": "Say hello"}]
SLOW = [{"role": "user", "content": "#slow"}]
OPERATIONS = {"run", "runsync", "status", "stream", "cancel", "health", "openai/v1/chat/completions",
              "openai/v1/completions", "openai/v1/embeddings"}

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def metered(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("metrics")
    config = write_config(tmp / "metered.toml", stack.endpoint.base, "ep",
                          models={"vllm-c": ("vllm", "era-c"), "pass-c": ("openai", "era-c"), "text": ("text", None)},
                          extra_endpoints={"ghost": {"ghost-model": ("text", None)}},  # no such endpoint
                          extra=f'\n[metrics]\nhealth_interval_s = 0.2\n\n[[keys]]\nname = "team"\n'
                                f'sha256 = "{hash_key(KEY)}"\n')
    with running_proxy(config, stack.endpoint.api_key, tmp) as proxy:
        yield proxy


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)


def metrics_text(proxy: ProxyProcess, accept: str | None = None) -> httpx.Response:
    r = httpx.get(f"http://127.0.0.1:{proxy.port}/metrics", headers={"accept": accept} if accept else {}, timeout=10)
    assert r.status_code == 200, r.text
    return r


def scrape(proxy: ProxyProcess) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(metrics_text(proxy).text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(proxy: ProxyProcess, check: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(proxy)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("the metrics never got there; last scrape:\n" + metrics_text(proxy).text[-4000:])
        time.sleep(0.05)


def requests(samples: Samples, model: str, status: str, route: str = "chat_completions", key: str = "team") -> float:
    return value(samples, "podgate_requests_total", model=model, route=route, status=status, key=key)


def test_a_completion_moves_requests_duration_tokens_and_runpod_calls(metered):
    before = scrape(metered)
    answer = client(metered).chat.completions.create(model="vllm-c", messages=USER)
    after = wait_for(metered, lambda s: requests(s, "vllm-c", "200") == requests(before, "vllm-c", "200") + 1)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("podgate_request_duration_seconds_count", model="vllm-c", route="chat_completions") == 1
    assert moved("podgate_tokens_total", model="vllm-c", kind="prompt", estimated="false") == answer.usage.prompt_tokens
    assert moved("podgate_tokens_total", model="vllm-c", kind="completion",
                 estimated="false") == answer.usage.completion_tokens > 0
    assert moved("podgate_runpod_calls_total", operation="runsync", status="200") >= 1
    assert moved("podgate_time_to_first_token_seconds_count", model="vllm-c") == 0  # not a stream
    assert moved("podgate_budget_wait_seconds_count", operation="runsync") >= 1  # every budgeted call is timed
    assert "_created" not in metrics_text(metered).text  # no series nobody graphs


def test_a_stream_is_active_while_it_runs_and_estimated_tokens_are_labelled(metered):
    before = scrape(metered)
    chunks = list(client(metered).chat.completions.create(model="text", messages=USER, stream=True))
    assert chunks
    after = wait_for(metered, lambda s: requests(s, "text", "200") == requests(before, "text", "200") + 1)
    assert value(after, "podgate_time_to_first_token_seconds_count", model="text") == \
        value(before, "podgate_time_to_first_token_seconds_count", model="text") + 1
    # the worker reported no usage and the client asked for none: podgate's count, labelled so
    estimated = value(after, "podgate_tokens_total", model="text", kind="completion", estimated="true") - \
        value(before, "podgate_tokens_total", model="text", kind="completion", estimated="true")
    assert estimated > 0
    assert value(after, "podgate_active_streams", model="text") == 0


@pytest.mark.parametrize("model", ["vllm-c", "pass-c"])
def test_a_client_that_leaves_a_stream_is_counted_and_the_gauge_comes_down(metered, model):
    before = scrape(metered)
    assert value(before, "podgate_active_streams", model=model) == 0
    stream = client(metered).chat.completions.create(model=model, messages=SLOW, stream=True)
    next(iter(stream))  # the response has started: the job sleeps after its first delta
    running = wait_for(metered, lambda s: value(s, "podgate_active_streams", model=model) == 1)
    assert value(running, "podgate_requests_cancelled_total", model=model, route="chat_completions") == \
        value(before, "podgate_requests_cancelled_total", model=model, route="chat_completions")
    stream.close()
    after = wait_for(metered, lambda s: value(s, "podgate_active_streams", model=model) == 0 and value(
        s, "podgate_requests_cancelled_total", model=model, route="chat_completions") == value(
        before, "podgate_requests_cancelled_total", model=model, route="chat_completions") + 1)
    if model == "vllm-c":  # the queue path sends /cancel; the passthrough closes its upstream request
        after = wait_for(metered, lambda s: value(s, "podgate_cancels_total", result="ok") ==
                         value(before, "podgate_cancels_total", result="ok") + 1)
        assert value(after, "podgate_runpod_calls_total", operation="cancel", status="200") >= 1
    assert value(after, "podgate_time_to_first_token_seconds_count", model=model) == \
        value(before, "podgate_time_to_first_token_seconds_count", model=model) + 1


def test_an_unknown_model_is_counted_as_unknown(metered):
    before = scrape(metered)
    with pytest.raises(openai.NotFoundError):
        client(metered).chat.completions.create(model="no-such-model-7f3a", messages=USER)
    wait_for(metered, lambda s: requests(s, "unknown", "404") == requests(before, "unknown", "404") + 1)
    assert "no-such-model-7f3a" not in metrics_text(metered).text


def test_health_gauges_appear_and_an_outage_is_logged_once(metered):
    samples = wait_for(metered, lambda s: value(s, "podgate_runpod_endpoint_health_up", endpoint="ep") == 1
                       and value(s, "podgate_runpod_endpoint_workers", endpoint="ep", state="ready") == 2)
    assert ("podgate_runpod_endpoint_jobs", frozenset({"endpoint": "ep", "state": "inQueue"}.items())) in samples
    assert value(samples, "podgate_runpod_endpoint_health_timestamp_seconds", endpoint="ep") > 0
    # the endpoint that does not exist: down, no reading, one log line however many polls failed
    samples = wait_for(metered, lambda s: value(s, "podgate_runpod_calls_total", operation="health", status="404") >= 3)
    assert value(samples, "podgate_runpod_endpoint_health_up", endpoint="ghost") == 0
    assert not [k for k in samples if k[0] == "podgate_runpod_endpoint_workers" and ("endpoint", "ghost") in k[1]]
    failures = [line for line in metered.output().splitlines() if "/health failed" in line]
    assert len(failures) == 1 and "ghost" in failures[0], failures


def test_no_key_hash_or_runpod_key_in_the_metrics(metered, stack):
    with httpx.Client(base_url=metered.base_url, timeout=10) as http:
        assert http.post("/chat/completions", json={"model": "vllm-c", "messages": USER}).status_code == 401
        assert http.post("/chat/completions", json={"model": "vllm-c", "messages": USER},
                         headers={"authorization": "Bearer pg-wrong-key-5555555555"}).status_code == 401
    client(metered).chat.completions.create(model="pass-c", messages=USER)
    samples = wait_for(metered, lambda s: requests(s, "", "401", key="") >= 2 and requests(s, "pass-c", "200") >= 1)
    assert value(samples, "podgate_runpod_calls_total", operation="openai/v1/chat/completions", status="200") >= 1
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        r = metrics_text(metered, accept)
        for secret in (KEY, hash_key(KEY), stack.endpoint.api_key, "pg-wrong-key-5555555555"):
            assert secret not in r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    keys = {dict(labels).get("key") for name, labels in samples if name == "podgate_requests_total"}
    assert keys <= {"", "team"}
    operations = {dict(labels)["operation"] for name, labels in samples if name == "podgate_runpod_calls_total"}
    assert operations and operations <= OPERATIONS, operations  # fixed names: never a job id


def test_runpod_429s_are_counted_and_no_health_poll_when_off(stack, tmp_path, module_endpoint_factory):
    server = module_endpoint_factory(endpoints=("rl",), limits={"run": (1, 0), "runsync": (1, 0)}, rate_window=60)
    config = write_config(tmp_path / "rl.toml", server.base, "rl", models={"m": ("vllm", "era-c")},
                          extra="\n[metrics]\nhealth_interval_s = 0\n")
    proxy = start_proxy(config, server.api_key, tmp_path)
    try:
        oai = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        statuses = []
        for _ in range(3):
            try:
                oai.chat.completions.create(model="m", messages=USER, stream=True).close()
                statuses.append(200)
            except openai.RateLimitError as exc:
                statuses.append(exc.status_code)
        assert 429 in statuses
        refused = statuses.count(429)
        samples = wait_for(proxy, lambda s: requests(s, "m", "429", key="") == refused)
        assert value(samples, "podgate_runpod_rate_limited_total", operation="run") >= refused
        assert value(samples, "podgate_runpod_calls_total", operation="run", status="429") >= refused
        assert not [k for k in samples if k[0].startswith("podgate_runpod_endpoint_")]
        assert value(samples, "podgate_runpod_calls_total", operation="health", status="200") == 0
    finally:
        proxy.stop()


async def test_a_call_that_got_no_answer_is_counted_as_error():
    """An unreachable upstream (a port nobody listens on): no status came, ``status="error"``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = parse_settings('[[models]]\nname = "m"\nendpoint = "ep"\nformat = "vllm"\n',
                              env={"RUNPOD_API_KEY": "rpa_SECRET_0123456789"})
    metrics = Metrics(settings)
    up = HTTPUpstream(make_transport(), f"http://127.0.0.1:{port}/v2", settings.api_key, connect_timeout=2.0,
                      on_answer=metrics.runpod_answer)
    try:
        for call in (up.send, up.open):
            with pytest.raises(RunPodError) as info:
                await call(UpstreamRequest("POST", "ep/run", "run", b"{}"))
            assert info.value.status == 502 and not info.value.reached
    finally:
        await up.aclose()
    body, _ = metrics.exposition(None)
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(body.decode())
               for s in f.samples}
    assert value(samples, "podgate_runpod_calls_total", operation="run", status="error") == 2
    assert "rpa_SECRET" not in body.decode()


def test_the_cancel_queue_depth_is_read_at_scrape_time():
    """Cancels queued and not sent yet (a queue that is not running, as while a burst waits
    for RunPod's /cancel budget) show in ``podgate_cancel_queue_depth``; a coalesced duplicate
    does not count twice."""
    settings = parse_settings('[[models]]\nname = "m"\nendpoint = "ep"\nformat = "vllm"\n', env={"RUNPOD_API_KEY": "x"})
    queue = CancelQueue()
    metrics = Metrics(settings, cancel_queue=queue)

    def depth() -> float:
        body, _ = metrics.exposition(None)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        return families["podgate_cancel_queue_depth"].samples[0].value

    assert depth() == 0
    client = RunPodQueueClient(HTTPUpstream(make_transport(), "http://127.0.0.1:9/v2", "x"))
    for job in ("j1", "j2", "j1"):
        queue.submit(client, "ep", job)
    assert depth() == 2


@pytest.mark.parametrize("line, problem", [("health_interval_s = -1", "metrics.health_interval_s: must not be negative"),
                                           ("health_every = 5", "metrics.health_every: unknown key")])
def test_a_bad_metrics_setting_names_its_key(line, problem):
    with pytest.raises(SettingsError, match=problem):
        parse_settings(f'[metrics]\n{line}\n\n[[models]]\nname = "m"\nendpoint = "ep"\nformat = "vllm"\n',
                       env={"RUNPOD_API_KEY": "rpa_SECRET_0123456789"})
