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


# ---------------------------------------------------------------- size: linear, capped


class CountingLineBreaks:
    """`sse._LINE_BREAK`, counting the characters it is asked to search."""

    def __init__(self) -> None:
        self.searched = 0
        self.pattern = sse._LINE_BREAK

    def finditer(self, text: str):
        self.searched += len(text)
        return self.pattern.finditer(text)

    def split(self, text: str):
        self.searched += len(text)
        return self.pattern.split(text)


@pytest.mark.parametrize("megabytes", [4, 16])
def test_a_long_line_is_searched_once_whatever_its_chunking(monkeypatch, megabytes):
    """The work per byte does not grow with the line (before: the whole buffer was split
    again on every chunk, 1.4 / 5.1 / 19.8 s for 4 / 8 / 16 MB): every character of a line
    arriving in 16 KB chunks is searched for a line break once."""
    counter = CountingLineBreaks()
    monkeypatch.setattr(sse, "_LINE_BREAK", counter)
    size = megabytes * 2**20
    body = b"data: " + b"x" * size + b"\n\n"
    chunks = (body[i : i + 16384] for i in range(0, len(body), 16384))

    [event] = sse.parse(chunks)

    assert len(event.data) == size
    assert counter.searched <= len(body)


def test_a_line_longer_than_the_cap_fails_before_it_is_held_whole():
    def chunks():
        yield b"data: "
        while True:  # never ends: only the cap stops it
            yield b"x" * 4096

    with pytest.raises(sse.TooLong, match="line is longer than 100000 characters"):
        list(sse.parse(chunks(), max_chars=100_000))


def test_an_event_longer_than_the_cap_fails_even_in_short_lines():
    body = b"data: 0123456789\n" * 20_000
    with pytest.raises(sse.TooLong, match="event is longer than 100000 characters"):
        list(sse.parse([body], max_chars=100_000))
    # Up to the cap, the same lines make one event.
    [event] = sse.parse([b"data: 0123456789\n" * 9000 + b"\n"], max_chars=100_000)
    assert len(event.data) == 9000 * 11 - 1
