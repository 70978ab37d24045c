"""Box Events: the user event stream and the enterprise event stream.

Facts this module relies on (../shared/apis/box.md):
- one endpoint, `GET /events`, paged by an opaque `next_stream_position` that can exceed 2^53
  and has come back both as a number and as a string: it is kept as a string throughout;
- only an empty `entries` page means "caught up" (short pages happen while more exist), and an
  empty `admin_logs` page may carry position `0`, which must never replace a bookmark;
- every feed but `admin_logs` repeats events: they are dropped by `event_id` within a run and
  upserted on `event_id` by the target across runs;
- `admin_logs` honours `created_after`/`created_before`, which must stay the same on every page.
"""

from __future__ import annotations

import datetime
import typing as t
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator, OAuthAuthenticator
from singer_sdk.pagination import BaseAPIPaginator

from tap_events.client import EventStream, TapEventsError
from tap_events.source import Source

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

#: The position a feed starts from when there is no bookmark: the oldest retained event.
OLDEST = "0"
#: The tap-added field carrying the page cursor (see `BoxPositionStream.parse_page`).
POSITION_FIELD = "stream_position"

# ------------------------------------------------------------------------------ settings

SETTINGS = (
    th.Property("api_url", th.StringType, default="https://api.box.com/2.0",
                description="Box API base URL."),
    th.Property("token_url", th.StringType, default="https://api.box.com/oauth2/token",
                description="Box OAuth 2.0 token endpoint (Client Credentials Grant)."),
    th.Property("access_token", th.StringType, secret=True,
                description="A ready bearer token (developer token). Use it, or the client "
                "credentials below, which let the tap mint and refresh its own tokens."),
    th.Property("client_id", th.StringType, description="Client ID of a Box app with "
                "Client Credentials Grant."),
    th.Property("client_secret", th.StringType, secret=True,
                description="Client secret of that Box app."),
    th.Property("subject_type", th.StringType(allowed_values=["enterprise", "user"]),
                default="enterprise",
                description="`enterprise` acts as the app's service account, `user` as a user."),
    th.Property("subject_id", th.StringType,
                description="Enterprise ID (subject_type enterprise) or user ID (user)."),
    th.Property("user_stream_type", th.StringType(allowed_values=["all", "changes", "sync"]),
                default="all", description="Feed read by `box_events`."),
    th.Property("enterprise_stream_type",
                th.StringType(allowed_values=["admin_logs", "admin_logs_streaming"]),
                default="admin_logs", description="Feed read by `box_enterprise_events`: "
                "`admin_logs` (chronological, by time window) or `admin_logs_streaming` "
                "(low latency, repeats events, 14-day retention)."),
    th.Property("event_types", th.ArrayType(th.StringType),
                description="Only these enterprise event types (e.g. LOGIN, UPLOAD)."),
    th.Property("page_size", th.IntegerType(minimum=1, maximum=500), default=500,
                description="Events asked for per page (Box's maximum is 500)."),
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

    def __init__(self, settings: dict[str, t.Any]) -> None:
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

    def invalidate(self) -> None:
        self.access_token = None
        self.last_refreshed = None

    def handle_error(self, *, content: str, status_code: int | None) -> None:
        """Box answers token failures in OAuth form: {"error", "error_description"}."""
        try:
            body = EventStream.decode(content.encode())
            text = f"{body.get('error')}: {body.get('error_description')}"
        except (ValueError, AttributeError):
            text = content[:200]
        raise TapEventsError(
            f"Box token request failed: HTTP {status_code}: {text} "
            "(check box.client_id, box.client_secret, box.subject_type and box.subject_id)"
        )


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
        credentials = (
            "box.access_token" if self.settings.get("access_token")
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
        return self.shared("auth", lambda: BoxClientCredentials(settings))

    def retry_after_refresh(self, response: requests.Response) -> bool:
        """A 401 with minted tokens: mint one new token and retry once."""
        auth = self.authenticator
        if isinstance(auth, BoxClientCredentials) and not getattr(self, "_refreshed", False):
            self._refreshed = True
            auth.invalidate()
            return True
        return False

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

    def starting_position(self, context: Context | None) -> str:
        """The bookmark, or the oldest retained event on a first run."""
        value = self.bookmark(context)
        return OLDEST if value is None else str(value)

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
        if not entries:
            return
        sent = parse_qs(urlsplit(response.request.url).query).get(  # type: ignore[arg-type]
            "stream_position", [OLDEST]
        )[0]
        following = body.get("next_stream_position")
        last = len(entries) - 1
        for index, event in enumerate(entries):
            event[POSITION_FIELD] = (
                str(following) if index == last and following not in (None, "", 0, OLDEST)
                else sent
            )
            yield event

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        if self.seen_before(row["event_id"]):
            return None
        if self.start_date and row.get("created_at"):
            created = datetime.datetime.fromisoformat(row["created_at"])
            if created < self.start_date:
                return None
        return row


class BoxEventsStream(BoxStream):
    """`box_events`: the user event stream (`all`, `changes` or `sync`)."""

    name = "box_events"

    @property
    def stream_type(self) -> str:
        return self.settings["user_stream_type"]


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


SOURCE = Source(
    name="box",
    label="Box",
    properties=SETTINGS,
    credential_sets=(("access_token",), ("client_id", "client_secret")),
    streams=(BoxEventsStream, BoxEnterpriseEventsStream),
)
