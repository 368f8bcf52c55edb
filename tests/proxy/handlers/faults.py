"""Handlers for the proxy's fault tests, run by ``podgate worker --handler
tests.proxy.handlers.faults:<name>``.

``handler`` is a generator *without* ``return_aggregate_stream`` (RunPod's final output of
its jobs is ``[]``: the tokens exist only on ``/stream``). Every scenario of
``workers.handler`` works through it, plus (picked by ``#word`` in the last user message):

- ``#numbers``: ``COUNT`` numbered text tokens, ``PAUSE_S`` apart (``t00 t01 …``), after
  writing ``<job>.started`` into ``$PODGATE_TEST_MARKERS`` (and ``<job>.midway`` once
  ``MIDWAY`` tokens were posted): a stream long enough to kill its worker in the middle;
- ``#sleepy``: writes ``<job>.started``, waits ``SLEEPY_S`` before its first token, then
  streams like ``#numbers`` (a worker killed in the wait has sent nothing);
- ``#endless``: a token every ``PAUSE_S`` for ``ENDLESS_S`` (a job that only a cancel ends
  within a test);
- ``#leak``: fails with a message that quotes the worker's key (``RUNPOD_AI_API_KEY``);
  ``#leak_midstream``: the same after one token.

``plain_slow`` is a non-generator handler that answers after ``SLOW_S`` (its output exists
only in ``/status``).
"""

from __future__ import annotations

import asyncio
import os

from tests.proxy.handlers.workers import TEXT, _markers, _scenario
from tests.proxy.handlers.workers import handler as _formats

RUNPOD_CONFIG = {"return_aggregate_stream": False}

COUNT = 40
MIDWAY = 5
PAUSE_S = 0.1
SLEEPY_S = 3.0
SLOW_S = 1.5
ENDLESS_S = 60.0
NUMBERS = [f"t{i:02d} " for i in range(COUNT)]


def _leak() -> str:
    return f"upstream refused the credential {os.environ.get('RUNPOD_AI_API_KEY', '')} for this job"


async def handler(job):
    scenario = _scenario(job["input"])
    if scenario in ("numbers", "sleepy"):
        _markers(job["id"], "started")
        if scenario == "sleepy":
            await asyncio.sleep(SLEEPY_S)
        for i, token in enumerate(NUMBERS):
            yield token  # the SDK posts it to /job-stream before the generator goes on
            if i + 1 == MIDWAY:
                _markers(job["id"], "midway")
            await asyncio.sleep(PAUSE_S)
        return
    if scenario == "endless":
        for i in range(int(ENDLESS_S / PAUSE_S)):
            yield f"e{i} "
            await asyncio.sleep(PAUSE_S)
        return
    if scenario == "leak":
        raise RuntimeError(_leak())
    if scenario == "leak_midstream":
        yield "partial "
        await asyncio.sleep(0.2)
        raise RuntimeError(_leak())
    async for item in _formats(job):
        yield item


async def plain_slow(job):
    await asyncio.sleep(SLOW_S)
    return "".join(TEXT)
