"""The one way podgate runs uvicorn in-process: :class:`AppServer`.

Used by ``podgate serve --config`` (the proxy, blocking, uvicorn's own signal handling), by
``podgate endpoint`` (``serverless.app.serve``: a hook when shutdown begins, so that held
long-polls end at once) and by the embedded tree (the proxy in the tree's event loop; the
tree owns SIGINT/SIGTERM, so uvicorn must leave them alone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn


class StartFailed(Exception):
    """uvicorn could not start (it logged why: the port is taken, the lifespan failed …)."""


class AppServer(uvicorn.Server):
    """``app`` under uvicorn on ``host:port`` (0: any free port).

    - ``signals=False``: leave SIGINT/SIGTERM to the caller (uvicorn otherwise takes them
      while it serves, shuts down gracefully, then re-raises them);
    - ``on_started(port)``: called once listening, with the bound port;
    - ``on_shutdown()``: called when shutdown begins, just before uvicorn closes its
      listeners and waits for open connections;
    - ``on_second_signal()``: with ``signals``, called (on the loop) for a second
      SIGINT/SIGTERM during shutdown, instead of uvicorn's force quit (which skips the
      lifespan shutdown); a third SIGINT force-quits;
    - other keywords go to ``uvicorn.Config`` (defaults: log level warning, no access log,
      lifespan on, keep-alive 75 s).

    uvicorn's shutdown, in order: the listeners close; idle keep-alive connections close at
    once, the others once their response ended; it waits for them up to
    ``timeout_graceful_shutdown`` (None: forever), then cancels the request tasks left; then
    the lifespan shutdown runs (the app's ``on_shutdown``).

    Blocking: ``run()`` (uvicorn's). In a running loop: ``await start()`` (returns the port),
    ``await wait()``, ``await stop(grace)``; or ``await serve()``.
    """

    def __init__(self, app: Any, *, host: str, port: int, signals: bool = True,
                 on_started: Callable[[int], None] | None = None, on_shutdown: Callable[[], None] | None = None,
                 on_second_signal: Callable[[], None] | None = None, **config: Any):
        options = {"log_level": "warning", "access_log": False, "lifespan": "on", "timeout_keep_alive": 75, **config}
        super().__init__(uvicorn.Config(app, host=host, port=port, **options))
        self.signals, self.on_started, self.on_shutdown = signals, on_started, on_shutdown
        self.on_second_signal = on_second_signal
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._listening: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.signals:
            with super().capture_signals():
                yield
        else:
            yield

    def handle_exit(self, sig: int, frame: Any) -> None:
        """uvicorn's signal handler (``signal.signal``: only flags and a loop wake-up here)."""
        if self.should_exit and self.on_second_signal is not None and self._loop is not None:
            hook, self.on_second_signal = self.on_second_signal, None
            self._loop.call_soon_threadsafe(hook)
            return
        super().handle_exit(sig, frame)

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)  # exits (SystemExit) when it cannot start
        if self.servers and self.servers[0].sockets:
            self.port = self.servers[0].sockets[0].getsockname()[1]
        if self._listening is not None:
            self._listening.set()
        if self.on_started is not None:
            self.on_started(self.port)

    async def shutdown(self, sockets: Any = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets=sockets)

    async def start(self) -> int:
        """Serve in a task of the running loop; return the bound port once listening. Raise
        :class:`StartFailed` if uvicorn stopped first."""
        self._listening = asyncio.Event()
        self._task = asyncio.create_task(self._serve_catching_exit())
        listening = asyncio.create_task(self._listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if not self._listening.is_set():
            raise StartFailed(f"cannot serve on {self.config.host}:{self.config.port}")
        return self.port

    async def _serve_catching_exit(self) -> None:
        try:
            await self.serve()
        except SystemExit:  # uvicorn exits this way when it cannot bind or its lifespan fails
            pass

    async def wait(self) -> None:
        """Until the server stopped (a signal when ``signals``, or ``stop``). Cancelling the
        caller does not cancel the server."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def stop(self, grace: float) -> None:
        """Ask uvicorn to shut down; wait up to ``grace`` seconds for it."""
        self.should_exit = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
