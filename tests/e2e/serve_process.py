"""Run ``podgate serve`` (the embedded default) as a subprocess, the way the README says,
keep what it prints, and learn through its readiness channel (``supervisor.readiness``) the
local endpoint's URL and, once it printed its banner, the proxy's base URL. Used by tests/e2e
and bench/bench_smollm2.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from supervisor.readiness import ReadyPipe


def podgate_command() -> list[str]:
    """``podgate`` from the running interpreter's environment (the console script the
    README's install puts on PATH)."""
    script = shutil.which("podgate", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "proxy.cli"]


class ServeProcess:
    """``podgate serve --port 0 [extra…]`` with a known endpoint key (``PODGATE_EMBEDDED_KEY``)."""

    def __init__(self, *extra: str, key: str = "e2e-key"):
        self.key = key
        self.argv = [*podgate_command(), "serve", "--port", "0", *extra]
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.base_url: str | None = None
        self.endpoint_url: str | None = None
        self.started_at = 0.0
        self.banner_after: float | None = None  # seconds from start to the ready banner
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServeProcess:
        pipe = ReadyPipe()
        env = {**os.environ, "PODGATE_EMBEDDED_KEY": self.key, **pipe.env}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1, pass_fds=(pipe.fd,))
        pipe.child_started()
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()
        threading.Thread(target=self._read_readiness, args=(pipe,), daemon=True).start()
        return self

    def _drain(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def _read_readiness(self, pipe: ReadyPipe) -> None:
        """The endpoint's URL (``endpoint``), then the proxy's base URL with the banner (``ready``)."""
        try:
            while (message := pipe.read(timeout=3600)) is not None:
                if message.what == "endpoint":
                    self.endpoint_url = message.url
                elif message.what == "ready":
                    self.banner_after = time.monotonic() - self.started_at
                    self.base_url = message.url
        finally:
            pipe.close()

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Wait for the banner, then for ``/readyz`` 200; return seconds since start."""
        deadline = time.monotonic() + timeout
        while self.base_url is None or self.endpoint_url is None or not self._banner_seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"podgate serve exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"podgate serve printed no banner in {timeout} s:\n{self.output()}")
            time.sleep(0.05)
        while httpx.get(self.root + "/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("podgate serve never became ready")
            time.sleep(0.1)
        return time.monotonic() - self.started_at

    def _banner_seen(self) -> bool:
        """The banner (printed before readiness is announced) has been read from stdout."""
        return any(f"Base URL  {self.base_url}" in line for line in self.stdout)

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def endpoint_status(self, job_id: str) -> dict:
        """The local endpoint's ``/status`` of a job (the RunPod job id podgate reports in
        ``x-runpod-job-id``)."""
        r = httpx.get(f"{self.endpoint_url}/smollm2/status/{job_id}", headers={"Authorization": f"Bearer {self.key}"})
        r.raise_for_status()
        return r.json()

    def endpoint_health(self) -> dict:
        r = httpx.get(f"{self.endpoint_url}/smollm2/health", headers={"Authorization": f"Bearer {self.key}"})
        r.raise_for_status()
        return r.json()

    def descendants(self, depth: int | None = None) -> list[int]:
        """Pids of the processes below ``podgate serve`` (``depth=1``: its children — the
        endpoint and the workers; deeper: the SDK's heartbeat processes)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        out, level = [], [self.proc.pid]
        while level and (depth is None or depth > 0):
            level = [c for p in level for c in children.get(p, [])]
            out += level
            depth = None if depth is None else depth - 1
        return out

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"podgate serve did not stop within {timeout} s:\n{self.output()}") from None

    def output(self) -> str:
        return "".join(self.stdout) + "\n--- stderr ---\n" + "".join(self.stderr[-200:])
