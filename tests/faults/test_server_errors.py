"""500, 502 and 503 from RunPod (or the load balancer in front of it), on each operation.

502 and 503 say the call was turned away (``RunPodError.refused``): a submit or a poll is
sent again, the client gets the whole answer from one job. A 500 may come after the upstream
acted, so a submit is never sent again (the client gets 502 with ``x-should-retry: false``)
and a ``/stream`` poll (whose answer consumes chunks) neither: the answer ends with the error,
in-stream once bytes were sent, and the job is cancelled. ``/status`` and ``/cancel`` are
idempotent and retried after a 500 too.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import COUNTED, assert_cut_cleanly, assert_failed_and_cancelled, on_first_text
from tests.proxy.handlers.workers import TEXT

HELLO = "".join(TEXT)
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])


@STREAM
@pytest.mark.parametrize("status", [502, 503])
def test_a_refused_submit_is_retried(rig, stream, status):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, status=status, times=2)
    out = rig.chat("hi", stream=stream)
    assert (out.status, out.text, out.error) == (200, HELLO, None)
    assert rig.layer.count(op) == 3 and rig.layer.count(op, forwarded=True) == 1
    assert list(rig.settled().values()) == ["COMPLETED"]


@STREAM
def test_a_500_on_submit_is_not_retried(rig, stream):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, status=500)
    out = rig.chat("hi", stream=stream)
    assert out.status == 502
    assert out.error is not None and out.error["type"] == "server_error", out.error
    assert out.headers["x-should-retry"] == "false"  # the job may exist: a retry could run it twice
    assert rig.layer.count(op) == 1
    assert rig.settled() == {}


@STREAM
def test_a_500_after_the_endpoint_took_the_job_leaves_no_job_running(rig, stream):
    """The endpoint created the job, podgate heard 500: it cannot know the job's id, so the
    job runs to its end unread (a short one here); it is neither lost nor run twice."""
    op = "run" if stream else "runsync"
    rig.layer.inject(op, status=500, forward=True)
    out = rig.chat("hi", stream=stream)
    assert out.status == 502 and out.headers["x-should-retry"] == "false"
    assert list(rig.settled().values()) == ["COMPLETED"]


@STREAM
@pytest.mark.parametrize("status", [502, 503])
def test_refused_stream_polls_are_polled_again(rig, stream, status):
    def fault() -> None:
        rig.layer.inject("stream", status=status, times=2)

    if not stream:
        fault()
    out = rig.chat("#numbers", stream=stream, on_text=on_first_text(fault) if stream else None)
    assert (out.status, out.text, out.error) == (200, COUNTED, None)
    assert rig.layer.count("stream", forwarded=False) == 2
    assert list(rig.settled().values()) == ["COMPLETED"]


def test_a_500_on_a_stream_poll_ends_the_stream_cleanly(rig):
    assert_cut_cleanly(rig, rig.fault_mid_stream(status=500), "server_error")


def test_a_500_on_a_stream_poll_fails_a_nonstream_request(rig):
    rig.layer.inject("stream", status=500)
    assert_failed_and_cancelled(rig, rig.chat("#numbers", stream=False), 502)


def test_a_500_on_status_is_retried(rig):
    """A streamed job that fails is read from ``/status`` (its error; ``/runsync`` brings it
    itself): a 500 there is tried again, and the client gets the job's own error."""
    rig.layer.inject("status", status=500, times=2)
    out = rig.chat("#error_raise", stream=True)
    assert out.status == 500 and out.error is not None, out
    assert "engine crashed" in out.error["message"]
    assert rig.layer.count("status") == 3
    assert list(rig.settled().values()) == ["FAILED"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_failing_cancel_is_retried(rig, status):
    rig.layer.inject("cancel", status=status, times=2)
    out = rig.chat("#numbers", stream=True, on_text=on_first_text(leave=True))
    assert out.left
    assert rig.settled()[out.job] == "CANCELLED"
    assert rig.layer.wait_count("cancel", 3) == 3 and rig.layer.count("cancel", forwarded=True) == 1


def test_a_refused_passthrough_call_is_retried(rig):
    """Streaming only: the rig's worker does not aggregate its output, so the gateway's
    non-streaming answer would be a list (a real worker-vllm aggregates)."""
    rig.layer.inject("openai", status=503, times=2)
    out = rig.chat("hi", stream=True, model="pass")
    assert (out.status, out.text, out.error) == (200, HELLO, None), out.error
    assert out.done
    assert rig.layer.count("openai") == 3 and rig.layer.count("openai", forwarded=True) == 1
    rig.settled()
