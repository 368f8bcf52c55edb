"""The processes of the peers bench: starting each server pinned to its core, waiting until
it answers, reading its cost from ``/proc``, and stopping it.

- the fast upstream (``bench/peers/upstream.py``), podgate (``podgate serve --config`` with
  one ``format = "openai"`` model, the passthrough) and LiteLLM's proxy (``litellm
  --config``, from its own venv) are each a :class:`Server`;
- CPU: utime + stime of the server's whole process tree, from ``/proc/<pid>/stat``;
  memory: VmHWM (peak) and VmRSS (now) of the tree, from ``/proc/<pid>/status``, summed over
  its processes (podgate is one process; LiteLLM may fork).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = "bench"
ENDPOINT = "bench"
API_KEY = "sk-bench"


class Skipped(RuntimeError):
    """A way in that cannot be measured in this run; the message says why, in one line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """One server process (and its children), pinned to ``core``."""

    name: str
    proc: subprocess.Popen
    port: int
    core: int
    log: Path

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p) for p in process_tree(self.proc.pid))

    def peak_rss_mib(self) -> float:
        return sum(_status_kib(p, "VmHWM:") for p in process_tree(self.proc.pid)) / 1024

    def rss_mib(self) -> float:
        return sum(_status_kib(p, "VmRSS:") for p in process_tree(self.proc.pid)) / 1024

    def processes(self) -> int:
        return len(process_tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log_tail(self, lines: int = 8) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _http_status(port: int, path: str) -> int:
    """The status of ``GET path`` on 127.0.0.1:port; 0 if nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
            head = s.recv(64)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _launch(name: str, argv: list[str], *, port: int, core: int, logdir: Path, ready_path: str,
            env: dict[str, str] | None = None, timeout: float = 60.0) -> Server:
    log = logdir / f"{name.lower()}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    server = Server(name, proc, port, core, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Skipped(f"{name} exited ({proc.returncode}) before answering: "
                          + server.log_tail(3).replace("\n", " | "))
        if _http_status(port, ready_path) == 200:
            return server
        time.sleep(0.1)
    server.stop()
    raise Skipped(f"{name} did not answer GET {ready_path} within {timeout:.0f} s: "
                  + server.log_tail(3).replace("\n", " | "))


def start_upstream(logdir: Path, *, core: int, chunks: int) -> Server:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "peers" / "upstream.py"), "--port", str(port),
            "--chunks", str(chunks), "--model", MODEL]
    return _launch("upstream", argv, port=port, core=core, logdir=logdir, ready_path="/v1/models")


def podgate_config(path: Path, port: int, upstream_port: int) -> Path:
    """One passthrough model: ``format = "openai"`` on endpoint ``bench`` of the upstream's ``/v2``.
    Its ``/openai`` budget is off: RunPod's 2,000 calls per 10 s would cap the bench at 200
    requests/s, and the figures are podgate's cost per request (``bench/bench_budgets.py``
    measures the budget's own)."""
    path.write_text("\n".join([
        "[server]", 'host = "127.0.0.1"', f"port = {port}", "",
        "[runpod]", f'base_url = "http://127.0.0.1:{upstream_port}/v2"', 'api_key_env = "PODGATE_BENCH_KEY"', "",
        "[budgets.openai]", "rate = 0", "concurrency = 0", "",
        "[[models]]", f'name = "{MODEL}"', f'endpoint = "{ENDPOINT}"', 'format = "openai"',
        f'base_url = "http://127.0.0.1:{upstream_port}/v2"', "",
    ]))
    return path


TARGETS = Path.home() / ".cache" / "podgate-bench" / "targets"


def extra_path() -> str:
    """Where the options' packages are: ``$PODGATE_BENCH_EXTRA_PATH``, else every folder under
    ``$HOME/.cache/podgate-bench/targets`` (``pip install --target …/targets/granian granian``)."""
    if "PODGATE_BENCH_EXTRA_PATH" in os.environ:
        return os.environ["PODGATE_BENCH_EXTRA_PATH"]
    return os.pathsep.join(str(p) for p in sorted(TARGETS.glob("*")) if p.is_dir())


def start_podgate(logdir: Path, *, core: int, upstream_port: int, variant: list[str] | None = None,
                  name: str = "podgate") -> Server:
    """``podgate serve --config``; with ``variant`` (``bench.peers.variant``'s options) the
    same app under another server or client engine, found on ``extra_path()``."""
    port = free_port()
    config = podgate_config(logdir / f"{name.replace(' ', '-')}.toml", port, upstream_port)
    path = os.pathsep.join(p for p in (str(ROOT), extra_path()) if p)
    env = {**os.environ, "PYTHONPATH": path, "PODGATE_BENCH_KEY": API_KEY}
    if variant is None:
        argv = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--log-level", "warning"]
    else:
        argv = [sys.executable, "-m", "bench.peers.variant", "--config", str(config), *variant]
    return _launch(name, argv, port=port, core=core, logdir=logdir, ready_path="/healthz", env=env)


def start_litellm(logdir: Path, *, core: int, upstream_port: int) -> Server:
    from bench.peers import litellm_env

    port = free_port()
    config = litellm_env.write_config(logdir / "litellm.yaml", MODEL, f"http://127.0.0.1:{upstream_port}/v1")
    argv = [str(litellm_env.litellm_command()), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    return _launch("LiteLLM", argv, port=port, core=core, logdir=logdir, ready_path="/health/liveliness",
                   env=litellm_env.environment(), timeout=180.0)
