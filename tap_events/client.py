"""The stream base: what every endpoint of every API shares, so API modules only declare.

An API module subclasses `EventStream` (or `CursorStream`) once per endpoint and declares its
path, schema, key, cursor and paginator; this base owns the rest: settings, auth (the
`Source`'s factory, one per API per run), requests through the API's `HttpClient`
(tap_events/http.py), the page loop with prefetch, in-run dedupe on the key, the `start_date`
filter, the per-run window, retention checks, checkpoints and one-line failures. Private SDK
members are used only through tap_events/sdk_internals.py.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import time
import typing as t
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from http import HTTPStatus

import requests
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import SinglePagePaginator
from singer_sdk.streams.rest import PageContext

from tap_events import retention, sdk_internals, threads
from tap_events.errors import TapEventsError, describe_failure, prefix, shape, subject
from tap_events.http import DeadlineExceeded, decode, page_body
from tap_events.oauth import ClientCredentials
from tap_events.timestamps import UtcTimestamps

if t.TYPE_CHECKING:
    from requests import Session
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context
    from singer_sdk.pagination import BaseAPIPaginator

    from tap_events.http import HttpClient, Timeout
    from tap_events.run import RunContext
    from tap_events.source import Auth, Source
    from tap_events.tail import TailRun

#: The SDK's own log line for a failing stream, which `EventStream.sync` replaces by one line
#: naming the cause (see `EventStream.log`).
SDK_FAILURE_LINE = "An unhandled error occurred while syncing"


class EventStream(sdk_internals.FastRecordPath):
    """Base class for one endpoint of one API."""

    #: The setting (under the API's key) the stream's URL comes from; errors name it.
    url_setting: t.ClassVar[str] = "api_url"

    #: What to check for an HTTP status, per API: {401: "check box.access_token"}.
    error_hints: t.ClassVar[t.Mapping[int, str]] = {}

    #: Drop records whose primary key was already emitted in this run. On by default: every
    #: API here resends events (at-least-once feeds, lookback overlaps, repeated pages).
    dedupe: t.ClassVar[bool] = True
    #: Events remembered per run to drop the repeats at-least-once feeds send. Bounded so
    #: memory stays flat however long the run; repeats arrive close together.
    DEDUPE_WINDOW = 50_000

    #: The record field compared with `start_date`, for APIs that cannot filter by time
    #: themselves: an ISO 8601 date-time, or an integer of epoch milliseconds.
    start_date_field: t.ClassVar[str | None] = None

    #: Streams reading one closed time window per run (`window_end`): how far behind "now"
    #: the window ends. None: no window.
    window_lag: t.ClassVar[datetime.timedelta | None] = None

    #: How long the API keeps events, when it documents a limit. A bookmark older than this
    #: means events were purged before the tap read them (see `check_retention`).
    retention: t.ClassVar[datetime.timedelta | None] = None

    #: False for streaming bodies (SSE), which must not be read up front.
    expects_json: t.ClassVar[bool] = True

    # Records are JSON from the API and the schemas are complete (tests/test_schemas.py checks
    # every emitted record against its schema), so the SDK's recursive per-field type
    # conformance, a third of its per-record cost, has nothing to fix.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: The tail phase this stream is listening in (tap_events/tail.py); None in a batch run.
    tail: TailRun | None = None

    def __init__(self, tap: Tap, *, source: Source, run: RunContext) -> None:
        #: The API this stream reads (plain data: the tap hands it over).
        self.source = source
        #: What this run's streams share (config, secrets, HTTP, auth, failures).
        self.run = run
        super().__init__(tap)
        self._seen_ids: OrderedDict[t.Hashable, None] = OrderedDict()
        self._pages_done = 0
        #: Retention gaps found this run, reported as a failure once data and state are out.
        self._gaps: list[str] = []
        #: Partitions that failed this run, each with its one-line reason (`get_records`).
        self._partition_failures: list[str] = []
        #: Seconds spent in finished syncs this run (a tailing stream syncs again and again).
        self._synced_seconds = 0.0
        #: When the sync in progress started (monotonic), if one is.
        self._sync_started: float | None = None
        self._extracted_at = sdk_internals.utc_now()
        self._extracted_until = 0.0
        if self.window_lag is not None:
            self.window_end = self.window_now()

    @classmethod
    def for_settings(cls, settings: t.Mapping[str, t.Any]) -> type[EventStream]:
        """The class to build for these API settings: a stream whose feed is chosen by a
        setting names one class per feed here (the public stream name stays the same)."""
        return cls

    def apply_catalog(self, catalog: t.Any) -> None:
        """Selection from the catalog; the replication key from the stream itself.

        The SDK also takes the replication key from the catalog, which may have been
        discovered under another feed setting (`box.enterprise_stream_type`): bookmarking
        `created_at` on a feed paged by position writes a bookmark the API refuses.
        """
        super().apply_catalog(catalog)
        declared: t.Any = type(self).replication_key
        # A stream without a key of its own inherits the SDK's property: none.
        self.replication_key = None if isinstance(declared, property) else declared

    # ----------------------------------------------------------------- settings

    @property
    def settings(self) -> dict[str, t.Any]:
        """This stream's API settings (`config[source.name]` with defaults)."""
        return self.source.settings(self.config)

    def setting_name(self, key: str) -> str:
        """`box.api_url`: how a setting is named in errors."""
        return f"{self.source.name}.{key}"

    @property
    def url_base(self) -> str:
        return str(self.settings[self.url_setting]).rstrip("/")

    @property
    def http(self) -> HttpClient:
        """The API's HTTP client for this run, shared by its streams."""
        return self.run.http(self.source)

    @property
    def requests_session(self) -> Session:
        """The API's session: the SDK builds page requests on it (`build_prepared_request`)."""
        return self.http.session

    @property
    def authenticator(self) -> Auth:
        """The API's authenticator, chosen by its `Source` and shared by its streams."""
        return self.run.auth(self.source)

    @property
    def timeout(self) -> Timeout:  # type: ignore[override]
        """``(connect, read)`` seconds; the read timeout is `request_timeout_seconds`."""
        return self.http.timeout()

    @property
    def secrets(self) -> list[str]:
        """Every secret value this run knows of, for redaction."""
        return self.run.secrets

    @property
    def record_writer(self) -> t.Any:
        return self.run.writer

    @property
    def error_prefix(self) -> str:
        """`Box stream 'box_events': `, the start of every message about this stream."""
        return prefix(self.source.label, self.name)

    # ----------------------------------------------------------------- sync

    # `Stream.sync` is @final in singer-sdk's annotations; this override wraps it (calls it
    # through super()) and adds only what happens around a stream's sync.
    def sync(self, context: Context | None = None) -> None:  # type: ignore[misc]
        """Skip an API without credentials; report a failure in one line and go on.

        The tap exits non-zero at the end when any stream failed (`TapEvents.sync_all`).
        """
        if not self.source.is_configured(self.config):
            return  # said once per API by the tap (`TapEvents.log_unconfigured_apis`)
        if self.tail is not None and self.window_lag is not None:
            # Each poll of a tail run reads a new window, up to the time of that poll.
            self.window_end = self.window_now()
        started = self._sync_started = time.monotonic()
        failures: list[str] = []
        try:
            super().sync(context)
        except Exception as error:
            # A request cut by the tail's end is the normal end of a tail run.
            if not (isinstance(error, DeadlineExceeded) and self.tail is not None
                    and self.tail.over):
                message = self.describe_failure(error)
                self.logger.error("%s", message)
                self.logger.debug("Traceback for '%s'", self.name, exc_info=True)
                failures.append(message)
            # The bookmark in memory covers only records already written, so it is safe to
            # hand to the target: the next run resumes here instead of re-reading the page.
            self.checkpoint()
        self._synced_seconds += time.monotonic() - started
        self._sync_started = None
        # A gap was logged when found; it fails the run only now, after what exists was loaded.
        failures += self._partition_failures + self._gaps
        if failures:
            self.run.record_failure(self.name, "; ".join(failures))

    @property
    def sync_seconds(self) -> float:
        """Seconds spent syncing this run, a sync in progress included (a run ended by a
        signal is summarized while its streams sync)."""
        running = self._sync_started
        return self._synced_seconds + (0.0 if running is None else time.monotonic() - running)

    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        """Check the bookmark against the API's retention, then read as usual.

        Runs once the SDK has loaded the bookmark for this partition. In the tail phase the
        stream has caught up already: its records are the new events it listens for.
        """
        if self.tail is not None:
            yield from self.tail_records(context)
            return
        self.check_retention(context)
        if context is None:
            yield from super().get_records(context)
            return
        # One partition (a Socotra tenant) failing does not stop the others: it is one line
        # naming it, its bookmark keeps what was emitted, and the run ends non-zero.
        try:
            yield from super().get_records(context)
        except Exception as error:  # reported in one line; the run fails at its end
            self._partition_failures.append(self.partition_failure(error, context))

    def partition_failure(self, error: Exception, context: Context) -> str:
        """One line for a failed partition, naming it; logged now."""
        message = self.describe_failure(error)
        label = ", ".join(f"{key} {value}" for key, value in context.items())
        if not all(str(value) in message for value in context.values()):
            message = f"{message} [{label}]"
        self.logger.error("%s", message)
        self.logger.debug("Traceback for '%s' [%s]", self.name, label, exc_info=True)
        return message

    def tail_records(self, context: Context | None) -> t.Iterable[dict]:
        """New events while tailing (tap_events/tail.py).

        By default one normal incremental read: the tail syncs such a stream again every
        `tail_poll_seconds`. API modules with a push channel (a long poll, an open stream)
        override this to listen until the tail's deadline.
        """
        return self.request_records(context)

    @cached_property
    def start_date(self) -> datetime.datetime | None:
        """`start_date` as an aware datetime (the tap refuses one without a UTC offset)."""
        value = self.config.get("start_date")
        if not value:
            return None
        moment = datetime.datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)

    def window_start(self, context: Context | None) -> datetime.datetime | None:
        """Where a windowed read starts: the bookmark minus `lookback_minutes` (for APIs that
        index events late), never before `start_date`; None reads everything.

        The SDK's starting timestamp is the later of the bookmark and `start_date` (just
        `start_date` on a first run), so subtracting the lookback and flooring at
        `start_date` covers every case. The bookmark itself is never lowered, only the
        request: the overlap is dropped within a run (`dedupe`) and upserted by the target
        across runs.
        """
        starting = self.get_starting_timestamp(context)
        if starting is None:
            return None
        start = starting - datetime.timedelta(minutes=self.settings.get("lookback_minutes", 0))
        if self.start_date and start < self.start_date:
            return self.start_date
        return start

    def window_now(self) -> datetime.datetime:
        """The end of a window starting now: `window_lag` ago, in whole seconds."""
        lag = self.window_lag or datetime.timedelta(0)
        return (datetime.datetime.now(datetime.UTC) - lag).replace(microsecond=0)

    # ----------------------------------------------------------------- retention

    def bookmark(self, context: Context | None) -> t.Any | None:
        """The bookmark from state, or None on a first run.

        With no bookmark the SDK hands back the `start_date` string, whatever the key's type.
        """
        value = self.get_starting_replication_key_value(context)
        return None if value in (None, "", self.config.get("start_date")) else value

    def parsed_bookmark(self, context: Context | None, parse: t.Callable[[str], t.Any],
                        expected: str) -> t.Any | None:
        """The bookmark read by `parse`, None on a first run; a bookmark `parse` refuses
        (ValueError) is one clear error naming what was `expected`."""
        value = self.bookmark(context)
        if value is None:
            return None
        try:
            return parse(str(value))
        except ValueError:
            raise TapEventsError(
                f"{self.error_prefix}the state bookmark {value!r} is not {expected}; fix or "
                "remove it in the state"
            ) from None

    #: What a bookmark of this stream looks like, for errors (`parse_bookmark`).
    bookmark_kind: t.ClassVar[str] = "an ISO 8601 date-time with a UTC offset"

    def parse_bookmark(self, value: t.Any) -> t.Any:
        """A bookmark value as the stream compares it; ValueError when it is not one.

        The one judge of a bookmark, used when it is written (`may_bookmark`) and when it
        is read from the state (`state_problems`): what one refuses, the other never wrote.
        This default reads a date-time replication key; cursor streams override it.
        """
        if not self.is_timestamp_replication_key:
            return value
        if not isinstance(value, str):
            raise ValueError(value)
        moment = datetime.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(value)
        return moment

    def bookmark_bound(self, context: Context | None) -> t.Any | None:
        """The greatest bookmark this run may write (parsed), or None for no bound.

        Date-time bookmarks stop at the run's window end, else at the run's start: an event
        stamped in the future is emitted, but the bookmark stays behind it, so the next run
        still reads what arrives meanwhile.
        """
        if not self.is_timestamp_replication_key:
            return None
        if self.window_lag is not None:
            return self.window_end
        return self.run_started

    @property
    def run_started(self) -> datetime.datetime:
        """When this run started; while tailing (events arrive as the tail listens), now."""
        if self.tail is not None:
            return datetime.datetime.now(datetime.UTC)
        return self.run.started

    #: Values this far past the bound are named in a warning (closer ones are events of the
    #: run itself, which the next run simply reads again).
    FUTURE_WARNING = datetime.timedelta(minutes=1)

    def may_bookmark(self, record: dict, context: Context | None) -> bool:
        """Whether `record` may move the bookmark (called before the SDK moves it).

        A value the next run would refuse fails the stream now, in one line naming the
        field; a value past the run's upper bound is emitted without moving the bookmark.
        """
        key = t.cast("str", self.replication_key)
        value = record.get(key)
        if value is None:
            return False
        try:
            parsed = self.parse_bookmark(value)
        except (TypeError, ValueError):
            raise TapEventsError(
                f"{self.error_prefix}an event whose '{key}' is {value!r}, which is not "
                f"{self.bookmark_kind}: it cannot be bookmarked (the next run would refuse "
                f"it); event {str(record)[:120]}"
            ) from None
        bound = self.bookmark_bound(context)
        if bound is None or not self.past(parsed, bound):
            return True
        if self.past(parsed, bound, by=self.FUTURE_WARNING):
            self.logger.warning(
                "%sevent %s has '%s' %r (%s), past this run's upper bound %s: emitted, but "
                "the bookmark stays before it", self.error_prefix, self.key_of(record), key,
                value, self.time_of(parsed).isoformat(), self.time_of(bound).isoformat())
        return False

    def time_of(self, parsed: t.Any) -> datetime.datetime:
        """The time a parsed bookmark stands for (for log lines)."""
        return parsed

    @staticmethod
    def past(value: t.Any, bound: t.Any, by: datetime.timedelta = datetime.timedelta(0)
             ) -> bool:
        """Whether a parsed bookmark lies past `bound` (by more than `by`)."""
        return bool(value > bound + by)

    def state_problems(self, state: t.Any) -> list[str]:
        """What is wrong with this stream's entry in the state (read before any request).

        A bookmark of another replication key (a feed switched by a setting) does not fit
        and is dropped with one line: the stream starts as on a first run. A malformed one is
        an error: never a silent restart from the beginning.
        """
        entries = [state]
        if isinstance(state, dict) and "partitions" in state:
            partitions = state["partitions"]
            if not isinstance(partitions, list):
                return [f"{self.error_prefix}the state's 'partitions' is {shape(partitions)}, "
                        "not a list; fix or remove this stream's entry in the state"]
            entries = [state, *partitions]
        problems = []
        for entry in entries:
            if not isinstance(entry, dict):
                problems.append(f"{self.error_prefix}the state holds {shape(entry)} "
                                f"{str(entry)[:80]!r} where a bookmark object belongs; fix or "
                                "remove this stream's entry in the state")
                continue
            value = entry.get("replication_key_value")
            if value is None:
                continue
            key = entry.get("replication_key")
            if key != self.replication_key:
                self.logger.warning(
                    "%sthe state's bookmark %s=%r does not fit this feed, which bookmarks "
                    "'%s' (a setting changed the feed): starting as on a first run",
                    self.error_prefix, key, value, self.replication_key)
                entry.pop("replication_key_value", None)
                entry.pop("replication_key", None)
                continue
            try:
                self.parse_bookmark(value)
            except (TypeError, ValueError):
                problems.append(
                    f"{self.error_prefix}the state bookmark {key}={shown(value)} is not "
                    f"{self.bookmark_kind}; fix or remove it in the state")
        return problems

    def bookmark_time(self, context: Context | None) -> datetime.datetime | None:
        """When the last event already loaded was recorded; None on a first run.

        This default reads a date-time replication key; streams whose bookmark is a cursor
        override it.
        """
        if not self.replication_key or not self.is_timestamp_replication_key:
            return None
        value = self.bookmark(context)
        if value is None:
            return None
        moment = datetime.datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)

    def check_retention(self, context: Context | None) -> None:
        """Name a gap when the bookmark is older than the API keeps events.

        The run goes on and loads what still exists; unless `<api>.allow_gap` acknowledges
        it, the gap fails the run at the end (`sync`), so a scheduler alerts.
        """
        since = self.bookmark_time(context) if self.retention is not None else None
        if since is None or self.retention is None:
            return
        report = retention.gap_report(
            label=self.source.label, stream=self.name, api=self.source.name,
            since=since, retention=self.retention,
            acknowledged=bool(self.settings.get(retention.ALLOW_GAP_SETTING.name)),
        )
        if report is None:
            return
        self.logger.log(report.level, "%s", report.message)
        if report.is_gap:
            self._gaps.append(report.message)

    def log(self, message: str, *args: t.Any, level: int = logging.INFO, **kwargs: t.Any) -> None:
        """The SDK's logging hook, minus its own line for a failed stream.

        `Stream.sync` logs "An unhandled error occurred while syncing ..." before re-raising;
        `sync` here logs the cause in one line instead, so that line is kept for debug output.
        """
        if message.startswith(SDK_FAILURE_LINE):
            level = logging.DEBUG
        super().log(message, *args, level=level, **kwargs)

    def describe_failure(self, error: BaseException) -> str:
        """One line for a failure; stack traces only with --log-level debug."""
        return describe_failure(error, label=self.source.label, stream=self.name,
                                api=self.source.name, tries=self.backoff_max_tries(),
                                secrets=self.secrets)

    def checkpoint(self) -> None:
        """Emit STATE now, so a run killed later resumes from here.

        Called between pages, when every record of the previous page has been written and
        counted into the bookmark (it writes only when the state changed).
        """
        sdk_internals.write_state_message(self)

    # ----------------------------------------------------------------- requests

    def request_decorator(self, func: t.Callable) -> t.Callable:
        """The API's retrying request; while tailing, other streams write while it waits."""
        send = self.http.retrying(func, self)
        return send if self.tail is None else self.tail.unlocked(send)

    def send_page(self, prepared: requests.PreparedRequest, context: Context | None
                  ) -> requests.Response:
        """One try at one page: authenticate (a fresh token after a 401), send, classify."""
        response = self.http.request(self.authenticator(prepared),
                                  setting=self.setting_name(self.url_setting),
                                  timeout=self.timeout, stream=not self.expects_json,
                                  deadline=self.request_deadline)
        sdk_internals.log_request_duration(self, response, context)
        self.validate_response(response)
        return response

    @property
    def request_deadline(self) -> float | None:
        """Seconds a page's request may take in all (None: `HttpClient.request`'s default)."""
        return None

    def prepare_page(self, context: Context | None, paginator: BaseAPIPaginator
                     ) -> requests.PreparedRequest:
        """The next page's request, from the SDK's public `get_http_request`, not yet
        authenticated: `send_page` authenticates it inside the retry loop, so a token request
        gets the tap's retries (the SDK's `build_prepared_request` would mint the token here,
        outside them)."""
        request = self.get_http_request(
            page=PageContext(stream_context=context, next_page_token=paginator.current_value))
        body = "json" if self.payload_as_json else "data"
        headers = {"User-Agent": self.user_agent, **request.headers}
        # A request's own `auth` takes the place of the session's (set by the SDK).
        return self.requests_session.prepare_request(requests.Request(
            method=request.method, url=request.url, params=request.encode_params(),
            headers=headers, auth=unauthenticated, **{body: request.data}))

    # ----------------------------------------------------------------- paging

    #: Fetch the next page in the background while this one is written, when waiting for
    #: the API is a real share of a page's time. Off when the API answers faster than the tap
    #: writes: then the extra thread only contends for the GIL (see `worth_prefetching`).
    PREFETCH = True
    #: Prefetch once a page's round trip exceeds this share of the time spent writing a page.
    PREFETCH_MIN_WAIT_SHARE = 0.25

    def request_records(self, context: Context | None) -> t.Iterator[dict]:
        """The SDK's page loop (`RESTStream.request_records`), plus adaptive prefetch.

        Same order of events as the SDK's, and the same `http_request_count` metric: a page is
        parsed (and the previous page checkpointed) only after every record of the previous
        page was yielded; the run stops on the first page without records. What differs: the
        next page's request is prepared as soon as this page's token is known and, when worth
        it, sent from a worker thread while this page's records are written; and a cycle
        (`PageCycleGuard`) stops the stream instead of paging forever.
        """
        paginator = self.get_new_paginator() or SinglePagePaginator()
        send = self.request_decorator(self.send_page)
        guard = PageCycleGuard(self, paginator)

        def fetch(background: bool) -> requests.Response | Future:
            prepared = self.prepare_page(context, paginator)
            if not background:
                return send(prepared, context)
            with threads.signals_held():  # the pool starts its worker on the first submit
                return pool.submit(send, prepared, context)

        with (ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name) as pool,
              self.get_http_request_counter() as request_counter):
            request_counter.with_context(context)
            prefetch = False
            pending = fetch(background=False)
            while True:
                response = pending.result() if isinstance(pending, Future) else pending
                request_counter.increment()
                records = iter(guard.page(self.parse_response(response)))
                first = next(records, None)
                if first is None:
                    if not paginator.continue_if_empty(response):
                        return
                    if cycle := guard.advance(response):
                        raise cycle
                    pending = fetch(background=False)
                    continue
                # Early only when the page's token is known before its records are read
                # (JSON pages); streamed pages (SSE) learn their token by being read.
                early = prefetch
                cycle = guard.advance(response) if early else None
                if early and not paginator.finished and not cycle:
                    pending = fetch(background=True)
                started = time.perf_counter()
                yield first
                yield from records
                if not early:
                    cycle = guard.advance(response)
                if cycle:  # raised once this page's records are out
                    raise cycle
                if paginator.finished:
                    return
                prefetch = self.PREFETCH and self.worth_prefetching(
                    response.elapsed.total_seconds(), time.perf_counter() - started
                )
                if not early:
                    pending = fetch(background=False)

    def worth_prefetching(self, round_trip: float, writing: float) -> bool:
        return round_trip > self.PREFETCH_MIN_WAIT_SHARE * writing

    # ----------------------------------------------------------------- responses

    def parse_response(self, response: requests.Response) -> t.Iterable[dict]:
        """Checkpoint the previous page, then hand this page's decoded body to the API module.

        When the SDK asks for page N+1 every record of page N has been written and counted
        into the bookmark, so this is the moment a STATE is a safe resume point.
        """
        if self._pages_done:
            self.checkpoint()
        self._pages_done += 1
        # Streaming bodies (`expects_json = False`) have no decoded body: the module reads them.
        body = self.page_body(response) if self.expects_json else None
        for record in self.parse_page(body, response):
            # Before `post_process`, which may use the keys (dedupe); missing ones may be
            # added there (the tenant of a partition), so they are checked again after it.
            self.check_keys(record, present_only=True)
            yield record

    @staticmethod
    def page_body(response: requests.Response) -> t.Any:
        """The decoded JSON body of a page (paginators read it too: `http.page_body`)."""
        return page_body(response)

    def check_keys(self, record: t.Any, *, present_only: bool = False) -> None:
        """Refuse a record whose primary key is missing or of the wrong type, naming the stream.

        Records are otherwise passed on as the API sent them (per-record schema validation
        would cost more than the rest of the tap), but a broken key would make the target's
        upsert merge or drop rows, so it stops the stream instead.
        """
        if not isinstance(record, dict):
            raise TapEventsError(
                f"{self.error_prefix}the API sent an event that is not a JSON object: "
                f"{str(record)[:80]!r}"
            )
        for key, expected in self.key_types.items():
            if present_only and key not in record:
                continue
            value = record.get(key)
            if not isinstance(value, expected) or isinstance(value, bool) or value == "":
                raise TapEventsError(
                    f"{self.error_prefix}an event whose key '{key}' is {value!r}, not a "
                    f"{expected.__name__} (the API sent data that breaks the stream's "
                    f"schema): {str(record)[:120]}"
                )

    @cached_property
    def key_types(self) -> dict[str, type]:
        """Each primary key and the Python type its schema declares (`str` unless integer)."""
        properties = self.schema.get("properties", {})
        types: dict[str, type] = {}
        for key in self.primary_keys or ():
            declared = properties.get(key, {}).get("type", "string")
            declared = declared if isinstance(declared, list) else [declared]
            types[key] = int if "integer" in declared else str
        return types

    def parse_page(self, body: t.Any, response: requests.Response) -> t.Iterable[dict]:
        """The records of one decoded page, in API order."""
        raise NotImplementedError

    def validate_response(self, response: requests.Response) -> None:
        """Classify a response and decode its JSON body once (`HttpClient.check`), then
        refuse a page without the API's envelope.

        A gateway's error page or a JSON error sent with status 200 is no page of events:
        read as one it would look "caught up" (no events) and move the bookmark's time. It is
        retried like a garbled body; after the last try, the stream fails in one line.
        """
        setting = self.classify(response)
        problem = self.envelope_problem(response)
        if problem:
            raise RetriableAPIError(
                f"{self.error_prefix}HTTP {response.status_code} that is not a page of "
                f"events: {problem} (check {setting}, and any proxy between)", response)

    def classify(self, response: requests.Response) -> str:
        """Classify any answer of the API (a page, a long poll's wake-up) and decode its JSON
        body once (`HttpClient.check`); the URL setting it came from."""
        if response.status_code != HTTPStatus.UNAUTHORIZED:
            self.authenticated()
        setting = self.setting_name(self.url_setting)
        self.http.check(response, self, setting=setting, expects_json=self.expects_json)
        return setting

    #: The list of events in a page body (a JSON object), or None when the body is the list.
    envelope_key: t.ClassVar[str | None] = None

    def envelope_problem(self, response: requests.Response) -> str | None:
        """What is wrong with a successful answer's shape, or None when it is a page."""
        if not self.expects_json or response.request.method == "OPTIONS":
            return None
        body = self.page_body(response)
        if self.envelope_key is None:
            return None if isinstance(body, list) else f"{shape(body)} instead of a JSON array"
        if not isinstance(body, dict):
            return f"{shape(body)} instead of an object with an '{self.envelope_key}' list"
        if not isinstance(body.get(self.envelope_key), list):
            return (f"an object without an '{self.envelope_key}' list (keys: "
                    f"{', '.join(sorted(map(str, body))[:5]) or 'none'})")
        return None

    decode = staticmethod(decode)

    def retry_after_refresh(self, response: requests.Response) -> bool:
        """Whether a 401 deserves a retry: with minted tokens, mint one new token, once per
        401 (a second 401 in a row means the new token is refused too)."""
        auth = self.authenticator
        if isinstance(auth, ClientCredentials) and self.name not in auth.refreshed_for:
            auth.refreshed_for.add(self.name)
            auth.invalidate()
            return True
        return False

    def authenticated(self) -> None:
        """A request got past authentication: a later 401 (a token revoked or expired
        early, an hour on) gets its own new token and retry."""
        auth = self.authenticator
        if isinstance(auth, ClientCredentials):
            auth.refreshed_for.discard(self.name)

    def api_error_text(self, response: requests.Response) -> str:
        """The API's own words for an error response (none when they only repeat the HTTP
        reason); API modules refine this."""
        try:
            body = decode(response.content)
        except ValueError:
            body = None
        text = response.text[:200].strip()
        if isinstance(body, dict):
            text = next((str(body[key]) for key in
                         ("message", "title", "error_description", "error", "detail")
                         if body.get(key)), text)
        return "" if text.lower() == (response.reason or "").lower() else text

    def error_message(self, response: requests.Response) -> str:
        return self.http.error_message(response, self)

    def error_hint(self, status: int) -> str:
        """What to check for this status: the API's own hint, else one that fits every API."""
        hint = self.error_hints.get(status)
        if hint:
            return hint
        if status == HTTPStatus.UNAUTHORIZED:
            return f"check {self.source.credentials_hint()}; not retried"
        if status == HTTPStatus.FORBIDDEN:
            return (f"check that {self.source.credentials_hint()} may read this stream; "
                    "not retried")
        if status == HTTPStatus.NOT_FOUND:
            return f"check {self.setting_name(self.url_setting)}"
        if status == HTTPStatus.BAD_REQUEST:
            return f"check the {self.source.name} settings and this stream's bookmark in the state"
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            return "rate limited; retried until max_retry_wait_seconds or the retry budget ran out"
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return "the API failed; retried with back-off"
        return ""

    def backoff_max_tries(self) -> int:
        return self.http.max_tries

    def retry_wait(self, error: Exception, attempt: int) -> float:
        """Seconds to wait before the next try (`HttpClient.retry_wait`)."""
        return self.http.retry_wait(error, attempt, self)

    # ----------------------------------------------------------------- records

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        """`complete` the record, then drop repeats (`dedupe`) and events before `start_date`;
        what is kept gets its top-level date-times in UTC (`timestamps`) before the SDK writes
        it and moves a date-time bookmark with it."""
        row = self.complete(row, context)
        if self.dedupe and self.seen_before(self.key_of(row)):
            return None
        if self.start_date_field is not None and self.before_start(row):
            return None
        self.timestamps.convert(row)
        return row

    @cached_property
    def timestamps(self) -> UtcTimestamps:
        """This stream's top-level date-time fields, converted to UTC (tap_events/timestamps.py)."""
        return UtcTimestamps(self.schema, subject(self.source.label, self.name), self.logger)

    def complete(self, row: dict, context: Context | None) -> dict:
        """Add what the API leaves out of a record (the tenant of a partition)."""
        return row

    def key_of(self, row: dict) -> t.Hashable:
        """The record's primary key, as one value."""
        keys = self.primary_keys or ()
        return row[keys[0]] if len(keys) == 1 else tuple(row[key] for key in keys)

    @cached_property
    def start_ms(self) -> int | None:
        """`start_date` in epoch milliseconds."""
        return None if self.start_date is None else int(self.start_date.timestamp() * 1000)

    def before_start(self, row: dict) -> bool:
        """Whether the record happened before `start_date` (`start_date_field`)."""
        value = row.get(self.start_date_field or "")
        if self.start_date is None or value is None or value == "":
            return False
        if isinstance(value, int) and not isinstance(value, bool):
            return value < t.cast("int", self.start_ms)
        return datetime.datetime.fromisoformat(str(value)) < self.start_date

    def time_extracted(self) -> datetime.datetime:
        """`time_extracted` of the RECORD lines: now (UTC), renewed once a second."""
        now = time.monotonic()
        if now >= self._extracted_until:
            self._extracted_at = sdk_internals.utc_now()
            self._extracted_until = now + 1.0
        return self._extracted_at

    def seen_before(self, key: t.Hashable) -> bool:
        """True for a key already emitted in this run (bounded window, oldest forgotten)."""
        if key in self._seen_ids:
            return True
        self._seen_ids[key] = None
        if len(self._seen_ids) > self.DEDUPE_WINDOW:
            self._seen_ids.popitem(last=False)
        return False


def shown(value: t.Any) -> str:
    """A state value as its JSON text read (the SDK reads JSON numbers with a fraction or
    exponent as Decimal: 1.2345678901234567e+19, not Decimal('1.2345678901234567E+19'))."""
    return repr(float(value)) if isinstance(value, decimal.Decimal) else repr(value)


class CursorStream(EventStream):
    """A stream whose bookmark is the cursor of the last record emitted.

    The cursor (the replication key) is whatever the API pages or resumes by, often opaque or
    only grouped in order: the SDK is told the records are sorted and not to check it, so the
    value of the last record written wins (shared/notes/singer-sdk.md 1.1). A STATE then
    never points past an unemitted record.
    """

    is_sorted = True
    check_sorted = False

    def bookmark_cursor(self, value: t.Any, context: Context | None) -> None:
        """Make `value` the bookmark though no record carries it (an API that answers "start
        from here" with a cursor and no events), the way the SDK sets it from a record."""
        key = self.replication_key
        assert key is not None, "a CursorStream declares its cursor as its replication key"
        self.state_manager.increment_state({key: value}, context=context, replication_key=key)
        self.state_manager.is_flushed = False


class PageCycleGuard:
    """Stops a page loop that goes round in circles, in one line naming stream and cursor.

    Two shapes, whatever the API: a cursor already followed in this loop (A→B→A; the SDK only
    catches A→A), and `STALE_PAGES` pages in a row made only of events this loop already read
    (ever-new cursors over the same entries, a server ignoring the keyset). Such a page is
    held back, not yielded, so the bookmark stays where the last new event put it; the stream
    fails (`EventStream.sync`) and the run ends non-zero after the other streams. Both
    memories are per loop (one sync of one partition): a tail poll reading its lookback again
    starts afresh. Streamed pages (SSE) are not checked for stale events: they judge each
    event as it comes (`SSEStream.is_new`).
    """

    #: Pages of only already-read events accepted in a row (an at-least-once API may resend
    #: one page; three in a row is a loop).
    STALE_PAGES = 3
    #: Keys remembered (as hashes, oldest forgotten): a repeated page repeats recent events,
    #: and a few MB per stream would show in the run's peak RSS.
    REMEMBERED_KEYS = 10_000

    def __init__(self, stream: EventStream, paginator: BaseAPIPaginator) -> None:
        self.stream = stream
        self.paginator = paginator
        self.followed: set[str] = set()
        #: Hashes of the keys read by this loop, in the order read (`REMEMBERED_KEYS`).
        self.read: dict[int, None] = {}
        self.stale_in_a_row = 0
        self.keys = tuple(stream.primary_keys or ())
        self.check_stale = stream.expects_json and bool(self.keys)

    def cycle(self, what: str, cursor: t.Any) -> TapEventsError:
        cursor = repr(cursor)
        if len(cursor) > 120:
            cursor = cursor[:117] + "..."
        return TapEventsError(
            f"{self.stream.error_prefix}pagination cycle: {what} at cursor {cursor}; stopped "
            "(the API repeats pages; the bookmark stays at the last new event)")

    def advance(self, response: requests.Response) -> TapEventsError | None:
        """`paginator.advance`; the error to raise (once this page is out) when the next
        cursor is one this loop already followed."""
        current = self.paginator.current_value
        self.followed.add(repr(current))
        try:
            self.paginator.advance(response)
        except RuntimeError:  # the SDK's own check: the same token twice in a row
            return self.cycle("the API sent the same cursor again", current)
        following = self.paginator.current_value
        if not self.paginator.finished and repr(following) in self.followed:
            return self.cycle("the API sent a cursor already followed in this run", following)
        return None

    def page(self, records: t.Iterable[dict]) -> t.Iterator[dict]:
        """The page's records; the leading ones already read are held back until a new one
        comes, and a page of nothing new counts towards `STALE_PAGES`."""
        if not self.check_stale:
            yield from records
            return
        cursor = self.paginator.current_value  # the one this page was asked with
        held: list[dict] = []
        fresh = False
        for record in records:
            if not fresh:
                if self.key_hash(record) in self.read:
                    held.append(record)
                    continue
                fresh = True
                self.stale_in_a_row = 0
                yield from held
                held = []
            self.remember(record)
            yield record
        if held:
            self.stale_in_a_row += 1
            if self.stale_in_a_row >= self.STALE_PAGES:
                raise self.cycle(f"{self.stale_in_a_row} pages in a row of only events "
                                 "already read", cursor)
            yield from held

    def key_hash(self, record: dict) -> int:
        return hash(tuple(record.get(name) for name in self.keys))

    def remember(self, record: dict) -> None:
        self.read[self.key_hash(record)] = None
        if len(self.read) > self.REMEMBERED_KEYS:
            del self.read[next(iter(self.read))]


def unauthenticated(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """No authentication yet (`EventStream.prepare_page`)."""
    return request
