"""Truncated JSON: the endpoint answered, and its body arrives cut in half (the HTTP framing
intact, the JSON not).

podgate reads such an answer as a failed call whose fate is unknown (``RunPodError`` 502,
not answered): a submit is not sent again (the endpoint did create the job). When the part
that arrived holds the whole job id, podgate goes on with that job and the client gets its
whole answer; when it does not, the client gets 502 with ``x-should-retry: false``, and the
job, whose id podgate could not read, runs to its end unread. A ``/stream`` poll is not sent
again either (its chunks were consumed: the answer ends with the
error, never passed off as whole, and the job is cancelled); ``/status`` and ``/cancel`` are
tried again.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import COUNTED, assert_cut_cleanly, assert_failed_and_cancelled, on_first_text

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])


@STREAM
def test_a_submit_answer_cut_within_the_job_id_fails_the_request(rig, stream):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, truncate=0.05)  # a few bytes: '{"id":"…' at most
    out = rig.chat("hi", stream=stream)
    assert out.status == 502 and out.headers["x-should-retry"] == "false"
    assert out.error is not None and out.error["type"] == "server_error", out.error
    assert rig.layer.count(op) == 1
    assert list(rig.settled().values()) == ["COMPLETED"]


@STREAM
def test_a_submit_answer_cut_after_the_job_id_goes_on_with_that_job(rig, stream):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, truncate=0.8)  # '{"id":"…-u1","status":"IN_Q' and no more
    out = rig.chat("#numbers", stream=stream)
    assert (out.status, out.error) == (200, None), out
    assert out.text == COUNTED  # whole, once
    assert rig.layer.count(op) == 1
    assert list(rig.settled().values()) == ["COMPLETED"]


def test_a_truncated_poll_ends_the_stream_cleanly(rig):
    assert_cut_cleanly(rig, rig.fault_mid_stream(truncate=True), "server_error")


def test_a_truncated_poll_fails_a_nonstream_request(rig):
    rig.layer.inject("stream", truncate=True)
    assert_failed_and_cancelled(rig, rig.chat("#numbers", stream=False), 502)


def test_a_truncated_status_is_read_again(rig):
    rig.layer.inject("status", truncate=True, times=2)
    out = rig.chat("#error_raise", stream=True)
    assert out.status == 500 and out.error is not None and "engine crashed" in out.error["message"], out
    assert rig.layer.count("status") == 3
    assert list(rig.settled().values()) == ["FAILED"]


def test_a_truncated_cancel_answer_is_sent_again(rig):
    rig.layer.inject("cancel", truncate=True, times=2)
    out = rig.chat("#numbers", stream=True, on_text=on_first_text(leave=True))
    assert out.left
    assert rig.settled()[out.job] == "CANCELLED"
    assert rig.layer.wait_count("cancel", 3) == 3
