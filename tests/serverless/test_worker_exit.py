"""``podgate worker`` on SIGTERM (``serverless.worker_exit``): it exits within a moment once
its jobs are handed back, and no job is lost.

The endpoint holds the worker's polls as long as in production (``take_hold`` 20 s,
``stop_hold`` 30 s): the runpod SDK alone would wait for them, 20–30 s after the signal.
The signal goes to the worker's main process only, as a container's PID 1 gets it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

H = "tests.serverless.handlers"
HOLDS = {"take_hold": 20.0, "stop_hold": 30.0}
EXIT_S = 5.0
"""A generous bound on the exit once nothing is running (the SDK alone: 20–30 s)."""


def _exits(worker, timeout: float = EXIT_S) -> int:
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"podgate worker still running {timeout} s later:\n{worker.output()[-3000:]}") from None


def _wait_file(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _status(server, job_id: str) -> dict:
    with server.client() as c:
        return c.get(f"{server.url()}/status/{job_id}").json()


def _wait_status(server, job_id: str, want: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while (body := _status(server, job_id))["status"] != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return body


def _submit(server, job_input: dict) -> str:
    with server.client() as c:
        return c.post(f"{server.url()}/run", json={"input": job_input}).raise_for_status().json()["id"]


@pytest.fixture
def server(endpoint_factory):
    return endpoint_factory(**HOLDS)


def test_an_idle_worker_exits_at_once_and_its_closed_poll_takes_no_job(server):
    worker = server.worker(f"{H}:echo_async")
    time.sleep(1.0)  # its job-take and job-stop polls are held by now
    worker.proc.send_signal(signal.SIGTERM)
    assert _exits(worker) == 0, worker.output()[-3000:]

    job_id = _submit(server, {"x": 1})  # the closed poll must not have left a taker behind
    time.sleep(0.5)
    assert _status(server, job_id)["status"] == "IN_QUEUE"
    server.worker(f"{H}:echo_async")
    done = _wait_status(server, job_id, "COMPLETED")
    assert done["status"] == "COMPLETED" and done["output"] == {"echo": {"x": 1}}, done


def test_a_busy_worker_finishes_its_job_then_exits(server, tmp_path):
    worker = server.worker(f"{H}:long_cancellable")
    marker = tmp_path / "job"
    job_id = _submit(server, {"marker": str(marker), "seconds": 3})
    _wait_file(Path(f"{marker}.started"))
    worker.proc.send_signal(signal.SIGTERM)
    done = _wait_status(server, job_id, "COMPLETED")
    assert done["status"] == "COMPLETED" and done["output"] == {"finished": True}, done
    assert _exits(worker) == 0, worker.output()[-3000:]
    assert not marker.exists()  # it was not cut short


def test_a_job_can_still_be_cancelled_while_the_worker_hands_back(server, tmp_path):
    """The job-stop poll stays open until the last job ended: the proxy cancels the jobs of
    the streams it cuts at its own shutdown, and the worker must stop them."""
    worker = server.worker(f"{H}:long_cancellable")
    marker = tmp_path / "job"
    job_id = _submit(server, {"marker": str(marker), "seconds": 60})
    _wait_file(Path(f"{marker}.started"))
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert worker.proc.poll() is None  # still finishing its job
    with server.client() as c:
        assert c.post(f"{server.url()}/cancel/{job_id}").json()["status"] == "CANCELLED"
    _wait_file(marker)  # the handler saw its CancelledError
    assert _exits(worker) == 0, worker.output()[-3000:]


def test_a_second_signal_releases_the_running_job_to_another_worker(server, tmp_path):
    worker = server.worker(f"{H}:slow_first_run")
    marker = tmp_path / "first-run"
    job_id = _submit(server, {"marker": str(marker), "seconds": 60})
    _wait_file(marker)
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.proc.send_signal(signal.SIGTERM)
    assert _exits(worker) == 0, worker.output()[-3000:]

    # released, not lost: the endpoint re-queues it once it finds the worker gone (ping_grace)
    server.worker(f"{H}:slow_first_run")
    done = _wait_status(server, job_id, "COMPLETED", timeout=30)
    assert done["status"] == "COMPLETED" and done["output"] == {"rerun": True}, done
