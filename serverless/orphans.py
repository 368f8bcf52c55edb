"""No orphaned heartbeats: the SDK's heartbeat process dies with ``podgate worker``.

The runpod SDK pings from a child process (``multiprocessing``; reference
runpod-protocol.md §2.7) that it starts before its job loop. When the worker's main process
alone dies (the OOM killer SIGKILLs the largest process, not its group), that child lives
on, re-parented to PID 1, and keeps pinging with the ids of the jobs the dead worker held:
the endpoint sees a live worker, and the jobs stay IN_PROGRESS until their execution
timeout.

:func:`bind_heartbeat` (called by ``serverless.cli_worker`` before the SDK starts) wraps the
SDK's ``Heartbeat.process_loop``, the target of that process, so that the heartbeat first
calls :func:`die_with_parent`, under every multiprocessing start method. Two ways, as each
misses a case of the other:

- the kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``): immediate and independent
  of Python, but tied to the OS parent, which under ``forkserver`` is the fork server (and
  that one waits for its children to exit first);
- a thread that waits on the ``multiprocessing`` parent's sentinel, a pipe that the worker
  itself holds open (every start method, every OS), unless the worker's later fork children
  inherited it.

The endpoint also finds a worker gone whose held poll was cut and from which only pings
follow (``JobStore.requeue_unreported``), as for bare SDK workers that have neither.

Other processes a *handler* starts are the handler's own to manage: the parent-death signal
follows the thread that forked, so setting it on every fork would kill a handler's children
when a worker thread ends.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import wait
from collections.abc import Callable
from typing import Any

from supervisor.process import parent_death_signal

#: the SDK's own ``Heartbeat.process_loop``, kept by :func:`bind_heartbeat` (None in a process
#: where it was not called, e.g. a heartbeat started with ``spawn``, whose class is unpatched)
_sdk_process_loop: Callable[..., Any] | None = None


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies: by the kernel (Linux, the OS parent) and by
    a daemon thread watching the ``multiprocessing`` parent (if this process has one; that
    thread also catches a parent that died before this call)."""
    parent_death_signal(signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_kill_self_when_ready, args=(parent.sentinel,), name="die-with-parent",
                         daemon=True).start()


def _kill_self_when_ready(sentinel: int) -> None:
    wait([sentinel])  # readable (EOF) once the parent's end is closed: it has died
    os.kill(os.getpid(), signal.SIGKILL)


def _heartbeat_process_loop(*args: Any, **kwargs: Any) -> None:
    """The heartbeat process's target: bound to its parent's life, then the SDK's loop."""
    die_with_parent()
    if _sdk_process_loop is not None:
        _sdk_process_loop(*args, **kwargs)
        return
    from runpod.serverless.modules.rp_ping import Heartbeat

    Heartbeat.process_loop(*args, **kwargs)


def bind_heartbeat() -> None:
    """Make the SDK's heartbeat process, once started, die with this process (idempotent).
    Import after the worker's environment is set (the SDK reads it on import)."""
    global _sdk_process_loop
    from runpod.serverless.modules.rp_ping import Heartbeat

    if _sdk_process_loop is None:
        _sdk_process_loop = Heartbeat.process_loop
        Heartbeat.process_loop = staticmethod(_heartbeat_process_loop)
