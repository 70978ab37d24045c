"""Alpaca Broker API event streams (Server-Sent Events) as ../shared/apis/alpaca.md documents them.

- ten `GET` endpoints answering `text/event-stream`, behind HTTP Basic auth (401 otherwise);
- query rules: `until` needs `since`, `until_id` needs `since_id` (`until_ulid` needs
  `since_ulid` on v1), only one `since*` form (so one `until*` form) per request, and on the
  Activity stream (`/v2beta1/events/activities`) `since` also needs `until` (only `since_id`
  may stay open, per Alpaca's guide): a rule broken → 400. On v1 the integer
  `since_id`/`until_id` are deprecated (removal 2027-02-15) and refused here, so a test can
  prove the tap never sends them; `since_ulid` on a v2 path is an unknown parameter;
- `since`/`until` filter on the business time `at`, the id bounds on the event id; both kinds
  are inclusive (the event at the bound is replayed, as Alpaca warns it may be);
- a request with an `until*` bound ends with a clean close once the bound is passed (sending
  events added meanwhile, and heartbeats, while the bound lies in the future); without one the
  stream never ends: after the history it sends each event as it is added (`add_events`), and
  `:heartbeat` comments between them, until the client goes away;
- ids are real ULIDs minted from the event time; events of two accounts are not always sent in
  id order (every tenth pair of a stream is swapped), as Alpaca only orders per account;
- activities: keyed by `ref_id`, every 25th one a redelivery of an earlier activity (same
  `ref_id`, new `event_id`), every 10th a correction naming the activity it corrects in
  `previous_id`; `add_events(n, backfill=True)` adds activities backfilled late: a new
  `event_id` at the end of the sequence, but the original (old) `at`, so a read bounded by
  `since`/`until` never sees them;
- framing as seen in Alpaca's samples and beyond: admin actions and IPO events arrive as JSON
  lists (one to three events per `data:`), funding events spread over two `data:` lines,
  journal events use CRLF line ends, system events carry the whole SSE grammar (`id:` with a
  value that is not the event id, `event:`, `retry:`, data-less `id:` blocks), the others one
  object per `data:` line with LF;
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
    """One SSE endpoint: its tap stream, its id fields, query parameters and framing."""

    stream: str
    path: str
    #: The ULID each event carries (`event_ulid` on v1, `event_id` elsewhere).
    id_field: str = "event_id"
    #: What the tap keys rows on: the id, or a business key (`ref_id` for activities).
    key_field: str = ""
    #: The ULID cursor parameters (`since_ulid` on v1, `since_id` on v2).
    since_id: str = "since_id"
    until_id: str = "until_id"
    line_end: str = "\n"
    #: `object` (one per `data:`), `list` (one to three per `data:`), `split` (one object over
    #: two `data:` lines) or `fields` (`id:`, `event:`, `retry:` and data-less blocks too).
    framing: str = "object"
    #: `since` needs `until` as well (the Activity stream: only `since_id` may stay open).
    since_needs_until: bool = False

    @property
    def key(self) -> str:
        return self.key_field or self.id_field

    @property
    def v1(self) -> bool:
        return self.path.startswith("/v1/")


def v1_feed(stream: str, path: str) -> Feed:
    return Feed(stream, path, id_field="event_ulid", since_id="since_ulid",
                until_id="until_ulid")


FEEDS = (
    Feed("alpaca_admin_action_events", "/v2/events/admin-actions", framing="list"),
    Feed("alpaca_trade_events", "/v2/events/trades"),
    v1_feed("alpaca_account_status_events", "/v1/events/accounts/status"),
    Feed("alpaca_journal_status_events", "/v2/events/journals/status", line_end="\r\n"),
    Feed("alpaca_funding_status_events", "/v2/events/funding/status", framing="split"),
    Feed("alpaca_activity_events", "/v2beta1/events/activities", key_field="ref_id",
         since_needs_until=True),
    v1_feed("alpaca_nta_events", "/v1/events/nta"),
    v1_feed("alpaca_transfer_status_events", "/v1/events/transfers/status"),
    Feed("alpaca_system_events", "/v2/events/system", framing="fields"),
    Feed("alpaca_ipo_events", "/v2/events/ipos", framing="list"),
)
FEED_BY_PATH = {feed.path: feed for feed in FEEDS}
FEED_BY_STREAM = {feed.stream: feed for feed in FEEDS}

ACCOUNTS = [str(uuid.UUID(int=0x4DDF9B9C28E4907872235C28FCD7F40 + n)) for n in range(8)]
SYMBOLS = ["AAPL", "TSLA", "MSFT", "NVDA", "SPY", "AMZN"]
TRADE_EVENTS = ["new", "accepted", "fill", "partial_fill", "canceled", "replaced", "expired"]
ACCOUNT_STATUSES = ["SUBMITTED", "APPROVED", "ACTIVE", "ACTION_REQUIRED", "REJECTED"]
JOURNAL_STATUSES = ["queued", "sent_to_clearing", "executed"]
FUNDING_STATUSES = ["QUEUED", "APPROVED", "SENT_TO_CLEARING", "COMPLETE", "REJECTED"]
FUNDING_ENTITIES = ["Transfer", "BankRelationship", "WireBank", "FundingWallet"]
#: (activity_type, activity_subtype) as in Alpaca's Activity SSE guide; "" = no subtype.
ACTIVITY_KINDS = [("TRD", ""), ("TRD", ""), ("DIV", "CDIV"), ("FEE", "TAF"), ("FEE", "OCC"),
                  ("INT", "MGN"), ("JNLC", ""), ("CSD", ""), ("SPLIT", "FSPLIT"),
                  ("DIVNRA", "")]
#: (entry_type, entry_sub_type) of the legacy NTA stream, as in Alpaca's samples.
NTA_KINDS = [("DIV", "CDIV"), ("DIV", "SDIV"), ("DIVNRA", ""), ("SPLIT", "RSPLIT"),
             ("FEE", "REG"), ("FEE", "LCT"), ("INT", "MGN"), ("JNLC", ""), ("CSD", "")]
TRANSFER_STATUSES = ["", "queued", "sent_to_clearing", "executed"]
SYSTEM_EVENTS = {"eod_balances_ready": "End-of-day balances are now available.",
                 "eod_positions_ready": "End-of-day positions are now available."}
IPO_VERBS = ["Offering", "OfferingUpdate", "Prospectus", "SixtyMinMail", "Allocation",
             "OfferingCancellation"]
#: Every this many activities, one is a redelivery of the activity this many places before.
REDELIVERY_EVERY, REDELIVERY_OF = 25, 3
#: Every this many activities, one corrects the activity this many places before.
CORRECTION_EVERY, CORRECTION_OF = 10, 5

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
        #: Ranges (start, stop) of activity positions backfilled late (`add_events`).
        self.backfilled: list[tuple[int, int]] = []

    def add_events(self, count: int, backfill: bool = False, **options: t.Any
                   ) -> dict[str, t.Any]:
        """Append `count` events; with `backfill`, the activities among them are late
        arrivals: new ids at the end of the sequence, with an `at` from long ago."""
        with self.lock:
            activities = FEED_BY_STREAM["alpaca_activity_events"]
            before = self.feed_size(activities)
            result = super().add_events(count, **options)
            if backfill and self.feed_size(activities) > before:
                self.backfilled.append((before, self.feed_size(activities)))
            return result

    # ----------------------------------------------------------------- data

    # Events are numbered globally and dealt to the five feeds in turn, so adding N events
    # adds N rows in total whatever N is.

    def feed_size(self, feed: Feed) -> int:
        index = FEEDS.index(feed)
        return max(0, (self.count - index + len(FEEDS) - 1) // len(FEEDS))

    def stream_counts(self) -> dict[str, int]:
        """Distinct keys per stream: an activity's redelivery repeats an earlier `ref_id`."""
        counts = {feed.stream: self.feed_size(feed) for feed in FEEDS}
        counts["alpaca_activity_events"] -= counts["alpaca_activity_events"] // REDELIVERY_EVERY
        return counts

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
        if feed.stream == "alpaca_activity_events":
            return self.activity(position)
        make = {
            "alpaca_admin_action_events": self.admin_action,
            "alpaca_trade_events": self.trade,
            "alpaca_account_status_events": self.account_status,
            "alpaca_journal_status_events": self.journal_status,
            "alpaca_funding_status_events": self.funding_status,
            "alpaca_nta_events": self.nta,
            "alpaca_transfer_status_events": self.transfer_status,
            "alpaca_system_events": self.system_event,
            "alpaca_ipo_events": self.ipo_event,
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

    def is_backfilled(self, position: int) -> bool:
        return any(start <= position < stop for start, stop in self.backfilled)

    def activity(self, position: int) -> dict[str, t.Any]:
        """The Activity SSE envelope (common fields, `details` by type), as in Alpaca's
        guide samples: decimal strings, `previous_id` on corrections."""
        activities = FEED_BY_STREAM["alpaca_activity_events"]
        index = self.global_index(activities, position)
        if position % REDELIVERY_EVERY == REDELIVERY_EVERY - 1:
            # Delivered again under a new event id: the same activity, the same `ref_id`.
            return {**self.activity(position - REDELIVERY_OF),
                    "event_id": self.event_ulid(index)}
        rng = self.rng("event", index)
        moment = self.moment(index)
        if self.is_backfilled(position):
            # Booked long ago, published now: the event id is new, `at` is not.
            moment = self.epoch + datetime.timedelta(seconds=position % 60,
                                                     microseconds=rng.randrange(10**6))
        kind, subtype = rng.choice(ACTIVITY_KINDS)
        symbol = rng.choice(SYMBOLS)
        qty, price, net = "0", "0", f"{rng.randrange(-500, 5000) / 100:.2f}"
        day = moment.date().isoformat()
        details: dict[str, t.Any] = {"system_date": day}
        if kind == "TRD":
            filled = rng.randrange(1, 50)
            qty, price = str(filled), f"{rng.randrange(1000, 90000) / 100:.2f}"
            net = f"{-filled * float(price):.2f}"
            details = {"order_id": str(uuid.UUID(self.digest("order", index // 3)[:32])),
                       "client_order_id": self.digest("client-order", index)[:16],
                       "side": rng.choice(["buy", "sell"]), "symbol": symbol,
                       "cum_qty": qty, "leaves_qty": "0", "order_status": "filled",
                       "execution_type": "fill"}
        elif kind == "DIV":
            details.update(ca_id=str(uuid.UUID(self.digest("ca", index)[:32])), symbol=symbol,
                           entitled_qty=str(rng.randrange(1, 200)), rate="0.25",
                           cash_payout=net, ex_date=day, record_date=day, payable_date=day)
        elif kind in ("FEE", "DIVNRA") and rng.random() < 0.5:
            details["parent_id"] = str(uuid.UUID(self.digest("ref", index - 1)[:32]))
        record: dict[str, t.Any] = {
            "account_id": rng.choice(ACCOUNTS),
            "event_id": self.event_ulid(index),
            "ref_id": str(uuid.UUID(self.digest("ref", index)[:32])),
            "activity_type": kind,
            "qty": qty,
            "price": price,
            "currency": "USD",
            "net_amount": net,
            "status": "executed",
            "at": rfc3339(moment),
            "executed_at": rfc3339(moment.replace(microsecond=0)),
            "settle_date": day,
            "details": details,
        }
        if subtype:
            record["activity_subtype"] = subtype
        if position % CORRECTION_EVERY == CORRECTION_EVERY - 3 and position >= CORRECTION_OF:
            corrected = self.global_index(activities, position - CORRECTION_OF)
            record["previous_id"] = str(uuid.UUID(self.digest("ref", corrected)[:32]))
            if kind == "TRD":
                details["execution_type"] = "trade_correct"
        return record

    def nta(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        """The legacy NTA shape of Alpaca's samples: numbers (not strings), nullable price."""
        kind, subtype = rng.choice(NTA_KINDS)
        moment = self.moment(index)
        qty = 0 if kind != "SPLIT" else rng.randrange(-1000, 1000) / 1000
        record: dict[str, t.Any] = {
            "id": str(uuid.UUID(self.digest("nta", index)[:32])),
            "qty": qty,
            "price": None if kind != "SPLIT" else rng.randrange(100, 9000) / 100,
            "status": rng.choice(["executed", "executed", "correct", "canceled"]),
            "symbol": rng.choice(SYMBOLS),
            "cusip": f"{rng.randrange(10**8, 10**9)}",
            "entry_type": kind,
            "net_amount": rng.randrange(-300, 3000) / 100,
            "description": f"{kind} {subtype} for position {index}",
            "settle_date": moment.date().isoformat(),
            "system_date": moment.date().isoformat(),
            "per_share_amount": 0.3 if kind == "DIV" else None,
            "account_id": rng.choice(ACCOUNTS),
            "at": rfc3339(moment),
            "event_ulid": self.event_ulid(index),
        }
        if subtype:
            record["entry_sub_type"] = subtype
        if kind == "FEE":
            record["execution_id"] = str(uuid.UUID(self.digest("exec", index)[:32]))
        if subtype == "LCT":
            record["swap_rate"] = rng.randrange(10000, 20000) / 100  # local currency fee
        if kind == "SPLIT":
            record["group_id"] = str(uuid.UUID(self.digest("group", index // 2)[:32]))
        if rng.random() < 0.3:
            del record["cusip"]  # absent on some of Alpaca's samples (FEE, INT, JNLC)
        return record

    def transfer_status(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        step = rng.randrange(len(TRANSFER_STATUSES) - 1)
        record: dict[str, t.Any] = {
            "account_id": rng.choice(ACCOUNTS),
            "at": rfc3339(self.moment(index)),
            "event_ulid": self.event_ulid(index),
            "status_from": TRANSFER_STATUSES[step],
            "status_to": TRANSFER_STATUSES[step + 1],
            "transfer_id": str(uuid.UUID(self.digest("transfer", index // 3)[:32])),
        }
        if rng.random() < 0.5:
            record["event_id"] = 15960 + index  # the legacy integer id, optional since 2026-07
        return record

    def system_event(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        kind = rng.choice(list(SYSTEM_EVENTS))
        moment = self.moment(index)
        return {"event_id": self.event_ulid(index), "at": rfc3339(moment), "type": kind,
                "system_date": moment.date().isoformat(), "description": SYSTEM_EVENTS[kind]}

    def ipo_event(self, index: int, rng: t.Any) -> dict[str, t.Any]:
        """Alpaca's IPOEvent: `payload` by `verb`, none on a cancellation, account fields
        only on an allocation."""
        verb = rng.choice(IPO_VERBS)
        moment = self.moment(index)
        offering = f"FI{111225 + index // 6}"
        record: dict[str, t.Any] = {
            "at": rfc3339(moment),
            "event_id": self.event_ulid(index),
            "offering_reference": offering,
            "received_at": rfc3339(moment - datetime.timedelta(milliseconds=200)),
            "verb": verb,
        }
        low = rng.randrange(10, 60)
        if verb in ("Offering", "OfferingUpdate"):
            record["payload"] = {"available_to_order": "Available", "max_price": str(low + 4),
                                 "min_price": str(low), "name": f"Example Corp {offering}",
                                 "ticker_symbol": f"EX{index % 100:02d}"}
        elif verb == "Prospectus":
            record["payload"] = {"prospectus_url": f"https://example.com/{offering}.pdf",
                                 "subject": f"IPO Prospectus: {offering}"}
        elif verb == "SixtyMinMail":
            record["payload"] = {
                "sixty_minute_expiration_time": rfc3339(moment + datetime.timedelta(hours=1)),
                "subject": f"IPO 60 Minute Mail: {offering}"}
        elif verb == "Allocation":
            shares = rng.randrange(1, 100)
            record.update(account_id=rng.choice(ACCOUNTS), correspondent="ABCD")
            record["payload"] = {"allocated_amount": str(shares * low),
                                 "allocated_shares": str(shares), "cusip_id": "123456789",
                                 "final_price": str(low), "subject": f"IPO Allocation: {offering}"}
        return record

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
                if feed.framing == "list":
                    # Lists of one to three events per `data:` line, as in Alpaca's sample;
                    # a live stream sends what it has without waiting for a full list.
                    batch.append(event)
                    if len(batch) < 1 + (slot - 1) % 3 and slot < limit:
                        continue
                    yield self.frame(batch, end)
                    batch = []
                else:
                    yield self.frame(event, end, feed.framing, sent)
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
    def frame(payload: t.Any, end: str, framing: str = "object", number: int = 0) -> bytes:
        text = orjson.dumps(payload).decode()
        if framing == "split" and text.startswith("{") and "," in text:
            # One JSON document over two `data:` lines; the reader joins them with a newline.
            head, tail = text.split(",", 1)
            return f"data: {head},{end}data: {tail}{end}{end}".encode()
        if framing == "fields" and isinstance(payload, dict):
            # The whole SSE grammar. The `id:` is the server's own counter, not the event id
            # a cursor must come from; a block with only `id:` dispatches nothing.
            fields = f"id: {number}{end}event: {payload.get('type', 'message')}{end}"
            if number % 7 == 0:
                fields = f"retry: 3000{end}{fields}"
            if number % 5 == 0:
                fields = f"id: {number}.keepalive{end}{end}{fields}"
            return f"{fields}data: {text}{end}{end}".encode()
        return f"data: {text}{end}{end}".encode()

    def first_slot(self, feed: Feed, bounds: Bounds) -> int:
        """Where to start reading: a little before the `since*` time (exact filter follows)."""
        start = bounds.start_time()
        if start is None:
            return 0 if bounds.has_since else self.feed_size(feed)  # no since*: live only
        seconds = (start - self.epoch).total_seconds()
        return max(0, int(seconds) // len(FEEDS) - 2)


CURSOR_PARAMETERS = ("since", "until", "since_id", "until_id", "since_ulid", "until_ulid")


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
        given = {key for key in CURSOR_PARAMETERS if args.get(key)}
        if feed.v1 and given & {"since_id", "until_id"}:
            # Integer ids on v1: deprecated 2026-08-05, removed 2027-02-15. Refused here so
            # the request log proves the tap never sends them.
            raise ParameterError("since_id/until_id (integer event ids) are deprecated on v1 "
                                 "endpoints: use since_ulid/until_ulid")
        unknown = {"since_ulid", "until_ulid"} - {feed.since_id, feed.until_id}
        if given & unknown:
            raise ParameterError(f"unknown parameter {sorted(given & unknown)[0]}")
        if "until" in given and "since" not in given:
            raise ParameterError("until requires since")
        for since_key, until_key in (("since_id", "until_id"), ("since_ulid", "until_ulid")):
            if until_key in given and since_key not in given:
                raise ParameterError(f"{until_key} requires {since_key}")
        # (Two `until*` forms cannot pass the rules above without two `since*` forms.)
        sinces = given & {"since", "since_id", "since_ulid"}
        if len(sinces) > 1:
            raise ParameterError(" and ".join(sorted(sinces)) + " are mutually exclusive")
        if feed.since_needs_until and "since" in given and "until" not in given:
            raise ParameterError("since requires until on this endpoint (only since_id may "
                                 "be open-ended)")
        return cls(since=parse_time(args.get("since"), "since"),
                   until=parse_time(args.get("until"), "until"),
                   since_id=parse_ulid(args.get(feed.since_id), feed.since_id),
                   until_id=parse_ulid(args.get(feed.until_id), feed.until_id))

    def until_passed(self) -> bool:
        """The `until*` bound lies in the past: its time, or the time its ULID carries
        (while it lies ahead, the stream waits for the events still to come)."""
        now = datetime.datetime.now(datetime.UTC)
        if self.until is not None:
            return now >= self.until
        return self.until_id is None or now >= ulid.datetime_of(self.until_id)

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
        """Past the `until*` bound by more than any out-of-order pair: nothing more to send.

        Events go out in id order (give or take a swapped pair), so the id's time decides;
        `at` may be far older (a backfilled activity).
        """
        published = ulid.datetime_of(event[feed.id_field])
        margin = datetime.timedelta(seconds=len(FEEDS) * 3)
        if self.until is not None and published > self.until + margin:
            return True
        return (self.until_id is not None
                and published > ulid.datetime_of(self.until_id) + margin)


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
