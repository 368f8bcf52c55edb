"""The incremental SSE parser against the WHATWG rules, split at every position."""

from __future__ import annotations

import pytest

from adapters.sse import DONE, SSEEvent, SSEParser, comment, encode_event


def parse_all(chunks, *, flush=True):
    p = SSEParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close(flush=flush))
    return out


def test_basic_events_and_done():
    text = 'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    assert [e.data for e in parse_all([text])] == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_multiline_data_joined_with_newline_sglang_style():
    # worker-sglang re-serialises each chunk with json.dumps(indent=4), every line prefixed
    text = 'data: {\ndata:     "id": "x",\ndata:     "n": 1\ndata: }\n\n'
    (ev,) = parse_all([text])
    assert ev.data == '{\n    "id": "x",\n    "n": 1\n}'


@pytest.mark.parametrize("nl", ["\n", "\r\n", "\r"])
def test_line_endings(nl):
    text = f"event: ping{nl}data: a{nl}data: b{nl}{nl}data: c{nl}{nl}"
    evs = parse_all([text])
    assert [(e.event, e.data) for e in evs] == [("ping", "a\nb"), ("message", "c")]


def test_comments_fields_and_spaces():
    text = (
        ": keep-alive\n"
        "retry: 1000\n"
        "unknown: x\n"
        "id: 7\n"
        "data:no-space\n"
        "data:  two-spaces\n"
        "data\n"  # field with no colon: empty value
        "\n"
        "event: only-event\n\n"  # no data: not dispatched
        "data: after\n\n"
    )
    evs = parse_all([text])
    assert evs[0] == SSEEvent("no-space\n two-spaces\n", "message", "7")
    assert evs[1] == SSEEvent("after", "message", "7")
    assert len(evs) == 2


def test_bom_dropped_once():
    evs = parse_all(["\ufeffdata: x\n\n", "\ufeffdata: y\n\n"])
    assert evs[0].data == "x"
    # a BOM later in the stream is not a BOM: it's part of the field name, so ignored
    assert len(evs) == 1


CORPUS = (
    'data: {"choices":[{"delta":{"content":"héllo 世界 🎉"}}]}\r\n\r\n'
    ": ping\r\n\r\n"
    'event: x\ndata: {"k":\ndata: 1}\n\n'
    'data: {"choices":[{"delta":{"content":"\\n"}}]}\r\r'
    "data: [DONE]\n\n"
)


def test_split_at_every_position_str():
    expected = parse_all([CORPUS])
    assert len(expected) == 4
    for i in range(len(CORPUS) + 1):
        assert parse_all([CORPUS[:i], CORPUS[i:]]) == expected, i


def test_split_at_every_position_bytes_mid_utf8():
    raw = CORPUS.encode()
    expected = parse_all([CORPUS])
    for i in range(len(raw) + 1):
        assert parse_all([raw[:i], raw[i:]]) == expected, i
    # one byte at a time: every multi-byte character is split
    assert parse_all([raw[i:i + 1] for i in range(len(raw))]) == expected


def test_crlf_split_between_cr_and_lf():
    evs = parse_all(["data: a\r", "\n\r", "\ndata: b\r", "\n", "\r\n"])
    assert [e.data for e in evs] == ["a", "b"]


def test_close_flushes_unterminated_event_unless_strict():
    assert [e.data for e in parse_all(["data: last"])] == ["last"]
    assert [e.data for e in parse_all(["data: last\n"])] == ["last"]
    assert parse_all(["data: last"], flush=False) == []


def test_incomplete_utf8_at_close_becomes_replacement_char():
    evs = parse_all([b"data: \xe4\xb8"])
    assert evs[0].data == "\ufffd"


def test_idle_tracks_partial_state():
    p = SSEParser()
    assert p.idle
    p.feed("data: x")
    assert not p.idle
    p.feed("\n")
    assert not p.idle  # event not dispatched yet
    assert p.feed("\n")[0].data == "x"
    assert p.idle


def test_encoders():
    assert encode_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert comment() == b": ping\n\n"
    assert parse_all([encode_event({"a": "x\ny"}).decode()])[0].data == '{"a":"x\\ny"}'
