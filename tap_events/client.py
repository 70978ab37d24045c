"""The shared base of every HTTP event stream: settings, timeouts, retries, errors, state.

Each API module subclasses `EventStream` once for its API (auth, error-body format, paging)
and then once per endpoint. Behaviour is layered on the SDK's public hooks
(`validate_response`, `backoff_*`, `post_process`, `sync`); the one private SDK call is
`_write_state_message` in `checkpoint()` (see there), guarded by tests/test_sdk_contract.py.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import time
import typing as t
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from http import HTTPStatus

import backoff
import orjson
import requests
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import SinglePagePaginator

from tap_events import retention
from tap_events.redact import redact
from tap_events.writer import BufferedRecordWriter

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_events.source import Source
    from tap_events.tail import TailRun

#: Longest wait honoured for one Retry-After / X-RateLimit-Reset unless configured otherwise.
DEFAULT_MAX_RETRY_WAIT_SECONDS = 300
#: Seconds to connect, and to wait for the API's answer (or its next bytes), unless configured
#: otherwise: a dead socket is noticed within a minute, not the SDK's 300 s.
CONNECT_TIMEOUT_SECONDS = 10
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60
#: Largest answer accepted unless configured otherwise (`max_response_mb`): far above the
#: largest real page, far below what exhausts a worker's memory.
DEFAULT_MAX_RESPONSE_MB = 100
#: The SDK's own log line for a failing stream, which `EventStream.sync` replaces by one line
#: naming the cause (see `EventStream.log`).
SDK_FAILURE_LINE = "An unhandled error occurred while syncing"



class TapEventsError(FatalAPIError):
    """A failure explained in one line: API, stream, HTTP status, the API's words, what to check.

    Raised instead of a bare traceback; the tap prints `str(error)` and exits non-zero.
    """

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        # Like RetriableAPIError: the response is an attribute, so `str(error)` stays the
        # one-line message (FatalAPIError alone would print the args tuple).
        super().__init__(message)
        self.response = response


class EventStream(RESTStream):
    """Base class for one endpoint of one API."""

    #: Set by `Source.__post_init__` for every stream the source lists.
    source: t.ClassVar[Source]

    #: What to check for an HTTP status, per API: {401: "check box.access_token"}.
    error_hints: t.ClassVar[t.Mapping[int, str]] = {}

    #: Events remembered per run to drop the repeats at-least-once feeds send. Bounded so
    #: memory stays flat however long the run; repeats arrive close together.
    DEDUPE_WINDOW = 50_000

    #: How long the API keeps events, when it documents a limit. A bookmark older than this
    #: means events were purged before the tap read them (see `check_retention`).
    retention: t.ClassVar[datetime.timedelta | None] = None

    # Records are JSON from the API and the schemas are complete (tests/test_schemas.py checks
    # every emitted record against its schema), so the SDK's recursive per-field type
    # conformance, a third of its per-record cost, has nothing to fix.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: The tail phase this stream is listening in (tap_events/tail.py); None in a batch run.
    tail: TailRun | None = None

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._pages_done = 0
        #: Retention gaps found this run, reported as a failure once data and state are out.
        self._gaps: list[str] = []
        self._extracted_at = utc_now()
        self._extracted_until = 0.0

    # ----------------------------------------------------------------- settings

    @property
    def settings(self) -> dict[str, t.Any]:
        """This stream's API settings (`config[source.name]` with defaults)."""
        return self.source.settings(self.config)

    @property
    def url_base(self) -> str:
        return str(self.settings["api_url"]).rstrip("/")

    @property
    def timeout(self) -> tuple[float, float]:  # type: ignore[override]
        """``(connect, read)`` seconds; the read timeout is `request_timeout_seconds`."""
        read = self.config.get("request_timeout_seconds") or DEFAULT_REQUEST_TIMEOUT_SECONDS
        return (CONNECT_TIMEOUT_SECONDS, float(read))

    @property
    def max_response_bytes(self) -> int:
        """`max_response_mb` in bytes."""
        return int(float(self.config.get("max_response_mb") or DEFAULT_MAX_RESPONSE_MB) * 2**20)

    @property
    def secrets(self) -> list[str]:
        """Every secret value this run knows of, for redaction."""
        return getattr(self._tap, "secret_values", [])

    def shared(self, key: str, factory: t.Callable[[], t.Any]) -> t.Any:
        """One object per API per run (a token, a session) shared by that API's streams."""
        resources = self._tap.__dict__.setdefault("shared_resources", {})
        full_key = (self.source.name, key)
        if full_key not in resources:
            resources[full_key] = factory()
        return resources[full_key]

    # ----------------------------------------------------------------- sync

    def sync(self, context: Context | None = None) -> None:
        """Skip an API without credentials; report a failure in one line and go on.

        The tap exits non-zero at the end when any stream failed (`TapEvents.sync_all`).
        """
        if not self.source.is_configured(self.config):
            self.logger.info(
                "Skipping stream '%s': %s is not configured (set %s).",
                self.name,
                self.source.label,
                self.source.credentials_hint(),
            )
            return
        failures: list[str] = []
        try:
            super().sync(context)
        except Exception as error:
            message = self.describe_failure(error)
            self.logger.error("%s", message)
            self.logger.debug("Traceback for '%s'", self.name, exc_info=True)
            failures.append(message)
            # The bookmark in memory covers only records already written, so it is safe to
            # hand to the target: the next run resumes here instead of re-reading the page.
            self.checkpoint()
        # A gap was logged when found; it fails the run only now, after what exists was loaded.
        failures += self._gaps
        if failures:
            self._tap.record_failure(self.name, "; ".join(failures))

    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        """Check the bookmark against the API's retention, then read as usual.

        Runs once the SDK has loaded the bookmark for this partition. In the tail phase the
        stream has caught up already: its records are the new events it listens for.
        """
        if self.tail is not None:
            yield from self.tail_records(context)
            return
        self.check_retention(context)
        yield from super().get_records(context)

    def tail_records(self, context: Context | None) -> t.Iterable[dict]:
        """New events while tailing (tap_events/tail.py).

        By default one normal incremental read: the tail syncs such a stream again every
        `tail_poll_seconds`. API modules with a push channel (a long poll, an open stream)
        override this to listen until the tail's deadline.
        """
        return self.request_records(context)

    def request_decorator(self, func: t.Callable) -> t.Callable:
        """The SDK's retrying request; while tailing, other streams write while it waits."""
        send = self.retrying(func)
        return send if self.tail is None else self.tail.unlocked(send)

    @cached_property
    def start_date(self) -> datetime.datetime | None:
        """`start_date` as an aware datetime (the tap refuses one without a UTC offset)."""
        value = self.config.get("start_date")
        if not value:
            return None
        moment = datetime.datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)

    # ----------------------------------------------------------------- retention

    def bookmark(self, context: Context | None) -> t.Any | None:
        """The bookmark from state, or None on a first run.

        With no bookmark the SDK hands back the `start_date` string, whatever the key's type.
        """
        value = self.get_starting_replication_key_value(context)
        return None if value in (None, "", self.config.get("start_date")) else value

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
        if isinstance(error, TapEventsError):
            text = str(error)
            # Errors raised outside a stream's own code (a token shared by an API's streams)
            # do not know which stream hit them.
            if f"stream '{self.name}'" not in text:
                text = f"{self.source.label} stream '{self.name}': {text}"
            return redact(text, self.secrets)
        if isinstance(error, RetriableAPIError):
            # Already one line naming the API, the stream and the response.
            return redact(f"{error}; gave up after {self.backoff_max_tries()} tries",
                          self.secrets)
        if isinstance(error, requests.exceptions.RequestException):
            text = f"{type(error).__name__}: {error}"
            return redact(
                f"{self.source.label} stream '{self.name}' failed after retries: {text} "
                f"(check {self.source.name}.api_url and the network)",
                self.secrets,
            )
        text = f"{type(error).__name__}: {error}".replace("\n", " ")
        return redact(
            f"{self.source.label} stream '{self.name}' failed: {text} (the API sent data the "
            f"tap cannot read; TAP_EVENTS_LOGLEVEL=DEBUG shows the traceback)",
            self.secrets,
        )

    def checkpoint(self) -> None:
        """Emit STATE now, so a run killed later resumes from here.

        Called between pages, when every record of the previous page has been written and
        counted into the bookmark. The SDK emits STATE only every STATE_MSG_FREQUENCY records
        and has no public hook for "now"; `_write_state_message` is the method it calls itself
        for that (it writes only when the state changed). Pinned by singer-sdk <0.55.
        """
        self._write_state_message()

    # ----------------------------------------------------------------- paging

    #: Fetch the next page in the background while this one is written, when waiting for
    #: the API is a real share of a page's time. Off when the API answers faster than the tap
    #: writes: then the extra thread only contends for the GIL (see `worth_prefetching`).
    PREFETCH = True
    #: Prefetch once a page's round trip exceeds this share of the time spent writing a page.
    PREFETCH_MIN_WAIT_SHARE = 0.25

    def request_records(self, context: Context | None) -> t.Iterator[dict]:
        """The SDK's page loop (`RESTStream.request_records`), plus adaptive prefetch.

        Same order of events as the SDK's: a page is parsed (and the previous page
        checkpointed) only after every record of the previous page was yielded; the run stops
        on the first page without records. What differs: the next page's request is prepared
        as soon as this page's token is known and, when worth it, sent from a worker thread
        while this page's records are written. Uses the SDK's own `_prepare_request` and
        `_request` (pinned SDK range; tests/test_sdk_contract.py).
        """
        paginator = self.get_new_paginator() or SinglePagePaginator()
        send = self.request_decorator(self._request)

        def fetch(background: bool) -> requests.Response | Future:
            prepared = self._prepare_request(context=context, page=paginator)
            return pool.submit(send, prepared, context) if background else send(prepared, context)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name) as pool:
            prefetch = False
            pending = fetch(background=False)
            while True:
                response = pending.result() if isinstance(pending, Future) else pending
                records = iter(self.parse_response(response))
                first = next(records, None)
                if first is None:
                    if not paginator.continue_if_empty(response):
                        return
                    paginator.advance(response)
                    pending = fetch(background=False)
                    continue
                # Early only when the page's token is known before its records are read
                # (JSON pages); streamed pages (SSE) learn their token by being read.
                early = prefetch
                if early:
                    paginator.advance(response)
                    pending = None if paginator.finished else fetch(background=True)
                started = time.perf_counter()
                yield first
                yield from records
                if not early:
                    paginator.advance(response)
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
        for record in self.parse_page(getattr(response, "decoded", None), response):
            # Before `post_process`, which may use the keys (dedupe); missing ones may be
            # added there (the tenant of a partition), so they are checked again after it.
            self.check_keys(record, present_only=True)
            yield record

    def check_keys(self, record: t.Any, *, present_only: bool = False) -> None:
        """Refuse a record whose primary key is missing or of the wrong type, naming the stream.

        Records are otherwise passed on as the API sent them (per-record schema validation
        would cost more than the rest of the tap), but a broken key would make the target's
        upsert merge or drop rows, so it stops the stream instead.
        """
        if not isinstance(record, dict):
            raise TapEventsError(
                f"{self.source.label} stream '{self.name}': the API sent an event that is not "
                f"a JSON object: {str(record)[:80]!r}"
            )
        for key, expected in self.key_types.items():
            if present_only and key not in record:
                continue
            value = record.get(key)
            if not isinstance(value, expected) or isinstance(value, bool) or value == "":
                raise TapEventsError(
                    f"{self.source.label} stream '{self.name}': an event whose key '{key}' is "
                    f"{value!r}, not a {expected.__name__} (the API sent data that breaks the "
                    f"stream's schema): {str(record)[:120]}"
                )

    @cached_property
    def key_types(self) -> dict[str, type]:
        """Each primary key and the Python type its schema declares (`str` unless integer)."""
        properties = self.schema.get("properties", {})
        types = {}
        for key in self.primary_keys or ():
            declared = properties.get(key, {}).get("type", "string")
            declared = declared if isinstance(declared, list) else [declared]
            types[key] = int if "integer" in declared else str
        return types

    def parse_page(self, body: t.Any, response: requests.Response) -> t.Iterable[dict]:
        """The records of one decoded page, in API order."""
        raise NotImplementedError

    def validate_response(self, response: requests.Response) -> None:
        """Classify a response and decode its JSON body once (inside the retry loop).

        A truncated or garbled 200 body is retried like a dropped connection; after the
        last try it becomes a one-line error naming the stream.
        """
        status = response.status_code
        if status == HTTPStatus.UNAUTHORIZED and self.retry_after_refresh(response):
            raise RetriableAPIError(self.error_message(response), response)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(self.error_message(response), response)
        if status >= HTTPStatus.BAD_REQUEST:
            raise TapEventsError(self.error_message(response), response)
        if self.expects_json:
            try:
                response.decoded = self.decode(response.content)  # type: ignore[attr-defined]
            except ValueError as error:
                raise RetriableAPIError(
                    f"{self.source.label} stream '{self.name}': HTTP {status} with a body that "
                    f"is not valid JSON ({error}); {len(response.content)} bytes received "
                    f"(check {self.source.name}.api_url, and any proxy between)",
                    response,
                ) from error

    #: False for streaming bodies (SSE), which must not be read up front.
    expects_json: t.ClassVar[bool] = True

    @staticmethod
    def decode(body: bytes) -> t.Any:
        """Decode JSON with orjson; the stdlib takes what orjson refuses (ints over 64 bits)."""
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return json.loads(body)

    def retry_after_refresh(self, response: requests.Response) -> bool:
        """Whether a 401 deserves one retry with a fresh token (OAuth streams override)."""
        return False

    def api_error_text(self, response: requests.Response) -> str:
        """The API's own words for an error response; API modules refine this."""
        try:
            body = orjson.loads(response.content)
        except ValueError:
            return response.text[:200].strip()
        if isinstance(body, dict):
            for key in ("message", "title", "error_description", "error", "detail"):
                if body.get(key):
                    return str(body[key])
        return response.text[:200].strip()

    def error_message(self, response: requests.Response) -> str:
        status = response.status_code
        reason = response.reason or ""
        hint = self.error_hint(status)
        text = self.api_error_text(response)
        message = (
            f"{self.source.label} stream '{self.name}': HTTP {status} {reason}"
            + (f": {text}" if text else "")
            + (f" ({hint})" if hint else "")
        )
        return redact(message.replace("\n", " "), self.secrets)

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
            return f"check {self.source.name}.api_url"
        if status == HTTPStatus.BAD_REQUEST:
            return f"check the {self.source.name} settings and this stream's bookmark in the state"
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            return "rate limited; retried until max_retry_wait_seconds or the retry budget ran out"
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return "the API failed; retried with back-off"
        return ""

    # ----------------------------------------------------------------- retries

    #: What the SDK retries (`RESTStream.request_decorator`, singer-sdk 0.54).
    RETRIED_ERRORS = (
        ConnectionResetError,
        RetriableAPIError,
        requests.exceptions.Timeout,
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    )

    def retrying(self, func: t.Callable) -> t.Callable:
        """The SDK's retry decorator, with python-backoff's own log lines at debug level.

        `backoff_handler` already logs each retry, and `sync` the final failure, in one line
        each; backoff would add "Backing off ..." and an ERROR "Giving up ...".
        """
        return backoff.on_exception(
            self.backoff_wait_generator,
            self.RETRIED_ERRORS,
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=self.logger,
            backoff_log_level=logging.DEBUG,
            giveup_log_level=logging.DEBUG,
        )(func)

    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_retries", 6))

    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        """Per request: python-backoff primes the generator, then sends each exception."""
        attempt = 0
        error = yield  # type: ignore[misc]
        while True:
            attempt += 1
            error = yield self.retry_wait(error, attempt)

    def retry_wait(self, error: Exception, attempt: int) -> float:
        """Seconds to wait before the next try: what the API asked for, else back-off."""
        cap = float(self.config.get("max_retry_wait_seconds", DEFAULT_MAX_RETRY_WAIT_SECONDS))
        response = getattr(error, "response", None)
        if response is not None and response.status_code == HTTPStatus.UNAUTHORIZED:
            return 0.0  # the one retry with a fresh token (`retry_after_refresh`)
        asked = retry_after_seconds(response) if response is not None else None
        if asked is not None:
            if asked > cap:
                raise TapEventsError(
                    f"{self.source.label} stream '{self.name}': the API asked to wait "
                    f"{asked:.0f} s, more than max_retry_wait_seconds={cap:.0f}",
                    response,
                ) from error
            return asked
        return min(cap, float(2 ** (attempt - 1)))

    def backoff_handler(self, details: t.Mapping[str, t.Any]) -> None:
        error = details.get("exception")
        what = str(error) if isinstance(error, RetriableAPIError) else type(error).__name__
        self.logger.warning(
            "%s: retry %d in %.1f s after %s",
            self.name,
            details.get("tries", 0),
            details.get("wait", 0.0),
            redact(what, self.secrets),
        )

    # ----------------------------------------------------------------- records

    # The SDK's per-record path spends more time on bookkeeping than on the record. The three
    # private methods below replace the parts that do nothing for these streams; each is
    # pinned by a digest of the SDK method it replaces (tests/test_sdk_contract.py), so an SDK
    # upgrade that changes them fails the tests instead of silently changing behaviour.

    def _write_record_message(self, record: dict) -> None:
        """The SDK's `_write_record_message` + `_generate_record_messages`, minus waste.

        Same output as the SDK's: the record through each stream map, one RECORD line each,
        then the state marked unflushed. What goes: the walk that drops deselected fields runs
        only when the catalog deselects something (the SDK walks every record, 10 % of its
        per-record time); no type conformance (TYPE_CONFORMANCE_LEVEL); no `RecordMessage`
        object and `to_dict` per record: the writer encodes the line directly, with
        `time_extracted` taken once a second instead of once a record.
        """
        self.check_keys(record)
        writer = self._tap.message_writer
        if not isinstance(writer, BufferedRecordWriter):
            super()._write_record_message(record)
            return
        if self.has_deselected_fields:
            pop_deselected_record_properties(record, self.schema, self.mask)
        extracted = self.time_extracted()
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                writer.write_record(
                    stream_map.stream_alias, mapped, self._stream_version, extracted
                )
        self.state_manager.is_flushed = False

    def _process_record(
        self,
        record: dict,
        child_context: Context | None = None,
        partition_context: Context | None = None,
    ) -> None:
        """The SDK copies partition keys into the record and syncs child streams per record;
        a stream without partitions and children has neither, so the per-record call of a
        generator and a stream-map filter is skipped."""
        if partition_context or self.child_streams:
            super()._process_record(record, child_context, partition_context)

    def time_extracted(self) -> datetime.datetime:
        """`time_extracted` of the RECORD lines: now (UTC), renewed once a second."""
        now = time.monotonic()
        if now >= self._extracted_until:
            self._extracted_at = utc_now()
            self._extracted_until = now + 1.0
        return self._extracted_at

    @property
    def has_deselected_fields(self) -> bool:
        if not hasattr(self, "_has_deselected_fields"):
            self._has_deselected_fields = not all(self.mask.values())
        return self._has_deselected_fields

    def seen_before(self, event_id: str) -> bool:
        """True for an id already emitted in this run (bounded window, oldest forgotten)."""
        if event_id in self._seen_ids:
            return True
        self._seen_ids[event_id] = None
        if len(self._seen_ids) > self.DEDUPE_WINDOW:
            self._seen_ids.popitem(last=False)
        return False


def retry_after_seconds(response: requests.Response) -> float | None:
    """`Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch or seconds)."""
    headers = response.headers
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.replace(".", "", 1).isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    reset = headers.get("X-RateLimit-Reset")
    if reset and reset.replace(".", "", 1).isdigit():
        number = float(reset)
        # Epoch seconds are large; small numbers are a delay.
        return max(0.0, number - time.time()) if number > 1e9 else number
    return None


logging.getLogger("backoff").setLevel(logging.ERROR)
