"""Alpaca Broker API event streams (Server-Sent Events) as ../shared/apis/alpaca.md documents them.

- five `GET` endpoints answering `text/event-stream`, behind HTTP Basic auth (401 otherwise);
- query rules: `until` needs `since`, `until_id` needs `since_id` (`until_ulid` needs
  `since_ulid` on the v1 stream), and only one `since*` form per request: a rule broken → 400;
- `since`/`until` take RFC 3339 (with offset) or `YYYY-MM-DD`; `since*` bounds are inclusive (the
  event at the bound is replayed, as Alpaca warns it may be), `until*` bounds too;
- a request with an `until*` bound ends with a clean close once the bound is passed (sending
  events added meanwhile, and heartbeats, while the bound lies in the future); without one the
  stream never ends: after the history it sends each event as it is added (`add_events`), and
  `:heartbeat` comments between them, until the client goes away;
- ids are real ULIDs minted from the event time; events of two accounts are not always sent in
  id order (every tenth pair of a stream is swapped), as Alpaca only orders per account;
- framing as seen in Alpaca's samples and beyond: admin actions arrive as JSON lists (one to
  three events per `data:`), funding events spread over two `data:` lines, journal events use
  CRLF line ends, the others one object per `data:` line with LF;
- stream faults, injected per request with `kind` and `options`: `sse_slow_client`
  (`: you are reading too slowly, dropped N messages` after `at` events, and those N are lost),
  `sse_internal_error` (`: internal server error` after `at` events, then a close) and
  `sse_stall` (silence for `seconds` after `at` events).
"""

from __future__ import annotations

import datetime
import time
import typing as t
import uuid
from dataclasses import dataclass

import orjson
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response

from tap_events import ulid
from tap_events_emulator.base import EmulatedAPI, json_response

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from werkzeug.wrappers import Request

    from tap_events_emulator.app import Fault

API_KEY = "emulator-alpaca-key"
API_SECRET = "emulator-alpaca-secret"


@dataclass(frozen=True)
class Feed:
    """One SSE endpoint: its tap stream, its id field and its query parameter names."""

    stream: str
    path: str
    id_field: str = "event_id"
    #: The ULID cursor parameters (`since_ulid` on v1, `since_id` on v2).
    since_id: str = "since_id"
    until_id: str = "until_id"
    line_end: str = "\n"


FEEDS = (
    Feed("alpaca_admin_action_events", "/v2/events/admin-actions"),
    Feed("alpaca_trade_events", "/v2/events/trades"),
    Feed("alpaca_account_status_events", "/v1/events/accounts/status", id_field="event_ulid",
         since_id="since_ulid", until_id="until_ulid"),
    Feed("alpaca_journal_status_events", "/v2/events/journals/status", line_end="\r\n"),
    Feed("alpaca_funding_status_events", "/v2/events/funding/status"),
)
FEED_BY_PATH = {feed.path: feed for feed in FEEDS}

ACCOUNTS = [str(uuid.UUID(int=0x4DDF9B9C28E4907872235C28FCD7F40 + n)) for n in range(8)]
SYMBOLS = ["AAPL", "TSLA", "MSFT", "NVDA", "SPY", "AMZN"]
TRADE_EVENTS = ["new", "accepted", "fill", "partial_fill", "canceled", "replaced", "expired"]
ACCOUNT_STATUSES = ["SUBMITTED", "APPROVED", "ACTIVE", "ACTION_REQUIRED", "REJECTED"]
JOURNAL_STATUSES = ["queued", "sent_to_clearing", "executed"]
FUNDING_STATUSES = ["QUEUED", "APPROVED", "SENT_TO_CLEARING", "COMPLETE", "REJECTED"]
FUNDING_ENTITIES = ["Transfer", "BankRelationship", "WireBank", "FundingWallet"]

#: Every this many events a `:heartbeat` is sent between them too.
HEARTBEAT_EVERY_EVENTS = 100


class ParameterError(ValueError):
    """A query parameter rule was broken: answered with 400."""


class AlpacaAPI(EmulatedAPI):
    name = "alpaca"
    tap_settings = {"api_key": API_KEY, "api_secret": API_SECRET}
    url_map = Map([Rule(feed.path, endpoint="events", methods=["GET"],
                        defaults={"path": feed.path}) for feed in FEEDS])

    def __init__(self, *, events: int, seed: int, heartbeat_seconds: float = 1.0,
                 **kwargs: t.Any) -> None:
        super().__init__(events=events, seed=seed, **kwargs)
        #: Seconds between heartbeats while a stream waits (for its bound, or forever).
        self.heartbeat_seconds = heartbeat_seconds

    # ----------------------------------------------------------------- data

    # Events are numbered globally and dealt to the five feeds in turn, so adding N events
    # adds N rows in total whatever N is.

    def feed_size(self, feed: Feed) -> int:
        index = FEEDS.index(feed)
        return max(0, (self.count - index + len(FEEDS) - 1) // len(FEEDS))

    def stream_counts(self) -> dict[str, int]:
        return {feed.stream: self.feed_size(feed) for feed in FEEDS}

    def global_index(self, feed: Feed, position: int) -> int:
        return position * len(FEEDS) + FEEDS.index(feed)

    def delivered_position(self, slot: int, size: int) -> int:
        """Which event goes out in `slot`: every tenth pair swapped (cross-account order)."""
        partner = slot ^ 1
        if (slot // 2) % 10 == 3 and partner < size:
            return partner
        return slot

    def moment(self, index: int) -> datetime.datetime:
        micros = self.rng("at", index).randrange(1_000_000)
        return self.time_of(index) + datetime.timedelta(microseconds=micros)

    def event_ulid(self, index: int) -> str:
        return ulid.encode(ulid.milliseconds(self.moment(index)),
                           self.rng("ulid", index).getrandbits(80))

    def event(self, feed: Feed, position: int) -> dict[str, t.Any]:
        index = self.global_index(feed, position)
        make = {
            "alpaca_admin_action_events": self.admin_action,
            "alpaca_trade_events": self.trade,
            "alpaca_account_status_events": self.account_status,
            "alpaca_journal_status_events": self.journal_status,
            "alpaca_funding_status_events": self.funding_status,
        }[feed.stream]
        return make(index, self.rng("event", index))

    def admin_action(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        account = rng.choice(ACCOUNTS)
        admin = str(uuid.UUID(self.digest("admin", index % 3)[:32]))
        kind = rng.choice(["liquidation_admin_event", "transaction_cancel_admin_event",
                           "legacy_note_admin_event"])
        context: dict[str, t.Any] | None = {}
        if kind == "liquidation_admin_event":
            symbol = rng.choice(SYMBOLS)
            qty = f"{rng.randrange(1, 400) / 4:g}"
            context = {"symbol": symbol, "reason": "Liquidation due to margin call",
                       "available_qty": qty, "requested_qty": qty, "error": ""}
        elif kind == "transaction_cancel_admin_event":
            context = {"transaction_id": str(uuid.UUID(self.digest("txn", index)[:32])),
                       "entry_type": "JNLC",
                       "external_id": str(uuid.UUID(self.digest("ext", index)[:32]))}
        elif rng.random() < 0.5:
            context = None
        return {
            "event_id": self.event_ulid(index),
            "at": rfc3339(self.moment(index)),
            "type": kind,
            "category": rng.choice(["accounts", "other", "order"]),
            "visibility": rng.choice(["internal", "external", "correspondent_only"]),
            "note": f"Admin action {index} on account {account[:8]}\n",
            "correspondent": "ABCD",
            # The deprecated nested objects (docs samples use `value`, the spec `id_reference`)
            # and their flat replacements, as during Alpaca's deprecation window.
            "belongs_to": {"kind": "account",
                           ("value" if index % 4 == 0 else "id_reference"): account},
            "created_by": {"kind": "admin", "id_reference": admin},
            "belongs_to_kind": "account",
            "belongs_to_id_reference": account,
            "created_by_kind": "admin",
            "created_by_id_reference": admin,
            "context": context,
        }

    def trade(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        account = rng.choice(ACCOUNTS)
        qty = rng.randrange(1, 50)
        price = f"{rng.randrange(1000, 90000) / 100:.2f}"
        event = rng.choice(TRADE_EVENTS)
        order_id = str(uuid.UUID(self.digest("order", index // 3)[:32]))
        record: dict[str, t.Any] = {
            "account_id": account,
            "at": rfc3339(self.moment(index)),
            "event_id": self.event_ulid(index),
            "event": event,
            "timestamp": rfc3339(self.moment(index)),
            "order": {"id": order_id, "symbol": rng.choice(SYMBOLS), "qty": str(qty),
                      "side": rng.choice(["buy", "sell"]), "type": "market",
                      "status": event, "time_in_force": "day"},
        }
        if event in ("fill", "partial_fill"):
            record.update(execution_id=str(uuid.UUID(self.digest("exec", index)[:32])),
                          price=price, qty=str(qty), position_qty=str(qty * 2))
        return record

    def account_status(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        step = rng.randrange(len(ACCOUNT_STATUSES) - 1)
        record: dict[str, t.Any] = {
            "account_id": rng.choice(ACCOUNTS),
            "account_number": "" if step == 0 else f"9{index:08d}",
            "at": rfc3339(self.moment(index)),
            "event_id": 100000 + index,
            "event_ulid": self.event_ulid(index),
            "status_from": ACCOUNT_STATUSES[step],
            "status_to": ACCOUNT_STATUSES[step + 1],
        }
        if ACCOUNT_STATUSES[step + 1] in ("ACTION_REQUIRED", "REJECTED"):
            record["kyc_results"] = {"reject": {}, "accept": {}, "indeterminate": {},
                                     "summary": "fail"}
            record["reason"] = "identity verification failed"
        if rng.random() < 0.2:
            record["trading_blocked"] = rng.random() < 0.5
        return record

    def journal_status(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        step = rng.randrange(len(JOURNAL_STATUSES) - 1)
        return {
            "at": rfc3339(self.moment(index)),
            "entry_type": rng.choice(["JNLC", "JNLS"]),
            "event_id": self.event_ulid(index),
            "journal_id": str(uuid.UUID(self.digest("journal", index // 2)[:32])),
            "status_from": JOURNAL_STATUSES[step],
            "status_to": JOURNAL_STATUSES[step + 1],
        }

    def funding_status(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        step = rng.randrange(len(FUNDING_STATUSES) - 1)
        return {
            "event_id": self.event_ulid(index),
            "at": rfc3339(self.moment(index)),
            "entity_type": rng.choice(FUNDING_ENTITIES),
            "entity_id": str(uuid.UUID(self.digest("funding", index)[:32])),
            "account_id": rng.choice(ACCOUNTS),
            "status_from": FUNDING_STATUSES[step],
            "status_to": FUNDING_STATUSES[step + 1],
        }

    # ----------------------------------------------------------------- endpoint

    def error(self, status: int, code: str, message: str) -> Response:
        """Alpaca's error body: a numeric code and a message."""
        numeric = {400: 40010000, 401: 40110000, 403: 40310000, 404: 40410000}.get(status,
                                                                                 50010000)
        return json_response({"code": numeric, "message": message}, status)

    def authorized(self, request: Request) -> bool:
        auth = request.authorization
        return (auth is not None and auth.type == "basic"
                and auth.username == API_KEY and auth.password == API_SECRET)

    def events(self, request: Request, path: str) -> Response:
        if not self.authorized(request):
            return self.error(401, "unauthorized", "request is not authorized")
        feed = FEED_BY_PATH[path]
        try:
            bounds = Bounds.parse(request.args, feed)
        except ParameterError as error:
            return self.error(400, "bad_request", str(error))
        fault: Fault | None = request.environ.get("emulator.fault")
        return Response(self.frames(feed, bounds, fault), status=200,
                        content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache"})

    def frames(self, feed: Feed, bounds: Bounds, fault: Fault | None) -> Iterator[bytes]:
        """The stream body: history within the bounds, then live events as they are added,
        with heartbeats while none come, until a reached `until*` bound closes it (never,
        without one: then only the client leaving ends it)."""
        end = feed.line_end
        heartbeat = f":heartbeat{end}{end}".encode()
        yield heartbeat
        sent = 0
        skip = 0
        slot = self.first_slot(feed, bounds)
        batch: list[dict[str, t.Any]] = []
        while True:
            ending = bounds.has_until and bounds.until_passed()
            size = self.feed_size(feed)
            # A live stream holds back an event whose delivery partner is not there yet.
            limit = size if ending else self.settled_size(size)
            while slot < limit:
                event = self.event(feed, self.delivered_position(slot, size))
                slot += 1
                if bounds.after_until(event, feed):
                    ending, slot = True, limit
                    break
                if not bounds.admits(event, feed):
                    continue
                if fault is not None and sent == int(fault.options.get("at", 0)):
                    if batch:
                        yield self.frame(batch, end)
                        batch = []
                    comment = self.fault_comment(fault)
                    if comment:
                        yield f": {comment}{end}{end}".encode()
                    if fault.kind == "sse_internal_error":
                        return
                    if fault.kind == "sse_slow_client":
                        skip = int(fault.options.get("dropped", 10))
                    if fault.kind == "sse_stall":
                        time.sleep(float(fault.options.get("seconds", 5)))
                    fault = None
                sent += 1
                if skip:
                    skip -= 1
                    continue
                if feed.stream == "alpaca_admin_action_events":
                    # Lists of one to three events per `data:` line, as in Alpaca's sample;
                    # a live stream sends what it has without waiting for a full list.
                    batch.append(event)
                    if len(batch) < 1 + (slot - 1) % 3 and slot < limit:
                        continue
                    yield self.frame(batch, end)
                    batch = []
                else:
                    yield self.frame(event, end,
                                     split=feed.stream == "alpaca_funding_status_events")
                if sent % HEARTBEAT_EVERY_EVENTS == 0:
                    yield heartbeat
            if batch:
                yield self.frame(batch, end)
                batch = []
            if ending:
                return
            if not self.wait_for_events(feed, beyond=slot):
                yield heartbeat

    def wait_for_events(self, feed: Feed, beyond: int) -> bool:
        """Wait up to a heartbeat interval for events past slot `beyond` of `feed`."""
        with self.added:
            return self.added.wait_for(
                lambda: self.settled_size(self.feed_size(feed)) > beyond,
                timeout=self.heartbeat_seconds)

    @staticmethod
    def settled_size(size: int) -> int:
        """Events that can go out now: the last one waits when it is the first of a pair
        that `delivered_position` swaps, since its partner is not there yet."""
        last = size - 1
        if size % 2 == 1 and (last // 2) % 10 == 3:
            return last
        return size

    @staticmethod
    def fault_comment(fault: Fault) -> str:
        if fault.kind == "sse_slow_client":
            return f"you are reading too slowly, dropped {fault.options.get('dropped', 10)} " \
                   "messages"
        if fault.kind == "sse_internal_error":
            return "internal server error"
        return ""

    @staticmethod
    def frame(payload: t.Any, end: str, *, split: bool = False) -> bytes:
        text = orjson.dumps(payload).decode()
        if split and text.startswith("{") and "," in text:
            # One JSON document over two `data:` lines; the reader joins them with a newline.
            head, tail = text.split(",", 1)
            return f"data: {head},{end}data: {tail}{end}{end}".encode()
        return f"data: {text}{end}{end}".encode()

    def first_slot(self, feed: Feed, bounds: Bounds) -> int:
        """Where to start reading: a little before the `since*` time (exact filter follows)."""
        start = bounds.start_time()
        if start is None:
            return 0 if bounds.has_since else self.feed_size(feed)  # no since*: live only
        seconds = (start - self.epoch).total_seconds()
        return max(0, int(seconds) // len(FEEDS) - 2)


@dataclass
class Bounds:
    """The `since*`/`until*` of one request, checked against Alpaca's documented rules."""

    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    since_id: str | None = None
    until_id: str | None = None

    @property
    def has_since(self) -> bool:
        return self.since is not None or self.since_id is not None

    @property
    def has_until(self) -> bool:
        return self.until is not None or self.until_id is not None

    @classmethod
    def parse(cls, args: t.Mapping[str, str], feed: Feed) -> Bounds:
        given = {key for key in ("since", "until", "since_id", "until_id", "since_ulid",
                                 "until_ulid") if args.get(key)}
        unknown = {"since_ulid", "until_ulid"} - {feed.since_id, feed.until_id}
        if given & unknown:
            raise ParameterError(f"unknown parameter {sorted(given & unknown)[0]}")
        if "until" in given and "since" not in given:
            raise ParameterError("until requires since")
        for since_key, until_key in (("since_id", "until_id"), ("since_ulid", "until_ulid")):
            if until_key in given and since_key not in given:
                raise ParameterError(f"{until_key} requires {since_key}")
        sinces = given & {"since", "since_id", "since_ulid"}
        if len(sinces) > 1:
            raise ParameterError(" and ".join(sorted(sinces)) + " are mutually exclusive")
        bounds = cls(since=parse_time(args.get("since"), "since"),
                     until=parse_time(args.get("until"), "until"),
                     since_id=parse_ulid(args.get(feed.since_id), feed.since_id),
                     until_id=parse_ulid(args.get(feed.until_id), feed.until_id))
        if "since_id" in given and feed.since_id != "since_id":
            # The v1 stream's integer `since_id` is legacy and not emulated.
            raise ParameterError("since_id is not supported here, use since_ulid")
        return bounds

    def until_passed(self) -> bool:
        """A time bound in the past (an id bound is only reached by the events)."""
        return self.until is None or datetime.datetime.now(datetime.UTC) >= self.until

    def start_time(self) -> datetime.datetime | None:
        if self.since is not None:
            return self.since
        if self.since_id is not None:
            return ulid.datetime_of(self.since_id)
        return None

    def admits(self, event: dict[str, t.Any], feed: Feed) -> bool:
        at = datetime.datetime.fromisoformat(event["at"])
        event_id = event[feed.id_field]
        return ((self.since is None or at >= self.since)
                and (self.until is None or at <= self.until)
                and (self.since_id is None or event_id >= self.since_id)
                and (self.until_id is None or event_id <= self.until_id))

    def after_until(self, event: dict[str, t.Any], feed: Feed) -> bool:
        """Past the `until*` bound by more than any out-of-order pair: nothing more to send."""
        at = datetime.datetime.fromisoformat(event["at"])
        margin = datetime.timedelta(seconds=len(FEEDS) * 3)
        if self.until is not None and at > self.until + margin:
            return True
        return (self.until_id is not None
                and at > ulid.datetime_of(self.until_id) + margin)


def parse_time(value: str | None, name: str) -> datetime.datetime | None:
    """RFC 3339 with an offset, or a plain date (midnight UTC)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.UTC)
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        # An unencoded `+` of an offset arrives as a space: Alpaca refuses it too.
        raise ParameterError(f"{name} is not an RFC 3339 date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise ParameterError(f"{name} has no UTC offset: {value!r}")
    return moment


def parse_ulid(value: str | None, name: str) -> str | None:
    if not value:
        return None
    if not ulid.is_ulid(value):
        raise ParameterError(f"{name} is not a ULID: {value!r}")
    return value.upper()


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
