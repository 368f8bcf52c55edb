"""``proxy.console.feed``: the snapshot an open console page receives, built from the app's
own hooks (a real ``Gateway``, its metrics, cancel queue and live requests; not started: the
ticks are driven by hand)."""

from __future__ import annotations

import time

import msgspec
import pytest

from adapters.events import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from proxy.app import Gateway
from proxy.live import CHARS_PER_TOKEN, tokens_in
from proxy.context import RequestContext
from proxy.settings import ModelSettings, ProxySettings


@pytest.fixture
def gateway() -> Gateway:
    return Gateway(ProxySettings(models=[ModelSettings(name="m", endpoint="ep", format="vllm"),
                                         ModelSettings(name="p", endpoint="ep2", format="openai")]))


def _finished(gateway: Gateway, ctx: RequestContext) -> None:
    """What the context middleware does when a request ends: every observer sees it."""
    for observe in (gateway.metrics.observe, gateway.console.observe):
        observe(ctx)


def _decode(event: bytes) -> dict:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return msgspec.json.decode(event[6:-2])


def test_snapshot_shape(gateway):
    s = gateway.console.snapshot()
    assert [m["name"] for m in s["models"]] == ["m", "p"]
    assert set(s["endpoints"]) == {"ep", "ep2"}
    assert s["endpoints"]["ep"]["budgets"] is None  # no upstreams yet: shown as "—"
    assert s["live"] == [] and s["errors"] == {} and s["keyed"] is False and s["runpod_429"] == 0
    assert s["cost"]["cancels_sent"] == 0 and s["cost"]["median_lag_s"] is None
    msgspec.json.encode(s)  # JSON all the way


def test_live_request_with_its_rate(gateway):
    ctx = RequestContext("chat_completions")
    ctx.model, ctx.job_id, ctx.stream = "m", "job-1", True
    ctx.first_token_at, ctx.streamed = time.monotonic() - 2.0, 11
    gateway.live.running[ctx.request_id] = ctx
    [row] = gateway.console.snapshot()["live"]
    assert row["request_id"] == ctx.request_id and row["job_id"] == "job-1" and row["key"] is None
    assert row["tokens"] == 11 and row["tokens_per_s"] == pytest.approx(5.0, rel=0.1)


def test_tokens_are_estimated_from_the_characters_a_batch_carries():
    batch = [TextDelta("Hello, world"), ReasoningDelta("hmm."), ToolCallDelta(tool_index=0, arguments='{"a":1}'),
             Finish("stop"), Usage(1, 2)]
    assert tokens_in(batch) == (12 + 4 + 7) / CHARS_PER_TOKEN  # a worker's event may carry many tokens
    assert tokens_in([]) == 0


def test_finished_requests_feed_latency_errors_and_savings(gateway):
    ok = RequestContext("chat_completions")
    ok.model, ok.status, ok.first_token_at = "m", 200, ok.started + 0.05
    failed = RequestContext("chat_completions")
    failed.model, failed.status, failed.error, failed.job_id = "m", 502, "upstream_error", "job-f"
    left = RequestContext("chat_completions")  # the client left mid-answer: podgate cancelled the job
    left.model, left.status, left.cancelled, left.note = "m", 200, True, "client-disconnected"
    set_at = time.monotonic()
    left.started = set_at - 6.0
    left.max_tokens, left.streamed, left.first_token_at = 101, 11, set_at - 5.0  # 2 tokens/s, 90 to go
    refused = RequestContext("chat_completions")  # a wrong key: no model known
    refused.status, refused.note = 401, "unauthorized"
    console = RequestContext("other")  # the console's own refusals are not the API's errors
    console.status = 401
    for ctx in (ok, failed, left, refused, console):
        _finished(gateway, ctx)
    gateway.console.cancel_lag(0.25)
    gateway.metrics.runpod_answer("run", 429)  # the upstream seam's hook: a 429, retried
    s = gateway.console.snapshot()
    assert s["runpod_429"] == 1
    assert s["errors"]["worker"]["count"] == 1 and s["errors"]["worker"]["latest"]["job_id"] == "job-f"
    assert s["errors"]["client"]["count"] == 1 and s["errors"]["client"]["latest"]["model"] == ""
    # 90 tokens to go at 10 tokens over the seconds since the first one (5 s when set)
    assert 45.0 <= s["cost"]["gpu_seconds_saved"] <= 9 * (5.0 + time.monotonic() - set_at)
    assert s["cost"]["saved_by_model"] == {"m": s["cost"]["gpu_seconds_saved"]}
    assert s["cost"]["median_lag_s"] == 0.25
    body, _ = gateway.metrics.exposition(None)
    assert f'podgate_gpu_seconds_saved_total{{model="m"}} {s["cost"]["gpu_seconds_saved"]}'.encode() in body
    latency = gateway.console.latency.summary()
    assert latency["m"]["5m"]["ttft"]["n"] == 2  # the cancelled one has a TTFT, not a job's duration
    assert latency["m"]["5m"]["duration"]["n"] == 1


def test_history_points_per_endpoint_bounded(gateway):
    from proxy.console.feed import HISTORY

    for _ in range(HISTORY + 5):
        gateway.console.sample()
    assert len(gateway.console.history["ep"]) == HISTORY
    assert gateway.console.history["ep"][-1][1:] == [None] * 8  # no /health reading yet: 2 job, 6 worker states
    assert len(gateway.console.snapshot()["endpoints"]["ep"]["history"]) == HISTORY
    assert "history" not in gateway.console.snapshot(charts=False)["endpoints"]["ep"]  # sent only when changed


async def test_pages_get_a_snapshot_now_then_one_per_tick(gateway):
    feed = gateway.console
    page = feed.subscribe()
    first = _decode(await anext(page))
    assert feed.pages == 1 and first["live"] == []
    ctx = RequestContext("chat_completions")
    ctx.model = "m"
    gateway.live.running[ctx.request_id] = ctx
    feed.tick()
    feed.tick()  # a slow page skips a snapshot: it gets the latest only
    second = _decode(await anext(page))
    assert [r["request_id"] for r in second["live"]] == [ctx.request_id]
    await page.aclose()
    assert feed.pages == 0
    feed.tick()  # nobody listens: nothing is built


async def test_a_draining_server_ends_the_pages(gateway):
    page = gateway.console.subscribe()
    await anext(page)
    gateway.drain.begin()
    gateway.console.tick()
    with pytest.raises(StopAsyncIteration):
        await anext(page)
    assert gateway.console.pages == 0
