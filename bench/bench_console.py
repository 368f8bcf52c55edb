"""What one open console page costs: the bytes of its first load, the bytes its feed sends per
minute, and the server's CPU per minute with the page open versus closed.

    .venv/bin/python bench/bench_console.py [--seconds 60]

``podgate serve`` (the embedded default) runs as a subprocess; the proxy, and so the console's
feed, runs in its main process, whose CPU time (user + system, from /proc) is read over
``--seconds`` with no page open, then over the same time with ``--pages`` pages open in
headless chromium (/usr/bin/chromium driven by Playwright), divided by their number (one
page costs less than the 10 ms resolution of the counters). The page's bytes come from the browser's
own network events (Chrome DevTools Protocol: ``encodedDataLength``, what crossed the wire):
the first load is every request that finished (document, script, style sheet); the feed is
the bytes the first page receives on ``/console/events`` while it stays open.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.serve_process import ServeProcess

CHROMIUM = "/usr/bin/chromium"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pages", type=int, default=10,
                    help="pages open at once for the CPU figure (one page costs less than /proc's 10 ms tick)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    serve = ServeProcess().start()
    try:
        serve.wait_ready()
        pid = serve.proc.pid
        time.sleep(2.0)  # let the start settle
        c0 = cpu_s(pid)
        time.sleep(args.seconds)
        idle = cpu_s(pid) - c0

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            urls: dict[str, str] = {}
            finished: dict[str, float] = {}
            feed = [0.0]
            cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
            cdp.on("Network.loadingFinished", lambda e: finished.__setitem__(e["requestId"], e["encodedDataLength"]))
            cdp.on("Network.dataReceived", lambda e: feed.__setitem__(0, feed[0] + (  # a fetch() stream: dataLength
                max(e["encodedDataLength"], e["dataLength"]) if urls.get(e["requestId"], "").endswith("/console/events")
                else 0)))
            page.goto(serve.root + "/console")
            page.wait_for_selector("#status.ok", timeout=30_000)
            first_load = {urls[r].removeprefix(serve.root): n for r, n in finished.items()}
            others = [browser.new_page() for _ in range(args.pages - 1)]
            for other in others:
                other.goto(serve.root + "/console")
                other.wait_for_selector("#status.ok", timeout=30_000)
            feed[0] = 0.0
            c1 = cpu_s(pid)
            page.wait_for_timeout(args.seconds * 1000)  # (not time.sleep: the sync API reads events only in its calls)
            open_cpu = cpu_s(pid) - c1
            feed_bytes = feed[0]
            browser.close()
    finally:
        serve.stop(signal.SIGINT)
    per_min = 60.0 / args.seconds
    print("first load (bytes on the wire):")
    for url, n in sorted(first_load.items()):
        print(f"  {url:28} {n:8.0f}")
    print(f"  {'total':28} {sum(first_load.values()):8.0f}")
    print(f"feed: {feed_bytes * per_min:.0f} bytes/min")
    print(f"server CPU: {idle * per_min:.3f} s/min with no page, {open_cpu * per_min:.3f} s/min with {args.pages} "
          f"pages open: {(open_cpu - idle) * per_min * 1000 / args.pages:.1f} ms of CPU per minute per page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
