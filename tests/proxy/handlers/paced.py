"""A ``text``-format worker whose answer takes as long as asked, for the shutdown tests:
``podgate worker --handler tests.proxy.handlers.paced:handler``.

The last message (or the prompt) is a number of seconds: the worker yields ``" word"`` every
``STEP_S`` for that long, then ends (``finish_reason: stop``). It writes ``<job id>.started``
into ``$PODGATE_TEST_MARKERS`` when it begins and ``<job id>.cancelled`` when it is stopped.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

RUNPOD_CONFIG = {"concurrency_modifier": lambda current: 8}

STEP_S = 0.1
WORD = " word"


def _marker(job_id: str, what: str) -> None:
    folder = os.environ.get("PODGATE_TEST_MARKERS")
    if folder:
        with open(os.path.join(folder, f"{job_id}.{what}"), "w") as fh:
            fh.write(what)


def _seconds(inp: dict[str, Any]) -> float:
    messages = inp.get("messages")
    text = messages[-1]["content"] if messages else inp.get("prompt", "1")
    return float(text)


async def handler(job: dict[str, Any]):
    end = time.monotonic() + _seconds(job["input"])
    _marker(job["id"], "started")
    try:
        while True:
            yield WORD
            if time.monotonic() >= end:
                return
            await asyncio.sleep(STEP_S)
    except asyncio.CancelledError:
        _marker(job["id"], "cancelled")
        raise
