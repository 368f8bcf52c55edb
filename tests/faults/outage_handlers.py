"""The worker of the outage faults, run by ``podgate worker --handler
tests.faults.outage_handlers:tokens``: a text worker that yields ``TOKENS`` plain strings
``DELAY`` seconds apart (about 3 s a job, so that jobs span the outage), many jobs at once.
The answer is fixed (:data:`ANSWER`), so a client can tell a right answer from a wrong one.
"""

from __future__ import annotations

import asyncio

TOKENS = 30
DELAY = 0.1
ANSWER = "".join(f"t{k} " for k in range(TOKENS))

RUNPOD_CONFIG = {"return_aggregate_stream": True, "concurrency_modifier": lambda current: 32}


async def tokens(job):
    for k in range(TOKENS):
        await asyncio.sleep(DELAY)
        yield f"t{k} "
