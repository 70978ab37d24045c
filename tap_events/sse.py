"""A Server-Sent Events parser that keeps comment lines.

Follows the WHATWG "event stream interpretation" rules: lines end in CRLF, LF or CR (also when
a CRLF is split between two network chunks), a leading UTF-8 BOM is dropped, `data:` lines are
joined with LF, a blank line dispatches the event, `id:` sets the last event id (kept across
events), `retry:` takes digits only, unknown fields are ignored and an event cut off by the end
of the stream is discarded.

Why our own: the maintained clients (`sseclient-py`, `requests-sse`) throw comment lines away,
and Alpaca puts meaning in them (`: you are reading too slowly, dropped N messages`,
`: internal server error`, `:heartbeat`); `requests-sse` also reconnects forever by itself.
Here every comment is handed to the caller as a `Comment`, in order with the events.
"""

from __future__ import annotations

import codecs
import re
import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

#: Longest line or event (decoded characters) unless the caller says otherwise.
DEFAULT_MAX_CHARS = 100 * 2**20


class TooLong(ValueError):
    """One line, or the data of one event, is longer than the caller allows."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"one SSE {what} is longer than {limit} characters")
        self.what = what
        self.limit = limit


@dataclass(frozen=True)
class Event:
    """One dispatched event."""

    data: str
    event: str = "message"
    #: The last event id the stream set (`id:`), carried over from earlier events.
    id: str | None = None
    #: A `retry:` reconnection time (ms) seen since the previous event, if any.
    retry: int | None = None


@dataclass(frozen=True)
class Comment:
    """A line starting with `:`; `text` is what follows the colon, one leading space removed."""

    text: str


def lines(chunks: Iterable[bytes], max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[str]:
    """Decoded lines of a byte stream, whatever its line endings and chunking.

    A last line without a line break is still yielded: a closing server may end on
    `: internal server error` without one (an event cut off there is never dispatched).

    Linear in the size of the input: each chunk is searched for line breaks once, and the
    pieces of a line that spans chunks are joined once, when it ends. A line longer than
    `max_chars` raises `TooLong` as soon as it is, so memory stays bounded by `max_chars`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # The pieces of the line not ended yet, and their total length.
    pending: list[str] = []
    pending_chars = 0
    started = False
    # A chunk ending in CR may be the first half of a CRLF split across two chunks.
    skip_lf = False
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if not started:
            text = text.removeprefix("\ufeff")
            started = True
        if skip_lf and text.startswith("\n"):
            text = text[1:]
        skip_lf = text.endswith("\r")
        start = 0
        for match in _LINE_BREAK.finditer(text):
            piece = text[start : match.start()]
            if pending:
                pending.append(piece)
                piece = "".join(pending)
                pending.clear()
                pending_chars = 0
            if len(piece) > max_chars:
                raise TooLong("line", max_chars)
            yield piece
            start = match.end()
        if start < len(text):
            pending.append(text[start:])
            pending_chars += len(text) - start
            if pending_chars > max_chars:
                raise TooLong("line", max_chars)
    pending.append(decoder.decode(b"", final=True))
    last = "".join(pending)
    if last:
        yield last


def parse(chunks: Iterable[bytes], max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[Event | Comment]:
    """Events and comments, in stream order; `TooLong` past `max_chars` in one line or in
    the data of one event."""
    data: list[str] = []
    data_chars = 0
    event_type = ""
    last_id: str | None = None
    retry: int | None = None
    for line in lines(chunks, max_chars):
        if not line:
            if data:
                yield Event("\n".join(data), event_type or "message", last_id, retry)
                retry = None
            data, data_chars, event_type = [], 0, ""
            continue
        if line.startswith(":"):
            yield Comment(line[1:].removeprefix(" "))
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data_chars += len(value) + 1
            if data_chars > max_chars:
                raise TooLong("event", max_chars)
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id" and "\0" not in value:
            last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
