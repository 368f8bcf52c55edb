"""``podgate worker``: run a RunPod handler through the ``runpod`` SDK's own worker loop.

    podgate worker --endpoint-url http://127.0.0.1:8100/v2/ID --handler module:function
                   [--concurrency N] [--aggregate-stream] [--api-key KEY] [--worker-id ID]
                   [--ping-interval MS] [--log-level LEVEL]

A thin wrapper: it sets the SDK's environment (reference/runpod-protocol.md §2.3 URL
templates, ``RUNPOD_POD_ID``, ``RUNPOD_AI_API_KEY``, ``RUNPOD_PING_INTERVAL``, skipped
fitness checks) *before* importing ``runpod``, imports the handler, binds the SDK's
heartbeat process to this one's life (``serverless.orphans``: it must not ping on for a
worker whose main process was killed), makes SIGTERM/SIGINT end the SDK's worker loop as
soon as its jobs are handed back (``serverless.worker_exit``: the SDK alone waits for its
held long-polls, 20–30 s), paces its job-take after errors (``serverless.take_backoff``: the
SDK alone spins against an endpoint that is down) and calls ``runpod.serverless.start(config)``.

Readiness: a fitness check registered after the handler's own ones (the SDK runs them in
order, before its heartbeat and job-take loop start) tells a parent that listens
(``supervisor.readiness``) that the worker is ready: its handler's checks passed (the
built-in worker loads its model in one).

The SDK config comes from the handler's module: if it defines ``RUNPOD_CONFIG`` (a dict, e.g.
``{"return_aggregate_stream": True, "concurrency_modifier": fn}``) that dict is the base;
``--concurrency N`` sets ``concurrency_modifier`` to a constant N and ``--aggregate-stream``
sets ``return_aggregate_stream``. The key can also come from ``RUNPOD_AI_API_KEY``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", required=True,
                        help="the endpoint's base URL, e.g. http://127.0.0.1:8100/v2/ID")
    parser.add_argument("--handler", required=True, help="module:function of the RunPod handler")
    parser.add_argument("--concurrency", type=int, default=None, help="jobs run at once (concurrency_modifier)")
    parser.add_argument("--aggregate-stream", action="store_true", help="set return_aggregate_stream")
    parser.add_argument("--api-key", default=None, help="worker key (default: $RUNPOD_AI_API_KEY or 'local')")
    parser.add_argument("--worker-id", default=None, help="RUNPOD_POD_ID (default: random)")
    parser.add_argument("--ping-interval", type=int, default=None, help="heartbeat period in ms (>= 1000)")
    parser.add_argument("--log-level", default=None, help="SDK log level: ERROR, WARN, INFO, DEBUG")


def worker_env(endpoint_url: str, worker_id: str, api_key: str, ping_interval_ms: int) -> dict[str, str]:
    """The SDK environment for one worker (templates already contain ``?``, §2.3)."""
    base = endpoint_url.rstrip("/")
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=LOCAL",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=LOCAL",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=LOCAL",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=LOCAL",
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_AI_API_KEY": api_key,
        "RUNPOD_PING_INTERVAL": str(max(1000, ping_interval_ms)),
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
    }


def load_handler(spec: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Import ``module:function``; return the handler and a copy of the module's RUNPOD_CONFIG."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"podgate worker: --handler must be module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise SystemExit(f"podgate worker: {spec!r} is not a callable")
    return handler, dict(getattr(module, "RUNPOD_CONFIG", {}) or {})


def announce_ready() -> None:
    """The worker's last fitness check: tell the parent (if one listens) it is ready."""
    from supervisor.readiness import announce

    announce("ready")


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("RUNPOD_AI_API_KEY") or "local"
    worker_id = args.worker_id or f"w-{uuid.uuid4().hex[:12]}"
    ping = args.ping_interval or int(os.environ.get("RUNPOD_PING_INTERVAL", "10000"))
    os.environ.update(worker_env(args.endpoint_url, worker_id, api_key, ping))
    if args.log_level:
        os.environ["RUNPOD_LOG_LEVEL"] = args.log_level
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "WARN")

    handler, config = load_handler(args.handler)  # after the env: handlers may import runpod
    config["handler"] = handler
    if args.concurrency is not None:
        n = max(1, args.concurrency)
        config["concurrency_modifier"] = lambda current: n
    if args.aggregate_stream:
        config["return_aggregate_stream"] = True

    import runpod.serverless

    from serverless import take_backoff, worker_exit
    from serverless.orphans import bind_heartbeat

    runpod.serverless.register_fitness_check(announce_ready)  # after the handler's own checks
    bind_heartbeat()
    worker_exit.install()
    take_backoff.install()
    sys.argv = sys.argv[:1]  # the SDK parses sys.argv for its own --rp_* flags
    runpod.serverless.start(config)
    return 0
