"""One child process of the tree: started in its own process group, its output relayed to our
stderr with a ``[name]`` prefix, its readiness read from a :class:`~supervisor.readiness.ReadyPipe`,
and stopped together with everything it started (the SDK's heartbeat is a child of each
worker)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

from supervisor.readiness import Ready, ReadyPipe

log = logging.getLogger("podgate.supervisor")

_CLEAR_LINE = "\r\033[K"


PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (the thread that forked
    it) dies (Linux ``PR_SET_PDEATHSIG``; a no-op where there is no such call)."""
    with contextlib.suppress(Exception):  # also between fork and exec: never fail the child's start
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    parent_death_signal(signal.SIGTERM)


class Child:
    """``argv`` (a full command) run as ``name``, with ``env`` added to ours. It gets SIGTERM
    if this process dies. ``on_ready`` is called with the child's readiness message when it
    announces one."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str],
                 on_ready: Callable[[Ready], None] | None = None):
        self.name, self.argv, self.env, self.on_ready = name, argv, env, on_ready
        self.proc: asyncio.subprocess.Process | None = None
        self._pipe: ReadyPipe | None = None
        self._ready: asyncio.Future[Ready | None] | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._pipe = ReadyPipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env={**os.environ, **self.env, **self._pipe.env}, pass_fds=(self._pipe.fd,),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            self._pipe.child_started()
        self._ready = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._relay(self.proc.stdout)),
                       asyncio.create_task(self._relay(self.proc.stderr)),
                       asyncio.create_task(self._read_ready())]

    async def _relay(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:  # on a terminal, over the progress line (it is redrawn)
                print(f"{_CLEAR_LINE if sys.stderr.isatty() else ''}[{self.name}] {text}", file=sys.stderr, flush=True)

    async def _read_ready(self) -> None:
        assert self._pipe is not None and self._ready is not None
        try:
            async for message in self._pipe.messages():
                if not self._ready.done():
                    self._ready.set_result(message)
                    if self.on_ready is not None:
                        self.on_ready(message)
        finally:
            if not self._ready.done():
                self._ready.set_result(None)

    async def ready(self) -> Ready | None:
        """The child's readiness message (``supervisor.readiness.announce``); None once it
        and its descendants exited without one."""
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    @property
    def was_ready(self) -> bool:
        """Whether the child announced readiness (final once ``stop`` returned)."""
        return self._ready is not None and self._ready.done() and self._ready.result() is not None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self) -> int:
        """Until the process itself exits. Not ``proc.wait()``: before Python 3.12 that also
        waits for the pipes to close, and a grandchild (the SDK's heartbeat process) holds
        them open until ``stop`` kills the group."""
        assert self.proc is not None
        while self.proc.returncode is None:
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def _signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds."""
        if self.proc is None:
            return
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), grace)
            except TimeoutError:
                log.info("%s did not stop within %.0f s; killing it", self.name, grace)
        self._signal_group(signal.SIGKILL)  # the group: stragglers such as the SDK's heartbeat
        await self.wait()
        await asyncio.wait(self._tasks, timeout=2)  # the group is gone: its pipes are at end of file
        if self._pipe is not None:
            self._pipe.close()
