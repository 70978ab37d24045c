"""Alpaca Broker API event streams (Server-Sent Events), read as finite incremental replays.

Facts this module relies on (../shared/apis/alpaca.md):
- each stream is one long `GET` answering `text/event-stream`; it ends (HTTP 200, clean close)
  only when an `until*` bound is reached, so every request here carries `since` and `until`
  (`until` needs `since`; `since` and `since_id` exclude each other: the tap only ever sends
  the documented time pair, never a synthetic id bound the real API may refuse);
- ids are ULIDs, which sort as strings in time order, but delivery is ordered only per account
  and within a millisecond the random part decides: the bookmark is the *greatest* id emitted,
  and reads restart `lookback_minutes` before it, dropping what was already emitted;
- comment lines carry meaning: `: you are reading too slowly, dropped N messages` (events were
  lost: re-read), `: internal server error` (the server is closing: re-read after back-off),
  `:heartbeat` (keep-alive, which resets the idle timer);
- a `data:` payload may be one event or a list of them (admin actions), and may span lines.

How it sits on the SDK: see tap_events/sse_stream.py (one connection per "page"). The
paginator asks for another connection after every one that brought new events, starting
again a little before the newest event emitted.

Tail mode (tap_events/tail.py) is the one place a request goes out without `until`: once the
stream has caught up, one connection stays open and each event is emitted as it arrives; a
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
    th.Property("lookback_minutes", th.IntegerType(minimum=0), default=5,
                description="Each read starts this long before the newest event already "
                "emitted, to catch events delivered out of id order; repeats are dropped."),
    th.Property("idle_timeout_seconds", th.NumberType(minimum=0.1), default=90,
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
                    description="The event's ULID; the primary key."),
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

# ------------------------------------------------------------------------------ streams


class AlpacaStream(SSEStream):
    """One Broker SSE endpoint: subclasses name the path, the id field and the schema."""

    id_field: t.ClassVar[str] = "event_id"
    # The cursor field only grows (it is a running maximum), so every STATE is a resume point.
    replication_key = CURSOR_FIELD
    RECONNECT_AT_ONCE = ("slow-reader",)

    error_hints: t.ClassVar[Mapping[int, str]] = {
        HTTPStatus.UNAUTHORIZED: "check alpaca.api_key and alpaca.api_secret (sandbox and "
        "live keys differ)",
        HTTPStatus.FORBIDDEN: "check alpaca.api_key and alpaca.api_secret (sandbox and "
        "live keys differ)",
        HTTPStatus.BAD_REQUEST: "Alpaca refused the since/until bounds: check start_date "
        "and this stream's bookmark in the state",
    }

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._until: datetime.datetime | None = None
        self._resumed_from: str | None = None
        self._newest: str | None = None

    # ----------------------------------------------------------------- bounds

    def bound_params(self, since: datetime.datetime) -> dict[str, t.Any]:
        """`since` and `until`, always both: without `until` the server never closes.

        Except while tailing, where not closing is the point: `since` alone.
        """
        if self.tail is not None:
            return {"since": rfc3339(since)}
        assert self._until is not None
        return {"since": rfc3339(since), "until": rfc3339(self._until)}

    def start_run(self, context: Context | None) -> None:
        """Fix this run's upper bound and read the bookmark (ULIDs only: with no bookmark the
        SDK hands back `start_date`)."""
        self._until = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        value = self.get_starting_replication_key_value(context)
        self._resumed_from = str(value).upper() if ulid.is_ulid(value) else None
        self._newest = self._resumed_from

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
        event_id = event.get(self.id_field)
        if not ulid.is_ulid(event_id):
            raise TapEventsError(
                f"{self.error_prefix}an event without a ULID in '{self.id_field}': "
                f"{str(event)[:120]}"
            )
        event_id = event_id.upper()
        if self.seen_before(event_id):
            return False
        self._newest = max(self._newest or event_id, event_id)
        event[CURSOR_FIELD] = self._newest
        return True

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
             AlpacaFundingStatusEventsStream),
    derived_secrets=credentials_secrets,
)
