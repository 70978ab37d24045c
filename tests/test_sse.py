"""The SSE parser (tap_events/sse.py) on byte streams, and the ULID helpers it is used with."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_events import sse, ulid
from tap_events.sse import Comment, Event

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "apis" / "alpaca_admin_action_event.sse"


def parse(*chunks: bytes) -> list[Event | Comment]:
    return list(sse.parse(chunks))


def test_lf_crlf_and_cr_line_ends_give_the_same_events():
    for end in ("\n", "\r\n", "\r"):
        body = f": hi{end}data: one{end}{end}data: two{end}{end}".encode()
        assert parse(body) == [Comment("hi"), Event("one"), Event("two")], repr(end)


def test_crlf_split_across_chunks_is_one_line_break():
    # A CR ending one chunk and the LF starting the next must not make an empty line
    # (which would dispatch an event early).
    items = parse(b"data: a\r", b"\ndata: b\r\n\r\n")
    assert items == [Event("a\nb")]


def test_multi_line_data_is_joined_with_newlines():
    assert parse(b'data: {"a": 1,\ndata: "b": 2}\n\n') == [Event('{"a": 1,\n"b": 2}')]


def test_blank_line_dispatches_and_incomplete_event_is_discarded():
    assert parse(b"data: done\n\ndata: cut off at the end") == [Event("done")]
    assert parse(b"data: cut off\n") == []


def test_comments_are_kept_in_order_with_one_leading_space_removed():
    body = b":heartbeat\n\ndata: x\n\n: you are reading too slowly, dropped 10 messages\n\n"
    assert parse(body) == [
        Comment("heartbeat"),
        Event("x"),
        Comment("you are reading too slowly, dropped 10 messages"),
    ]


def test_final_comment_without_line_break_is_seen():
    assert parse(b"data: x\n\n: internal server error") == [Event("x"),
                                                             Comment("internal server error")]


def test_id_persists_across_events_and_event_type_resets():
    body = b"id: 7\nevent: update\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    assert parse(body) == [Event("a", "update", "7"), Event("b", "message", "7"),
                           Event("c", "message", "")]


def test_a_data_less_block_dispatches_nothing_and_its_fields_carry_over():
    """Alpaca's Java SDK keeps the `id:` of blocks without data; the tap reads the cursor from
    the JSON, but the grammar must still parse (system events are sent this way)."""
    body = (b"retry: 3000\nid: 41\nevent: eod_balances_ready\n\n"
            b"id: 42\nevent: eod_positions_ready\ndata: [{\"event_id\": \"X\"}]\n\n")
    assert parse(body) == [Event('[{"event_id": "X"}]', "eod_positions_ready", "42", 3000)]


def test_field_rules_from_the_spec():
    body = (b"data\n\n"            # a field name alone: empty value, dispatches ""
            b"data:no-space\n\n"   # no space after the colon
            b"data:  two spaces\n\n"  # only one leading space is removed
            b"retry: 3000\nretry: soon\nfoo: bar\ndata: r\n\n"
            b"id: a\x00b\ndata: z\n\n")  # an id with NUL is ignored
    assert parse(body) == [Event(""), Event("no-space"), Event(" two spaces"),
                           Event("r", retry=3000), Event("z")]


def test_bom_is_dropped_and_utf8_split_across_chunks_survives():
    text = "\ufeffdata: café ü\n\n".encode()
    chunks = [text[i:i + 1] for i in range(len(text))]
    assert parse(*chunks) == [Event("café ü")]


def test_alpaca_sample_file_parses_into_three_events_and_four_comments():
    items = parse(SAMPLE.read_bytes())
    events = [i for i in items if isinstance(i, Event)]
    comments = [i.text for i in items if isinstance(i, Comment)]
    assert len(events) == 3
    assert comments == ["heartbeat", "heartbeat",
                        "you are reading too slowly, dropped 10000 messages",
                        "internal server error"]
    assert '"event_id":"01JNGQDKNRM9S346Q3D25VT4F5"' in events[0].data


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_chunking_never_changes_the_result(body, cuts):
    cuts = sorted({c for c in cuts if 0 < c < len(body)})
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert parse(*chunks) == parse(body)


def test_ulid_round_trip_and_order():
    first = ulid.encode(1_741_096_931_318, 5)
    later = ulid.encode(1_741_096_931_319, 0)
    assert len(first) == 26 and ulid.is_ulid(first)
    assert ulid.timestamp_ms(first) == 1_741_096_931_318
    assert first < later  # string order is time order
    assert ulid.timestamp_ms("01JNGQDKNRM9S346Q3D25VT4F5") // 1000 == 1_741_096_931
    with pytest.raises(ValueError):
        ulid.timestamp_ms("not-a-ulid")
    assert not ulid.is_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ")  # beyond 48 bits of time
