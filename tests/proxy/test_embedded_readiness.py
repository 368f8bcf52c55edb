"""``podgate serve`` (no config): ``/readyz`` asks the local endpoint's ``/health`` whether it
counts a ready worker. The body is read with the RunPod client's typed ``Health``, so a body
of another shape (a proxy in front, an older endpoint) reads as not ready instead of failing
the readiness check with a crash.

Real parts: a real worker process (a sleeper standing in for a loaded worker) in the tree's
slot, and the ``/health`` answers over loopback HTTP from an ASGI app under uvicorn."""

from __future__ import annotations

import sys

import httpx
import pytest

from proxy.embedded import Embedded, Options
from supervisor.process import Child
from supervisor.server import AppServer


class HealthAnswers:
    """An ASGI app answering ``/health`` with the status and body the test sets."""

    def __init__(self) -> None:
        self.status, self.body = 200, b"{}"

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
async def tree():
    answers = HealthAnswers()
    server = AppServer(answers, host="127.0.0.1", port=0, signals=False, lifespan="off")
    port = await server.start()
    embedded = Embedded(Options(workers=1))
    child = Child("w1", [sys.executable, "-c", "import time; time.sleep(120)"], {})
    await child.start()
    embedded.slots[0].child, embedded.slots[0].loaded = child, True
    embedded.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/ep")
    try:
        yield embedded, answers
    finally:
        await embedded.http.aclose()
        await child.stop(5)
        await server.stop(5)


@pytest.mark.parametrize("status,body,ready", [
    (200, b'{"jobs":{"inQueue":0},"workers":{"idle":0,"ready":1,"running":0}}', True),
    (200, b'{"jobs":{},"workers":{"ready":2}}', True),
    (200, b'{"jobs":{},"workers":{"ready":0,"idle":1}}', False),
    (200, b"{}", False),
    (503, b'{"workers":{"ready":1}}', False),
    (200, b"not json", False),
    # bodies of another shape: not ready, never an exception out of the readiness check
    (200, b"[]", False),
    (200, b'{"workers":[]}', False),
    (200, b'{"workers":{"ready":"1"}}', False),
])
async def test_readiness_reads_health_with_the_typed_decoder(tree, status, body, ready):
    embedded, answers = tree
    answers.status, answers.body = status, body
    assert await embedded.ready() is ready
