"""A worker SIGKILLed mid-job (with its heartbeat child, as a lost machine), behind the layer.

The endpoint notices the lost worker (its pings stop) and queues the job again; the other
worker runs it from the start. podgate never appends the re-run to what the first run gave
(``proxy.jobs``, tested in depth by ``tests/proxy/test_rerun.py``): a stream that already
sent output ends with an in-stream ``job_restarted`` error and ``[DONE]``, and the re-run is
cancelled; a non-streaming request, which sent nothing yet, gets the whole answer of the
re-run. Either way the job ends, and nothing is left running. The killed worker is replaced,
so the rig keeps its two workers.
"""

from __future__ import annotations

import threading
import time

from tests.faults.conftest import COUNTED, HANDLER, Outcome, Rig
from tests.proxy.handlers.faults import MIDWAY



def kill_runner(rig: Rig, job: str) -> str:
    """SIGKILL the worker that runs ``job`` (and its heartbeat), start a replacement; the
    killed worker's id."""
    with rig.endpoint.client() as c:
        worker_id = c.get(f"{rig.endpoint.url()}/status/{job}").json()["workerId"]
    [worker] = [w for w in rig.endpoint.workers if w.worker_id == worker_id]
    worker.kill()
    rig.endpoint.worker(HANDLER, concurrency=4, extra_env={"PODGATE_TEST_MARKERS": str(rig.markers)})
    return worker_id


def test_a_worker_killed_mid_stream_ends_the_stream_cleanly(rig):
    killed: list[str] = []

    def kill_midway(out: Outcome) -> bool:
        if not killed and out.text.count(" ") >= MIDWAY and out.job:
            killed.append(kill_runner(rig, out.job))
        return False

    out = rig.chat("#numbers", stream=True, on_text=kill_midway)
    assert killed, "the stream ended before the kill"
    assert out.done and out.error is not None and out.error["code"] == "job_restarted", out.error
    assert COUNTED.startswith(out.text) and len(out.text) < len(COUNTED)  # nothing doubled
    assert rig.settled(timeout=40)[out.job] == "CANCELLED"


def test_a_worker_killed_mid_job_is_invisible_to_a_nonstream_request(rig):
    """The job is killed once ``/runsync`` answered it still IN_PROGRESS (its id known,
    after ``runsync_wait_ms``: past the first tokens) and podgate reads its stream."""
    outcome: dict[str, Outcome] = {}
    thread = threading.Thread(target=lambda: outcome.update(out=rig.chat("#numbers", stream=False)))
    thread.start()
    deadline = time.monotonic() + 20
    while not rig.layer.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    [job] = rig.layer.jobs
    kill_runner(rig, job)
    thread.join(60)
    out = outcome["out"]
    assert (out.status, out.text, out.error) == (200, COUNTED, None)
    assert rig.settled(timeout=40)[job] == "COMPLETED"
