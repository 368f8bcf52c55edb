"""Keep one child running: restart it when it dies, with backoff, and give up when it keeps
dying before it ever became ready (a model that cannot load would otherwise be retried forever)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.process import Child

log = logging.getLogger("podgate.supervisor")


@dataclass
class RestartPolicy:
    """Wait ``first_delay * 2**failures`` (at most ``max_delay``) before a restart, where
    ``failures`` counts the deaths in a row before readiness; give up at ``give_up_after``."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    give_up_after: int = 3
    failures: int = 0

    def after_exit(self, was_ready: bool) -> float | None:
        """Seconds to wait before the restart, or None to give up."""
        self.failures = 0 if was_ready else self.failures + 1
        if self.failures >= self.give_up_after:
            return None
        return min(self.max_delay, self.first_delay * 2 ** self.failures)


async def keep_running(spawn: Callable[[int], Child], stopping: asyncio.Event, policy: RestartPolicy,
                       what: str = "process") -> str | None:
    """Run ``spawn(generation)`` (generation 1, 2, …) until ``stopping`` is set, one child at
    a time; a child counts as ready once it announced readiness (``Child.on_ready`` is the
    caller's hook). Returns None once stopping, or why it gave up. The last child is left to
    the caller to stop."""
    generation = 0
    while not stopping.is_set():
        generation += 1
        child = spawn(generation)
        await child.start()
        code = await child.wait()
        if stopping.is_set():
            return None
        await child.stop(0)  # the group: a dead worker's heartbeat process must not ping on
        delay = policy.after_exit(child.was_ready)
        if delay is None:
            return f"{what} {child.name} could not start ({policy.failures} attempts; see its output above)"
        log.warning("%s %s exited with code %s; restarting in %.1f s", what, child.name, code, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
    return None
