"""The ``/health`` poller: each RunPod endpoint's queue and workers, as RunPod reports them.

RunPod's ``GET /{endpoint}/health`` answers ``{"jobs": {"inQueue", "inProgress", …},
"workers": {"idle", "running", "throttled", "unhealthy", …}}``. ``HealthPoller`` asks it
once per endpoint every ``[metrics] health_interval_s`` (all endpoints at once, each call
bounded by the interval), never once per request: what a request needs to know about an
endpoint's state must come from here, so its cost stays one call per endpoint per interval
whatever the traffic. It starts and stops with the app (``proxy.app.Gateway``); an interval
of 0 turns it off.

``latest`` keeps the last reading per endpoint (``HealthReading``: the answer and when it
came), readable by anyone at any time: the metrics (``proxy.metrics``: the
``podgate_runpod_endpoint_*`` gauges, read at scrape time), and later the fallbacks across
endpoints and the console's charts. A failed poll keeps the last reading and puts the
endpoint in ``failing``; the outage is logged once when it starts and once when it ends,
never per poll (an endpoint down for an hour at a 15 s interval must not write 240 lines).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.errors import KeyMask, clean_message
from adapters.runpod_client import Health, RunPodQueueClient
from adapters.upstream import RunPodError

log = logging.getLogger("podgate.health")


@dataclass(frozen=True, slots=True)
class HealthReading:
    """One endpoint's ``/health`` answer and when it came (``time.time()``)."""

    health: Health
    at: float


class HealthPoller:
    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        """Seconds between two polls of one endpoint; 0: no polling."""
        self.latest: dict[str, HealthReading] = {}
        """endpoint id → its last reading (kept while its polls fail)."""
        self.failing: dict[str, str] = {}
        """endpoint id → why its last poll failed (no key in it); absent once it answers."""
        self._targets: dict[str, RunPodQueueClient] = {}
        self._mask = KeyMask()
        self._task: asyncio.Task | None = None

    @property
    def endpoints(self) -> list[str]:
        """The endpoints polled (every configured one, while the poller runs)."""
        return list(self._targets)

    def answering(self, endpoint: str) -> bool:
        """The endpoint answered its last poll."""
        return endpoint in self.latest and endpoint not in self.failing

    # -- lifecycle --------------------------------------------------------------------
    def start(self, targets: Mapping[str, RunPodQueueClient], key_mask: KeyMask | None = None) -> None:
        """Poll ``targets`` (endpoint id → the queue client of its base URL) from now on;
        ``key_mask`` masks the configured keys in what is logged of a failure."""
        if self.interval_s <= 0 or not targets or self._task is not None:
            return
        self._targets = dict(targets)
        self._mask = key_mask or KeyMask()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="podgate-health-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- polling ----------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await self.poll()
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - began)))

    async def poll(self) -> None:
        """One round: every endpoint at once."""
        await asyncio.gather(*(self._poll(endpoint, client) for endpoint, client in self._targets.items()))

    async def _poll(self, endpoint: str, client: RunPodQueueClient) -> None:
        try:
            async with asyncio.timeout(self.interval_s):
                health = await client.health(endpoint)
        except RunPodError as exc:
            self._failed(endpoint, f"{exc.status} {self._mask.text(clean_message(exc.message))}")
            return
        except TimeoutError:
            self._failed(endpoint, f"no answer within {self.interval_s:g} s")
            return
        except Exception as exc:  # never let the poller die
            self._failed(endpoint, f"unexpected {type(exc).__name__}")
            return
        self.latest[endpoint] = HealthReading(health, time.time())
        if self.failing.pop(endpoint, None) is not None:
            log.info("endpoint %s: /health answers again", endpoint)

    def _failed(self, endpoint: str, why: str) -> None:
        if endpoint not in self.failing:
            log.warning("endpoint %s: /health failed (%s); polling on, logged again when it answers", endpoint, why)
        self.failing[endpoint] = why
