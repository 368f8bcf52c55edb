"""Connections reset: before the request reached the endpoint, and after it was forwarded (the
endpoint acted, its answer is lost).

podgate cannot tell the two apart — in both the request went out and no answer came — so it
treats them alike, as the worst case: a submit is not sent again (a job may exist; the
client gets 502 with ``x-should-retry: false``), a ``/stream`` poll neither (its lost answer
may have consumed chunks: the answer ends with the error, in-stream after the first byte,
never passed off as whole), ``/status`` and ``/cancel`` are (idempotent). A job created by a
submit whose answer was lost is unknown to podgate: it runs to its end, unread.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_cut_cleanly, assert_failed_and_cancelled, on_first_text

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
WHEN = pytest.mark.parametrize("when", ["before", "after"])


@STREAM
@WHEN
def test_a_reset_submit_fails_the_request_without_a_retry(rig, stream, when):
    op = "run" if stream else "runsync"
    rig.layer.inject(op, reset=when)
    out = rig.chat("hi", stream=stream)
    assert out.status == 502
    assert out.error is not None and out.error["code"] == "upstream_unreachable", out.error
    assert out.headers["x-should-retry"] == "false"
    assert rig.layer.count(op) == 1  # not sent again: with "after", a second job would run
    statuses = rig.settled()
    assert list(statuses.values()) == ([] if when == "before" else ["COMPLETED"])


@WHEN
def test_a_reset_stream_poll_ends_the_stream_cleanly(rig, when):
    assert_cut_cleanly(rig, rig.fault_mid_stream(reset=when), "server_error")


@WHEN
def test_a_reset_stream_poll_fails_a_nonstream_request(rig, when):
    rig.layer.inject("stream", reset=when)
    assert_failed_and_cancelled(rig, rig.chat("#numbers", stream=False), 502)


@WHEN
def test_a_reset_status_call_is_retried(rig, when):
    rig.layer.inject("status", reset=when, times=2)
    out = rig.chat("#error_raise", stream=True)
    assert out.status == 500 and out.error is not None and "engine crashed" in out.error["message"], out
    assert rig.layer.count("status") == 3
    assert list(rig.settled().values()) == ["FAILED"]


@WHEN
def test_a_reset_cancel_is_retried(rig, when):
    rig.layer.inject("cancel", reset=when, times=2)
    out = rig.chat("#numbers", stream=True, on_text=on_first_text(leave=True))
    assert out.left
    assert rig.settled()[out.job] == "CANCELLED"
    assert rig.layer.wait_count("cancel", 3) == 3
