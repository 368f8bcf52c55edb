"""``proxy.jobs.JobEvents`` against a scripted RunPod (``httpx.MockTransport``): the
re-run rules of issue 7 item 6a, each path on its own and deterministically (the
end-to-end tests in test_rerun.py kill real workers, but cannot choose which signal
podgate sees first), and the retry of its ``/status`` calls (item 6d)."""

from __future__ import annotations

import httpx

from adapters.events import ErrorEvent, Finish, TextDelta
from adapters.formats import SniffingDecoder
from adapters.http_upstream import HTTPUpstream
from adapters.runpod_client import RunPodQueueClient
from proxy.jobs import JobEvents
from proxy.settings import TimingSettings

TIMING = TimingSettings(stream_wait_ms=0, poll_min_ms=1, poll_max_ms=1, restart_check_s=0.0)


class ScriptedRunPod:
    """Answers ``/stream`` and ``/status`` from scripts, in order (``(status, body)`` or a
    body for 200); counts the calls."""

    def __init__(self, stream: list, status: list | None = None):
        self.stream = list(stream)
        self.status = list(status or [])
        self.calls: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        op = req.url.path.split("/")[3]
        self.calls.append(op)
        answer = (self.stream if op == "stream" else self.status).pop(0)
        code, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(code, json=body, headers={"retry-after": "0"} if code == 429 else {})

    def events(self, on_rerun="fail") -> JobEvents:
        upstream = HTTPUpstream(httpx.MockTransport(self), "https://api.runpod.ai/v2", "k")
        return JobEvents(RunPodQueueClient(upstream), "ep", "j", lambda: SniffingDecoder("chat", strings="text"),
                         TIMING, on_rerun=on_rerun)


def poll(status: str, *items: str) -> dict:
    return {"status": status, "stream": [{"output": i} for i in items]}


def _what(e) -> object:
    return e.text if type(e) is TextDelta else e.reason if type(e) is Finish else e.code if type(e) is ErrorEvent else e


async def drain(source: JobEvents) -> list[list]:
    batches = []
    while (batch := await source.next()) is not None:
        batches.append([(type(e).__name__, _what(e)) for e in batch])
    return batches


async def test_back_in_the_queue_after_output_ends_with_an_error():
    up = ScriptedRunPod([poll("IN_PROGRESS", "a", "b"), poll("IN_QUEUE"), poll("IN_PROGRESS", "a")])
    assert await drain(up.events()) == [[("TextDelta", "a"), ("TextDelta", "b")], [("ErrorEvent", "job_restarted")]]
    assert up.stream == [poll("IN_PROGRESS", "a")]  # the re-run is never read


async def test_back_in_the_queue_before_output_is_harmless():
    up = ScriptedRunPod([poll("IN_PROGRESS"), poll("IN_QUEUE"), poll("IN_PROGRESS", "a"), poll("COMPLETED")])
    assert await drain(up.events()) == [[("TextDelta", "a")], [("Finish", "stop")]]


async def test_restart_mode_reads_the_rerun_afresh():
    up = ScriptedRunPod([poll("IN_PROGRESS", "a"), poll("IN_QUEUE", "stale"), poll("IN_PROGRESS", "x", "y"),
                         poll("COMPLETED")])
    source = up.events(on_rerun="restart")
    assert await source.next() == [TextDelta("a", 0)]
    assert source.restarts == 0
    assert await source.next() == [TextDelta("x", 0), TextDelta("y", 0)]  # never "stale": the lost run's
    assert source.restarts == 1
    assert await source.next() == [Finish("stop", 0)]


async def test_another_run_after_a_pause_ends_with_an_error():
    """The job was re-queued and taken again between two polls (never seen IN_QUEUE): the
    run in ``/status`` at the pause and at the resume differ."""
    up = ScriptedRunPod([poll("IN_PROGRESS", "a"), poll("IN_PROGRESS"), poll("IN_PROGRESS", "a")],
                        [{"status": "IN_PROGRESS", "workerId": "w1", "delayTime": 10},
                         {"status": "IN_PROGRESS", "workerId": "w2", "delayTime": 4200}])
    assert await drain(up.events()) == [[("TextDelta", "a")], [("ErrorEvent", "job_restarted")]]
    assert up.calls == ["stream", "stream", "status", "stream", "status"]


async def test_same_run_after_a_pause_goes_on():
    run = {"status": "IN_PROGRESS", "workerId": "w1", "delayTime": 10}
    up = ScriptedRunPod([poll("IN_PROGRESS", "a"), poll("IN_PROGRESS"), poll("IN_PROGRESS", "b"), poll("COMPLETED")],
                        [run, run])
    assert await drain(up.events()) == [[("TextDelta", "a")], [("TextDelta", "b")], [("Finish", "stop")]]


async def test_pause_check_is_best_effort():
    """``/status`` failing at a pause does not end a healthy stream."""
    up = ScriptedRunPod([poll("IN_PROGRESS", "a"), poll("IN_PROGRESS"), poll("IN_PROGRESS", "b"), poll("COMPLETED")],
                        [(404, {"error": "gone"})])
    assert await drain(up.events()) == [[("TextDelta", "a")], [("TextDelta", "b")], [("Finish", "stop")]]


async def test_refused_status_is_retried():
    """The job streamed nothing: its output comes from ``/status``, which RunPod refuses
    twice (429) before answering."""
    up = ScriptedRunPod([poll("IN_PROGRESS"), poll("COMPLETED")],
                        [(429, {"error": "rate"}), (429, {"error": "rate"}), {"status": "COMPLETED", "output": "hi"}])
    assert await drain(up.events()) == [[("TextDelta", "hi"), ("Finish", "stop")]]
    assert up.calls.count("status") == 3
