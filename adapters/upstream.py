"""The upstream seam: one small interface for "send one request to a RunPod endpoint".

In the style of httpx's transports (``AsyncBaseTransport.handle_async_request``): an
``Upstream`` takes one ``UpstreamRequest`` and returns the answer's body, or raises
``RunPodError``; it knows HTTP, the key, timeouts and RunPod's error bodies, nothing about
what a body means. Clients on top of it know the operations and their bodies: the queue
client (``adapters.runpod_client.RunPodQueueClient``: ``/run``, ``/stream``, ``/cancel`` …)
and the ``/openai/*`` passthrough (``adapters.passthrough.OpenAIPassthrough``: its calls are
``{endpoint}/openai/v1/…`` paths through the same seam; a streamed answer comes from
``open``, whose ``UpstreamBody`` yields the body's bytes as they arrive).
``adapters.http_upstream.HTTPUpstream`` implements it over httpx.
Whether a failed call is worth repeating is the error's own judgement (``refused``,
``transient``); how it is repeated is ``adapters.retries.RetryPolicy``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec


class UpstreamRequest(msgspec.Struct, frozen=True):
    """One call: ``path`` is relative to the upstream's base URL (``{endpoint}/run``);
    ``operation`` names it in errors and logs; ``wait_ms`` asks the upstream to hold the
    answer that long (``?wait=``, with a read timeout longer than the wait); ``read_timeout``
    (seconds) replaces the upstream's default read timeout for this call (a passthrough call
    that holds until the generation ends); ``order`` places the call in its budget's line
    (``adapters.budgets``: smaller first; None: first come, first served)."""

    method: str
    path: str
    operation: str
    content: bytes | None = None
    wait_ms: int | None = None
    read_timeout: float | None = None
    order: float | None = None


class UpstreamBody(Protocol):
    """The body of a 2xx answer, read as it arrives (``Upstream.open``)."""

    content_type: str

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; a failure while reading raises ``RunPodError``
        (``answered`` False: 504 for a read timeout, 502 for a broken connection)."""
        ...

    async def aclose(self) -> None:
        """Stop reading: the connection is closed at once (the upstream sees the client go)."""
        ...


class Upstream(Protocol):
    """Talks to the RunPod endpoints under one base URL (``…/v2``)."""

    async def send(self, request: UpstreamRequest) -> bytes:
        """The body of the 2xx answer; any failure raises ``RunPodError``."""
        ...

    async def open(self, request: UpstreamRequest) -> UpstreamBody:
        """The 2xx answer, its body still to be read (the caller must ``aclose`` it); any
        other answer or failure raises ``RunPodError``."""
        ...

    async def aclose(self) -> None: ...


class RunPodError(Exception):
    """An upstream call failed. ``status`` is the upstream HTTP status (``answered`` True),
    or — with ``answered`` False — 502 when the upstream could not be reached or answered
    garbage, 504 when it timed out. ``reached`` is False only when the request certainly
    never got to the upstream (no connection, or none free in the pool). ``body`` is the
    start of an error answer's body (for callers that read more than the message from it: the
    passthrough finds a worker's error there)."""

    def __init__(self, status: int, message: str, *, operation: str = "", retry_after: float | None = None,
                 answered: bool = True, reached: bool = True, body: bytes = b""):
        super().__init__(f"RunPod {operation or 'call'} failed ({status}): {message}")
        self.status = status
        self.message = message
        self.operation = operation
        self.retry_after = retry_after
        self.answered = answered
        self.reached = reached or answered
        self.body = body

    @property
    def refused(self) -> bool:
        """RunPod did not act on the call: it answered 429, 502 or 503, or the request never
        reached it. Repeating such a call is safe whatever the operation."""
        return not self.reached or (self.answered and self.status in (429, 502, 503))

    @property
    def transient(self) -> bool:
        """Worth repeating an idempotent call (``/status``, ``/cancel``): refused, or a
        timeout, a broken connection or a 408/5xx answer (4xx answers will not change)."""
        return self.refused or not self.answered or self.status == 408 or self.status >= 500
