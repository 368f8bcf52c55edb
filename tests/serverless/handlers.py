"""RunPod handlers used by the serverless tests, run by ``podgate worker --handler
tests.serverless.handlers:NAME`` in subprocesses (the real ``runpod`` SDK worker loop).

Each handler is small and deterministic; ``input`` keys steer them (``sleep``, ``n``...).
"""

from __future__ import annotations

import asyncio
import os
import time

import runpod


def echo_sync(job):
    """Sync: returns the input with the job id; ``sleep`` blocks (the SDK's event loop too)."""
    inp = job["input"]
    if inp.get("sleep"):
        time.sleep(float(inp["sleep"]))
    out = {"echo": inp, "id": job["id"]}
    if "s3Config" in job:
        out["s3Config"] = job["s3Config"]
    return out


async def echo_async(job):
    """Async: sleeps ``sleep`` seconds without blocking, returns the input."""
    inp = job["input"]
    await asyncio.sleep(float(inp.get("sleep", 0)))
    return {"echo": inp}


def gen_sync(job):
    """Sync generator: yields ``n`` dicts ``{"i": k}``."""
    for k in range(int(job["input"].get("n", 3))):
        yield {"i": k}


async def gen_async(job):
    """Async generator: yields ``n`` strings ``"tok{k} "``, ``delay`` seconds apart."""
    delay = float(job["input"].get("delay", 0))
    for k in range(int(job["input"].get("n", 3))):
        if delay:
            await asyncio.sleep(delay)
        yield f"tok{k} "


async def gen_big(job):
    """Async generator yielding one string of ``size`` characters (chunk splitting)."""
    yield "x" * int(job["input"]["size"])


def raising(job):
    raise ValueError("boom: " + str(job["input"].get("msg", "")))


def returns_error(job):
    return {"error": "custom failure", "extra": 1}


async def progress(job):
    """Posts a progress update, waits (so the update can be observed), then finishes."""
    runpod.serverless.progress_update(job, {"step": 1})
    await asyncio.sleep(float(job["input"].get("hold", 1.0)))
    return {"done": True}


def _write_marker(path: str, text: str) -> None:
    """Write ``text`` so that a test polling for ``path`` never sees it half-written."""
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


async def long_cancellable(job):
    """Runs for ``seconds``; on CancelledError writes ``marker`` (a file path) and re-raises."""
    marker = job["input"]["marker"]
    try:
        _write_marker(marker + ".started", job["id"])
        await asyncio.sleep(float(job["input"].get("seconds", 60)))
    except asyncio.CancelledError:
        _write_marker(marker, "cancelled " + job["id"])
        raise
    return {"finished": True}


async def slow_first_run(job):
    """The first run of a job (no ``marker`` file yet) writes ``marker`` and then sleeps
    ``seconds``; a later run of it (a re-queued job) returns at once."""
    marker = job["input"]["marker"]
    if os.path.exists(marker):
        return {"rerun": True}
    _write_marker(marker, job["id"])
    await asyncio.sleep(float(job["input"].get("seconds", 60)))
    return {"rerun": False}


async def concurrent(job):
    """Records how many jobs run at once in this process (max seen is returned)."""
    global _running, _max_running
    _running += 1
    _max_running = max(_max_running, _running)
    try:
        await asyncio.sleep(float(job["input"].get("sleep", 0.5)))
        return {"max_running": _max_running, "pid": os.getpid()}
    finally:
        _running -= 1


_running = 0
_max_running = 0


async def aggregated(job):
    """Async generator meant for ``--aggregate-stream``."""
    for k in range(3):
        yield {"part": k}


RUNPOD_CONFIG = {}
