"""``podgate serve --config`` with another ASGI server or HTTP client engine, for the peers
bench's side-by-side of the options issue 9 names (nothing here changes podgate itself).

    python -m bench.peers.variant --config podgate.toml --server uvicorn|granian \
        --client podgate|httpcore|httpx-aiohttp [--no-access-log]

- ``--server uvicorn``: podgate's own ``proxy.serve.serve`` (uvicorn; uvloop and httptools,
  as installed with podgate); ``--server granian``: the same app (``proxy.app.create_app``)
  under granian's ASGI interface, one worker, one runtime thread, uvloop.
- ``--client``: podgate's httpx client as podgate makes it (``podgate``: over
  ``adapters.aiohttp_transport``), or with httpx's default transport (``httpcore``), or with
  the ``httpx-aiohttp`` package's ``AiohttpTransport``: ``make_transport`` wrapped where
  ``proxy.upstreams`` calls it.
- ``--no-access-log``: the ``podgate.access`` line per request silenced (to see its cost).

granian and httpx-aiohttp are not podgate dependencies: put them on ``PYTHONPATH`` (e.g.
``pip install --target``); the bench does that (``servers.extra_path``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from typing import Any

import httpx

CONFIG_ENV = "PODGATE_BENCH_VARIANT_CONFIG"
CLIENT_ENV = "PODGATE_BENCH_VARIANT_CLIENT"
QUIET_ENV = "PODGATE_BENCH_VARIANT_QUIET"


def _configure() -> None:
    """In the serving process (granian's worker too): the client engine and the access log."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as podgate serve does (proxy.serve.run)
    if os.environ.get(QUIET_ENV):
        logging.getLogger("podgate.access").setLevel(logging.WARNING)  # Litestar's dictConfig resets .disabled
    client = os.environ.get(CLIENT_ENV, "podgate")
    if client == "podgate":
        return
    import proxy.upstreams

    def make_transport(**kwargs: Any) -> httpx.AsyncBaseTransport:
        limits = httpx.Limits(max_connections=kwargs.get("max_connections", 400), max_keepalive_connections=100)
        if client == "httpcore":
            return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        # not a podgate dependency
        return importlib.import_module("httpx_aiohttp").AiohttpTransport(limits=limits, trust_env=False)

    setattr(proxy.upstreams, "make_transport", make_transport)  # noqa: B010  # where it is called


def app() -> Any:
    """granian's factory: podgate's app for the config in ``$PODGATE_BENCH_VARIANT_CONFIG``."""
    from proxy.app import create_app
    from proxy.settings import load_settings

    _configure()
    return create_app(load_settings(os.environ[CONFIG_ENV]))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.variant")
    ap.add_argument("--config", required=True)
    ap.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    ap.add_argument("--client", choices=("podgate", "httpcore", "httpx-aiohttp"), default="podgate")
    ap.add_argument("--no-access-log", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    os.environ[CONFIG_ENV], os.environ[CLIENT_ENV] = args.config, args.client
    if args.no_access_log:
        os.environ[QUIET_ENV] = "1"
    from proxy.settings import load_settings

    settings = load_settings(args.config)
    if args.server == "uvicorn":
        from proxy.serve import serve

        _configure()
        serve(settings, log_level="warning")
        return
    granian = importlib.import_module("granian")  # not a podgate dependency
    granian.Granian("bench.peers.variant:app", factory=True, address=settings.server.host, port=settings.server.port,
            interface="asgi", workers=1, runtime_threads=1, loop="uvloop", log_enabled=False,
            log_access=False).serve()


if __name__ == "__main__":
    main()
