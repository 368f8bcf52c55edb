"""GPU time saved by cancelling: the estimate behind ``podgate_gpu_seconds_saved_total``.

When podgate cancels a job that was still generating (its client left, the request timed
out, the server shut down, an operator pressed the console's cancel button), the worker is
freed early. How early is not known — the job might have stopped at its next token — so
podgate estimates the upper bound an operator cares about: the time from the cancel to when
the job would have ended at ``max_tokens``, at the rate its tokens were observed to come:

    rate  = (tokens so far − 1) / (now − first token)     (the first token starts the clock)
    saved = (max_tokens − tokens so far) / rate

The tokens so far are ``ctx.streamed``, itself an estimate (``proxy.live``). Nothing is
estimated (None) when the request set no ``max_tokens`` (the worker's own limit is
not known here), when fewer than ``MIN_TOKENS`` came (no rate to speak of), or when the
answer was already at its limit. The estimate counts one job's GPU time (one sequence);
a worker batching several jobs shares its GPU among them, so the sum over-counts there.
"""

from __future__ import annotations

import time

from proxy.context import RequestContext

MIN_TOKENS = 2
"""Fewer tokens than this give no rate (one token only dates the first byte)."""


def token_rate(tokens: float, first_token_at: float | None, now: float) -> float | None:
    """Tokens per second since the first token (None: too few tokens, or no time yet)."""
    if first_token_at is None or tokens < MIN_TOKENS or now <= first_token_at:
        return None
    return (tokens - 1) / (now - first_token_at)  # the first token only starts the clock


def estimate_saved_s(max_tokens: int | None, tokens: float, first_token_at: float | None, now: float) -> float | None:
    """Seconds of generation a cancel at ``now`` saved (module docstring); None when unknown.
    ``first_token_at`` and ``now`` are ``time.monotonic()`` readings."""
    if max_tokens is None or tokens >= max_tokens:
        return None
    rate = token_rate(tokens, first_token_at, now)
    return None if not rate else (max_tokens - tokens) / rate


def saved_by(ctx: RequestContext, now: float | None = None) -> float | None:
    """The estimate for a request whose job podgate cancelled (``ctx.cancelled``)."""
    if not ctx.cancelled:
        return None
    return estimate_saved_s(ctx.max_tokens, ctx.streamed, ctx.first_token_at,
                            time.monotonic() if now is None else now)


__all__ = ["estimate_saved_s", "saved_by", "token_rate", "MIN_TOKENS"]
