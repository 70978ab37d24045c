"""discue.io API usage events (`discue_events`).

Facts this module relies on (../shared/apis/discue.md):
- `GET /events` with the header `X-API-KEY`; no page token or next link: pages follow the keyset
  pair `startAfter` (the `stored_at` of the last event, epoch ms) + `startAfterId` (its id), and
  `startAfter` alone has no effect;
- several events can share one millisecond, so the id is part of every position, and the tap
  never compares ids itself: the server's order decides ("the last event read wins");
- only the last 24 hours are kept: a bookmark older than that means events were lost
  (`EventStream.retention` names the gap and fails the run);
- errors are `{"title", "status"}`; after repeated failed authentications discue rejects every
  key for a while with 403, so 401 and 403 are never retried;
- whether the keyset bound is exclusive is unconfirmed: the bookmarked event is dropped if the
  API sends it again, and a page that does not move the position ends the run.
"""

from __future__ import annotations

import datetime
import typing as t
from http import HTTPStatus

from singer_sdk import typing as th
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.pagination import BaseAPIPaginator

from tap_events.client import CursorStream
from tap_events.errors import TapEventsError
from tap_events.http import page_body
from tap_events.retention import ALLOW_GAP_SETTING
from tap_events.source import Source

if t.TYPE_CHECKING:

    import requests
    from singer_sdk.helpers.types import Context


#: A keyset position: (`stored_at` in epoch ms, event id).
Position = tuple[int, str]

#: The tap-added field carrying the keyset position after each event (the bookmark).
CURSOR_FIELD = "cursor"
#: The tap-added ISO 8601 copy of `stored_at`, for the warehouse.
STORED_AT_FIELD = "stored_at_datetime"

# ------------------------------------------------------------------------------ settings

SETTINGS = (
    th.Property("api_url", th.StringType, default="https://api.discue.io/v1",
                description="discue API base URL."),
    th.Property("api_key", th.StringType, secret=True,
                description="discue API key (sent as the X-API-KEY header)."),
    th.Property("event_filter",
                th.StringType(allowed_values=["all", "api_keys", "listeners", "messages",
                                              "queues"]),
                default="all", description="Only events of this category."),
    th.Property("page_size", th.IntegerType(minimum=1), default=100,
                description="Events asked for per page (`limit`)."),
    ALLOW_GAP_SETTING,
)

# ------------------------------------------------------------------------------ schema


def reference(*fields: str) -> th.ObjectType:
    """A resource an event refers to (`{id, name}`); discue may add fields."""
    return th.ObjectType(*(th.Property(name, th.StringType) for name in fields),
                         additional_properties=True)


EVENT_SCHEMA = th.PropertiesList(
    th.Property("id", th.StringType, required=True, description="discue's event id."),
    th.Property("type", th.StringType, description="e.g. api_key_added, message_published_ok."),
    th.Property("stored_at", th.IntegerType, description="When discue stored the event "
                "(epoch milliseconds)."),
    th.Property(STORED_AT_FIELD, th.DateTimeType,
                description="Added by the tap: `stored_at` as an ISO 8601 UTC date-time."),
    th.Property("client", reference("id")),
    th.Property("api_key", reference("id", "name")),
    th.Property("queue", reference("id", "name")),
    th.Property("listener", reference("id", "name")),
    th.Property("message", reference("id", "name")),
    th.Property(CURSOR_FIELD, th.StringType,
                description="Added by the tap: the position after this event, "
                "`<stored_at, 13 digits>:<id>` (the bookmark)."),
    additional_properties=True,
).to_dict()

# ------------------------------------------------------------------------------ positions


def format_cursor(position: Position) -> str:
    stored_at, event_id = position
    return f"{stored_at:013d}:{event_id}"


def parse_cursor(cursor: str) -> Position:
    """`1747038614499:rAjZg9Yy1VjOpdkc-bCRC` → (1747038614499, "rAjZg9Yy1VjOpdkc-bCRC")."""
    stored_at, separator, event_id = cursor.partition(":")
    if not separator or not event_id or not stored_at.isdigit():
        raise ValueError(cursor)
    return int(stored_at), event_id


def position_of(event: dict) -> Position:
    stored_at = event.get("stored_at")
    if (not isinstance(stored_at, int) or isinstance(stored_at, bool) or stored_at < 0
            or not event.get("id")):
        # The stream's failure report adds the prefix naming the stream.
        raise TapEventsError(
            f"an event without a non-negative integer 'stored_at' and an 'id' cannot be "
            "bookmarked (the next run would refuse the position): "
            f"id={event.get('id')!r}, stored_at={stored_at!r}"
        )
    return stored_at, str(event["id"])


class KeysetPaginator(BaseAPIPaginator["Position | None"]):
    """The position of the last event of each page; the SDK stops on the first empty page.

    A page ending where the previous one did (an API ignoring the keyset) is a cycle, which
    the page loop stops in one line (`client.PageCycleGuard`).
    """

    def get_next(self, response: requests.Response) -> Position | None:
        events = page_body(response).get("events") or []
        return position_of(events[-1]) if events else None


# ------------------------------------------------------------------------------ stream


class DiscueEventsStream(CursorStream):
    """`discue_events`: the organization's API usage events, oldest first."""

    name = "discue_events"
    path = "/events"
    primary_keys: t.ClassVar[list[str]] = ["id"]
    schema = EVENT_SCHEMA
    # The bookmark is the position of the last emitted event in the server's order; ids are
    # not compared, so the server's tie-break order within a millisecond does not matter.
    replication_key = CURSOR_FIELD
    envelope_key = "events"
    # discue cannot filter by time alone, so the tap does.
    start_date_field = "stored_at"
    retention = datetime.timedelta(hours=24)

    error_hints: t.ClassVar[dict[int, str]] = {
        HTTPStatus.UNAUTHORIZED: "check discue.api_key; not retried, as repeated failed "
        "authentications make discue lock the account",
        HTTPStatus.FORBIDDEN: "check discue.api_key; discue also answers 403 for a while after "
        "repeated failed authentications, so wait before the next run; not retried",
        HTTPStatus.PAYMENT_REQUIRED: "check the discue plan and billing of the organization",
        HTTPStatus.BAD_REQUEST: "check discue.event_filter and discue.page_size",
    }

    @property
    def http_headers(self) -> dict:
        return {**super().http_headers, "Accept": "application/json"}

    # ----------------------------------------------------------------- positions

    bookmark_kind = "a position `<stored_at ms>:<event id>`"

    def parse_bookmark(self, value: t.Any) -> Position:
        if not isinstance(value, str):
            raise ValueError(value)
        return parse_cursor(value)

    def bookmark_bound(self, context: Context | None) -> Position:
        """The run's start: an event stored later (or stamped in the future) is read again
        by the next run rather than bookmarked."""
        return (int(self.run_started.timestamp() * 1000), "")

    @staticmethod
    def past(value: Position, bound: Position,
             by: datetime.timedelta = datetime.timedelta(0)) -> bool:
        return value[0] > bound[0] + by.total_seconds() * 1000

    def time_of(self, parsed: Position) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(parsed[0] / 1000, datetime.UTC)

    def starting_position(self, context: Context | None) -> Position | None:
        """The bookmarked position, or None to read all that discue keeps."""
        return self.parsed_bookmark(context, self.parse_bookmark, self.bookmark_kind)

    def bookmark_time(self, context: Context | None) -> datetime.datetime | None:
        position = self.starting_position(context)
        return None if position is None else self.time_of(position)

    def get_new_paginator(self) -> KeysetPaginator:
        start = self.starting_position(self.context)
        if start is not None:
            # Should the API send the bookmarked event again, it is not emitted twice.
            self.seen_before(start[1])
        return KeysetPaginator(start_value=start)

    def get_url_params(self, context: Context | None, next_page_token: Position | None) -> dict:
        params: dict[str, t.Any] = {
            "events": self.settings["event_filter"],
            "limit": self.settings["page_size"],
        }
        if next_page_token is not None:
            params["startAfter"], params["startAfterId"] = next_page_token
        return params

    # ----------------------------------------------------------------- records

    def parse_page(self, body: dict, response: requests.Response) -> t.Iterable[dict]:
        for event in body.get("events") or []:
            position = position_of(event)
            event[CURSOR_FIELD] = format_cursor(position)
            event[STORED_AT_FIELD] = datetime.datetime.fromtimestamp(
                position[0] / 1000, datetime.UTC
            ).isoformat(timespec="milliseconds")
            yield event



SOURCE = Source(
    name="discue",
    label="discue.io",
    properties=SETTINGS,
    authenticator=lambda settings, http: APIKeyAuthenticator(
        key="X-API-KEY", value=settings["api_key"], location="header"),
    credential_sets=(("api_key",),),
    streams=(DiscueEventsStream,),
)
