"""``proxy.console.windows``: latency percentiles in minute slots, errors by kind, cancel lags."""

from __future__ import annotations

import pytest

from proxy.console.windows import LAGS, RATIO, Errors, Lags, Latency, Percentiles, bucket_of, classify, upper_bound
from proxy.context import RequestContext

T0 = 1_800_000_000.0  # a whole minute


def test_a_bucket_holds_its_value_within_the_ratio():
    for seconds in (0.0005, 0.001, 0.0123, 0.5, 1.0, 7.3, 42.0, 599.0):
        b = bucket_of(seconds)
        assert seconds <= upper_bound(b) * (1 + 1e-9)
        assert b == 0 or upper_bound(b) / RATIO < seconds


def test_percentiles_of_a_window():
    p = Percentiles()
    for i in range(1, 101):  # 10 ms … 1 s
        p.add(i / 100, now=T0)
    s = p.summary(5, now=T0)
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(0.5, rel=0.1)
    assert s["p90"] == pytest.approx(0.9, rel=0.1)
    assert s["p99"] == pytest.approx(0.99, rel=0.1)


def test_old_minutes_leave_the_window_and_their_slot_is_reused():
    p = Percentiles()
    p.add(10.0, now=T0)
    p.add(0.1, now=T0 + 6 * 60)
    assert p.summary(5, now=T0 + 6 * 60)["n"] == 1  # the 10 s one is 6 minutes old
    assert p.summary(60, now=T0 + 6 * 60)["n"] == 2
    p.add(0.2, now=T0 + 60 * 60)  # the same slot as T0, an hour later: T0's count is gone
    assert p.summary(60, now=T0 + 60 * 60)["n"] == 2
    assert p.summary(5, now=T0 + 3 * 3600)["n"] == 0
    assert p.summary(5, now=T0 + 3 * 3600)["p50"] is None


def test_latency_per_model_and_window():
    lat = Latency()
    lat.add("m", 0.2, 1.5, now=T0)
    lat.add("m", None, 0.5, now=T0)  # not a stream: no TTFT
    s = lat.summary(now=T0)
    assert set(s) == {"m"} and set(s["m"]) == {"5m", "60m"}
    assert s["m"]["5m"]["duration"]["n"] == 2 and s["m"]["5m"]["ttft"]["n"] == 1


def _ctx(status: int, error=None, note=None, job_id="job-1") -> RequestContext:
    ctx = RequestContext("chat_completions")
    ctx.status, ctx.error, ctx.note, ctx.job_id = status, error, note, job_id
    return ctx


@pytest.mark.parametrize("ctx, kind", [
    (_ctx(200), None),
    (_ctx(499, note="client-disconnected"), None),
    (_ctx(200, "cancelled", note="console-cancel"), None),
    (_ctx(429, "rate_limit_exceeded"), "runpod_429"),
    (_ctx(429, note="rate-limited"), "client"),  # a key over its own rpm
    (_ctx(504, "request_timeout"), "timeout"),
    (_ctx(200, "timeout", note="timeout"), "timeout"),
    (_ctx(400, "unsupported_parameter"), "client"),
    (_ctx(404, "model_not_found"), "client"),
    (_ctx(401, note="unauthorized"), "client"),  # refused by the key check: no code on the context
    (_ctx(502, "upstream_error"), "worker"),
    (_ctx(200, "server_error"), "worker"),  # an error in the stream, after the first byte
])
def test_classify(ctx, kind):
    assert classify(ctx) == kind


def test_errors_keep_a_count_and_the_latest_example_without_keys():
    errors = Errors()
    errors.add(_ctx(502, "upstream_error", job_id="job-a"), "m")
    last = _ctx(500, "server_error", job_id="job-b")
    errors.add(last, "m")
    errors.add(_ctx(200), "m")
    assert set(errors.kinds) == {"worker"}
    w = errors.kinds["worker"]
    assert w["count"] == 2
    assert w["latest"]["request_id"] == last.request_id and w["latest"]["job_id"] == "job-b"
    assert set(w["latest"]) == {"request_id", "job_id", "model", "status", "code", "at"}


def test_lags_median_over_a_bounded_window():
    lags = Lags()
    assert lags.median() is None
    for s in (0.3, 0.1, 0.2):
        lags.add(s)
    assert lags.median() == pytest.approx(0.2)
    for _ in range(LAGS):
        lags.add(5.0)
    assert lags.median() == 5.0
