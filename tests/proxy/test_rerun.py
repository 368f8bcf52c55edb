"""A job re-run after its worker was lost (issue 7 item 6a).

Two real SDK workers (``handlers/faults.py``, one job each) serve one endpoint whose
short timings re-queue a lost worker's job within seconds. The test SIGKILLs the worker
(and its heartbeat) that runs the job, mid-stream; the other worker takes the re-run (at
once when idle, so podgate hardly sees the job IN_QUEUE; later when busy), which runs from
the start. podgate must never append the re-run's output to what the first run already
gave:

- streaming, after the first byte: the stream ends with an in-stream ``job_restarted``
  error and ``[DONE]``, and the re-run is cancelled;
- streaming, before any output: the re-run is harmless, the client gets the whole answer;
- non-streaming: nothing was sent yet, so the re-run is collected from its start.
"""

from __future__ import annotations

import threading

import openai
import pytest

from tests.proxy.conftest import Stack, start_proxy, write_config
from tests.proxy.handlers.faults import NUMBERS

FAULTS = "tests.proxy.handlers.faults:handler"
ALL = "".join(NUMBERS)


class Rig(Stack):
    """The endpoint, its two workers and a proxy (``Stack``), with an openai client."""

    def __init__(self, endpoint, proxy, markers):
        super().__init__(endpoint, proxy, markers)
        self.client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)

    def marked_job(self, pattern: str, timeout: float = 20.0) -> str:
        """The job id of the first marker file matching ``pattern`` (``{job}.{event}``)."""
        found = self.wait_marker(pattern, timeout)
        if not found:
            raise AssertionError(f"no marker {pattern}")
        return found[0].name.split(".", 1)[0]

    def kill_runner(self, job: str) -> str:
        """SIGKILL the worker (and its heartbeat) that runs ``job``; its worker id."""
        worker_id = self.job_status(job)["workerId"]
        [worker] = [w for w in self.endpoint.workers if w.worker_id == worker_id]
        worker.kill()
        return worker_id


@pytest.fixture
def rig(endpoint_factory, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    server = endpoint_factory(endpoints=("ep",))
    for _ in range(2):
        server.worker(FAULTS, concurrency=1, extra_env={"PODGATE_TEST_MARKERS": str(markers)})
    config = write_config(tmp_path / "rerun.toml", server.base, "ep", models={"text": ("text", None)},
                          timing={"restart_check_s": 1.0})
    proxy = start_proxy(config, server.api_key, tmp_path)
    try:
        yield Rig(server, proxy, markers)
    finally:
        proxy.stop()


def _stream_and_kill(rig, content: str) -> str:
    """Stream ``content``'s answer, SIGKILL its worker three tokens in; the stream must end
    with a ``job_restarted`` error and the job be cancelled. The text received."""
    raw = rig.client.chat.completions.with_raw_response.create(
        model="text", messages=[{"role": "user", "content": content}], stream=True)
    job = raw.headers["x-runpod-job-id"]
    text, killed = "", None
    with pytest.raises(openai.APIError) as info:
        for chunk in raw.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if killed is None and text.count(" ") >= 3:
                killed = rig.kill_runner(job)
    assert killed is not None
    assert info.value.body["code"] == "job_restarted", info.value.body
    assert rig.wait_status(job, "CANCELLED", timeout=10) == "CANCELLED"  # nobody reads the re-run
    return text


def test_rerun_after_first_byte_ends_the_stream(rig):
    """The idle worker takes the re-run at once (the job is hardly seen IN_QUEUE): podgate
    tells the runs apart in ``/status`` when the output resumes after the pause."""
    text = _stream_and_kill(rig, "#numbers")
    assert ALL.startswith(text) and len(text) < len(ALL), f"output repeated or lost: {text!r}"


def test_rerun_waiting_in_the_queue_ends_the_stream(rig):
    """The other worker is busy when the job is re-queued: podgate sees the job IN_QUEUE
    again, ends the stream and cancels the job before the re-run starts."""
    with rig.endpoint.client() as c:
        blocker = c.post(f"{rig.endpoint.url()}/run",
                         json={"input": {"messages": [{"role": "user", "content": "#sleepy"}]}}).json()["id"]
    rig.marked_job(f"{blocker}.started")
    text = _stream_and_kill(rig, "#numbers")
    assert ALL.startswith(text) and len(text) < len(ALL), f"output repeated or lost: {text!r}"


def test_rerun_before_any_output_is_harmless(rig):
    raw = rig.client.chat.completions.with_raw_response.create(
        model="text", messages=[{"role": "user", "content": "#sleepy"}], stream=True)
    job = raw.headers["x-runpod-job-id"]
    rig.marked_job(f"{job}.started")
    killed = rig.kill_runner(job)  # it sleeps before its first token: nothing was sent
    text = ""
    for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == ALL
    final = rig.job_status(job)
    assert final["status"] == "COMPLETED" and final["workerId"] != killed


def test_rerun_while_collecting_a_nonstream_answer(rig):
    """The worker is a generator without aggregation, so podgate reads the job's stream
    even for a non-streaming request; the re-run replaces what the lost run gave."""
    result: dict = {}

    def request() -> None:
        try:
            result["full"] = rig.client.chat.completions.create(
                model="text", messages=[{"role": "user", "content": "#numbers"}])
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=request)
    t.start()
    job = rig.marked_job("*.midway")  # the first run has posted some tokens
    killed = rig.kill_runner(job)
    t.join(40)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert result["full"].choices[0].message.content == ALL
    final = rig.job_status(job)
    assert final["status"] == "COMPLETED" and final["workerId"] != killed
