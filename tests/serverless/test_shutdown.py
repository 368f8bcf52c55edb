"""Graceful shutdown of ``podgate endpoint``: on SIGTERM every held long-poll answers at once
with its timeout answer and the process exits, although the holds are long (production
``take_hold`` 20 s, ``stop_hold`` 30 s, caller waits of 60 s) and a real SDK worker is
attached, idle, holding job-take and job-stop."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx

H = "tests.serverless.handlers"


def _hold(results: dict, name: str, client: httpx.Client, method: str, url: str, **kw) -> threading.Thread:
    """Send one request in a thread; its response (or the error) lands in ``results[name]``."""

    def run() -> None:
        try:
            results[name] = client.request(method, url, **kw)
        except Exception as exc:  # the assertion below reports it
            results[name] = exc

    thread = threading.Thread(target=run, name=f"hold-{name}", daemon=True)
    thread.start()
    return thread


def test_sigterm_answers_held_long_polls_and_exits(endpoint_factory, store_kind):
    server = endpoint_factory(endpoints=("ep", "idle"), store=store_kind, take_hold=20.0, stop_hold=30.0,
                              worker_timeout=60.0, ping_grace=0)
    ep, idle = server.url("ep"), server.url("idle")
    with server.client(timeout=60.0) as c:
        # a running job, taken by a hand-driven worker "manual" (so nothing finishes it)
        job_id = c.post(f"{ep}/run", json={"input": {"seconds": 60}}).raise_for_status().json()["id"]
        taken = c.get(f"{ep}/job-take/manual")
        assert taken.status_code == 200 and taken.json()["id"] == job_id
    # a real SDK worker on the now empty queue: it sits in job-take and job-stop
    server.worker(f"{H}:long_cancellable", "ep")

    results: dict[str, object] = {}
    clients = [server.client(timeout=60.0) for _ in range(5)]
    threads = [
        _hold(results, "take", clients[0], "GET", f"{ep}/job-take/manual"),
        _hold(results, "stop", clients[1], "GET", f"{ep}/job-stop/manual"),
        _hold(results, "stream", clients[2], "GET", f"{ep}/stream/{job_id}?wait=60000"),
        _hold(results, "status-sync", clients[3], "GET", f"{ep}/status-sync/{job_id}?wait=60000"),
        _hold(results, "runsync", clients[4], "POST", f"{idle}/runsync?wait=60000", json={"input": {"x": 1}}),
    ]
    try:
        time.sleep(1.5)  # let every request reach the server and start holding
        assert not results, f"a long-poll answered before shutdown: {results}"
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError("podgate endpoint still running 5 s after SIGTERM") from None
        assert code in (0, -signal.SIGTERM), server.stderr()[-3000:]
        for t in threads:
            t.join(10)
    finally:
        for client in clients:
            client.close()

    def answer(name: str) -> httpx.Response:
        r = results.get(name)
        assert isinstance(r, httpx.Response), f"{name}: {r!r}\n{server.stderr()[-3000:]}"
        return r

    assert answer("take").status_code == 204 and answer("take").content == b""
    assert answer("stop").status_code == 204 and answer("stop").content == b""
    stream = answer("stream")
    assert stream.status_code == 200 and stream.json() == {"status": "IN_PROGRESS", "stream": []}
    status = answer("status-sync")
    assert status.status_code == 200 and status.json()["id"] == job_id and status.json()["status"] == "IN_PROGRESS"
    runsync = answer("runsync")
    assert runsync.status_code == 200 and runsync.json()["status"] == "IN_QUEUE"
    assert "output" not in runsync.json()
