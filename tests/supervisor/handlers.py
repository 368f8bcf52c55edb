"""A RunPod handler with a fitness check, for ``podgate worker``'s readiness announcement:
the check writes ``$READY_TEST_MARKER`` (or fails when ``$READY_TEST_FAIL`` is set)."""

import os
from pathlib import Path

import runpod


@runpod.serverless.register_fitness_check
def load() -> None:
    if os.environ.get("READY_TEST_FAIL"):
        raise RuntimeError("the model cannot load")
    Path(os.environ["READY_TEST_MARKER"]).write_text("loaded")


def echo(job: dict) -> object:
    return job["input"]
