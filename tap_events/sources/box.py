"""Box Events: the user event stream and the enterprise event stream.

Facts this module relies on (../shared/apis/box.md):
- one endpoint, `GET /events`, paged by an opaque `next_stream_position` that can exceed 2^53
  and has come back both as a number and as a string: it is kept as a string throughout;
- only an empty `entries` page means "caught up" (short pages happen while more exist), and an
  empty `admin_logs` page may carry position `0`, which must never replace a bookmark;
- every feed but `admin_logs` repeats events: they are dropped by `event_id` within a run and
  upserted on `event_id` by the target across runs;
- `admin_logs` honours `created_after`/`created_before`, which must stay the same on every page;
- a feed that takes a position can start from the oldest retained event (`0`) or from `now`
  (an empty page and the current position, which becomes the bookmark);
- auth: a developer token, the Client Credentials Grant, or JWT with the app's config.json
  (tap_events/box_jwt.py), one at a time;
- tail mode (tap_events/tail.py): the user feed long-polls (`OPTIONS /events` names a realtime
  server, whose `new_change` means "read from the bookmark now"); the enterprise feeds cannot
  and poll like any other stream.
"""

from __future__ import annotations

import datetime
import functools
import typing as t
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import requests
from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator, OAuthAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator

from tap_events import box_jwt
from tap_events.client import EventStream, TapEventsError
from tap_events.redact import redact
from tap_events.retention import ALLOW_GAP_SETTING
from tap_events.source import Source

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context

#: The position a feed starts from when there is no bookmark: the oldest retained event...
OLDEST = "0"
#: ... or, with `box.initial_position` `now`, the current end of the feed.
NOW = "now"
#: The tap-added field carrying the page cursor (see `BoxPositionStream.parse_page`).
POSITION_FIELD = "stream_position"
#: Beside a position bookmark in the state: the time up to which the feed had been read at
#: that position (events recorded later may be unread). A position does not tell its time, and
#: the retention guard needs one; states written before this key existed are not checked.
POSITION_TIME_KEY = "position_time"
#: Days Box keeps the events of each feed (../shared/apis/box.md, guide table).
RETENTION_DAYS = {"all": 21, "changes": 21, "sync": 31, "admin_logs": 365,
                  "admin_logs_streaming": 14}

# ------------------------------------------------------------------------------ settings

JWT_CONFIG = "jwt_config"
JWT_CONFIG_FILE = "jwt_config_file"
#: The ways to authenticate, each with its settings: exactly one may be set.
AUTH_METHODS = {
    "a developer token": ("access_token",),
    "client credentials": ("client_id", "client_secret"),
    "JWT": (JWT_CONFIG, JWT_CONFIG_FILE),
}

SETTINGS = (
    th.Property("api_url", th.StringType, default="https://api.box.com/2.0",
                description="Box API base URL."),
    th.Property("token_url", th.StringType, default="https://api.box.com/oauth2/token",
                description="Box OAuth 2.0 token endpoint (Client Credentials Grant and JWT; "
                "a JWT assertion is addressed to this URL)."),
    th.Property("access_token", th.StringType, secret=True,
                description="A ready bearer token (developer token, 60 minutes, for tests). "
                "Set one way to authenticate: this, box.client_id + box.client_secret, or "
                "box.jwt_config / box.jwt_config_file; the tap refuses a config with several."),
    th.Property("client_id", th.StringType, description="Client ID of a Box app with "
                "Client Credentials Grant."),
    th.Property("client_secret", th.StringType, secret=True,
                description="Client secret of that Box app."),
    th.Property(JWT_CONFIG, th.StringType, secret=True,
                description="JWT server auth: the text of the app's config.json from the Box "
                "Developer Console (client ID and secret, encrypted private key, passphrase, "
                "public key ID, enterprise ID). The tap signs its own assertions and mints and "
                "refreshes its tokens. Or set box.jwt_config_file."),
    th.Property(JWT_CONFIG_FILE, th.StringType,
                description="JWT server auth: the path of the app's config.json (instead of "
                "box.jwt_config), e.g. from TAP_EVENTS_BOX_JWT_CONFIG_FILE. Read at the start "
                "of each run."),
    th.Property("subject_type", th.StringType(allowed_values=["enterprise", "user"]),
                default="enterprise",
                description="`enterprise` acts as the app's service account, `user` as a user."),
    th.Property("subject_id", th.StringType,
                description="Enterprise ID (subject_type enterprise) or user ID (user). With "
                "JWT, defaults to the enterpriseID of the app's config.json."),
    th.Property("user_stream_type", th.StringType(allowed_values=["all", "changes", "sync"]),
                default="all", description="Feed read by `box_events`."),
    th.Property("enterprise_stream_type",
                th.StringType(allowed_values=["admin_logs", "admin_logs_streaming"]),
                default="admin_logs", description="Feed read by `box_enterprise_events`: "
                "`admin_logs` (chronological, by time window) or `admin_logs_streaming` "
                "(low latency, repeats events, 14-day retention)."),
    th.Property("initial_position", th.StringType(allowed_values=["oldest", NOW]),
                default="oldest",
                description="Where `box_events` and the `admin_logs_streaming` feed start "
                "when the state has no bookmark: `oldest` reads every event Box still keeps "
                "(up to 21 days of user events, 14 of admin_logs_streaming), `now` only events "
                "from the first run on (that run emits nothing and stores Box's current "
                "position). Does not apply to `admin_logs`, a time window that starts at "
                "start_date."),
    th.Property("event_types", th.ArrayType(th.StringType),
                description="Only these enterprise event types (e.g. LOGIN, UPLOAD)."),
    th.Property("page_size", th.IntegerType(minimum=1, maximum=500), default=500,
                description="Events asked for per page (Box's maximum is 500)."),
    ALLOW_GAP_SETTING,
)

# ------------------------------------------------------------------------------ schema

USER_MINI = th.ObjectType(
    th.Property("type", th.StringType),
    th.Property("id", th.StringType),
    th.Property("name", th.StringType),
    th.Property("login", th.StringType),
    additional_properties=True,
)

FOLDER_MINI = th.ObjectType(
    th.Property("type", th.StringType),
    th.Property("id", th.StringType),
    th.Property("sequence_id", th.StringType),
    th.Property("etag", th.StringType),
    th.Property("name", th.StringType),
    additional_properties=True,
)

# `source` is polymorphic (file, folder, EventSource, user, app item, free-form): the known
# fields are typed and anything else is kept.
EVENT_SOURCE = th.ObjectType(
    th.Property("type", th.StringType),
    th.Property("id", th.StringType),
    th.Property("name", th.StringType),
    th.Property("item_type", th.StringType),
    th.Property("item_id", th.StringType),
    th.Property("item_name", th.StringType),
    th.Property("sequence_id", th.StringType),
    th.Property("etag", th.StringType),
    th.Property("sha1", th.StringType),
    th.Property("description", th.StringType),
    th.Property("size", th.IntegerType),
    th.Property("item_status", th.StringType),
    th.Property("synced", th.BooleanType),
    th.Property("login", th.StringType),
    th.Property("created_at", th.DateTimeType),
    th.Property("modified_at", th.DateTimeType),
    th.Property("content_created_at", th.DateTimeType),
    th.Property("content_modified_at", th.DateTimeType),
    th.Property("trashed_at", th.DateTimeType),
    th.Property("purged_at", th.DateTimeType),
    th.Property("shared_link", th.ObjectType(additional_properties=True)),
    th.Property("file_version", th.ObjectType(additional_properties=True)),
    th.Property("parent", FOLDER_MINI),
    th.Property("path_collection", th.ObjectType(
        th.Property("total_count", th.IntegerType),
        th.Property("entries", th.ArrayType(FOLDER_MINI)),
        additional_properties=True,
    )),
    th.Property("created_by", USER_MINI),
    th.Property("modified_by", USER_MINI),
    th.Property("owned_by", USER_MINI),
    th.Property("classification", th.ObjectType(additional_properties=True)),
    additional_properties=True,
)

EVENT_SCHEMA = th.PropertiesList(
    th.Property("event_id", th.StringType, required=True,
                description="Box's event id; the primary key (Box repeats events)."),
    th.Property("type", th.StringType),
    th.Property("event_type", th.StringType),
    th.Property("created_at", th.DateTimeType),
    th.Property("recorded_at", th.DateTimeType),
    th.Property("session_id", th.StringType),
    th.Property("created_by", USER_MINI),
    th.Property("source", EVENT_SOURCE),
    th.Property("additional_details", th.ObjectType(additional_properties=True)),
    th.Property("ip_address", th.StringType),
    th.Property("accessible_by", USER_MINI),
    th.Property("action_by", USER_MINI),
    th.Property("app", th.ObjectType(additional_properties=True)),
    th.Property(POSITION_FIELD, th.StringType,
                description="Added by the tap: the feed position to resume from after this "
                "event (a string; Box positions exceed 2^53)."),
    additional_properties=True,
).to_dict()

# ------------------------------------------------------------------------------ auth


class BoxClientCredentials(OAuthAuthenticator):
    """Client Credentials Grant: the tap mints its own tokens and refreshes them."""

    #: Refresh this long before expiry so a token never dies between check and use.
    EARLY_REFRESH_SECONDS = 60

    def __init__(self, settings: dict[str, t.Any], secrets: list[str]) -> None:
        #: The run's secret values (shared with the log filter): each minted token joins them.
        self.secrets = secrets
        super().__init__(
            auth_endpoint=settings["token_url"],
            client_id=settings["client_id"],
            client_secret=settings["client_secret"],
            default_expiration=3600,
        )
        self.subject_type = settings["subject_type"]
        self.subject_id = settings.get("subject_id")

    @property
    def oauth_request_body(self) -> dict:
        body = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "box_subject_type": self.subject_type,
        }
        if self.subject_id:
            body["box_subject_id"] = self.subject_id
        return body

    def is_token_valid(self) -> bool:
        if self.last_refreshed is None or not self.access_token:
            return False
        if not self.expires_in:
            return True
        age = (datetime.datetime.now(datetime.UTC) - self.last_refreshed).total_seconds()
        return age < self.expires_in - self.EARLY_REFRESH_SECONDS

    def update_access_token(self) -> None:
        super().update_access_token()
        if self.access_token:
            self.secrets.append(self.access_token)

    def invalidate(self) -> None:
        self.access_token = None
        self.last_refreshed = None

    #: What to check when Box refuses a token request.
    SETTINGS_HINT = "check box.client_id, box.client_secret, box.subject_type and box.subject_id"

    def handle_error(self, *, content: str, status_code: int | None) -> None:
        """Box answers token failures in OAuth form: {"error", "error_description"}."""
        try:
            body = EventStream.decode(content.encode())
            text = f"{body.get('error')}: {body.get('error_description')}"
        except (ValueError, AttributeError):
            text = content[:200]
        raise TapEventsError(
            redact(f"Box token request failed: HTTP {status_code}: {text} "
                   f"({self.SETTINGS_HINT})", self.secrets)
        )


class BoxJWT(BoxClientCredentials):
    """JWT server auth: each token request carries a new assertion signed with the app's key.

    Minting, early refresh and the one retry after a 401 are the client credentials' own;
    only the request body differs (Box's JWT bearer grant, ../shared/apis/box.md).
    """

    SETTINGS_HINT = (f"check box.{JWT_CONFIG} (or box.{JWT_CONFIG_FILE}), box.subject_type, "
                     "box.subject_id, box.token_url (the assertion's audience) and this "
                     "machine's clock")

    def __init__(self, settings: dict[str, t.Any], secrets: list[str]) -> None:
        self.app = jwt_app(settings)
        #: Box checks that the assertion is addressed to the URL it was sent to.
        self.audience = settings["token_url"]
        super().__init__({**settings, "client_id": self.app.client_id,
                          "client_secret": self.app.client_secret,
                          "subject_id": jwt_subject(settings, self.app)}, secrets)

    @property
    def oauth_request_body(self) -> dict:
        assertion = self.app.assertion(audience=self.audience, subject_type=self.subject_type,
                                       subject_id=str(self.subject_id))
        # A secret before it travels: a server echoing the request body is masked too.
        self.secrets.append(assertion)
        return {
            "grant_type": box_jwt.GRANT_TYPE,
            "assertion": assertion,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }


def jwt_app_text(settings: t.Mapping[str, t.Any]) -> tuple[str, str]:
    """The text of the app's config.json and the setting it came from (for errors)."""
    if settings.get(JWT_CONFIG):
        return str(settings[JWT_CONFIG]), f"box.{JWT_CONFIG}"
    path = str(settings[JWT_CONFIG_FILE])
    text = box_jwt.read_app_config_file(path, f"box.{JWT_CONFIG_FILE}")
    return text, f"box.{JWT_CONFIG_FILE} {path!r}"


def jwt_app(settings: t.Mapping[str, t.Any]) -> box_jwt.BoxApp:
    return read_app_config(*jwt_app_text(settings))


#: Decrypting the key takes a fifth of a second (the passphrase is stretched on purpose):
#: once for the check before any request, not again for the authenticator.
read_app_config = functools.lru_cache(maxsize=2)(box_jwt.read_app_config)


def jwt_subject(settings: t.Mapping[str, t.Any], app: box_jwt.BoxApp) -> str:
    """`sub` of the assertions: box.subject_id, else the app's enterprise."""
    subject = settings.get("subject_id")
    if subject:
        return str(subject)
    if settings.get("subject_type") == "user":
        raise box_jwt.BoxAppConfigError(
            "box.subject_type is 'user' but box.subject_id is not set (the ID of the user the "
            "tap acts as)")
    if not app.enterprise_id:
        raise box_jwt.BoxAppConfigError(
            f"{jwt_app_text(settings)[1]} has no enterpriseID: set box.subject_id to the "
            "enterprise ID")
    return app.enterprise_id


def auth_errors(settings: t.Mapping[str, t.Any]) -> list[str]:
    """One way to authenticate, and a JWT app config the tap can use: checked before any
    request, so a bad file is one line at the start, not a failure per stream."""
    given = [f"box.{key}" for keys in AUTH_METHODS.values() for key in keys if settings.get(key)]
    methods = [name for name, keys in AUTH_METHODS.items() if any(settings.get(k) for k in keys)]
    if len(methods) > 1 or (settings.get(JWT_CONFIG) and settings.get(JWT_CONFIG_FILE)):
        return [f"{', '.join(given)} are set: set only one way to authenticate to Box "
                f"({SOURCE.credentials_hint()})"]
    if methods == ["JWT"]:
        try:
            jwt_subject(settings, jwt_app(settings))
        except box_jwt.BoxAppConfigError as error:
            return [str(error)]
    return []


def auth_secrets(settings: t.Mapping[str, t.Any]) -> list[str]:
    """The secrets inside the app's config.json (a file's too, which is no secret setting)."""
    try:
        text, _ = jwt_app_text(settings) if (
            isinstance(settings.get(JWT_CONFIG), str) or settings.get(JWT_CONFIG_FILE)
        ) else ("", "")
    except box_jwt.BoxAppConfigError:
        return []
    return box_jwt.app_config_secrets(text)


# ------------------------------------------------------------------------------ streams


class BoxPositionPaginator(BaseAPIPaginator[str]):
    """Follows `next_stream_position`; the SDK stops on the first empty page."""

    def get_next(self, response: requests.Response) -> str | None:
        position = response.decoded.get("next_stream_position")  # type: ignore[attr-defined]
        return None if position in (None, "", 0, OLDEST) else str(position)


class BoxStream(EventStream):
    """What both Box feeds share: auth, error format, paging, the position cursor."""

    path = "/events"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = EVENT_SCHEMA
    replication_key = POSITION_FIELD
    is_sorted = True
    # Positions are opaque: the bookmark is the position carried by the last emitted event.
    check_sorted = False

    @property
    def error_hints(self) -> dict[int, str]:  # type: ignore[override]
        settings = self.settings
        credentials = (
            "box.access_token" if settings.get("access_token")
            else f"box.{JWT_CONFIG} (or box.{JWT_CONFIG_FILE}) and box.subject_id"
            if settings.get(JWT_CONFIG) or settings.get(JWT_CONFIG_FILE)
            else "box.client_id, box.client_secret and box.subject_id"
        )
        return {
            HTTPStatus.UNAUTHORIZED: f"check {credentials}",
            HTTPStatus.FORBIDDEN: f"check {credentials}: enterprise events need an admin "
            "principal and the app scope 'Manage enterprise properties'",
            HTTPStatus.BAD_REQUEST: "check box.event_types and box.page_size",
        }

    @property
    def authenticator(self) -> BearerTokenAuthenticator | BoxClientCredentials:
        settings = self.settings
        if settings.get("access_token"):
            return self.shared(
                "auth", lambda: BearerTokenAuthenticator(token=settings["access_token"])
            )
        if settings.get(JWT_CONFIG) or settings.get(JWT_CONFIG_FILE):
            return self.shared("auth", lambda: BoxJWT(settings, self.secrets))
        return self.shared("auth", lambda: BoxClientCredentials(settings, self.secrets))

    #: Set when a 401 has minted a new token, until a request gets past authentication.
    _refreshed = False

    def retry_after_refresh(self, response: requests.Response) -> bool:
        """A 401 with minted tokens: mint one new token and retry once (per 401: a token
        revoked an hour later gets its own new token)."""
        auth = self.authenticator
        if isinstance(auth, BoxClientCredentials) and not self._refreshed:
            self._refreshed = True
            auth.invalidate()
            return True
        return False

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code != HTTPStatus.UNAUTHORIZED:
            self._refreshed = False
        super().validate_response(response)

    def api_error_text(self, response: requests.Response) -> str:
        """Box's ClientError: `code: message (request_id …)`."""
        try:
            body = self.decode(response.content)
        except ValueError:
            return super().api_error_text(response)
        if not isinstance(body, dict):
            return super().api_error_text(response)
        text = ": ".join(str(body[k]) for k in ("code", "message") if body.get(k))
        if body.get("request_id"):
            text += f" (request_id {body['request_id']})"
        return text or super().api_error_text(response)

    def get_new_paginator(self) -> BoxPositionPaginator:
        return BoxPositionPaginator(start_value=None)

    @property
    def stream_type(self) -> str:
        raise NotImplementedError

    #: The feed's latest `next_stream_position`, from the last page read (tail mode).
    feed_position: str | None = None

    @property
    def retention(self) -> datetime.timedelta:  # type: ignore[override]
        return datetime.timedelta(days=RETENTION_DAYS[self.stream_type])

    def bookmark_time(self, context: Context | None) -> datetime.datetime | None:
        """For a position bookmark, the time stored beside it (`POSITION_TIME_KEY`)."""
        if self.replication_key != POSITION_FIELD:
            return super().bookmark_time(context)
        value = self.get_context_state(context).get(POSITION_TIME_KEY)
        if self.bookmark(context) is None or not value:
            return None
        return event_time({"created_at": value})

    def note_read_through(self, moment: datetime.datetime | None) -> None:
        """Move the bookmark's time forward to `moment` (never back)."""
        if moment is None:
            return
        state = self.get_context_state(self.context)
        known = event_time({"created_at": state.get(POSITION_TIME_KEY)})
        if known is None or moment > known:
            state[POSITION_TIME_KEY] = moment.astimezone(datetime.UTC).isoformat()

    def starting_position(self, context: Context | None) -> str:
        """The bookmark, or on a first run the oldest retained event or `now`
        (`box.initial_position`)."""
        value = self.bookmark(context)
        if value is not None:
            return str(value)
        return NOW if self.settings["initial_position"] == NOW else OLDEST

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        params: dict[str, t.Any] = {
            "stream_type": self.stream_type,
            "limit": self.settings["page_size"],
            "stream_position": next_page_token or self.starting_position(context),
        }
        return params

    def parse_page(self, body: dict, response: requests.Response) -> t.Iterable[dict]:
        """Attach the position cursor to each event.

        Every event but the last carries the position that was *sent* for this page, the
        last one `next_stream_position`. A STATE written mid-page (every N records, SIGTERM)
        then points at the start of the page, which is re-read on resume: repeats, never
        gaps. A STATE after the page points past it.
        """
        entries = body.get("entries") or []
        following = body.get("next_stream_position")
        if following not in (None, "", 0, OLDEST):
            # Where the feed stands, even after an empty page: what a long poll waits past.
            self.feed_position = str(following)
        sent = parse_qs(urlsplit(response.request.url).query).get(  # type: ignore[arg-type]
            "stream_position", [OLDEST]
        )[0]
        if not entries:
            if sent == NOW and self.feed_position is not None:
                # A first run from now: no event to carry the position, so the bookmark is
                # set as the SDK sets it from a record.
                self.state_manager.increment_state(
                    {POSITION_FIELD: self.feed_position}, context=self.context,
                    replication_key=POSITION_FIELD)
                self.state_manager.is_flushed = False
            # Caught up: every event recorded before this request was sent has been read.
            self.note_read_through(datetime.datetime.now(datetime.UTC) - response.elapsed)
            return
        last = len(entries) - 1
        for index, event in enumerate(entries):
            event[POSITION_FIELD] = (
                str(following) if index == last and following not in (None, "", 0, OLDEST)
                else sent
            )
            yield event
        # Runs once the page's last event was written: the STATE after this page carries it.
        self.note_read_through(max(filter(None, map(event_time, entries)), default=None))

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        if self.seen_before(row["event_id"]):
            return None
        if self.start_date and row.get("created_at"):
            created = datetime.datetime.fromisoformat(row["created_at"])
            if created < self.start_date:
                return None
        return row


@dataclass(frozen=True)
class RealtimeServer:
    """One entry of `OPTIONS /events`: where to long-poll, for how long, how often."""

    url: str
    max_retries: int
    retry_timeout: float


class BoxEventsStream(BoxStream):
    """`box_events`: the user event stream (`all`, `changes` or `sync`)."""

    name = "box_events"

    #: Long-poll answers (`message`) beside Box's own `new_change` and `reconnect`.
    TIMED_OUT = "timed out"
    FAILED = "failed"
    REFUSED = "refused"

    #: Set once the realtime server refused this run: the stream then polls.
    long_poll_refused = False

    @property
    def stream_type(self) -> str:
        return self.settings["user_stream_type"]

    # ----------------------------------------------------------------- long polling

    def tail_records(self, context: Context | None) -> Iterator[dict]:
        """Box's long-poll protocol (../shared/apis/box.md, "Long-poll protocol").

        `OPTIONS /events` names a realtime server; a GET there waits for `new_change`
        (read from the bookmark, then wait again) or `reconnect` (ask OPTIONS again). No
        answer within `retry_timeout` is retried on the same server, up to `max_retries`
        polls, and so is a failed poll after a back-off (with a read, in case the realtime
        server is what fails); a `max_retries` answer or any other means a new server.
        Events repeated across reads are dropped by `seen_before`. Should the realtime
        server refuse the tap (it gets no token over plain http), the stream polls instead.
        """
        run = self.tail
        assert run is not None
        # What arrived while the other streams caught up (or since the last poll).
        yield from run.read_new(self, context)
        if self.long_poll_refused:
            return  # the tail syncs the stream again after tail_poll_seconds
        while not run.over:
            server = self.realtime_server()
            failures = 0
            for _ in range(server.max_retries):
                answer = self.long_poll(server)
                if run.over:
                    return
                if answer == self.REFUSED:
                    self.logger.warning(
                        "%s: the realtime server refused the long poll; polling every %g s "
                        "instead", self.name, run.poll_seconds)
                    self.long_poll_refused = True
                    return
                if answer == self.FAILED:
                    failures += 1
                    if not run.sleep(self.retry_wait(RuntimeError(answer), failures)):
                        return
                if answer in ("new_change", self.FAILED):
                    yield from run.read_new(self, context)
                elif answer != self.TIMED_OUT:
                    self.logger.debug("%s: long poll answered %r: asking for a new realtime "
                                      "server", self.name, answer)
                    break

    def realtime_server(self) -> RealtimeServer:
        """`OPTIONS /events`, with the SDK's retries and error handling."""
        params = {} if self.stream_type == "all" else {"stream_type": self.stream_type}
        prepared = self.build_prepared_request(
            method="OPTIONS", url=f"{self.url_base}{self.path}", params=params,
            headers=self.http_headers)
        response = self.request_decorator(self._request)(prepared, None)
        try:
            entry = response.decoded["entries"][0]  # type: ignore[attr-defined]
            return RealtimeServer(
                url=str(entry["url"]),
                # The spec types these as strings, the guide's sample as numbers.
                max_retries=max(1, int(entry.get("max_retries", 10))),
                retry_timeout=float(entry.get("retry_timeout", 610)),
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise TapEventsError(
                f"Box stream '{self.name}': OPTIONS /events did not name a realtime server "
                f"({type(error).__name__}: {error}): {response.text[:200]}", response
            ) from error

    def long_poll(self, server: RealtimeServer) -> str:
        """One wait on the realtime server: its `message`, or what went wrong."""
        from tap_events.tap import is_safe_url  # the tap imports this module

        params = {"stream_position": self.feed_position or self.starting_position(None)}
        # The token only travels over https: Box's realtime URLs are plain http, and the
        # channel in the URL is what names the subscription.
        if is_safe_url(server.url):
            prepared = self.build_prepared_request(
                method="GET", url=server.url, params=params, headers=self.http_headers)
        else:
            prepared = requests.Request("GET", server.url, params=params,
                                        headers={"User-Agent": self.user_agent}).prepare()
        assert self.tail is not None
        try:
            with self.tail.waiting():
                response = self.requests_session.send(
                    prepared, timeout=(10, self.tail.read_timeout(server.retry_timeout)))
        except requests.exceptions.Timeout:
            return self.TIMED_OUT
        except requests.exceptions.RequestException as error:
            self.logger.warning("%s: long poll failed: %s", self.name, type(error).__name__)
            return self.FAILED
        status = response.status_code
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            return self.REFUSED
        try:
            self.validate_response(response)
        except RetriableAPIError as error:
            self.logger.warning("%s: long poll failed: %s", self.name, error)
            return self.FAILED
        except TapEventsError as error:
            # A 4xx from the realtime server (a `max_retries` error among them): start over.
            return str(error)
        body = response.decoded  # type: ignore[attr-defined]
        return str(body.get("message") if isinstance(body, dict) else body)


class BoxEnterpriseEventsStream(BoxStream):
    """`box_enterprise_events`: `admin_logs` (by time window) or `admin_logs_streaming`."""

    name = "box_enterprise_events"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_admin_logs:
            # admin_logs is chronological and filters by time: the bookmark is the time of
            # the last event, and each run reads one fixed window [bookmark, run start].
            self.replication_key = "created_at"
        self.window_end = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    @property
    def is_admin_logs(self) -> bool:
        return self.stream_type == "admin_logs"

    @property
    def stream_type(self) -> str:
        return self.settings["enterprise_stream_type"]

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        if not self.is_admin_logs:
            params = super().get_url_params(context, next_page_token)
        else:
            params = {"stream_type": "admin_logs", "limit": self.settings["page_size"]}
            if next_page_token is None and self.tail is not None:
                # Each poll of a tail run reads a new window, up to the time of that poll.
                self.window_end = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            # Same window on every page, as Box requires for the position to stay valid.
            start = self.get_starting_timestamp(context)
            if start:
                params["created_after"] = start.isoformat()
            params["created_before"] = self.window_end.isoformat()
            if next_page_token:
                params["stream_position"] = next_page_token
        if self.settings.get("event_types"):
            params["event_type"] = ",".join(self.settings["event_types"])
        return params

    def parse_page(self, body: dict, response: requests.Response) -> t.Iterable[dict]:
        if not self.is_admin_logs:
            yield from super().parse_page(body, response)
            return
        position = body.get("next_stream_position")
        for event in body.get("entries") or []:
            event[POSITION_FIELD] = None if position in (None, 0) else str(position)
            yield event


def event_time(event: t.Any) -> datetime.datetime | None:
    """When Box recorded an event (`recorded_at`, else `created_at`); None if unreadable."""
    if not isinstance(event, dict):
        return None
    value = event.get("recorded_at") or event.get("created_at")
    try:
        moment = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


SOURCE = Source(
    name="box",
    label="Box",
    properties=SETTINGS,
    credential_sets=(("access_token",), ("client_id", "client_secret"), (JWT_CONFIG,),
                     (JWT_CONFIG_FILE,)),
    streams=(BoxEventsStream, BoxEnterpriseEventsStream),
    derived_secrets=auth_secrets,
    settings_errors=auth_errors,
)
