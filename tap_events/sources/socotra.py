"""Socotra Insurance Suite (EC) events: the tenant event stream and two scheduled-event listings.

Facts this module relies on (../shared/apis/socotra.md):
- every path is per tenant, `/event/{tenantLocator}/...`, with a bearer personal access token;
- `GET /events/list` pages with an opaque `pagingToken` that Socotra refuses in combination
  with any other parameter: the first request sends only the filters, every later one only the
  token. Every response carries a token, so only an empty page means "caught up";
- events come in ascending `timestamp` order, but `timestamp` is the *completion* time of the
  call that made them: an event can appear behind events already read. Each run therefore
  re-reads `lookback_minutes` before the bookmark;
- the scheduled-policy and failed-job endpoints are snapshot lists, not streams: full table.
"""

from __future__ import annotations

import datetime
import re
import typing as t
import uuid
from http import HTTPStatus

from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.pagination import BaseAPIPaginator, OffsetPaginator, SinglePagePaginator

from tap_events.client import CursorStream, EventStream
from tap_events.errors import TapEventsError
from tap_events.http import page_body
from tap_events.source import Source

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    import requests
    from singer_sdk.helpers.types import Context


#: The tap-added field naming the tenant a record was read from; part of every primary key.
TENANT_FIELD = "tenant_locator"
#: `endTimestamp` is this far behind the run's start, so events of calls still completing
#: right now are left to the next run instead of racing this one.
END_LAG = datetime.timedelta(seconds=60)

# ------------------------------------------------------------------------------ settings

SETTINGS = (
    th.Property("api_url", th.StringType,
                description="Socotra EC API base URL, e.g. https://api-ec-sandbox.socotra.com "
                "(required: production hosts are per customer)."),
    th.Property("token", th.StringType, secret=True,
                description="Personal access token (SOCP_…) with the `events` read and list "
                "permissions on every tenant below."),
    th.Property("tenant_locators", th.ArrayType(th.StringType),
                description="Tenant locators (UUIDs) to read; at least one."),
    th.Property("event_type", th.StringType,
                description="Only events of this one type, e.g. policy.account.create."),
    th.Property("page_size", th.IntegerType(minimum=1), default=100,
                description="Events per page of `socotra_events` (`pageSize`) and failed jobs "
                "per page of `socotra_failed_scheduled_events` (`count`)."),
    th.Property("lookback_minutes", th.IntegerType(minimum=0, maximum=10080), default=10,
                description="Each run re-reads this many minutes before the bookmark to catch "
                "events of slow calls, stamped with their completion time. Must exceed the "
                "longest API call whose events you need."),
    th.Property("policy_locators", th.ArrayType(th.StringType),
                description="Policies whose scheduled events `socotra_scheduled_policy_events` "
                "reads, in every tenant. The stream is skipped when none are listed."),
)

# ------------------------------------------------------------------------------ schema

TENANT = th.Property(TENANT_FIELD, th.StringType, required=True,
                     description="Added by the tap: the tenant the record was read from.")

EVENT_SCHEMA = th.PropertiesList(
    TENANT,
    th.Property("locator", th.StringType, required=True, description="The event's ULID."),
    th.Property("userLocator", th.StringType),
    th.Property("requestId", th.StringType,
                description="The API request that made the event (many events per request)."),
    th.Property("timestamp", th.DateTimeType, required=True,
                description="Completion time of the call that made the event."),
    th.Property("type", th.StringType),
    th.Property("data", th.ObjectType(additional_properties=True),
                description="Type-specific payload, kept as the API sent it."),
    additional_properties=True,
).to_dict()

SCHEDULED_POLICY_EVENT_SCHEMA = th.PropertiesList(
    TENANT,
    th.Property("policyLocator", th.StringType, required=True),
    th.Property("transactionLocator", th.StringType, required=True),
    th.Property("customEventId", th.StringType, required=True),
    th.Property("nextEventTime", th.DateTimeType),
    th.Property("triggerState", th.StringType,
                description="NONE, NORMAL, PAUSED, COMPLETE, ERROR or BLOCKED."),
    additional_properties=True,
).to_dict()

FAILED_JOB_SCHEMA = th.PropertiesList(
    TENANT,
    th.Property("triggerGroup", th.StringType, required=True),
    th.Property("triggerName", th.StringType, required=True),
    th.Property("failedJobState", th.StringType, description="queued or quit."),
    th.Property("failureCount", th.IntegerType),
    th.Property("createdAt", th.DateTimeType),
    th.Property("updatedAt", th.DateTimeType),
    additional_properties=True,
).to_dict()


def socotra_time(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as Socotra writes it: 2025-07-18T00:00:00.000Z."""
    utc = moment.astimezone(datetime.UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_uuid(value: t.Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ streams


class SocotraStream(EventStream):
    """What every Socotra endpoint shares: settings checks, one partition per tenant."""

    # A listing paged by offset repeats a row when the list shifts between two pages; the
    # event stream repeats events across its lookback. Either way: once per run.

    error_hints: t.ClassVar[Mapping[int, str]] = {
        HTTPStatus.UNAUTHORIZED: "check socotra.token: a valid, unexpired personal "
        "access token",
        HTTPStatus.FORBIDDEN: "check that socotra.token has the events read and list "
        "permissions and that the tenant is one of the token's tenants",
        HTTPStatus.NOT_FOUND: "check socotra.api_url, socotra.tenant_locators and "
        "socotra.policy_locators",
        HTTPStatus.BAD_REQUEST: "check socotra.event_type, socotra.page_size and "
        "start_date",
    }

    @property
    def tenants(self) -> list[str]:
        return [str(tenant) for tenant in self.settings.get("tenant_locators") or []]

    @property
    def partitions(self) -> list[dict]:
        """One partition, and so one bookmark, per tenant."""
        return [{TENANT_FIELD: tenant} for tenant in self.tenants]

    def check_settings(self) -> None:
        """Fail in one line naming the setting, before the first request."""
        problem = None
        if not self.settings.get("api_url"):
            problem = "socotra.api_url is not set (e.g. https://api-ec-sandbox.socotra.com)"
        elif not self.tenants:
            problem = "socotra.tenant_locators lists no tenant; give at least one tenant UUID"
        else:
            wrong = [tenant for tenant in self.tenants if not is_uuid(tenant)]
            if wrong:
                problem = f"socotra.tenant_locators: {wrong[0]!r} is not a tenant UUID"
        if problem:
            raise TapEventsError(self.error_prefix + problem)

    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        self.check_settings()
        yield from super().get_records(context)

    def api_error_text(self, response: requests.Response) -> str:
        """The API's message plus the tenant, since each tenant has its own permissions."""
        text = super().api_error_text(response)
        found = re.search(r"/event/([^/?]+)/", response.request.path_url or "")
        return f"{text} [tenant {found.group(1)}]" if found else text

    def parse_page(self, body: t.Any, response: requests.Response) -> t.Iterable[dict]:
        """The scheduled and failed listings answer bare JSON arrays."""
        if not isinstance(body, list):
            raise TapEventsError(
                f"{self.error_prefix}expected a JSON array, got {type(body).__name__} "
                "(check socotra.api_url)", response,
            )
        yield from body

    def complete(self, row: dict, context: Context | None) -> dict:
        row[TENANT_FIELD] = (context or {})[TENANT_FIELD]
        return row


class PagingTokenPaginator(BaseAPIPaginator[str | None]):
    """Follows `pagingToken`; every page has one, so only an empty page ends the run."""

    def has_more(self, response: requests.Response) -> bool:
        return bool(page_body(response).get("events"))

    def get_next(self, response: requests.Response) -> str | None:
        return page_body(response).get("pagingToken") or None


class SocotraEventsStream(SocotraStream, CursorStream):
    """`socotra_events`: the tenant event stream, incremental on `timestamp` per tenant.

    Pages arrive in ascending `timestamp`, so the bookmark is the timestamp of the last
    emitted event (`is_sorted`), and a STATE between pages is a safe resume point: the next
    run asks from there minus the lookback, which re-reads any event sharing that timestamp.

    The bookmark itself is never lowered by the lookback, only the request: a lowered
    bookmark would slide back a further lookback on every run that finds nothing new.
    Within a run the bookmark may dip while the overlap is re-read (the events there are
    older than it, hence `check_sorted = False`); it never points past an unemitted event.
    """

    name = "socotra_events"
    path = "/event/{tenant_locator}/events/list"
    primary_keys: t.ClassVar[list[str]] = [TENANT_FIELD, "locator"]
    schema = EVENT_SCHEMA
    replication_key = "timestamp"
    envelope_key = "events"
    # One closed window per run, the same for every tenant and page.
    window_lag = END_LAG

    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        start = self.window_start(context)
        if start is not None and start >= self.window_end:
            self.logger.info(
                "%s: tenant %s: nothing to read before %s (start %s)", self.name,
                (context or {}).get(TENANT_FIELD), socotra_time(self.window_end),
                socotra_time(start),
            )
            return
        yield from super().get_records(context)

    def get_new_paginator(self) -> PagingTokenPaginator:
        return PagingTokenPaginator(start_value=None)

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        if next_page_token:
            # Socotra rejects the token combined with any other parameter; the token
            # carries the filters of the first request.
            return {"pagingToken": next_page_token}
        params: dict[str, t.Any] = {
            "endTimestamp": socotra_time(self.window_end),
            "pageSize": self.settings["page_size"],
        }
        start = self.window_start(context)
        if start is not None:
            params["startTimestamp"] = socotra_time(start)
        if self.settings.get("event_type"):
            params["type"] = self.settings["event_type"]
        return params

    def parse_page(self, body: dict, response: requests.Response) -> t.Iterable[dict]:
        yield from body.get("events") or []


class SocotraScheduledPolicyEventsStream(SocotraStream):
    """`socotra_scheduled_policy_events`: scheduled events of each configured policy."""

    name = "socotra_scheduled_policy_events"
    path = "/event/{tenant_locator}/events/schedules/policy/{policyLocator}"
    primary_keys: t.ClassVar[list[str]] = [
        TENANT_FIELD, "policyLocator", "transactionLocator", "customEventId",
    ]
    schema = SCHEDULED_POLICY_EVENT_SCHEMA

    @property
    def policies(self) -> list[str]:
        return [str(policy) for policy in self.settings.get("policy_locators") or []]

    @property
    def partitions(self) -> list[dict]:
        """Every configured policy in every tenant."""
        return [
            {**tenant, "policyLocator": policy}
            for tenant in super().partitions
            for policy in self.policies
        ]

    # @final in singer-sdk's annotations: wraps `EventStream.sync` (see there).
    def sync(self, context: Context | None = None) -> None:  # type: ignore[misc]
        if self.source.is_configured(self.config) and not self.policies:
            self.logger.info("Skipping stream '%s': socotra.policy_locators is empty.",
                             self.name)
            return
        super().sync(context)

    def get_new_paginator(self) -> SinglePagePaginator:
        return SinglePagePaginator()


class FailedJobsPaginator(OffsetPaginator):
    """`offset`/`count` paging; a page shorter than `count` is the last one."""

    def has_more(self, response: requests.Response) -> bool:
        return len(page_body(response) or []) >= self.page_size


class SocotraFailedScheduledEventsStream(SocotraStream):
    """`socotra_failed_scheduled_events`: the tenant-wide list of failed scheduled jobs."""

    name = "socotra_failed_scheduled_events"
    path = "/event/{tenant_locator}/events/schedules/failed/list"
    primary_keys: t.ClassVar[list[str]] = [TENANT_FIELD, "triggerGroup", "triggerName"]
    schema = FAILED_JOB_SCHEMA

    def get_new_paginator(self) -> FailedJobsPaginator:
        return FailedJobsPaginator(start_value=0, page_size=self.settings["page_size"])

    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict:
        return {"offset": next_page_token or 0, "count": self.settings["page_size"]}


SOURCE = Source(
    name="socotra",
    label="Socotra",
    properties=SETTINGS,
    authenticator=lambda settings, http: BearerTokenAuthenticator(token=settings["token"]),
    # api_url and tenant_locators are checked when the streams start, so a token without
    # them is a loud error rather than a silently skipped API.
    credential_sets=(("token",),),
    streams=(
        SocotraEventsStream,
        SocotraScheduledPolicyEventsStream,
        SocotraFailedScheduledEventsStream,
    ),
)
