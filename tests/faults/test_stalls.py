"""A ``/stream`` (or a submit) that stalls for a minute.

podgate bounds every upstream call (``[timing] upstream_timeout_s`` on top of the ``?wait=``
it asked for; 2 s here, on a podgate of its own): a stalled poll times out, is not sent again
(its answer may have consumed chunks), and the answer ends with a timeout — in-stream with
``[DONE]`` once the response started (it starts after ``first_byte_wait_s`` with keep-alives),
504 otherwise — and the job is cancelled. The stalled call itself is dropped by podgate, so
the layer never forwards it. A stall shorter than the timeout is only a delay.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import COUNTED, assert_cut_cleanly, assert_failed_and_cancelled, on_first_text

MINUTE = 60.0


@pytest.fixture(scope="module")
def impatient(fault_rig):
    """A podgate on the rig's layer that waits at most 2 s for an upstream answer (and starts
    a stream's response after 0.5 s without events)."""
    return fault_rig.proxy_with(upstream_timeout_s=2.0, first_byte_wait_s=0.5)


def test_a_stalled_poll_mid_stream_ends_the_stream_cleanly(rig, impatient):
    assert_cut_cleanly(rig, rig.fault_mid_stream(stall=MINUTE, proxy=impatient), "timeout")
    assert rig.layer.count("stream", forwarded=False) == 1  # dropped by podgate, never forwarded


def test_a_poll_stalled_before_the_first_byte_ends_in_stream(rig, impatient):
    """The response starts after ``first_byte_wait_s`` (keep-alives), so the timeout that
    comes later is an in-stream error."""
    rig.layer.inject("stream", stall=MINUTE)
    out = rig.chat("#numbers", stream=True, proxy=impatient)
    assert out.status == 200 and out.done and out.text == ""
    assert out.error is not None and out.error["type"] == "timeout", out.error
    assert rig.settled()[out.job] == "CANCELLED"


def test_a_stalled_poll_fails_a_nonstream_request(rig, impatient):
    rig.layer.inject("stream", stall=MINUTE)
    assert_failed_and_cancelled(rig, rig.chat("#numbers", stream=False, proxy=impatient), 504)


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_a_stalled_submit_times_out_and_is_not_sent_again(rig, impatient, stream):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, stall=MINUTE)
    out = rig.chat("hi", stream=stream, proxy=impatient)
    assert out.status == 504 and out.headers["x-should-retry"] == "false"
    assert rig.layer.count(op) == 1
    assert rig.settled() == {}


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_a_short_stall_is_only_a_delay(rig, impatient, stream):
    def fault() -> None:
        rig.layer.inject("stream", stall=1.0)

    if not stream:
        fault()
    out = rig.chat("#numbers", stream=stream, proxy=impatient, on_text=on_first_text(fault) if stream else None)
    assert (out.status, out.text, out.error) == (200, COUNTED, None)
    assert list(rig.settled().values()) == ["COMPLETED"]
