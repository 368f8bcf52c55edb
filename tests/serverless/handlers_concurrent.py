"""A handler module that sets its SDK config through ``RUNPOD_CONFIG`` (concurrency 3)."""

from tests.serverless.handlers import concurrent  # noqa: F401  (the handler)


def concurrency_modifier(current: int) -> int:
    return 3


RUNPOD_CONFIG = {"concurrency_modifier": concurrency_modifier}
