"""Alpaca Broker API event streams (Server-Sent Events), read as finite incremental replays.

Facts this module relies on (../shared/apis/alpaca.md):
- each stream is one long `GET` answering `text/event-stream`; it ends (HTTP 200, clean close)
  only when an `until*` bound is reached, so every request here carries a lower and an upper
  bound of one kind: `since`/`until` (`until` needs `since`; `since` and `since_id` exclude
  each other) or, where a time pair would lose events, the id pair (`since_id`/`until_id`, on
  v1 `since_ulid`/`until_ulid`; the integer v1 `since_id` is deprecated and never sent);
- `since`/`until` filter on the business time `at`: the Activity stream's backfilled
  activities arrive late, at the end of the id sequence, with their original `at`, so that
  stream is read by id (as are the NTA and transfer streams: `event_ulid` is the cursor Alpaca
  documents for v1), the upper id bound being the greatest ULID of the run's end time;
- ids are ULIDs, which sort as strings in time order, but delivery is ordered only per account
  and within a millisecond the random part decides: the bookmark is the *greatest* id emitted,
  and reads restart `lookback_minutes` before it, dropping what was already emitted;
- comment lines carry meaning: `: you are reading too slowly, dropped N messages` (events were
  lost: re-read), `: internal server error` (the server is closing: re-read after back-off),
  `:heartbeat` (keep-alive, which resets the idle timer);
- a `data:` payload may be one event or a list of them (admin actions, IPO events), and may
  span lines; `id:`, `event:` and `retry:` fields may come too, but the cursor is the JSON id.

How it sits on the SDK: see tap_events/sse_stream.py (one connection per "page"). The
paginator asks for another connection after every one that brought new events, starting
again a little before the newest event emitted.

Tail mode (tap_events/tail.py) is the one place a request goes out without an upper bound
(the lower bound keeps its kind: on the Activity stream only `since_id` may stay open): once
the stream has caught up, one connection stays open and each event is emitted as it arrives; a
drop, an internal-error comment, idle silence or even a clean close reconnects from the newest
event emitted (less `lookback_minutes`), and the connection ends with the tail's budget (its
read timeout never outlasts it).
"""

from __future__ import annotations

import datetime
import re
import typing as t
from http import HTTPStatus

from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator

from tap_events import ulid
from tap_events.config import number
from tap_events.errors import TapEventsError
from tap_events.redact import basic_credentials
from tap_events.source import Source
from tap_events.sse_stream import SSEStream

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from singer_sdk.helpers.types import Context


#: The tap-added field carrying the bookmark: the greatest ULID emitted so far.
CURSOR_FIELD = "max_event_ulid"
#: Where a first run without `start_date` starts: the oldest event Alpaca keeps.
OLDEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DROPPED = re.compile(r"dropped (\d+) messages")

# ------------------------------------------------------------------------------ settings

SETTINGS = (
    th.Property("api_url", th.StringType,
                default="https://broker-api.sandbox.alpaca.markets",
                description="Broker API base URL (production: "
                "https://broker-api.alpaca.markets)."),
    th.Property("api_key", th.StringType, description="Broker API key (HTTP Basic user)."),
    th.Property("api_secret", th.StringType, secret=True,
                description="Broker API secret (HTTP Basic password)."),
    th.Property("lookback_minutes", th.IntegerType(minimum=0, maximum=10080), default=5,
                description="Each read starts this long before the newest event already "
                "emitted, to catch events delivered out of id order; repeats are dropped."),
    th.Property("idle_timeout_seconds", number(minimum=0.1, maximum=3600), default=90,
                description="A stream silent (no event, no heartbeat) this long is "
                "reconnected from the newest event emitted."),
)

# ------------------------------------------------------------------------------ schema

SUBJECT = th.ObjectType(
    th.Property("kind", th.StringType),
    th.Property("id_reference", th.StringType),
    th.Property("value", th.StringType, description="The name Alpaca's samples use for "
                "`id_reference`."),
    additional_properties=True,
)


def event_schema(id_field: str, *properties: th.Property) -> dict:
    return th.PropertiesList(
        th.Property(id_field, th.StringType, required=True,
                    description="The event's ULID (the cursor)."),
        th.Property("at", th.DateTimeType),
        *properties,
        th.Property(CURSOR_FIELD, th.StringType,
                    description="Added by the tap: the greatest event ULID this stream had "
                    "emitted when this event was written (the resume point)."),
        additional_properties=True,
    ).to_dict()


ADMIN_ACTION_SCHEMA = event_schema(
    "event_id",
    th.Property("replaces_event_id", th.StringType),
    th.Property("type", th.StringType),
    th.Property("category", th.StringType),
    th.Property("visibility", th.StringType),
    th.Property("note", th.StringType),
    th.Property("correspondent", th.StringType),
    th.Property("context", th.ObjectType(additional_properties=True)),
    th.Property("belongs_to", SUBJECT, description="Deprecated by Alpaca: see belongs_to_*."),
    th.Property("created_by", SUBJECT, description="Deprecated by Alpaca: see created_by_*."),
    th.Property("belongs_to_kind", th.StringType),
    th.Property("belongs_to_id_reference", th.StringType),
    th.Property("created_by_kind", th.StringType),
    th.Property("created_by_id_reference", th.StringType),
)

TRADE_SCHEMA = event_schema(
    "event_id",
    th.Property("account_id", th.StringType),
    th.Property("event", th.StringType),
    th.Property("timestamp", th.DateTimeType),
    th.Property("order", th.ObjectType(additional_properties=True)),
    th.Property("execution_id", th.StringType),
    th.Property("previous_execution_id", th.StringType),
    th.Property("price", th.StringType),
    th.Property("qty", th.StringType),
    th.Property("position_qty", th.StringType),
)

ACCOUNT_STATUS_SCHEMA = event_schema(
    "event_ulid",
    th.Property("event_id", th.IntegerType, description="Legacy integer id."),
    th.Property("account_id", th.StringType),
    th.Property("account_number", th.StringType),
    th.Property("status_from", th.StringType),
    th.Property("status_to", th.StringType),
    th.Property("crypto_status_from", th.StringType),
    th.Property("crypto_status_to", th.StringType),
    th.Property("kyc_results", th.ObjectType(additional_properties=True)),
    th.Property("account_blocked", th.BooleanType),
    th.Property("trading_blocked", th.BooleanType),
    th.Property("pattern_day_trader", th.BooleanType),
    th.Property("admin_configurations", th.ObjectType(additional_properties=True)),
    th.Property("cash_interest", th.ObjectType(additional_properties=True)),
    th.Property("reason", th.StringType),
)

JOURNAL_STATUS_SCHEMA = event_schema(
    "event_id",
    th.Property("journal_id", th.StringType),
    th.Property("entry_type", th.StringType),
    th.Property("status_from", th.StringType),
    th.Property("status_to", th.StringType),
)

FUNDING_STATUS_SCHEMA = event_schema(
    "event_id",
    th.Property("entity_type", th.StringType),
    th.Property("entity_id", th.StringType),
    th.Property("account_id", th.StringType),
    th.Property("status_from", th.StringType),
    th.Property("status_to", th.StringType),
)

ACTIVITY_SCHEMA = event_schema(
    "event_id",
    th.Property("ref_id", th.StringType, required=True,
                description="The activity's stable id, the primary key: a redelivery "
                "repeats it under a new event_id."),
    th.Property("previous_id", th.StringType,
                description="The ref_id of the activity this one corrects or cancels."),
    th.Property("account_id", th.StringType),
    th.Property("activity_type", th.StringType),
    th.Property("activity_subtype", th.StringType),
    th.Property("status", th.StringType),
    th.Property("executed_at", th.DateTimeType),
    # A date, though one of Alpaca's samples sends a date-time: kept as sent.
    th.Property("settle_date", th.StringType),
    th.Property("qty", th.StringType),
    th.Property("price", th.StringType),
    th.Property("net_amount", th.StringType),
    th.Property("currency", th.StringType),
    th.Property("swap_rate", th.StringType),
    th.Property("swap_fee_bps", th.StringType),
    th.Property("details", th.ObjectType(additional_properties=True),
                description="Fields of the activity type, kept whole as JSON: Alpaca adds "
                "activity types every month."),
)

NTA_SCHEMA = event_schema(
    "event_ulid",
    th.Property("event_id", th.IntegerType, description="Legacy integer id."),
    th.Property("id", th.StringType, description="The activity's id."),
    th.Property("account_id", th.StringType),
    th.Property("entry_type", th.StringType),
    th.Property("entry_sub_type", th.StringType),
    th.Property("status", th.StringType),
    th.Property("symbol", th.StringType),
    th.Property("cusip", th.StringType),
    th.Property("qty", th.NumberType),
    th.Property("price", th.NumberType),
    th.Property("net_amount", th.NumberType),
    th.Property("per_share_amount", th.NumberType),
    th.Property("swap_rate", th.NumberType),
    th.Property("execution_id", th.StringType),
    th.Property("group_id", th.StringType),
    th.Property("description", th.StringType),
    th.Property("settle_date", th.StringType),
    th.Property("system_date", th.StringType),
)

TRANSFER_STATUS_SCHEMA = event_schema(
    "event_ulid",
    th.Property("event_id", th.IntegerType, description="Legacy integer id."),
    th.Property("account_id", th.StringType),
    th.Property("transfer_id", th.StringType),
    th.Property("status_from", th.StringType),
    th.Property("status_to", th.StringType),
)

SYSTEM_SCHEMA = event_schema(
    "event_id",
    th.Property("type", th.StringType),
    th.Property("system_date", th.StringType),
    th.Property("description", th.StringType),
)

IPO_SCHEMA = event_schema(
    "event_id",
    th.Property("verb", th.StringType),
    th.Property("offering_reference", th.StringType),
    th.Property("received_at", th.DateTimeType),
    th.Property("account_id", th.StringType, description="Allocation events only."),
    th.Property("correspondent", th.StringType, description="Allocation events only."),
    th.Property("payload", th.ObjectType(additional_properties=True),
                description="Fields of the verb, kept whole (none on a cancellation)."),
)

# ------------------------------------------------------------------------------ streams


class AlpacaStream(SSEStream):
    """One Broker SSE endpoint: subclasses name the path, the id field and the schema."""

    id_field: t.ClassVar[str] = "event_id"
    #: The query parameters of a read's lower and upper bound: the business-time pair, or
    #: the ULID pair (`since_id`/`until_id`; on v1 `since_ulid`/`until_ulid`).
    bound_parameters: t.ClassVar[tuple[str, str]] = ("since", "until")
    # The cursor field only grows (it is a running maximum), so every STATE is a resume point.
    replication_key = CURSOR_FIELD
    # Repeats are dropped as events are read (`is_new`), before one can move the cursor.
    dedupe = False
    RECONNECT_AT_ONCE = ("slow-reader",)

    error_hints: t.ClassVar[Mapping[int, str]] = {
        HTTPStatus.UNAUTHORIZED: "check alpaca.api_key and alpaca.api_secret (sandbox and "
        "live keys differ)",
        HTTPStatus.FORBIDDEN: "check alpaca.api_key and alpaca.api_secret (sandbox and "
        "live keys differ)",
        HTTPStatus.BAD_REQUEST: "Alpaca refused the bounds (since/until or their id "
        "forms): check start_date and this stream's bookmark in the state",
    }

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._until: datetime.datetime | None = None
        self._resumed_from: str | None = None
        self._newest: str | None = None
        self._odd_logged = False

    # ----------------------------------------------------------------- bounds

    def bound_params(self, since: datetime.datetime) -> dict[str, t.Any]:
        """A lower and an upper bound, always both: without one the server never closes.

        Except while tailing, where not closing is the point: the lower bound alone.
        """
        lower, upper = self.bound_parameters
        if self.tail is not None:
            return {lower: self.bound(since, lowest=True)}
        assert self._until is not None
        return {lower: self.bound(since, lowest=True),
                upper: self.bound(self._until, lowest=False)}

    def bound(self, moment: datetime.datetime, *, lowest: bool) -> str:
        """A bound as this stream sends it: a time, or the lowest (greatest) ULID of its
        millisecond, so that the bound takes in every event of that millisecond."""
        if self.bound_parameters[0] == "since":
            return rfc3339(moment)
        return ulid.encode(ulid.milliseconds(moment), 0 if lowest else ulid.MAX_RANDOMNESS)

    def start_run(self, context: Context | None) -> None:
        """Fix this run's upper bound and read the bookmark (ULIDs only: with no bookmark the
        SDK hands back `start_date`)."""
        self._until = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        # The state was checked before the run (`state_problems`): a bookmark is a ULID.
        value = self.bookmark(context)
        self._resumed_from = None if value is None else self.parse_bookmark(value)
        self._newest = self._resumed_from

    bookmark_kind = "a ULID (26 characters of Crockford base32)"

    def parse_bookmark(self, value: t.Any) -> str:
        if not ulid.is_ulid(value):
            raise ValueError(value)
        return str(value).upper()

    def read_from(self) -> datetime.datetime:
        """`lookback_minutes` before the newest event emitted, else `start_date`, else all."""
        start = self.start_date or OLDEST
        if self._newest is None:
            return start
        lookback = datetime.timedelta(minutes=self.settings["lookback_minutes"])
        since = ulid.datetime_of(self._newest) - lookback
        # Whole seconds, rounded down: the read may start earlier, never later.
        return max(start, since.replace(microsecond=0))

    # ----------------------------------------------------------------- events

    def is_new(self, event: dict) -> bool:
        """Drop what this run already emitted, and stamp the rest with the running maximum.

        Events of the overlap an earlier run emitted are emitted again (the target upserts
        on the id): dropping every id at or below the bookmark would also drop an event that
        reached Alpaca late with an older id, which is what the overlap is there to catch.
        """
        raw = event.get(self.id_field)
        if not isinstance(raw, str) or not raw:
            raise TapEventsError(
                f"{self.error_prefix}an event without an id in '{self.id_field}': "
                f"{str(event)[:120]}"
            )
        # Alpaca's own samples spell ids with I, L or O, which Crockford base32 reads as
        # 1, 1 and 0: the id as sent stays in the record, the decoded ULID drives the cursor.
        event_id = ulid.normalize(raw)
        # The key (an activity's `ref_id`, which a redelivery repeats) is what dedupe uses.
        self.check_keys(event)
        if self.seen_before(self.key_of(event)):
            return False
        if event_id is None:
            self.odd_event(raw, "is not a ULID")
        elif ulid.datetime_of(event_id) > self.upper_bound() + self.FUTURE_WARNING:
            self.odd_event(raw, f"is stamped {ulid.datetime_of(event_id).isoformat()}, past "
                           "this run's upper bound")
        elif ulid.datetime_of(event_id) <= self.upper_bound():
            self._newest = max(self._newest or event_id, event_id)
        event[CURSOR_FIELD] = self._newest
        return True

    def upper_bound(self) -> datetime.datetime:
        """`until` of this run's reads; while tailing (no `until`), now."""
        if self.tail is not None or self._until is None:
            return datetime.datetime.now(datetime.UTC)
        return self._until

    def odd_event(self, event_id: str, why: str) -> None:
        """An event emitted without moving the cursor: one warning per stream and run."""
        if self._odd_logged:
            return
        self._odd_logged = True
        self.logger.warning(
            "%san event whose %s %r %s: emitted, but the bookmark does not move past it "
            "(further such events are not logged)", self.error_prefix, self.id_field,
            event_id, why)

    def read_comment(self, text: str) -> str | None:
        """Why a comment means "reconnect", or None for a heartbeat or anything else."""
        dropped = _DROPPED.search(text)
        if dropped:
            self.logger.warning(
                "%s: Alpaca dropped %s messages because the tap read too slowly; "
                "re-reading from the newest event emitted", self.name, dropped.group(1))
            return f"the slow-reader notice (dropped {dropped.group(1)} messages)"
        if "internal server error" in text.lower():
            return "the server's 'internal server error' notice"
        return None


class AlpacaAdminActionEventsStream(AlpacaStream):
    name = "alpaca_admin_action_events"
    path = "/v2/events/admin-actions"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = ADMIN_ACTION_SCHEMA


class AlpacaTradeEventsStream(AlpacaStream):
    name = "alpaca_trade_events"
    path = "/v2/events/trades"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = TRADE_SCHEMA


class AlpacaAccountStatusEventsStream(AlpacaStream):
    """v1: the integer `event_id` is legacy; the ULID is `event_ulid`."""

    name = "alpaca_account_status_events"
    path = "/v1/events/accounts/status"
    id_field = "event_ulid"
    primary_keys: t.ClassVar[list[str]] = ["event_ulid"]
    schema = ACCOUNT_STATUS_SCHEMA


class AlpacaJournalStatusEventsStream(AlpacaStream):
    name = "alpaca_journal_status_events"
    path = "/v2/events/journals/status"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = JOURNAL_STATUS_SCHEMA


class AlpacaFundingStatusEventsStream(AlpacaStream):
    name = "alpaca_funding_status_events"
    path = "/v2/events/funding/status"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = FUNDING_STATUS_SCHEMA


class AlpacaActivityEventsStream(AlpacaStream):
    """Every financial state change, keyed on `ref_id`, read by id: a time pair would skip
    the backfilled activities that arrive late with their original `at`."""

    name = "alpaca_activity_events"
    path = "/v2beta1/events/activities"
    primary_keys: t.ClassVar[list[str]] = ["ref_id"]
    bound_parameters = ("since_id", "until_id")
    schema = ACTIVITY_SCHEMA


class AlpacaNtaEventsStream(AlpacaStream):
    """Legacy non-trade activities (before 2026-02-11, or partners not yet migrated)."""

    name = "alpaca_nta_events"
    path = "/v1/events/nta"
    id_field = "event_ulid"
    primary_keys: t.ClassVar[list[str]] = ["event_ulid"]
    bound_parameters = ("since_ulid", "until_ulid")
    schema = NTA_SCHEMA


class AlpacaTransferStatusEventsStream(AlpacaStream):
    """Legacy transfer statuses (deprecated by Alpaca in favour of funding status)."""

    name = "alpaca_transfer_status_events"
    path = "/v1/events/transfers/status"
    id_field = "event_ulid"
    primary_keys: t.ClassVar[list[str]] = ["event_ulid"]
    bound_parameters = ("since_ulid", "until_ulid")
    schema = TRANSFER_STATUS_SCHEMA


class AlpacaSystemEventsStream(AlpacaStream):
    name = "alpaca_system_events"
    path = "/v2/events/system"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = SYSTEM_SCHEMA


class AlpacaIpoEventsStream(AlpacaStream):
    name = "alpaca_ipo_events"
    path = "/v2/events/ipos"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = IPO_SCHEMA


def rfc3339(moment: datetime.datetime) -> str:
    """UTC with `Z`: no `+` offset that would need URL-encoding."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def credentials_secrets(settings: Mapping[str, t.Any]) -> Iterable[str]:
    """The Basic token carries the secret in base64: redact it as well."""
    if settings.get("api_key") and settings.get("api_secret"):
        yield basic_credentials(str(settings["api_key"]), str(settings["api_secret"]))


SOURCE = Source(
    name="alpaca",
    label="Alpaca",
    properties=SETTINGS,
    credential_sets=(("api_key", "api_secret"),),
    authenticator=lambda settings, http: BasicAuthenticator(
        username=settings["api_key"], password=settings["api_secret"]),
    streams=(AlpacaAdminActionEventsStream, AlpacaTradeEventsStream,
             AlpacaAccountStatusEventsStream, AlpacaJournalStatusEventsStream,
             AlpacaFundingStatusEventsStream, AlpacaActivityEventsStream,
             AlpacaNtaEventsStream, AlpacaTransferStatusEventsStream, AlpacaSystemEventsStream,
             AlpacaIpoEventsStream),
    derived_secrets=credentials_secrets,
)
