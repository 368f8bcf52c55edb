"""429 storms, with and without ``Retry-After``, on each operation podgate calls.

- ``/run`` / ``/runsync`` refused: nothing was created and nothing sent, so podgate tries
  again (``proxy.submit``): a short storm ends in the whole answer and one job; a storm
  longer than ``submit_retries`` reaches the client as 429 in OpenAI's shape, with
  ``Retry-After`` when RunPod sent one and ``x-should-retry: true``, and no job exists.
- ``/stream`` refused: the poll consumed nothing, so it is polled again; a storm longer than
  the poll retries ends the answer with the 429 (in-stream after the first byte, with
  ``[DONE]``) and the job is cancelled.
- ``/cancel`` refused while a client leaves: the cancel queue tries again and the job ends
  CANCELLED.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.faults.conftest import COUNTED, assert_cut_cleanly, assert_failed_and_cancelled, on_first_text
from tests.proxy.handlers.workers import TEXT

HELLO = "".join(TEXT)


def submit_op(stream: bool) -> str:
    return "run" if stream else "runsync"


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
@pytest.mark.parametrize("retry_after", [1, None], ids=["retry-after", "backoff"])
def test_a_short_429_storm_on_submit_is_retried(rig, stream, retry_after):
    op = submit_op(stream)
    storm = rig.layer.inject(op, status=429, retry_after=retry_after, times=2)
    out = rig.chat("hi", stream=stream)
    assert (out.status, out.text, out.error) == (200, HELLO, None)
    assert out.done or not stream
    assert storm.hits == 2
    assert rig.layer.count(op, forwarded=True) == 1  # one job, not one per try
    assert list(rig.settled().values()) == ["COMPLETED"]


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_a_429_storm_of_a_second_is_outlasted(rig, stream):
    """A storm that lasts a second, without ``Retry-After``: the backoff (0.5 s, then 1 s,
    each shortened by at most a fifth) outlasts it."""
    rig.layer.inject(submit_op(stream), status=429, times=None, duration=1.0)
    out = rig.chat("hi", stream=stream)
    assert (out.status, out.text) == (200, HELLO)
    assert list(rig.settled().values()) == ["COMPLETED"]


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
@pytest.mark.parametrize("retry_after", ["1", None], ids=["retry-after", "backoff"])
def test_an_endless_429_storm_on_submit_reaches_the_client(rig, stream, retry_after):
    op = submit_op(stream)
    storm = rig.layer.inject(op, status=429, retry_after=retry_after, times=None)
    out = rig.chat("hi", stream=stream)
    assert out.status == 429
    assert out.error is not None and out.error["type"] == "rate_limit_error", out.error
    assert out.error["code"] == "rate_limit_exceeded"
    assert out.headers["x-should-retry"] == "true"  # nothing was created: safe to send again
    assert out.headers.get("retry-after") == retry_after
    assert storm.hits == 3  # the first try and submit_retries = 2
    assert rig.layer.count(op, forwarded=True) == 0
    assert rig.settled() == {}  # no job was created


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
def test_a_429_storm_on_stream_polls_is_retried(rig, stream):
    """Three refused polls in the middle of the answer: polled again, nothing lost or doubled."""
    def storm() -> None:
        rig.layer.inject("stream", status=429, retry_after="0.2", times=3)

    if not stream:
        storm()
    out = rig.chat("#numbers", stream=stream, on_text=on_first_text(storm) if stream else None)
    assert (out.status, out.text, out.error) == (200, COUNTED, None)
    assert out.done or not stream
    assert rig.layer.count("stream", forwarded=False) == 3
    assert list(rig.settled().values()) == ["COMPLETED"]


def test_an_endless_429_storm_on_stream_polls_ends_the_stream_cleanly(rig):
    """After the first byte nothing is retried past the poll retries: an in-stream error,
    ``[DONE]``, and the job cancelled on the endpoint."""
    assert_cut_cleanly(rig, rig.fault_mid_stream(status=429, times=None), "rate_limit_error")


def test_an_endless_429_storm_on_stream_polls_fails_a_nonstream_request(rig):
    rig.layer.inject("stream", status=429, times=None)
    out = rig.chat("#numbers", stream=False)
    assert out.error is not None and out.error["type"] == "rate_limit_error", out.error
    assert_failed_and_cancelled(rig, out, 429)  # the job had been accepted: not to be sent again


def test_a_client_leaving_while_a_submit_waits_out_a_429_leaves_no_job(rig):
    """The client gives up while podgate waits out a refused ``/run``'s ``Retry-After``: the
    retrying ends with the request, and no job is created after it left."""
    rig.layer.inject("run", status=429, retry_after=2, times=None)
    client = rig.client().with_options(timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="text", messages=[{"role": "user", "content": "hi"}], stream=True)
    time.sleep(3.0)  # past Retry-After and its jitter: a retry still going would have come by now
    assert rig.layer.count("run") == 1
    assert rig.settled() == {}


def test_a_client_leaving_during_a_poll_storm_has_its_job_cancelled(rig):
    def storm() -> None:
        rig.layer.inject("stream", status=429, retry_after=1, times=None)

    out = rig.chat("#numbers", stream=True, on_text=on_first_text(storm, leave=True))
    assert out.left
    assert rig.settled()[out.job] == "CANCELLED"


@pytest.mark.parametrize("retry_after", ["0.5", None], ids=["retry-after", "backoff"])
def test_a_429_storm_on_cancel_still_cancels_the_job(rig, retry_after):
    storm = rig.layer.inject("cancel", status=429, retry_after=retry_after, times=2)
    out = rig.chat("#numbers", stream=True, on_text=on_first_text(leave=True))
    assert out.left
    statuses = rig.settled()
    assert statuses[out.job] == "CANCELLED"
    assert storm.hits == 2 and rig.layer.count("cancel", forwarded=True) == 1


def test_concurrent_clients_outlast_a_storm_on_every_operation(rig):
    """Eight clients at once (half streaming) while ``/run``, ``/runsync`` and ``/stream``
    answer 429 for a second: every client gets its whole answer, from one job each."""
    for op in ("run", "runsync", "stream"):
        rig.layer.inject(op, status=429, times=None, duration=1.0)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: rig.chat("#numbers", stream=i % 2 == 0), range(8)))
    assert [(o.status, o.text, o.error) for o in outs] == [(200, COUNTED, None)] * 8
    statuses = rig.settled()
    assert list(statuses.values()) == ["COMPLETED"] * 8


def test_a_long_429_storm_on_cancel_still_cancels_the_job(rig):
    """Five seconds of refused cancels (longer than a few quick retries) while a job that
    would run a minute is abandoned: the cancel queue keeps trying (``cancel_retries``), and
    the job ends CANCELLED soon after the storm, not left running."""
    def storm() -> None:
        rig.layer.inject("cancel", status=429, times=None, duration=5.0)

    out = rig.chat("#endless", stream=True, on_text=on_first_text(storm, leave=True))
    assert out.left
    assert rig.settled(timeout=30)[out.job] == "CANCELLED"
    assert rig.layer.count("cancel", forwarded=False) >= 2 and rig.layer.count("cancel", forwarded=True) == 1
