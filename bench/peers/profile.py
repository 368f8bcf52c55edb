"""Where podgate's passthrough spends its time per request: py-spy on the gateway process
(pinned to core 0) while the peers bench's load runs, the samples summed by layer. py-spy
samples only the thread that holds the GIL (``--gil``): its idle detection counts threads
parked in ``Condition.wait`` as busy here, and the Python work is what is measured.

    PYTHONPATH=. .venv/bin/python -m bench.peers.profile [--seconds 10] [--stream]
        [--concurrency 32] [--variant "--server granian --client httpx-aiohttp"] [--top 25]

py-spy is not a podgate dependency: it is taken from ``$PODGATE_BENCH_PY_SPY``, else the
``PATH``, else ``$HOME/.cache/podgate-bench/scratch/bin/py-spy`` (``pip install py-spy`` into
any venv). Each sample is given to the layer of its innermost
frame that is not the standard library's asyncio/contextlib/…: the ASGI server, Litestar,
podgate's own code, the HTTP client (httpx, httpcore, h11, anyio, aiohttp), logging, msgspec;
samples in the event loop itself (uvloop's C code, no Python frame above the runner) are
"event loop". The top frames by own time follow.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.peers import load, rounds
from bench.peers.servers import start_podgate, start_upstream

LAYERS = [  # (layer, substrings of a frame's file); first match wins
    ("logging", ("/logging/",)),
    ("HTTP client (httpx/httpcore/h11/anyio/aiohttp)",
     ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/sniffio/", "/aiohttp/", "/httpx_aiohttp/", "/yarl/",
      "/multidict/", "/aiohappyeyeballs/")),
    ("ASGI server (uvicorn/granian)", ("/uvicorn/", "/granian/", "/httptools/", "/h11_impl")),
    ("Litestar", ("/litestar/",)),
    ("msgspec", ("/msgspec/",)),
    ("podgate", ("/proxy/", "/adapters/", "/supervisor/", "/bench/peers/variant")),
]
# standard library modules whose time belongs to their caller's layer
_PASS_THROUGH = ("/asyncio/", "contextlib.py", "typing.py", "functools.py", "enum.py", "abc.py", "re/", "json/",
                 "inspect.py", "dataclasses.py", "weakref.py", "copy.py", "threading.py", "queue.py", "<frozen",
                 "/secrets.py", "/random.py", "/uuid.py")


def _frame_file(frame: str) -> str:
    # py-spy's raw format: "function (package/file.py:line)", the path short; "/" in front
    # lets "/httpx/" match a top-level package as well as a full path
    return "/" + (frame.rsplit(" (", 1)[-1] if frame.endswith(")") else frame)


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        where = _frame_file(frame)
        for layer, marks in LAYERS:
            if any(m in where for m in marks):
                return layer
        if not any(m in where for m in _PASS_THROUGH):
            return "other: " + where.rsplit("/", 1)[-1].split(":")[0]
    return "event loop (uvloop, no Python frame)"


def summarize(raw: str, top: int) -> str:
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [f for f in stack_text.split(";") if not f.startswith(("process ", "thread "))]
        total += count
        layers[layer_of(stack)] += count
        if stack:
            own[stack[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; share by layer:"]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in layers.most_common()]
    lines.append(f"top {top} frames by own time:")
    lines += [f"  {n / total * 100:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def _py_spy() -> str:
    found = os.environ.get("PODGATE_BENCH_PY_SPY") or shutil.which("py-spy")
    if found:
        return found
    scratch = Path.home() / ".cache" / "podgate-bench" / "scratch" / "bin" / "py-spy"
    if scratch.exists():
        return str(scratch)
    raise SystemExit("py-spy not found: pip install py-spy into a scratch venv and set PODGATE_BENCH_PY_SPY")


async def _drive(port: int, stream: bool, concurrency: int, seconds: float) -> load.LoadResult:
    request = rounds.Way("podgate", port, "/v1/chat/completions").request(stream=stream)
    return await load.run(port, request, concurrency=concurrency, total=10_000_000, seconds=seconds, stream=stream)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stream", action="store_true", help="profile streams (default: non-stream requests)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--variant", default=None, help="bench.peers.variant options, quoted")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    import uvloop

    cores = sorted(os.sched_getaffinity(0))
    gateway_core, load_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {load_core})
    logdir = Path(tempfile.mkdtemp(prefix="podgate-profile-"))
    upstream = start_upstream(logdir, core=load_core, chunks=100)
    pod = None
    try:
        pod = start_podgate(logdir, core=gateway_core, upstream_port=upstream.port,
                            variant=shlex.split(args.variant) if args.variant else None)
        uvloop.run(_drive(pod.port, args.stream, 8, 2.0))  # warm-up
        out = logdir / "profile.txt"
        spy = subprocess.Popen([_py_spy(), "record", "--pid", str(pod.proc.pid), "--subprocesses", "--rate", str(args.rate),
                                "--duration", str(int(args.seconds)), "--format", "raw", "--gil",
                                "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu0 = pod.cpu_seconds()
        result = uvloop.run(_drive(pod.port, args.stream, args.concurrency, args.seconds + 1.0))
        cpu = pod.cpu_seconds() - cpu0
        _, err = spy.communicate(timeout=60)
        kind = "streams" if args.stream else "requests"
        print(f"podgate{' ' + args.variant if args.variant else ''}: {result.rate:,.0f} {kind}/s at c={args.concurrency}"
              f" ({result.chunk_rate:,.0f} chunks/s), {cpu / max(result.ok, 1) * 1000:.2f} CPU-ms per request"
              f" (under py-spy at {args.rate} Hz), {result.errors} errors")
        if not out.exists():
            print("py-spy wrote nothing: " + err.decode(errors="replace")[-500:], file=sys.stderr)
            return 1
        print(summarize(out.read_text(), args.top))
        return 0
    finally:
        if pod is not None:
            pod.stop()
        upstream.stop()
        shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
