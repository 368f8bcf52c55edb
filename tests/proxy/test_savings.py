"""``proxy.savings``: the GPU time a cancel spared, estimated at the observed token rate."""

from __future__ import annotations

import pytest

from proxy.context import RequestContext
from proxy.savings import estimate_saved_s, saved_by, token_rate


def test_rate_counts_the_intervals_after_the_first_token():
    # 11 tokens, the first at t=100 and the last at t=105: 10 intervals in 5 s
    assert token_rate(11, 100.0, 105.0) == pytest.approx(2.0)


@pytest.mark.parametrize("tokens, first, now", [(0, None, 5.0), (1, 1.0, 5.0), (5, None, 5.0), (5, 5.0, 5.0)])
def test_no_rate_without_two_tokens_and_some_time(tokens, first, now):
    assert token_rate(tokens, first, now) is None


def test_saved_is_the_time_left_to_max_tokens_at_that_rate():
    # 2 tokens/s, 11 of 111 sent: 100 more would have taken 50 s
    assert estimate_saved_s(111, 11, 100.0, 105.0) == pytest.approx(50.0)


@pytest.mark.parametrize("max_tokens, tokens", [(None, 11), (11, 11), (10, 11)])
def test_nothing_saved_without_a_limit_or_at_it(max_tokens, tokens):
    assert estimate_saved_s(max_tokens, tokens, 100.0, 105.0) is None


def test_saved_by_a_request_only_when_podgate_cancelled_its_job():
    ctx = RequestContext("chat_completions")
    ctx.max_tokens, ctx.streamed, ctx.first_token_at = 21, 11, 10.0
    assert saved_by(ctx, now=15.0) is None  # the job ended on its own
    ctx.cancelled = True
    assert saved_by(ctx, now=15.0) == pytest.approx(5.0)  # 2 tokens/s, 10 to go
