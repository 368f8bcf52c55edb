"""A model's fallbacks, walked: the one walk every route's request takes (issue 11, part 4).

``Upstreams.chain`` gives the order — the model, then its ``fallbacks``, less those whose
endpoint is swamped by its last ``/health`` reading. The route turns each into a candidate:
the model that would serve, and how to serve the request with it (the queue path, the
``/openai/*`` passthrough, or the embeddings runner: each candidate may take another path,
since a fallback may be passed through where the model is translated, or the reverse).
``serve_first`` tries them in turn, and goes on to the next only when RunPod turned the
request away before any job ran, after the submit's own retries (``turned_away``: a submit
— ``/run``, ``/runsync``, a passthrough call — answered 429/502/503 or never reached).
Anything else ends the walk: a 500 or a timeout after sending may have created a job (it
would then run twice), and once the response started nothing is retried (the candidate
returned).

While a model is tried, the request is ``SERVING`` it (``proxy.submit``: its submits'
retries and re-runs are reported under its name) and ``x-podgate-served-by`` names it; a
request a fallback took is reported once (``RetryObserver.fallback``). When every
candidate turned it away, the last refusal is the client's (429 or 502/503, with its
``Retry-After`` and ``x-should-retry: true``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from adapters.errors import SUBMIT_OPERATIONS
from adapters.passthrough import upstream_error
from adapters.upstream import RunPodError
from proxy.context import RequestContext
from proxy.submit import SERVING, RetryObserver, Serving
from proxy.upstreams import ModelBinding

R = TypeVar("R")

Candidate = tuple[ModelBinding, Callable[[], Awaitable[R]]]
"""A model that may serve the request, and how it would (called at most once)."""

PASSTHROUGH_PREFIX = "openai/"
"""The passthrough's operations (``openai/v1/<route>``): each one is a submit."""


def turned_away(exc: RunPodError) -> bool:
    """RunPod refused a submit (after its retries): no job runs, another endpoint may take it."""
    return exc.refused and (exc.operation in SUBMIT_OPERATIONS or exc.operation.startswith(PASSTHROUGH_PREFIX))


async def serve_first(asked: ModelBinding, candidates: Iterable[Candidate[R]], ctx: RequestContext,
                      observer: RetryObserver | None) -> R:
    """What the first candidate that RunPod did not turn away answered (module docstring);
    ``asked`` is the model the client asked for."""
    refused: RunPodError | None = None
    for binding, serve in candidates:
        ctx.endpoint = binding.endpoint
        ctx.headers["x-podgate-served-by"] = binding.name
        token = SERVING.set(Serving(binding.name, observer)) if observer is not None else None
        try:
            result = await serve()
        except RunPodError as exc:
            if not turned_away(exc):
                _taken(asked, binding, observer)
                raise
            refused = exc  # the next candidate may take it
            ctx.halt = None  # a passed-through try's stop; the next candidate makes its own if it needs one
            continue
        except BaseException:
            _taken(asked, binding, observer)
            raise
        finally:
            if token is not None:
                SERVING.reset(token)
        _taken(asked, binding, observer)
        return result
    if refused is None:
        raise AssertionError("no candidate to serve the request")
    raise upstream_error(refused) from None


def _taken(asked: ModelBinding, binding: ModelBinding, observer: RetryObserver | None) -> None:
    if binding is not asked and observer is not None:
        observer.fallback(asked.name, binding.name)


__all__ = ["serve_first", "turned_away", "Candidate"]
