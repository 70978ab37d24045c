"""Socotra EC Events as ../shared/apis/socotra.md documents it.

- `GET /event/{tenant}/events/list`: the first request takes `startTimestamp` and/or
  `endTimestamp` (one is required), `type` and `pageSize`; later ones `pagingToken` alone —
  the token combined with any other parameter answers 400. Every response carries a token;
  an empty `events` page means caught up (the token then stays where it was);
- events in ascending `timestamp` (ties by locator); `add_events(..., late_seconds=S)` inserts
  events stamped S seconds before the newest one, as a slow call's events land in Socotra;
  with the option `repeat_last`, each page after the first repeats the previous page's last
  event (an at-least-once token; Socotra does not document which kind it has);
- `GET /event/{tenant}/events/schedules/policy/{policy}`: a bare array per policy;
- `GET /event/{tenant}/events/schedules/failed/list?offset&count`: a bare array, paged;
- 401 for a missing or wrong token, 403 for a token without the events permissions or for a
  tenant outside the token's tenants; errors in a Spring-style body (`status`, `error`,
  `message`, `path`: the EC error shape is not documented).

Two tenants: the first holds `events` events, the second half as many, half a second apart
from the first's, so timestamps of the two tenants interleave.
"""

from __future__ import annotations

import base64
import bisect
import datetime
import typing as t
from http import HTTPStatus

import orjson
from werkzeug.routing import Map, Rule

from tap_events import ulid
from tap_events_emulator.base import (
    EVENT_SPACING_SECONDS,
    EmulatedAPI,
    json_response,
    parse_time,
)

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

TOKEN = "SOCP_01JX3K7Q8R5T3V7W9Z2B4D6F8H"
#: A valid token whose permissions lack `events`: every call answers 403.
TOKEN_WITHOUT_EVENTS = "SOCP_01JX3K7Q8R5T3V7W9Z2B4D6F9J"
TENANTS = ("6f2c1a0e-3b1d-4c52-9f1e-2d7b8a4c9e01", "b8e4d2f1-7a3c-4e69-8d05-1c9f6e2a7b34")
POLICY_LOCATORS = ("01JWQYT2D8H5P3N6Q9R1S4V7WX", "01JX2B7K4M9P3R6T8V1W5Y0Z2C")
#: Failed scheduled jobs per tenant: more than one default page for the first tenant.
FAILED_JOBS = (137, 42)
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


EVENT_TYPES = [
    "policy.account.create", "policy.account.update", "policy.quote.create",
    "policy.quote.price", "policy.quote.issue", "policy.change.issue", "policy.renewal.issue",
    "policy.cancellation.issue", "policy.status.update", "billing.invoice.generate",
    "billing.payment.post", "billing.delinquency.create", "document.ready",
    "custom.event.type.a",
]
CUSTOM_EVENT_IDS = ["renewalReminder", "paymentReminder", "inspectionDue", "premiumAudit",
                    "claimFollowUp"]
TRIGGER_STATES = ["NONE", "NORMAL", "PAUSED", "COMPLETE", "ERROR", "BLOCKED"]
USERS = ["e4ddf9b9-c28e-4907-8722-35c28fcd7f40", "535b6a43-7178-4a0a-9038-f0b5e998d0ee",
         "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"]

#: Position in a tenant's ordered events: (timestamp in ms, locator).
Key = tuple[int, str]


def iso_ms(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SocotraAPI(EmulatedAPI):
    name = "socotra"
    tap_settings = {"token": TOKEN, "tenant_locators": list(TENANTS),
                    "policy_locators": list(POLICY_LOCATORS)}
    url_map = Map([
        Rule("/event/<tenant>/events/list", endpoint="events_list", methods=["GET"]),
        Rule("/event/<tenant>/events/schedules/policy/<policy>", endpoint="scheduled_policy",
             methods=["GET"]),
        Rule("/event/<tenant>/events/schedules/failed/list", endpoint="failed_list",
             methods=["GET"]),
    ])

    def __init__(self, *, events: int, seed: int, failed_jobs: t.Sequence[int] = FAILED_JOBS,
                 repeat_last: bool = False, **kwargs: t.Any) -> None:
        super().__init__(events=events, seed=seed, **kwargs)
        #: Each page after the first repeats the last event of the previous one, as an
        #: at-least-once cursor would. Socotra does not say whether its token does; off by
        #: default, on in the test that the tap drops such repeats.
        self.repeat_last = repeat_last
        self.regular = {TENANTS[0]: events, TENANTS[1]: events // 2}
        self.offset_ms = {TENANTS[0]: 0, TENANTS[1]: 500}
        #: Late events per tenant, sorted by (ms, locator); few, so kept in memory.
        self.late: dict[str, list[tuple[int, str, int]]] = {tenant: [] for tenant in TENANTS}
        self.failed_jobs = dict(zip(TENANTS, failed_jobs, strict=True))
        self.count = sum(self.regular.values())

    # ----------------------------------------------------------------- data

    def add_events(self, count: int, tenant: str | None = None,
                   late_seconds: float | None = None, **options: t.Any) -> dict[str, t.Any]:
        """`count` new events spread over the tenants (or all in `tenant`).

        With `late_seconds` they are stamped that long before the tenant's newest event,
        like the events of a call that started early and completed late.
        """
        with self.lock:
            targets = [tenant] if tenant else list(TENANTS)
            for position, target in enumerate(targets):
                share = count // len(targets) + (position < count % len(targets))
                if late_seconds is None:
                    self.regular[target] += share
                    continue
                newest = self.newest_ms(target)
                for number in range(share):
                    serial = len(self.late[target])
                    moment = newest - int(late_seconds * 1000) + number
                    entry = (moment, self.locator(moment, "late", target, serial), serial)
                    bisect.insort(self.late[target], entry)
            self.count = sum(self.regular.values()) + sum(map(len, self.late.values()))
            return {"events": self.count, "by_tenant": self.tenant_counts()}

    def tenant_counts(self) -> dict[str, int]:
        return {tenant: self.regular[tenant] + len(self.late[tenant]) for tenant in TENANTS}

    def stream_counts(self) -> dict[str, int]:
        return {
            "socotra_events": sum(self.tenant_counts().values()),
            "socotra_scheduled_policy_events": sum(
                self.scheduled_count(tenant, policy)
                for tenant in TENANTS for policy in POLICY_LOCATORS
            ),
            "socotra_failed_scheduled_events": sum(self.failed_jobs.values()),
        }

    def locator(self, milliseconds: int, *key: t.Any) -> str:
        """A ULID of that time whose random part is fixed by `key`."""
        return ulid.encode(milliseconds, int(self.digest(*key)[:20], 16))

    def regular_ms(self, tenant: str, index: int) -> int:
        return ulid.milliseconds(self.time_of(index)) + self.offset_ms[tenant]

    def regular_key(self, tenant: str, index: int) -> Key:
        moment = self.regular_ms(tenant, index)
        return moment, self.locator(moment, "event", tenant, index)

    def newest_ms(self, tenant: str) -> int:
        candidates = [entry[0] for entry in self.late[tenant][-1:]]
        if self.regular[tenant]:
            candidates.append(self.regular_ms(tenant, self.regular[tenant] - 1))
        return max(candidates, default=ulid.milliseconds(self.epoch))

    def event(self, tenant: str, key: Key, *source: t.Any) -> dict[str, t.Any]:
        rng = self.rng(*source)
        moment, locator = key
        event_type = EVENT_TYPES[rng.randrange(len(EVENT_TYPES))]
        policy = self.locator(moment - 86_400_000, "policy", tenant, rng.randrange(50))
        entity = self.locator(moment - 1, "entity", *source)
        data: dict[str, t.Any]
        if event_type.startswith("policy.account"):
            data = {"accountLocator": entity}
        elif event_type.startswith("policy.quote"):
            data = {"quoteLocator": entity}
        elif event_type == "policy.status.update":
            data = {"policyLocator": policy,
                    "newStatuses": {"listCompleted": True, "items": ["onRisk"]},
                    "removedStatuses": {"listCompleted": True, "items": ["pending"]}}
        elif event_type.startswith("policy."):
            data = {"policyLocator": policy, "transactionLocator": entity}
        elif event_type == "billing.invoice.generate":
            data = {"invoiceLocator": entity, "accountLocator": policy,
                    "invoiceType": "normal", "generateTime": iso_ms(moment - 77),
                    "policyLocators": {"listCompleted": True, "items": [policy]}}
        elif event_type.startswith("billing."):
            data = {f"{event_type.split('.')[1]}Locator": entity,
                    "policyLocators": {"listCompleted": rng.random() < 0.8,
                                       "items": [policy]}}
        elif event_type == "document.ready":
            data = {"documentLocator": entity, "referenceType": "policy",
                    "referenceLocator": policy}
        else:
            data = {"note": "custom plugin event", "score": rng.randrange(100)}
        return {
            "locator": locator,
            "userLocator": USERS[rng.randrange(len(USERS))],
            "requestId": self.locator(moment - rng.randrange(1, 900), "request", *source),
            "timestamp": iso_ms(moment),
            "type": event_type,
            "data": data,
        }

    def page(self, tenant: str, after: Key, end_ms: int | None, event_type: str | None,
             size: int) -> tuple[list[dict], Key, tuple | None]:
        """Up to `size` events ordered after `after`, merging regular and late events;
        then the key and the generator arguments of the last one."""
        count, late = self.regular[tenant], self.late[tenant]
        base = self.regular_ms(tenant, 0)
        index = max(0, -(-(after[0] - base) // (1000 * EVENT_SPACING_SECONDS)))
        if index < count and self.regular_key(tenant, index) <= after:
            index += 1
        late_index = bisect.bisect_right(late, after, key=lambda entry: entry[:2])
        events: list[dict] = []
        last_source = None
        while len(events) < size:
            regular = self.regular_key(tenant, index) if index < count else None
            pending = late[late_index] if late_index < len(late) else None
            if regular is None and pending is None:
                break
            if pending is None or (regular is not None and regular < pending[:2]):
                key, source = regular, ("event", tenant, index)
                index += 1
            else:
                key, source = pending[:2], ("late", tenant, pending[2])
                late_index += 1
            if end_ms is not None and key[0] > end_ms:
                break
            event = self.event(tenant, key, *source)
            if event_type is None or event["type"] == event_type:
                events.append(event)
                after, last_source = key, source
        return events, after, last_source

    def scheduled_count(self, tenant: str, policy: str) -> int:
        return 2 + self.rng("schedules", tenant, policy).randrange(5)

    # ----------------------------------------------------------------- endpoints

    def error(self, status: int, code: str, message: str) -> Response:
        return json_response({
            "timestamp": iso_ms(ulid.milliseconds(datetime.datetime.now(datetime.UTC))),
            "status": status, "error": HTTPStatus(status).phrase, "message": message,
        }, status)

    def denied(self, request: Request, tenant: str) -> Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token not in (TOKEN, TOKEN_WITHOUT_EVENTS):
            return self.error(401, "unauthorized", "Invalid or expired token")
        if token == TOKEN_WITHOUT_EVENTS:
            return self.error(403, "forbidden", "Missing permission events.list")
        if tenant not in TENANTS:
            return self.error(403, "forbidden", f"No access to tenant {tenant}")
        return None

    def events_list(self, request: Request, tenant: str) -> Response:
        denied = self.denied(request, tenant)
        if denied:
            return denied
        args = request.args
        token = args.get("pagingToken")
        if token is not None:
            others = sorted(set(args) - {"pagingToken"})
            if others:
                return self.error(400, "bad_request", "pagingToken cannot be combined with "
                                  f"other parameters (got {', '.join(others)})")
            try:
                cursor = orjson.loads(base64.urlsafe_b64decode(token.encode()))
                after, end_ms = (int(cursor["after"][0]), str(cursor["after"][1])), cursor["end"]
                event_type, size, previous = cursor["type"], int(cursor["size"]), cursor["src"]
            except (ValueError, KeyError, TypeError, IndexError):
                return self.error(400, "bad_request", "Invalid pagingToken")
        else:
            try:
                start, end = (parse_time(args.get(name))
                              for name in ("startTimestamp", "endTimestamp"))
                size = int(args.get("pageSize", DEFAULT_PAGE_SIZE))
            except ValueError as error:
                return self.error(400, "bad_request", f"Invalid parameter: {error}")
            if start is None and end is None:
                return self.error(400, "bad_request",
                                  "startTimestamp or endTimestamp is required")
            if not 1 <= size <= MAX_PAGE_SIZE:
                return self.error(400, "bad_request",
                                  f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
            after = (ulid.milliseconds(start), "") if start else (-1, "")
            end_ms = ulid.milliseconds(end) if end else None
            event_type, previous = args.get("type"), None
        with self.lock:
            events, last, source = self.page(tenant, after, end_ms, event_type, size)
        if self.repeat_last and events and previous:
            events.insert(0, self.event(tenant, after, *previous))
        cursor = {"after": list(last), "end": end_ms, "type": event_type, "size": size,
                  "src": source or previous}
        paging_token = base64.urlsafe_b64encode(orjson.dumps(cursor)).decode()
        return json_response({"pagingToken": paging_token, "events": events})

    def scheduled_policy(self, request: Request, tenant: str, policy: str) -> Response:
        denied = self.denied(request, tenant)
        if denied:
            return denied
        if not ulid.is_ulid(policy):
            return self.error(404, "not_found", f"Policy {policy} not found")
        rng = self.rng("schedules", tenant, policy)
        anchor = ulid.milliseconds(self.epoch) + 90 * 86_400_000
        return json_response([
            {
                "policyLocator": policy,
                "transactionLocator": self.locator(anchor, "txn", tenant, policy, number),
                "customEventId": CUSTOM_EVENT_IDS[number % len(CUSTOM_EVENT_IDS)],
                "nextEventTime": iso_ms(anchor + rng.randrange(1, 10**9)),
                "triggerState": TRIGGER_STATES[rng.randrange(len(TRIGGER_STATES))],
            }
            for number in range(self.scheduled_count(tenant, policy))
        ])

    def failed_list(self, request: Request, tenant: str) -> Response:
        denied = self.denied(request, tenant)
        if denied:
            return denied
        try:
            offset = int(request.args.get("offset", 0))
            count = int(request.args.get("count", DEFAULT_PAGE_SIZE))
        except ValueError:
            return self.error(400, "bad_request", "offset and count must be integers")
        if offset < 0 or not 1 <= count <= MAX_PAGE_SIZE:
            return self.error(400, "bad_request",
                              f"offset must be >= 0 and count between 1 and {MAX_PAGE_SIZE}")
        total = self.failed_jobs[tenant]
        return json_response([self.failed_job(tenant, number)
                              for number in range(offset, min(total, offset + count))])

    def failed_job(self, tenant: str, number: int) -> dict[str, t.Any]:
        rng = self.rng("failed", tenant, number)
        created = ulid.milliseconds(self.time_of(number * 7))
        group = "policy" if rng.random() < 0.7 else "tenant"
        return {
            "triggerName": f"{group}-{self.digest('trigger', tenant, number)[:20]}",
            "triggerGroup": group,
            "failedJobState": "queued" if rng.random() < 0.6 else "quit",
            "failureCount": rng.randrange(1, 6),
            "createdAt": iso_ms(created),
            "updatedAt": iso_ms(created + rng.randrange(1000, 3_600_000)),
        }

