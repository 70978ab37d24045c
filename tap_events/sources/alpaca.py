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

How it sits on the SDK: one SSE connection is one "page". The session streams (`stream=True`),
so `validate_response` sees the status before any body is read and the SDK's authenticator,
connect-time retries and error handling apply unchanged. The paginator asks for another
connection after every one that brought new events, starting again a little before the newest
event emitted; the SDK ends the stream at the first connection with nothing new that closed
cleanly. A connection cut short (the comments above, a dropped socket, silence past the idle
timeout) asks for another connection even when it brought nothing, within the retry budget.

Tail mode (tap_events/tail.py) is the one place a request goes out without `until`: once the
stream has caught up, one connection stays open and each event is emitted as it arrives; a
drop, an internal-error comment, idle silence or even a clean close reconnects from the newest
event emitted (less `lookback_minutes`), and the connection ends with the tail's budget (its
read timeout never outlasts it).
"""

from __future__ import annotations

import datetime
import re
import time
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import requests
from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator
from singer_sdk.pagination import BaseAPIPaginator

from tap_events import sse, ulid
from tap_events.client import DEFAULT_MAX_RESPONSE_MB, EventStream, TapEventsError
from tap_events.redact import basic_credentials
from tap_events.source import Source

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk.helpers.types import Context

#: The tap-added field carrying the bookmark: the greatest ULID emitted so far.
CURSOR_FIELD = "max_event_ulid"
#: Where a first run without `start_date` starts: the oldest event Alpaca keeps.
OLDEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
#: Bytes asked of the socket at a time. Chunked responses hand over each event as it comes.
READ_CHUNK_BYTES = 16 * 1024
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


@dataclass(frozen=True)
class Connection:
    """The paginator's token: which connection of the run, reading from when."""

    number: int
    since: datetime.datetime


class ReconnectPaginator(BaseAPIPaginator[Connection | None]):
    """One SSE connection per page; the stream decides where the next one starts."""

    def __init__(self, stream: AlpacaStream) -> None:
        super().__init__(start_value=None)
        self.stream = stream

    def get_next(self, response: requests.Response) -> Connection | None:
        if self.stream.tail is not None and self.stream.tail.over:
            return None
        number = self.current_value.number + 1 if self.current_value else 1
        return Connection(number, self.stream.read_from())

    def continue_if_empty(self, response: requests.Response) -> bool:
        """A connection cut short with nothing new is retried; a clean one ends the stream."""
        return bool(getattr(response, "interruption", None))


class AlpacaStream(EventStream):
    """One Broker SSE endpoint: subclasses name the path, the id field and the schema."""

    id_field: t.ClassVar[str] = "event_id"
    replication_key = CURSOR_FIELD
    # The cursor field only grows (it is a running maximum), so every STATE is a resume point.
    is_sorted = True
    check_sorted = False
    expects_json = False
    # The next connection starts from what this one delivered: nothing to fetch ahead.
    PREFETCH = False
    # A replay is one long response: STATE every this many records, not only between pages.
    STATE_MSG_FREQUENCY = 1000

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
        # requests' Session.send defaults `stream` from the session: bodies are read as they
        # arrive, while the SDK's request path (auth, retries, validate_response) is unchanged.
        self.requests_session.stream = True
        self._until: datetime.datetime | None = None
        self._resumed_from: str | None = None
        self._newest: str | None = None
        self._interruptions = 0

    @property
    def authenticator(self) -> BasicAuthenticator:
        settings = self.settings
        return self.shared("auth", lambda: BasicAuthenticator(
            username=settings["api_key"], password=settings["api_secret"]))

    @property
    def http_headers(self) -> dict:
        return {**super().http_headers, "Accept": "text/event-stream"}

    @property
    def timeout(self) -> tuple[float, float]:  # type: ignore[override]
        """The read timeout is the idle timer: any byte (an event, a heartbeat) resets it.

        While tailing it is also cut to the time left, so a quiet stream ends on time.
        """
        idle = float(self.settings["idle_timeout_seconds"])
        return (10, idle if self.tail is None else self.tail.read_timeout(idle))

    def tail_records(self, context: Context | None) -> Iterator[dict]:
        """One open connection, reconnected as needed, until the tail's budget ends."""
        yield from self.request_records(context)

    def get_new_paginator(self) -> ReconnectPaginator:
        return ReconnectPaginator(self)

    # ----------------------------------------------------------------- bounds

    def get_url_params(self, context: Context | None, next_page_token: Connection | None
                       ) -> dict[str, t.Any]:
        """`since` and `until`, always both: without `until` the server never closes.

        Except while tailing, where not closing is the point: `since` alone.
        """
        if next_page_token is None:
            self.start_run(context)
        since = next_page_token.since if next_page_token else self.read_from()
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

    # ----------------------------------------------------------------- reading

    def parse_page(self, body: None, response: requests.Response) -> Iterator[dict]:
        """The new events of one connection, until it closes or must be reconnected.

        Each event is yielded only once the previous one was written (the SDK pulls the next
        record after writing one), so `_newest` always describes what was emitted.
        """
        interruption: str | None = None
        fresh = 0
        chunks: Iterable[bytes] = (
            response.iter_content(chunk_size=READ_CHUNK_BYTES) if self.tail is None
            # Tailing: other streams write while this one waits; the budget ends the read.
            else self.tail.body_chunks(response, READ_CHUNK_BYTES, self.timeout[1])
        )
        try:
            for item in sse.parse(chunks, self.max_response_bytes):
                if isinstance(item, sse.Comment):
                    interruption = self.read_comment(item.text)
                    if interruption:
                        break
                    continue
                try:
                    events = self.events_of(item)
                except ValueError as error:
                    interruption = f"an event that is not valid JSON ({error})"
                    break
                for event in events:
                    if self.is_new(event):
                        fresh += 1
                        yield event
        except requests.exceptions.RequestException as error:
            interruption = self.describe_lost_connection(error)
        except sse.TooLong as error:
            raise TapEventsError(
                f"{self.source.label} stream '{self.name}': {error}, more than "
                f"max_response_mb={self.config.get('max_response_mb', DEFAULT_MAX_RESPONSE_MB)} "
                "allows (raise max_response_mb if the API really sends events this large)",
                response,
            ) from None
        finally:
            response.close()
        if self.tail is not None:
            # The budget's end is no interruption; a close before it is one (the server
            # never ends a stream without `until` by itself).
            interruption = None if self.tail.over else interruption or "a closed connection"
        response.interruption = interruption  # type: ignore[attr-defined]
        if interruption:
            self.before_reconnect(interruption, fresh)
        else:
            self._interruptions = 0

    def events_of(self, item: sse.Event) -> list[dict]:
        """A `data:` payload: one event or a list of them."""
        payload = self.decode(item.data.encode())
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(event, dict) for event in events):
            raise ValueError(f"expected an object or a list of objects: {item.data[:80]!r}")
        return events

    def is_new(self, event: dict) -> bool:
        """Drop what this run already emitted, and stamp the rest with the running maximum.

        Events of the overlap an earlier run emitted are emitted again (the target upserts
        on the id): dropping every id at or below the bookmark would also drop an event that
        reached Alpaca late with an older id, which is what the overlap is there to catch.
        """
        event_id = event.get(self.id_field)
        if not ulid.is_ulid(event_id):
            raise TapEventsError(
                f"{self.source.label} stream '{self.name}': an event without a ULID in "
                f"'{self.id_field}': {str(event)[:120]}"
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

    def describe_lost_connection(self, error: requests.exceptions.RequestException) -> str:
        if "timed out" in str(error).lower():
            return f"no event or heartbeat for {self.settings['idle_timeout_seconds']} s"
        return f"a lost connection ({type(error).__name__})"

    def before_reconnect(self, interruption: str, fresh: int) -> None:
        """Count connections cut short without a new event; wait before the next one.

        A slow-reader notice is followed at once (waiting would only lose more); other cuts
        back off like a failed request. The budget is `max_retries` cuts in a row.
        """
        self._interruptions = 0 if fresh else self._interruptions + 1
        if self._interruptions >= self.backoff_max_tries():
            raise TapEventsError(
                f"{self.source.label} stream '{self.name}': the stream was cut short by "
                f"{interruption} {self._interruptions} times in a row without a new event "
                f"(check {self.source.name}.api_url and the network)"
            )
        wait = 0.0
        if "slow-reader" not in interruption:
            wait = self.retry_wait(RuntimeError(interruption), self._interruptions + 1)
        self.logger.warning("%s: reconnecting in %.1f s after %s", self.name, wait,
                            interruption)
        if wait and self.tail is not None:
            self.tail.sleep(wait)
        elif wait:
            time.sleep(wait)


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
    streams=(AlpacaAdminActionEventsStream, AlpacaTradeEventsStream,
             AlpacaAccountStatusEventsStream, AlpacaJournalStatusEventsStream,
             AlpacaFundingStatusEventsStream),
    derived_secrets=credentials_secrets,
)
