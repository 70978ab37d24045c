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
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.pagination import BaseAPIPaginator

from tap_events import box_jwt
from tap_events.box_longpoll import LongPollStream
from tap_events.client import CursorStream
from tap_events.http import page_body
from tap_events.oauth import ClientCredentials
from tap_events.retention import ALLOW_GAP_SETTING
from tap_events.source import Source

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    import requests
    from singer_sdk.helpers.types import Context

    from tap_events.http import HttpClient

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
                description="Enterprise ID (subject_type enterprise) or user ID (user). Required "
                "with client credentials; with JWT, defaults to the enterpriseID of the app's "
                "config.json."),
    th.Property("user_stream_type", th.StringType(allowed_values=["all", "changes", "sync"]),
                default="all", description="Feed read by `box_events`."),
    th.Property("enterprise_stream_type",
                th.StringType(allowed_values=["admin_logs", "admin_logs_streaming"]),
                default="admin_logs", description="Feed read by `box_enterprise_events`: "
                "`admin_logs` (chronological, by time window) or `admin_logs_streaming` "
                "(low latency, repeats events, 14-day retention)."),
    th.Property("lookback_minutes", th.IntegerType(minimum=0, maximum=10080), default=15,
                description="`admin_logs` only: each run re-reads this many minutes before "
                "the bookmark, as Box indexes enterprise events late (\"events can arrive "
                "later than your filtering window\", with no documented bound); repeats are "
                "dropped within a run and upserted across runs. 15 minutes is the lag Box's "
                "integration guidance suggests for admin_logs windows, far above the ~12 s "
                "Box states for its streaming feed; raise it if late events are still missed."),
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


class BoxClientCredentials(ClientCredentials):
    """Box's Client Credentials Grant: the token acts as the app's service account or a user."""

    label = "Box"
    token_url_setting = "box.token_url"
    credentials_hint = "box.client_id, box.client_secret, box.subject_type and box.subject_id"

    def __init__(self, settings: Mapping[str, t.Any], http: HttpClient) -> None:
        super().__init__(token_url=settings["token_url"], client_id=settings["client_id"],
                         client_secret=settings["client_secret"], http=http)
        self.subject = {"box_subject_type": settings["subject_type"]}
        if settings.get("subject_id"):
            self.subject["box_subject_id"] = settings["subject_id"]

    def extra_body(self) -> dict[str, str]:
        return self.subject


class BoxJWT(BoxClientCredentials):
    """JWT server auth: each token request carries a new assertion signed with the app's key.

    Minting, early refresh and the retry after a 401 are the client credentials' own; only
    the request body differs (Box's JWT bearer grant, ../shared/apis/box.md).
    """

    credentials_hint = (f"box.{JWT_CONFIG} (or box.{JWT_CONFIG_FILE}), box.subject_type, "
                        "box.subject_id, box.token_url (the assertion's audience) and this "
                        "machine's clock")

    def __init__(self, settings: Mapping[str, t.Any], http: HttpClient) -> None:
        self.app = jwt_app(settings)
        #: Box checks that the assertion is addressed to the URL it was sent to.
        self.audience = settings["token_url"]
        self.subject_type = settings["subject_type"]
        self.subject_id = jwt_subject(settings, self.app)
        super().__init__({**settings, "client_id": self.app.client_id,
                          "client_secret": self.app.client_secret}, http)

    @property
    def oauth_request_body(self) -> dict:
        assertion = self.app.assertion(audience=self.audience, subject_type=self.subject_type,
                                       subject_id=self.subject_id)
        # A secret before it travels: a server echoing the request body is masked too.
        self.http.secrets.append(assertion)
        return {"grant_type": box_jwt.GRANT_TYPE, "assertion": assertion,
                "client_id": self.client_id, "client_secret": self.client_secret}


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
    """One way to authenticate, a subject for client credentials and a JWT app config the
    tap can use: checked before any request, so a bad file is one line at the start, not a
    failure per stream."""
    given = [f"box.{key}" for keys in AUTH_METHODS.values() for key in keys if settings.get(key)]
    methods = [name for name, keys in AUTH_METHODS.items() if any(settings.get(k) for k in keys)]
    if len(methods) > 1 or (settings.get(JWT_CONFIG) and settings.get(JWT_CONFIG_FILE)):
        return [f"{', '.join(given)} are set: set only one way to authenticate to Box "
                f"({SOURCE.credentials_hint()})"]
    if methods == ["client credentials"] and not settings.get("subject_id"):
        # Box mints a client-credentials token for one subject it must be told.
        return ["box.subject_id is required with box.client_id and box.client_secret: the "
                "enterprise ID (box.subject_type enterprise) or the user ID (user) the token "
                "acts as"]
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


class BoxPositionPaginator(BaseAPIPaginator[str | None]):
    """Follows `next_stream_position` (none before the first page); the SDK stops on the
    first empty page."""

    def get_next(self, response: requests.Response) -> str | None:
        position = page_body(response).get("next_stream_position")
        return None if position in (None, "", 0, OLDEST) else str(position)


class BoxStream(CursorStream):
    """What both Box feeds share: error format, paging, the position cursor."""

    path = "/events"
    primary_keys: t.ClassVar[list[str]] = ["event_id"]
    schema = EVENT_SCHEMA
    # Positions are opaque: the bookmark is the position carried by the last emitted event.
    replication_key = POSITION_FIELD
    start_date_field = "created_at"
    envelope_key = "entries"

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

    bookmark_kind = "a Box stream position (a string of digits)"

    def parse_bookmark(self, value: t.Any) -> t.Any:
        """A position: digits, as a string (or an integer from an older state); a float such
        as 1.2345678901234567e+19 has lost its last digits and is refused."""
        if self.replication_key != POSITION_FIELD:
            return super().parse_bookmark(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return value
        raise ValueError(value)

    @property
    def stream_type(self) -> str:
        """The Box feed (`stream_type`) this stream reads."""
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
        # An event stamped in the future says nothing of what was read: the feed was read
        # through now at most, or the retention guard would sleep until 2099.
        moment = min(moment, datetime.datetime.now(datetime.UTC))
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
        # The position this page was asked for (a sent request always has its URL).
        sent = parse_qs(urlsplit(response.request.url or "").query).get(
            "stream_position", [OLDEST]
        )[0]
        if not entries:
            if sent == NOW and self.feed_position is not None:
                # A first run from now: Box answers the current position and no event.
                self.bookmark_cursor(self.feed_position, self.context)
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


class BoxEventsStream(BoxStream, LongPollStream):
    """`box_events`: the user event stream (`all`, `changes` or `sync`); long-polls in tail
    mode (tap_events/box_longpoll.py)."""

    name = "box_events"

    @property
    def stream_type(self) -> str:
        return self.settings["user_stream_type"]

    def realtime_params(self) -> dict[str, str]:
        return {} if self.stream_type == "all" else {"stream_type": self.stream_type}

    def poll_position(self) -> str:
        return self.feed_position or self.starting_position(None)


class BoxEnterpriseEventsStream(BoxStream):
    """`box_enterprise_events` on `admin_logs_streaming`: low latency, by position, repeats.

    With `box.enterprise_stream_type` `admin_logs`, the tap builds `BoxAdminLogsStream` under
    the same stream name instead (`for_settings`), so the replication key of an instance
    never changes.
    """

    name = "box_enterprise_events"
    stream_type = "admin_logs_streaming"

    @classmethod
    def for_settings(cls, settings: Mapping[str, t.Any]) -> type[BoxStream]:
        if settings.get("enterprise_stream_type", "admin_logs") == "admin_logs":
            return BoxAdminLogsStream
        return cls

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        return {**super().get_url_params(context, next_page_token), **self.type_filter()}

    def type_filter(self) -> dict[str, str]:
        """Only the configured event types (`box.event_types`)."""
        types = self.settings.get("event_types")
        return {"event_type": ",".join(types)} if types else {}


class BoxAdminLogsStream(BoxEnterpriseEventsStream):
    """`box_enterprise_events` on `admin_logs`: chronological, filtered by time.

    The bookmark is the time of the last event, and each run reads one fixed window
    [bookmark - `lookback_minutes`, run start]; the window is the same on every page, as Box
    requires for the position to stay valid. The lookback catches events Box indexes after a
    run read past their time; the overlap is dropped within a run (`dedupe`) and upserted by
    the target across runs, as for Socotra.
    """

    stream_type = "admin_logs"
    replication_key = "created_at"
    window_lag = datetime.timedelta(0)

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        params: dict[str, t.Any] = {"stream_type": self.stream_type,
                                    "limit": self.settings["page_size"]}
        start = self.window_start(context)
        if start:
            params["created_after"] = start.isoformat()
        params["created_before"] = self.window_end.isoformat()
        if next_page_token:
            params["stream_position"] = next_page_token
        return {**params, **self.type_filter()}

    def parse_page(self, body: dict, response: requests.Response) -> t.Iterable[dict]:
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


def authenticator(settings: Mapping[str, t.Any], http: HttpClient
                  ) -> BearerTokenAuthenticator | BoxClientCredentials:
    """A developer token as given, else tokens minted from the app's config.json (JWT) or
    from the client credentials (`auth_errors` made sure only one of them is set)."""
    if settings.get("access_token"):
        return BearerTokenAuthenticator(token=settings["access_token"])
    if settings.get(JWT_CONFIG) or settings.get(JWT_CONFIG_FILE):
        return BoxJWT(settings, http)
    return BoxClientCredentials(settings, http)


SOURCE = Source(
    name="box",
    label="Box",
    properties=SETTINGS,
    credential_sets=(("access_token",), ("client_id", "client_secret"), (JWT_CONFIG,),
                     (JWT_CONFIG_FILE,)),
    authenticator=authenticator,
    streams=(BoxEventsStream, BoxEnterpriseEventsStream),
    derived_secrets=auth_secrets,
    settings_errors=auth_errors,
)
