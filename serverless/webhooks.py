"""Webhook delivery: POST a job's status body once it is terminal, retried on failure.

RunPod posts the status object once per job on a terminal state and, if the receiver does
not answer 2xx, retries up to 2 more times 10 s apart (reference §1.6): the platform's
fixed-interval rule, kept in this loop of its own (podgate's upstream retry policy,
``adapters.retries``, is another room's, and ``serverless/`` imports nothing of it). One shared
``httpx.AsyncClient``; deliveries run as tasks owned by the :class:`WebhookSender` and are
cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

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
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._interval)
            try:
                resp = await self._client.post(url, content=body, headers={"Content-Type": "application/json"})
                if 200 <= resp.status_code < 300:
                    return
                log.warning("webhook for job %s answered %s (attempt %d)", job_id, resp.status_code, attempt + 1)
            except httpx.HTTPError as exc:
                log.warning("webhook for job %s failed: %s (attempt %d)", job_id, type(exc).__name__, attempt + 1)
        log.warning("webhook for job %s given up after %d attempts", job_id, self._retries + 1)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
