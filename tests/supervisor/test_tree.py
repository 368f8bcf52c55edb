"""The process tree's parts (``supervisor``) with real processes: readiness through a pipe
(the endpoint's URL, a worker once its handler's fitness checks passed), restarts with
backoff, and uvicorn in-process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from supervisor.process import Child
from supervisor.readiness import Ready, ReadyPipe
from supervisor.restart import RestartPolicy, keep_running
from supervisor.server import AppServer, StartFailed
from tests.conftest import PODGATE, ROOT, _terminate


def spawn_with_pipe(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, ReadyPipe]:
    pipe = ReadyPipe()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, **pipe.env}, pass_fds=(pipe.fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pipe.child_started()
    return proc, pipe


def test_the_endpoint_announces_its_url():
    proc, pipe = spawn_with_pipe([*PODGATE, "endpoint", "--endpoint", "ep", "--port", "0"],
                                 {"PODGATE_EP_API_KEY": "k"})
    try:
        ready = pipe.read(timeout=20)
        assert ready is not None and ready.what == "listening"
        assert ready.url == f"http://127.0.0.1:{ready.port}/v2"
        r = httpx.get(f"{ready.url}/ep/health", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and "workers" in r.json()
    finally:
        pipe.close()
        _terminate(proc, 5)


@pytest.mark.parametrize("fail", [False, True])
def test_a_worker_is_ready_once_its_handlers_fitness_checks_passed(endpoint_factory, tmp_path, fail):
    server = endpoint_factory()
    marker = tmp_path / "loaded"
    env = {"READY_TEST_MARKER": str(marker), **({"READY_TEST_FAIL": "1"} if fail else {})}
    proc, pipe = spawn_with_pipe([*PODGATE, "worker", "--endpoint-url", server.url(), "--api-key", "test-key",
                                  "--handler", "tests.supervisor.handlers:echo", "--ping-interval", "1000"], env)
    try:
        ready = pipe.read(timeout=30)
        if fail:  # the check failed: the worker exits without announcing anything
            assert ready is None and proc.wait(10) != 0
        else:
            assert ready == Ready("ready") and marker.read_text() == "loaded"
    finally:
        pipe.close()
        _terminate(proc, 5)


def python_child(name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code], {"PYTHONPATH": str(ROOT)})


ANNOUNCE_AND_EXIT = "from supervisor.readiness import announce; announce('ready'); raise SystemExit(1)"


async def test_a_child_that_never_gets_ready_is_given_up_after_three_tries():
    spawned: list[Child] = []

    def spawn(generation: int) -> Child:
        spawned.append(python_child(f"w1-{generation}", "raise SystemExit(3)"))
        return spawned[-1]

    reason = await keep_running(spawn, asyncio.Event(), RestartPolicy(first_delay=0.01), what="worker")
    assert reason == "worker w1-3 could not start (3 attempts; see its output above)"
    assert len(spawned) == 3 and not any(c.was_ready for c in spawned)


async def test_a_child_that_got_ready_is_restarted_however_often_it_dies():
    stopping = asyncio.Event()
    ready_seen: list[str] = []

    def spawn(generation: int) -> Child:
        if generation == 5:
            stopping.set()  # the fifth child is the last
        child = python_child(f"w1-{generation}", ANNOUNCE_AND_EXIT)
        child.on_ready = lambda message, name=child.name: ready_seen.append(f"{name} {message.what}")
        return child

    assert await keep_running(spawn, stopping, RestartPolicy(first_delay=0.01), what="worker") is None
    assert ready_seen[:4] == [f"w1-{g} ready" for g in range(1, 5)]


def test_restart_backoff_doubles_and_resets_once_ready():
    policy = RestartPolicy(first_delay=0.5, max_delay=10.0, give_up_after=3)
    assert [policy.after_exit(False), policy.after_exit(False)] == [1.0, 2.0]
    assert policy.after_exit(True) == 0.5 and policy.failures == 0
    assert [policy.after_exit(False), policy.after_exit(False), policy.after_exit(False)] == [1.0, 2.0, None]


async def _hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_app_server_gives_its_port_refuses_a_taken_one_and_leaves_signals_alone():
    import signal

    before = signal.getsignal(signal.SIGINT)
    shutdowns: list[int] = []
    server = AppServer(_hello, host="127.0.0.1", port=0, signals=False, lifespan="off",
                       on_shutdown=lambda: shutdowns.append(1))
    port = await server.start()
    try:
        assert signal.getsignal(signal.SIGINT) is before
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hello"
        with pytest.raises(StartFailed):
            await AppServer(_hello, host="127.0.0.1", port=port, signals=False, lifespan="off").start()
    finally:
        await server.stop(5)
    assert shutdowns == [1]
