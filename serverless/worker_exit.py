"""``podgate worker`` on SIGTERM/SIGINT: hand the jobs back, then exit at once.

Why the SDK alone takes 20–30 s: its worker loop (``runpod.serverless.modules.rp_scale.
JobScaler``, runpod 1.12) runs three loops — job-take, job-run and job-stop — and on a
signal it only sets a flag (``kill_worker``) that the take and stop loops read *between*
their long-polls. Each is then held by the endpoint until its hold ends (``take_hold``
20 s, ``stop_hold`` 30 s in production; RunPod's own are similar), and ``asyncio.run``
returns only when all three loops did. Running jobs are finished first (the SDK's graceful
shutdown), which is right: the worker protocol has no way to hand a running job back.

:class:`HandBackScaler` (installed by :func:`install` in place of the SDK's class; the SDK's
files are untouched) changes only what happens after the signal:

1. no new job-take poll starts; one already held goes on while jobs run (what it brings is
   run too: a taken job is never dropped);
2. the running jobs finish and post their results, as the SDK does; the job-stop poll stays
   open meanwhile, so a ``/cancel`` still stops a job (the proxy cancels the jobs of the
   streams it cuts at its own shutdown);
3. once nothing is running or queued, the job-take loop is ended where it waits: a held
   poll is closed, and the endpoint puts any job it had just taken back at the head of its
   queue (``JobStore.abandon_poll``); a job that came with it all the same is run first;
4. then the SDK's own shutdown flag is set, the job-stop poll is closed the same way, and
   the process exits.

A held poll is closed only while the worker holds no job: the endpoint takes a worker
whose poll was closed, and that then only pings, for gone after ``ping_grace`` and
re-queues its jobs (``JobStore.requeue_unreported``), which must not happen to jobs that
are still running.

So an idle worker exits within a moment of the signal, a busy one as soon as its last job
is done. A second signal does not wait for the jobs: their tasks are cancelled (no result
is posted), the polls closed, and the endpoint re-queues those jobs once it finds the worker
gone (``ping_grace`` after the closed poll; ``worker_timeout`` at the latest) — released,
not lost.

Import after the worker's environment is set (the SDK reads it on import).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from runpod.serverless.modules import rp_scale
from runpod.serverless.modules.rp_logger import RunPodLogger

log = RunPodLogger()

IDLE_CHECK_S = 0.05
"""While handing back: how often the worker looks whether its last job ended."""


class HandBackScaler(rp_scale.JobScaler):
    """The SDK's ``JobScaler``, exiting at once once its jobs are handed back (module docstring)."""

    jobs_fetcher: Callable[..., Awaitable[Any]]  # the SDK's, replaced by a wrapper of it

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.handing_back = False
        """A shutdown signal came: no new job is taken."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = asyncio.Event()
        self._closing_takes = asyncio.Event()
        self._takes_ended = asyncio.Event()
        self._take: Callable[..., Awaitable[Any]] = self.jobs_fetcher
        self.jobs_fetcher = self._take_unless_handing_back

    # -- signals ---------------------------------------------------------------------------
    def handle_shutdown(self, signum: int, frame: Any) -> None:
        """The SDK's signal handler (``signal.signal``: it may run anywhere in the loop's
        code, so it only sets a flag and wakes the loop; no I/O here)."""
        second = self.handing_back
        self.handing_back = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_signal, signum, second)

    def _on_signal(self, signum: int, second: bool) -> None:
        name = signal.Signals(signum).name
        if not second:
            log.info(f"{name}: finishing the running jobs ({self.current_occupancy()}), then exiting.")
            self._signalled.set()
            return
        log.info(f"{name} again: stopping the running jobs; the endpoint re-queues them.")
        for task in list(self.jobs_tasks.values()):
            task.cancel()

    def kill_worker(self) -> None:
        """The SDK's shutdown flag (also set by ``refresh_worker``): the job-take loop ends
        too, at once."""
        self._closing_takes.set()
        super().kill_worker()

    # -- the loops ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.handing_back:  # signalled before the loop ran
            self._signalled.set()
        watcher = asyncio.create_task(self._exit_when_idle())
        try:
            await super().run()
        finally:
            watcher.cancel()

    async def _exit_when_idle(self) -> None:
        """After the signal: once no job is running or queued, end the job-take loop; once
        what its last poll brought (if anything) is done too, end the SDK's loops."""
        await self._signalled.wait()
        await self._idle()
        self._closing_takes.set()
        await self._takes_ended.wait()
        await self._idle()
        self.kill_worker()

    async def _idle(self) -> None:
        while self.current_occupancy() > 0:
            await asyncio.sleep(IDLE_CHECK_S)

    async def get_jobs(self, session: Any) -> None:
        """The SDK's job-take loop, ended where it waits once the takes close."""
        try:
            await _until(super().get_jobs(session), self._closing_takes)
        finally:
            self._takes_ended.set()

    async def monitor_stop_signals(self, session: Any) -> None:
        """The SDK's job-stop loop, ended where it waits once the worker shuts down (not
        before: a running job may still be cancelled)."""
        await _until(super().monitor_stop_signals(session), self._shutdown_event)

    async def _take_unless_handing_back(self, session: Any, *args: Any) -> Any:
        """The SDK's job-take; none starts while handing back (it waits to be ended)."""
        if self.handing_back:
            await asyncio.get_running_loop().create_future()  # until the loop is ended
        return await self._take(session, *args)


async def _until(loop: Coroutine[Any, Any, None], event: asyncio.Event) -> None:
    """Run one of the SDK's worker loops until it ends or ``event`` is set; then cancel it
    where it waits (a held poll is closed, a pause cut short). Cancelled again until it
    ended: asyncio's ``wait_for`` swallows a cancel that comes as its inner call finishes
    (and then returns that call's result, e.g. a job, which is kept)."""
    task = asyncio.ensure_future(loop)
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        while not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=IDLE_CHECK_S)
    finally:
        stop.cancel()
        if not task.done():  # we were cancelled ourselves
            task.cancel()
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error


def install() -> None:
    """Make ``runpod.serverless.start`` run :class:`HandBackScaler` (idempotent)."""
    rp_scale.JobScaler = HandBackScaler
