"""LiteLLM's own virtual environment for the peers bench, and its proxy's config.

LiteLLM is never installed into podgate's ``.venv``: on first use this module creates
``$HOME/.cache/podgate-bench/litellm`` with the system interpreter (``python3 -m venv``) and
pip-installs ``litellm[proxy]`` at the pinned version into it, timing the install; the
seconds are kept in the venv (``install-seconds``) so that later runs can still say how long
it took. The version is pinned: 1.82.7/1.82.8 and 1.107.0 were compromised releases, and
from 1.108 on the ``proxy`` extra needs a ``litellm-proxy`` package that PyPI does not serve
here, so 1.106.12 is the newest whose proxy installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LITELLM_VERSION = "1.106.12"
VENV = Path(os.environ.get("PODGATE_BENCH_LITELLM_VENV",
                           Path.home() / ".cache" / "podgate-bench" / "litellm"))
_MARK = VENV / "install-seconds"


class InstallFailed(RuntimeError):
    """LiteLLM could not be installed (offline, or the registry said no); the message says why."""


def litellm_command() -> Path:
    return VENV / "bin" / "litellm"


def ensure_installed(log: Path) -> tuple[float, bool]:
    """Make sure LiteLLM's venv exists; return (install seconds, installed just now).
    Raise :class:`InstallFailed` with pip's last lines when it cannot be installed."""
    if _MARK.exists() and litellm_command().exists():
        return float(_MARK.read_text().split()[0]), False
    python = shutil.which("python3") or sys.executable
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        steps = [
            [python, "-m", "venv", "--clear", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
             f"litellm[proxy]=={LITELLM_VERSION}"],
        ]
        for step in steps:
            if subprocess.run(step, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise InstallFailed(" | ".join(tail) or f"{step[0]} failed")
    seconds = time.monotonic() - t0
    _MARK.write_text(f"{seconds:.1f} litellm=={LITELLM_VERSION}\n")
    return seconds, True


def write_config(path: Path, model: str, upstream_v1: str) -> Path:
    """One ``openai/<model>`` entry whose ``api_base`` is the fast upstream's ``/v1``."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream_v1}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    return path


def environment() -> dict[str, str]:
    """LiteLLM's environment: no cost-map download, no telemetry, quiet logs, and no master
    key (podgate checks no client key either, so neither gateway does that work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR",
               DISABLE_SCHEMA_UPDATE="True", NO_DOCS="True",
               LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true")
    return env


if __name__ == "__main__":  # install only: python bench/peers/litellm_env.py
    secs, fresh = ensure_installed(Path("/tmp/podgate-bench-litellm-install.log"))
    print(f"LiteLLM {LITELLM_VERSION} in {VENV}: {'installed in' if fresh else 'installed earlier in'} {secs:.1f} s")
