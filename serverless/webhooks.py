"""Webhook delivery: POST a job's status body once it is terminal, retried on failure.

RunPod posts the status object once per job on a terminal state and, if the receiver does
not answer 2xx, retries up to 2 more times 10 s apart (reference §1.6): a tenacity policy
(fixed pause, bounded attempts; ``serverless/`` imports nothing of ``adapters/``, where the
proxy's retry policy lives). One shared ``httpx.AsyncClient``; deliveries run as tasks owned
by the :class:`WebhookSender` and are cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_fixed

log = logging.getLogger("podgate.serverless.webhooks")


class WebhookSender:
    def __init__(self, *, retries: int, interval: float, timeout: float) -> None:
        self._retries = retries
        self._interval = interval
        self._client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=100))
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, body: bytes, job_id: str) -> None:
        """Schedule delivery of ``body`` to ``url`` (non-blocking)."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, body, job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, job_id: str) -> None:
        def failed(state: RetryCallState) -> None:
            problem = state.outcome.result() if state.outcome is not None else None
            log.warning("webhook for job %s %s (attempt %d)", job_id, problem, state.attempt_number)

        def given_up(state: RetryCallState) -> None:
            log.warning("webhook for job %s given up after %d attempts", job_id, state.attempt_number)

        policy = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=wait_fixed(self._interval),
            retry=retry_if_result(lambda problem: problem is not None),
            after=failed,
            retry_error_callback=given_up,
        )
        await policy(self._post, url, body)

    async def _post(self, url: str, body: bytes) -> str | None:
        """One delivery: None when the receiver answered 2xx, else what went wrong."""
        try:
            resp = await self._client.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            return f"failed: {type(exc).__name__}"
        return None if 200 <= resp.status_code < 300 else f"answered {resp.status_code}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
