"""``podgate endpoint``: run the self-hosted RunPod Serverless endpoint server.

    podgate endpoint --endpoint ID [--endpoint ID2 …] [--host 127.0.0.1] [--port 8100]
                     [--api-key KEY] [--redis-url URL] [--<setting> VALUE …] [--limit OP=N:C …]

Every scalar field of :class:`serverless.settings.EndpointSettings` is also a flag (``take_hold`` →
``--take-hold``) and an environment variable (``PODGATE_EP_TAKE_HOLD``); flags win. Keys are
best given through ``PODGATE_EP_API_KEY`` / ``PODGATE_EP_WORKER_API_KEY`` (not visible in
``ps``). ``--limit run=1000:200`` sets an operation's per-window and concurrent limits
(0 = unlimited). When the server is listening it prints one line for people:
``podgate endpoint ready on http://HOST:PORT/v2 (endpoints: a, b)``, and tells a parent that
listens (``supervisor.readiness``) its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import msgspec

from serverless.settings import EndpointSettings, OpLimit

ENV_PREFIX = "PODGATE_EP_"
_SCALARS = (int, float, str, bool)


def _scalar_fields() -> list[tuple[str, type, Any]]:
    out = []
    for field in msgspec.structs.fields(EndpointSettings):
        kind = field.type
        if kind in _SCALARS or kind in (str | None, int | None):
            base = kind if kind in _SCALARS else (str if kind == (str | None) else int)
            out.append((field.name, base, field.default))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", action="append", dest="endpoints", metavar="ID",
                        help="endpoint id to serve (repeatable; default: 'local')")
    parser.add_argument("--limit", action="append", default=[], metavar="OP=PER_WINDOW:CONCURRENT",
                        help="override one operation's limits, e.g. run=1000:200 (0 = unlimited)")
    for name, base, default in _scalar_fields():
        if name == "endpoints":
            continue
        flag = "--" + name.replace("_", "-")
        if base is bool:
            parser.add_argument(flag, dest=name, default=None, type=lambda v: v.lower() in ("1", "true", "yes"))
        else:
            parser.add_argument(flag, dest=name, default=None, type=base,
                                help=f"default {default!r} (env {ENV_PREFIX}{name.upper()})")


def settings_from_args(args: argparse.Namespace) -> EndpointSettings:
    values: dict[str, Any] = {}
    for name, base, _ in _scalar_fields():
        value = getattr(args, name, None)
        if value is None:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env is not None:
                value = env.lower() in ("1", "true", "yes") if base is bool else base(env)
        if value is not None:
            values[name] = value
    if getattr(args, "endpoints", None):
        values["endpoints"] = args.endpoints
    settings = EndpointSettings(**values)
    for spec in getattr(args, "limit", []) or []:
        op, _, numbers = spec.partition("=")
        per, _, conc = numbers.partition(":")
        try:
            settings.limits[op] = OpLimit(int(per or 0), int(conc or 0))
        except ValueError:
            raise SystemExit(f"podgate endpoint: bad --limit {spec!r} (expected OP=PER_WINDOW:CONCURRENT)") from None
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    from serverless.app import serve
    from supervisor.readiness import announce
    from supervisor.server import StartFailed

    def ready(port: int) -> None:
        url = f"http://{settings.host}:{port}/v2"
        print(f"podgate endpoint ready on {url} "
              f"(endpoints: {', '.join(settings.endpoints)}; store: {'redis' if settings.redis_url else 'memory'})",
              flush=True)
        announce("listening", url)

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve(settings, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except (OSError, StartFailed) as exc:
        print(f"podgate endpoint: {exc}", file=sys.stderr)
        return 1
    return 0
