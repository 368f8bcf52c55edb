"""Faults, with real processes: a worker that dies while its job-take is held, a worker whose
main process alone is killed (as the OOM killer does) while its heartbeat child lives on, and
a poison job in a job-take batch. The workers are real ``runpod`` SDK workers (``podgate
worker``, or the bare SDK where the point is a worker without podgate's wrapper)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


from serverless.cli_worker import worker_env
from tests.conftest import ROOT, WORKER_PING_MS
from tests.serverless.test_api_errors import UNDELIVERABLE

H = "tests.serverless.handlers"


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def exits_within(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not necessarily our child) has ended within ``timeout`` s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def run_job(server, body: dict) -> str:
    with server.client() as c:
        r = c.post(f"{server.url()}/run", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def status(server, job_id: str) -> dict:
    with server.client() as c:
        return c.get(f"{server.url()}/status/{job_id}").json()


def wait_terminal(server, job_id: str, seconds: float) -> dict:
    """``/status-sync``: the job once terminal, or as it is after ``seconds``."""
    with server.client(timeout=seconds + 10) as c:
        return c.get(f"{server.url()}/status-sync/{job_id}?wait={int(seconds * 1000)}").json()


def wait_until(pred, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def registered_workers(server) -> int:
    h = server.health()["workers"]
    return h["ready"] + h["unhealthy"]


# --- a poison job ------------------------------------------------------------------------


def test_a_poison_job_never_takes_its_batch_down(endpoint):
    """Jobs queued around bodies a worker could not decode are all taken in one job-take
    batch by a real SDK worker and complete: the poison never gets into the queue."""
    healthy, refused = [], []
    with endpoint.client() as c:
        for name, body in UNDELIVERABLE.items():
            healthy.append(c.post(f"{endpoint.url()}/run", json={"input": {"before": name}}).json()["id"])
            refused.append((name, c.post(f"{endpoint.url()}/run", content=body).status_code))
        healthy.append(c.post(f"{endpoint.url()}/run", json={"input": {"after": True}}).json()["id"])
    endpoint.worker(f"{H}:echo_async", concurrency=32)  # asks job-take-batch for 32: one batch
    for job_id in healthy:
        assert wait_terminal(endpoint, job_id, 20)["status"] == "COMPLETED"
    assert [(name, code) for name, code in refused if code != 400] == []


# --- a take held for a worker that has gone ----------------------------------------------

_TAKE = "import httpx, sys; httpx.get(sys.argv[1], headers={'Authorization': sys.argv[2]}, timeout=120)"


def test_a_job_is_not_handed_to_a_take_whose_worker_died(endpoint_factory, store_kind):
    """A worker process dies while its job-take long-poll is held; a job submitted then goes to
    a live worker, not to the dead take (where it would wait IN_PROGRESS for the worker
    timeout, 30 s here; the pings check is off so that only the hand-over is tested)."""
    server = endpoint_factory(store=store_kind, take_hold=30.0, worker_timeout=30.0, ping_grace=0)
    taker = subprocess.Popen([sys.executable, "-c", _TAKE, f"{server.url()}/job-take/w-dead?gpu=LOCAL",
                              server.api_key], start_new_session=True)
    try:
        wait_until(lambda: registered_workers(server) == 1, what="the held take to reach the server")
    finally:
        taker.kill()
        taker.wait(5)
    job_id = run_job(server, {"input": {"x": 1}})
    live = server.worker(f"{H}:echo_async")
    body = wait_terminal(server, job_id, 15)
    assert body["status"] == "COMPLETED" and body["workerId"] == live.worker_id
    assert "w-dead" not in str(body)


# --- the main process of a worker dies, its heartbeat child does not ----------------------


def test_children_of_podgate_worker_die_with_it(endpoint_factory, tmp_path):
    """SIGKILL to the main process of ``podgate worker`` alone (not its process group): its
    children (the SDK's heartbeat) end too, so nothing pings for it and its job is re-queued
    within the worker timeout (4 s here) and completed by another worker."""
    server = endpoint_factory(store="memory")
    victim = server.worker(f"{H}:slow_first_run")
    marker = tmp_path / "first-run"
    job_id = run_job(server, {"input": {"marker": str(marker), "seconds": 120}})
    wait_until(marker.exists, what="the job to start")
    children = child_pids(victim.proc.pid)
    assert children, "the worker has no child process (the SDK's heartbeat)"
    victim.kill_main()
    assert [pid for pid in children if not exits_within(pid, 10)] == []
    server.worker(f"{H}:slow_first_run", wait=False)
    body = wait_terminal(server, job_id, 4.0 + 15)
    assert body["status"] == "COMPLETED" and body["output"] == {"rerun": True}


_BARE_WORKER = ("import runpod, tests.serverless.handlers as h; "
                "runpod.serverless.start({'handler': h.slow_first_run, 'concurrency_modifier': lambda c: 2})")


def test_a_worker_whose_main_process_died_is_lost_though_its_heartbeat_pings(endpoint_factory, store_kind, tmp_path):
    """A bare SDK worker (no podgate wrapper: its heartbeat child outlives it) loses its main
    process while it runs a job and holds a job-take poll (2 slots). The orphaned heartbeat
    keeps pinging with the job's id, but the endpoint saw the worker close its held poll and
    make no request since: within the ping grace it re-queues the job (the worker timeout,
    60 s here, never comes) and stops counting the worker in /health."""
    server = endpoint_factory(store=store_kind, worker_timeout=60.0)
    env = {**os.environ, **worker_env(server.url(), "w-bare", server.api_key, WORKER_PING_MS),
           "RUNPOD_LOG_LEVEL": "INFO"}
    env.pop("RUNPOD_ENDPOINT_BASE_URL", None)
    with open(tmp_path / "bare-worker.log", "wb") as log:
        bare = subprocess.Popen([sys.executable, "-c", _BARE_WORKER], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    orphans: list[int] = []
    try:
        wait_until(lambda: registered_workers(server) == 1, 30, "the bare worker to register")
        marker = tmp_path / "first-run"
        job_id = run_job(server, {"input": {"marker": str(marker), "seconds": 120}})
        wait_until(marker.exists, what="the job to start")
        orphans = child_pids(bare.pid)
        assert orphans, "the bare worker has no heartbeat child"
        os.kill(bare.pid, signal.SIGKILL)
        bare.wait(5)
        assert not exits_within(orphans[0], 0), "the premise: the heartbeat outlives the bare worker"
        live = server.worker(f"{H}:slow_first_run")
        body = wait_terminal(server, job_id, 20)
        assert body["status"] == "COMPLETED" and body["workerId"] == live.worker_id
        assert body["output"] == {"rerun": True}
        assert registered_workers(server) == 1  # the live one; not the worker the orphan pings for
    finally:
        try:
            os.killpg(bare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if bare.poll() is None:
            bare.wait(5)
