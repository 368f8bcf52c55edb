"""``podgate serve``: the OpenAI-compatible proxy.

With ``--config podgate.toml`` it serves the models of that file (``proxy.settings``);
a bad file is reported with the key and the problem, and the command exits 2 before
anything starts. Without ``--config`` it starts the embedded default
(``proxy.embedded.run``: local endpoint + SmolLM2 worker + proxy).

SIGTERM or SIGINT (uvicorn's own handling) shuts it down gracefully (``proxy.drain``):
the listeners close, ``/readyz`` answers 503, running requests may finish for
``[server] drain_s``, then what still runs ends and its jobs are cancelled; the process
exits once those cancels are sent (at most ``proxy.app.CANCEL_FLUSH_S`` later). A second
signal ends the drain at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.app import Readiness
    from proxy.settings import ProxySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="podgate.toml (no file: the embedded default)")
    parser.add_argument("--host", default=None, help="bind address (overrides [server] host)")
    parser.add_argument("--port", type=int, default=None, help="port (overrides [server] port; 0 = any free port)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=None, choices=["auto", "text", "json"],
                        help="text, json, or auto: text on a terminal (overrides [server] log_format)")
    from proxy import embedded  # the embedded default's own options (ignored with --config)

    embedded.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from proxy import logs

    if not args.config:
        from proxy import embedded

        logs.configure(args.log_level, args.log_format or "auto")
        return int(embedded.run(args) or 0)

    from proxy.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"podgate serve: {exc}", file=sys.stderr)
        return 2
    if args.host is not None:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    logs.configure(args.log_level, args.log_format or settings.server.log_format)
    serve(settings, log_level=args.log_level)
    return 0


def serve(settings: ProxySettings, *, log_level: str = "info", readiness: Readiness | None = None) -> None:
    """Run the proxy for ``settings`` under uvicorn until interrupted (blocking). Once
    listening it prints its address (``port = 0`` picks a free one) and announces it to a
    parent that listens (``supervisor.readiness``)."""
    from proxy.app import create_app
    from supervisor.readiness import announce
    from supervisor.server import AppServer

    app = create_app(settings, readiness=readiness)
    drain = app.state.gateway.drain
    server = AppServer(app, host=settings.server.host, port=settings.server.port, log_level=log_level,
                       log_config=None,  # uvicorn's lines go through the process's handler (proxy.logs)
                       # idle connections are kept 75 s (AppServer's default, as nginx): longer than
                       # clients keep theirs (httpx, so the OpenAI SDKs: 5 s) and than load balancers'
                       # idle timeouts (60 s), so the client side closes first and never sends a
                       # request on a connection the server is closing at that moment
                       timeout_graceful_shutdown=drain.server_timeout(),
                       on_shutdown=drain.begin, on_second_signal=drain.expire)

    def started(port: int) -> None:
        host = server.servers[0].sockets[0].getsockname()[0]
        access = (f"{len(settings.keys)} client key(s) required" if settings.keys
                  else "open: no client keys configured, anyone who reaches it may use it")
        print(f"podgate proxy listening on http://{host}:{port}/v1 "
              f"(models: {', '.join(m.name for m in settings.models)}; {access})", flush=True)
        announce("listening", f"http://{host}:{port}/v1")

    server.on_started = started
    server.run()
