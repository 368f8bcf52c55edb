"""The peers bench's command line: start the upstream and the gateways, run the rounds, print
the figures and the markdown table (see ``bench/peers/__init__.py``)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.peers import litellm_env, report, rounds
from bench.peers.servers import ENDPOINT, ROOT, Server, Skipped, start_litellm, start_podgate, start_upstream

CHUNKS = 100  # content chunks per streamed answer
# --options: podgate's app under other servers and client engines (bench.peers.variant)
OPTIONS = {  # "podgate" itself: uvicorn (uvloop, httptools) + httpx over adapters.aiohttp_transport
    "uvicorn + httpx's default transport (httpcore)": ["--client", "httpcore"],
    "uvicorn + httpx-aiohttp package": ["--client", "httpx-aiohttp"],
    "uvicorn + podgate's transport, no access log": ["--no-access-log"],
    "granian + podgate's transport": ["--server", "granian"],
    "granian + httpcore": ["--server", "granian", "--client", "httpcore"],
}


def _cores() -> tuple[int, int, str]:
    """(gateway core, upstream + load core, how it was placed)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        return cores[0], cores[1], (f"each gateway alone on core {cores[0]}; the upstream and the load generator "
                                    f"on core {cores[1]}")
    return cores[0], cores[0], f"only one core ({cores[0]}): gateway, upstream and load generator share it"


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _figures(per_way: dict[str, list[rounds.RoundFigures]], peaks: dict[str, float],
             drift_pct: float | None, drift_n: int) -> list[report.Figure]:
    def med(attr: str) -> dict[str, float | None]:
        return {way: _median([getattr(f, attr) for f in figs]) for way, figs in per_way.items()}

    figures = [
        report.Figure("latency p50, c=1 (ms; gateways: added)", med("p50_ms"), False, 2, added=True,
                      target=("<=", 1.0), target_text="≤ +1 ms"),
        report.Figure("latency p99, c=1 (ms; gateways: added)", med("p99_ms"), False, 2, added=True,
                      target=("<=", 5.0), target_text="≤ +5 ms"),
        report.Figure("requests/s, c=32", med("rate"), True, 0, target=(">=", 2000), target_text="≥ 2,000"),
        report.Figure(f"stream chunks/s, c=32 ({CHUNKS + 2} per stream)", med("chunk_rate"), True, 0,
                      target=(">=", 50_000), target_text="≥ 50,000"),
        report.Figure("time to first chunk p50, c=32 (ms)", med("first_chunk_p50_ms"), False, 2),
        report.Figure("gateway CPU-seconds per 1,000 requests", med("cpu_per_1k"), False, 2,
                      target=("<=", 0.5), target_text="≤ 0.5"),
        report.Figure("gateway peak RSS (MiB, whole process tree)", {"direct": None, **peaks}, False, 0,
                      target=("<=", 100), target_text="≤ 100"),
    ]
    if drift_pct is not None:
        figures.append(report.Figure(f"podgate RSS drift over {drift_n:,} requests (%)",
                                     {"direct": None, "podgate": drift_pct, "LiteLLM": None}, False, 1,
                                     target=("<=", 5.0), target_text="≤ 5 %"))
    return figures


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


async def _run(args: argparse.Namespace, logdir: Path) -> int:
    gateway_core, load_core, placement = _cores()
    os.sched_setaffinity(0, {load_core})  # this process is the load generator
    plan = rounds.QUICK if args.quick else rounds.FULL
    print(f"# podgate peers bench — podgate {_commit()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores; {placement}", flush=True)
    servers: list[Server] = []
    try:
        upstream = start_upstream(logdir, core=load_core, chunks=CHUNKS)
        servers.append(upstream)
        ways = [rounds.Way("direct", upstream.port, "/v1/chat/completions")]
        print(f"upstream: http://127.0.0.1:{upstream.port} (/v1 and /v2/{ENDPOINT}/openai/v1), "
              f"{CHUNKS + 2} chunks per stream", flush=True)
        if not args.skip_podgate:
            try:
                pod = start_podgate(logdir, core=gateway_core, upstream_port=upstream.port)
                servers.append(pod)
                ways.append(rounds.Way("podgate", pod.port, "/v1/chat/completions", pod))
                print(f"podgate: http://127.0.0.1:{pod.port}/v1 (passthrough, format = \"openai\"), core {pod.core}",
                      flush=True)
            except Skipped as exc:
                print(f"podgate: SKIPPED — its passthrough (format = \"openai\") did not start on this tree: {exc}",
                      flush=True)
        if not args.skip_litellm:
            try:
                seconds, fresh = litellm_env.ensure_installed(logdir / "litellm-install.log")
                print(f"LiteLLM {litellm_env.LITELLM_VERSION}: {'installed now' if fresh else 'installed earlier'} "
                      f"in {seconds:.0f} s into {litellm_env.VENV}", flush=True)
                lite = start_litellm(logdir, core=gateway_core, upstream_port=upstream.port)
                servers.append(lite)
                ways.append(rounds.Way("LiteLLM", lite.port, "/v1/chat/completions", lite))
                print(f"LiteLLM: http://127.0.0.1:{lite.port}/v1 ({lite.processes()} processes), core {lite.core}",
                      flush=True)
            except (litellm_env.InstallFailed, Skipped) as exc:
                print(f"LiteLLM: SKIPPED — {exc}", flush=True)
        options = []
        for name, variant in (OPTIONS.items() if args.options else ()):
            try:
                server = start_podgate(logdir, core=gateway_core, upstream_port=upstream.port, variant=variant,
                                       name=name)
            except Skipped as exc:
                print(f"{name}: SKIPPED — {exc}", flush=True)
                continue
            servers.append(server)
            ways.append(rounds.Way(name, server.port, "/v1/chat/completions", server))
            options.append(name)

        for way in ways:
            problems = await rounds.check(way, CHUNKS)
            if problems:
                print(f"WARNING {way.name}: {'; '.join(problems)}", flush=True)
            await rounds.warm(way, plan)
        per_way: dict[str, list[rounds.RoundFigures]] = {w.name: [] for w in ways}
        for n in range(args.rounds):
            figs = await rounds.measure_round(ways, plan)
            for name, f in figs.items():
                per_way[name].append(f)
                cpu = f"{f.cpu_per_1k:.2f} CPU-s/1k" if f.cpu_per_1k is not None else "-"
                print(f"round {n + 1} {name:8} p50 {f.p50_ms:7.2f} ms  p99 {f.p99_ms:7.2f} ms  "
                      f"{f.rate:8,.0f} req/s  {f.chunk_rate:9,.0f} chunks/s  TTFC p50 {f.first_chunk_p50_ms:7.2f} ms"
                      f"  {cpu}" + (f"  ERRORS {f.errors}" if f.errors else ""), flush=True)
        peaks = {w.name: w.server.peak_rss_mib() for w in ways if w.server}
        drift_pct = None
        if args.drift and "podgate" in per_way:
            pod_way = next(w for w in ways if w.name == "podgate")
            t0 = time.monotonic()
            points = await rounds.drift(pod_way, args.drift)
            first, last = points[0][1], points[-1][1]
            drift_pct = (last - first) / first * 100
            print(f"podgate RSS over {points[-1][0]:,} requests ({time.monotonic() - t0:.0f} s): "
                  + ", ".join(f"{n:,}: {rss:.1f}" for n, rss in points) + " MiB", flush=True)
        for name in ("podgate", "LiteLLM"):
            per_way.setdefault(name, [])
        print()
        print(f"Measured with `{' '.join(['python -m bench.peers', *map(shlex.quote, sys.argv[1:])])}` "
              f"({args.rounds} rounds{', quick' if args.quick else ''}; medians of rounds; c = concurrency):")
        print()
        print(report.table(_figures(per_way, peaks, drift_pct, args.drift)))
        if options:
            print()
            direct_p50 = _median([f.p50_ms for f in per_way["direct"]]) or 0.0
            print(f"podgate's options side by side (same run; direct p50 {direct_p50:.2f} ms; "
                  "granian's RSS is its supervisor and worker together):")
            print()
            print(report.options_table(_figures(per_way, peaks, None, 0), ["podgate", *options]))
        return 0
    finally:
        for server in reversed(servers):
            server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers",
                                 description="podgate's passthrough against direct and LiteLLM, on loopback")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    ap.add_argument("--quick", action="store_true", help="short phases: a smoke run")
    ap.add_argument("--drift", type=int, default=0, metavar="N", help="also measure podgate's RSS over N requests")
    ap.add_argument("--options", action="store_true",
                    help="also podgate under granian and/or over httpx-aiohttp (see servers.extra_path)")
    ap.add_argument("--skip-podgate", action="store_true")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (their folder is printed)")
    args = ap.parse_args()
    import uvloop

    logdir = Path(tempfile.mkdtemp(prefix="podgate-peers-"))
    try:
        return uvloop.run(_run(args, logdir))
    finally:
        if args.keep_logs:
            print(f"logs in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
