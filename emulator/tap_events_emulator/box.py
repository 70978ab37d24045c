"""Box Events as ../shared/apis/box.md documents it.

- `GET /2.0/events` for the user feeds (`all`, `changes`, `sync`) and the enterprise feeds
  (`admin_logs`, `admin_logs_streaming`), paged by `stream_position`;
- 20-digit positions, sent as a JSON string on user feeds and as a JSON number on enterprise
  feeds (the type flip Box has shown); `0` or none starts at the oldest event, `now` answers an
  empty page with the current position;
- at-least-once feeds (all but `admin_logs`) repeat the last event of the previous page, and
  some pages come back short although more events exist;
- an empty page ends the feed: user feeds echo the position, `admin_logs` answers position `0`;
- `admin_logs` honours `created_after`/`created_before`, both enterprise feeds `event_type`;
- `POST /oauth2/token`: the Client Credentials Grant, and the JWT bearer grant, whose assertion
  is verified as Box does (RS256/384/512 signature by the public key its `kid` names, `iss` =
  the client id, `sub` + `box_sub_type`, `aud` = the token URL, `exp` in the future and at most
  60 s ahead, a `jti` of 16-128 characters never used before), refusals in OAuth form
  `{"error", "error_description"}`; `new_jwt_app()` plays the Developer Console and hands out
  a `config.json` with a fresh key pair;
- 401 for a wrong or expired token; `token_uses` makes each minted token expire after that many
  requests (a token that dies mid-run);
- a position answered to `stream_position=now` follows no page, so resuming from it repeats
  nothing: the next events are all new;
- long polling for the user feeds: `OPTIONS /2.0/events` names a realtime server (`ttl` and
  `max_retries` as strings on even channels, numbers on odd ones, as spec and guide differ);
  `GET /realtime/subscribe?channel=…&stream_position=…` answers `new_change` at once when
  events lie past the position or as soon as some are added, `reconnect` after
  `realtime_timeout` seconds without any, and `max_retries` once the channel has been
  polled more than `max_retries` times.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import time
import typing as t
import uuid
from collections import OrderedDict

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.routing import Map, Rule

from tap_events_emulator.base import EmulatedAPI, json_response, parse_time

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

USER_BASE = 10**19  # positions of the user feed have 20 digits
ENTERPRISE_BASE = 7 * 10**18
CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
DEVELOPER_TOKEN = "emulator-box-token"
#: The enterprise the emulated apps belong to (the `sub` of an enterprise assertion).
ENTERPRISE_ID = "12345"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Box refuses an assertion whose `exp` lies further ahead than this.
JWT_MAX_LIFETIME_SECONDS = 60
JWT_ALGORITHMS = ["RS256", "RS384", "RS512"]

USER_EVENT_TYPES = ["ITEM_UPLOAD", "ITEM_DOWNLOAD", "ITEM_PREVIEW", "ITEM_MOVE", "ITEM_RENAME",
                    "ITEM_TRASH", "COMMENT_CREATE", "COLLAB_ADD_COLLABORATOR", "ITEM_SHARED",
                    "LOCK_CREATE"]
ENTERPRISE_EVENT_TYPES = ["LOGIN", "FAILED_LOGIN", "UPLOAD", "DOWNLOAD", "PREVIEW", "DELETE",
                          "COLLABORATION_INVITE", "SHIELD_ALERT", "GROUP_ADD_USER", "EDIT_USER"]
#: Indexes of late admin_logs events start here (their ids differ from every other event's).
LATE_INDEX = 10**9
NAMES = ["Dana Ortiz", "Lee Park", "Sam Rivera", "Ada Moss", "Kim Novak", "Omar Haddad"]


def box_time(moment: datetime.datetime, index: int) -> str:
    """Box stamps times with offsets; alternate -08:00 and Z to exercise both."""
    if index % 2:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (moment - datetime.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S-08:00")


class BoxAPI(EmulatedAPI):
    name = "box"
    url_map = Map([
        Rule("/2.0/events", endpoint="events", methods=["GET", "OPTIONS"]),
        Rule("/oauth2/token", endpoint="token", methods=["POST"]),
        Rule("/realtime/subscribe", endpoint="realtime", methods=["GET"]),
    ])
    fault_path = "/2.0/events"
    tap_settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                    "subject_type": "enterprise", "subject_id": "12345"}

    #: Every this many pages of an at-least-once feed comes back at half size.
    SHORT_PAGE_EVERY = 5

    #: Realtime channels remembered (with their poll counts); older ones are forgotten.
    CHANNELS_KEPT = 1000
    #: `jti` values remembered to refuse a replayed assertion (they expire within 60 s).
    JTIS_KEPT = 100_000

    def __init__(self, *, events: int, seed: int, token_ttl: int = 3600,
                 token_uses: int | None = None, jwt_audience: str | None = None,
                 clock_offset_seconds: float = 0.0,
                 realtime_timeout: float = 600.0, retry_timeout: int = 610,
                 max_retries: int = 10, **kwargs: t.Any) -> None:
        super().__init__(events=events, seed=seed, **kwargs)
        self.user_count = events
        self.enterprise_count = events
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}
        #: Requests each minted token still answers (with `token_uses`).
        self.token_uses = token_uses
        self.uses_left: dict[str, int] = {}
        #: Public keys by id, as the Developer Console registers them (`new_jwt_app`).
        self.jwt_keys: dict[str, t.Any] = {}
        #: The `aud` an assertion must carry; by default the URL the token request came to.
        self.jwt_audience = jwt_audience
        #: How far the emulator's clock runs ahead of the machine's (a skewed client).
        self.clock_offset = clock_offset_seconds
        self.used_jtis: OrderedDict[str, None] = OrderedDict()
        #: Every assertion received, verified or not (tests grep the tap's output for them).
        self.assertions: list[str] = []
        #: Positions answered to `stream_position=now`, per feed base.
        self.now_positions: set[int] = set()
        #: Seconds a long poll waits for an event before answering `reconnect`.
        self.realtime_timeout = realtime_timeout
        #: Advertised by OPTIONS: the client's read timeout and polls per channel.
        self.retry_timeout = retry_timeout
        self.max_retries = max_retries
        self.channels: OrderedDict[str, int] = OrderedDict()
        self.channel_numbers = itertools.count()
        #: admin_logs events indexed late (`add_events(feed="late")`), in the order added.
        self.late: list[dict] = []

    def add_events(self, count: int, feed: str = "all", **options: t.Any) -> dict[str, t.Any]:
        """`feed="late"`: `count` admin_logs events indexed only now, stamped
        `seconds_before` (default 120) before the newest enterprise event: what Box's
        higher-latency `admin_logs` does (../shared/apis/box.md, "admin_logs lateness")."""
        if feed == "late":
            return self.add_late_events(count, float(options.get("seconds_before", 120)))
        with self.lock:
            if feed in ("all", "user"):
                self.user_count += count
            if feed in ("all", "enterprise"):
                self.enterprise_count += count
            self.count = max(self.user_count, self.enterprise_count)
            self.added.notify_all()
            return {"user_events": self.user_count, "enterprise_events": self.enterprise_count}

    def add_late_events(self, count: int, seconds_before: float) -> dict[str, t.Any]:
        with self.lock:
            newest = self.time_of(self.enterprise_count - 1)
            for _ in range(count):
                number = len(self.late)
                event = self.enterprise_event(LATE_INDEX + number)
                event["created_at"] = box_time(
                    newest - datetime.timedelta(seconds=seconds_before), number)
                self.late.append(event)
            self.added.notify_all()
            return {"late_events": len(self.late)}

    def stream_counts(self) -> dict[str, int]:
        return {"box_events": self.user_count,
                "box_enterprise_events": self.enterprise_count + len(self.late)}

    def error(self, status: int, code: str, message: str) -> Response:
        return json_response({
            "type": "error", "status": status, "code": code, "message": message,
            "help_url": "https://developer.box.com/guides/api-calls/permissions-and-errors/",
            "request_id": self.digest("request", time.monotonic())[:12],
        }, status)

    # ----------------------------------------------------------------- events

    def user_event(self, index: int) -> dict[str, t.Any]:
        rng = self.rng("user", index)
        moment = self.time_of(index)
        user = rng.randrange(len(NAMES))
        actor = ({"type": "user", "id": "2", "name": "Unknown User", "login": ""}
                 if rng.random() < 0.05 else
                 {"type": "user", "id": str(20443187000 + user), "name": NAMES[user],
                  "login": f"user{user}@example.com"})
        file_id = str(1598821000000 + rng.randrange(10**6))
        source = None if rng.random() < 0.03 else {
            "type": "file", "id": file_id, "sequence_id": "0", "etag": "0",
            "sha1": self.digest("sha", file_id), "name": f"report-{file_id[-4:]}.xlsx",
            "description": "", "size": rng.randrange(1, 10**7), "item_status": "active",
            "synced": False, "created_at": box_time(moment, index),
            "modified_at": box_time(moment, index), "trashed_at": None, "purged_at": None,
            "shared_link": None,
            "file_version": {"type": "file_version", "id": str(1756302219000 + index)},
            "parent": {"type": "folder", "id": "301188420015", "sequence_id": "1",
                       "etag": "1", "name": "Finance"},
            "path_collection": {"total_count": 2, "entries": [
                {"type": "folder", "id": "0", "sequence_id": None, "etag": None,
                 "name": "All Files"},
                {"type": "folder", "id": "301188420015", "sequence_id": "1", "etag": "1",
                 "name": "Finance"}]},
            "created_by": actor, "modified_by": actor, "owned_by": actor,
        }
        return {
            "type": "event",
            "event_id": self.digest("user", index),
            "event_type": USER_EVENT_TYPES[rng.randrange(len(USER_EVENT_TYPES))],
            "created_at": box_time(moment, index),
            "recorded_at": box_time(moment + datetime.timedelta(seconds=1), index),
            "session_id": None if rng.random() < 0.3 else self.digest("session", user)[:16],
            "created_by": actor,
            "source": source,
        }

    def enterprise_event(self, index: int) -> dict[str, t.Any]:
        rng = self.rng("enterprise", index)
        moment = self.time_of(index)
        event_type = self.enterprise_type(index)
        user = rng.randrange(len(NAMES))
        actor = {"type": "user", "id": str(20443187000 + user), "name": NAMES[user],
                 "login": f"user{user}@example.com"}
        event: dict[str, t.Any] = {
            "type": "event",
            "event_id": str(uuid.UUID(self.digest("enterprise", index)[:32])),
            "event_type": event_type,
            "created_at": box_time(moment, index),
            "session_id": None,
            "created_by": actor,
            "action_by": None,
            "ip_address": f"203.0.113.{rng.randrange(1, 255)}",
            "source": {"item_type": "file", "item_id": str(1598821000000 + index),
                       "item_name": f"contract-{index}.pdf",
                       "parent": {"type": "folder", "id": "301188420015", "name": "Legal"},
                       "owned_by": actor},
            "additional_details": None,
        }
        if event_type in ("LOGIN", "FAILED_LOGIN", "EDIT_USER"):
            event["source"] = actor
        if event_type == "COLLABORATION_INVITE":
            event["accessible_by"] = {"type": "user", "id": "20443187999",
                                      "name": "Guest", "login": "guest@example.org"}
            event["additional_details"] = {"collab_id": str(40000 + index), "role": "editor",
                                           "is_performed_by_admin": False, "type": "invite"}
        if event_type == "SHIELD_ALERT":
            # A free-form source that is neither a file nor a folder.
            event["source"] = {"type": "shield_alert", "rule_name": "Anomalous download",
                               "risk_score": rng.randrange(100)}
            event["additional_details"] = {"shield_alert": {"priority": "high",
                                                            "alert_id": index}}
        return event

    def enterprise_type(self, index: int) -> str:
        return ENTERPRISE_EVENT_TYPES[self.rng("etype", index).randrange(10)]

    # ----------------------------------------------------------------- endpoints

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if token == DEVELOPER_TOKEN:
            return True
        with self.lock:
            expires = self.tokens.get(token)
            if expires is None or expires <= time.time():
                return False
            if token in self.uses_left:
                self.uses_left[token] -= 1
                if self.uses_left[token] < 0:
                    return False
        return True

    def token(self, request: Request) -> Response:
        form = request.form
        grant = form.get("grant_type")
        if grant not in ("client_credentials", JWT_GRANT):
            return oauth_error("unsupported_grant_type", "Grant type is not supported")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return oauth_error("invalid_client", "The client credentials are invalid")
        if grant == JWT_GRANT:
            refusal = self.refuse_assertion(form.get("assertion", ""), request)
            if refusal:
                return oauth_error("invalid_grant", refusal)
        elif form.get("box_subject_type") not in ("enterprise", "user"):
            return oauth_error("invalid_request", "Invalid box_subject_type")
        elif not form.get("box_subject_id"):
            return oauth_error("invalid_request", "Missing box_subject_id")
        token = "minted-" + secrets.token_hex(12)
        with self.lock:
            self.tokens[token] = time.time() + self.token_ttl
            if self.token_uses is not None:
                self.uses_left[token] = self.token_uses
        return json_response({"access_token": token, "expires_in": self.token_ttl,
                              "token_type": "bearer", "restricted_to": []})

    # ----------------------------------------------------------------- JWT

    def new_jwt_app(self, passphrase: str, *, enterprise_id: str = ENTERPRISE_ID,
                    key_size: int = 2048) -> dict[str, t.Any]:
        """What the Developer Console's "Generate a Public/Private Keypair" downloads: a
        `config.json` whose private key is encrypted with `passphrase`; the public key is
        registered here under a new id."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        key_id = secrets.token_hex(4)
        with self.lock:
            self.jwt_keys[key_id] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        ).decode()
        return {
            "boxAppSettings": {
                "clientID": CLIENT_ID,
                "clientSecret": CLIENT_SECRET,
                "appAuth": {"publicKeyID": key_id, "privateKey": pem,
                            "passphrase": passphrase},
            },
            "enterpriseID": enterprise_id,
        }

    def refuse_assertion(self, assertion: str, request: Request) -> str | None:
        """Why Box would refuse this assertion (its own words), or None to accept it."""
        self.assertions.append(assertion)
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return "Invalid JWT: the assertion is not a signed JWT"
        key = self.jwt_keys.get(str(header.get("kid")))
        if key is None:
            return "Please check the 'kid' header: no public key with this ID is registered"
        audience = self.jwt_audience or request.base_url
        try:
            claims = jwt.decode(
                assertion, key, algorithms=JWT_ALGORITHMS, audience=audience,
                options={"verify_exp": False,  # checked below against the emulator's clock
                         "require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.InvalidSignatureError:
            return ('Signature verification error. The public key identified by "kid" must '
                    "correspond to the private key used for signing.")
        except jwt.MissingRequiredClaimError as error:
            return f"Please check the '{error.claim}' claim: it is missing."
        except jwt.InvalidAudienceError:
            return "Please check the 'aud' claim. Should match the token URL."
        except jwt.InvalidTokenError as error:
            return f"Invalid JWT: {error}"
        now = time.time() + self.clock_offset
        exp = claims["exp"]
        if not isinstance(exp, int | float) or exp <= now:
            return ("Current date/time MUST be before the expiration date/time listed in the "
                    "'exp' claim")
        if exp > now + JWT_MAX_LIFETIME_SECONDS:
            return "Please check the 'exp' claim: it lies more than 60 seconds ahead."
        if claims["iss"] != CLIENT_ID:
            return "Please check the 'iss' claim: it must be the client ID."
        subject_type, subject = claims.get("box_sub_type"), str(claims["sub"])
        if subject_type not in ("enterprise", "user"):
            return "Please check the 'box_sub_type' claim."
        if (subject_type == "enterprise" and subject != ENTERPRISE_ID) or not subject.isdigit():
            return "Please check the 'sub' claim."
        jti = claims["jti"]
        if not isinstance(jti, str) or not 16 <= len(jti) <= 128:
            return "Please check the 'jti' claim: 16 to 128 characters."
        with self.lock:
            if jti in self.used_jtis:
                return "A unique 'jti' value is required."
            self.used_jtis[jti] = None
            while len(self.used_jtis) > self.JTIS_KEPT:
                self.used_jtis.popitem(last=False)
        return None

    def events(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.error(401, "unauthorized", "Unauthorized: the access token is invalid "
                              "or has expired")
        args = request.args
        stream_type = args.get("stream_type", "all")
        if request.method == "OPTIONS":
            return self.realtime_servers(request, stream_type)
        try:
            limit = min(int(args.get("limit", 100)), 500)
        except ValueError:
            return self.error(400, "bad_request", "limit must be an integer")
        if limit < 1:
            return self.error(400, "bad_request", "limit must be at least 1")
        if stream_type in ("all", "changes", "sync"):
            return self.feed(args.get("stream_position"), limit, USER_BASE, self.user_count,
                             self.user_event, as_string=True)
        if stream_type not in ("admin_logs", "admin_logs_streaming"):
            return self.error(400, "bad_request", f"Invalid stream_type {stream_type!r}")
        types = {x for x in args.get("event_type", "").split(",") if x}
        if stream_type == "admin_logs_streaming":
            return self.feed(args.get("stream_position"), limit, ENTERPRISE_BASE,
                             self.enterprise_count, self.enterprise_event, as_string=False,
                             types=types)
        return self.admin_logs(args, limit, types)

    # ----------------------------------------------------------------- long polling

    def realtime_servers(self, request: Request, stream_type: str) -> Response:
        if stream_type not in ("all", "changes", "sync"):
            return self.error(400, "bad_request", "Long polling is only available for user "
                              "events")
        number = next(self.channel_numbers)
        channel = self.digest("channel", number)[:20]
        with self.lock:
            self.channels[channel] = 0
            while len(self.channels) > self.CHANNELS_KEPT:
                self.channels.popitem(last=False)
        as_text = number % 2 == 0
        return json_response({"chunk_size": 1, "entries": [{
            "type": "realtime_server",
            "url": f"{request.host_url}{self.name}/realtime/subscribe?channel={channel}"
                   f"&stream_type={stream_type}",
            "ttl": "10" if as_text else 10,
            "max_retries": str(self.max_retries) if as_text else self.max_retries,
            "retry_timeout": self.retry_timeout,
        }]})

    def realtime(self, request: Request) -> Response:
        """One long poll: a tiny message, never events."""
        channel = request.args.get("channel", "")
        raw = request.args.get("stream_position")
        with self.lock:
            polls = self.channels.get(channel)
            if polls is None:
                return self.error(400, "bad_request", f"Unknown channel {channel!r}")
            self.channels[channel] = polls + 1
            if polls >= self.max_retries:
                return json_response({"message": "max_retries", "version": 1})
            index = self.parse_position(raw, USER_BASE, self.user_count)
            if index is None:
                return self.error(400, "bad_request", f"Invalid stream_position {raw!r}")
            changed = self.added.wait_for(lambda: self.user_count > index,
                                          timeout=self.realtime_timeout)
        return json_response({"message": "new_change" if changed else "reconnect",
                              "version": 1})

    def parse_position(self, raw: str | None, base: int, count: int) -> int | None:
        if raw in (None, "", "0"):
            return 0
        if raw == "now":
            with self.lock:
                self.now_positions.add(base + count)
            return count
        try:
            index = int(raw) - base
        except ValueError:
            return None
        return index if 0 <= index <= count else None

    def feed(self, raw: str | None, limit: int, base: int, count: int,
             make: t.Callable[[int], dict], *, as_string: bool,
             types: set[str] | None = None) -> Response:
        """An at-least-once feed: each page repeats the last event of the previous one."""
        index = self.parse_position(raw, base, count)
        if index is None:
            return self.error(400, "bad_request", f"Invalid stream_position {raw!r}")
        if index >= count:
            position = base + index
            return json_response({"chunk_size": 0, "entries": [],
                                  "next_stream_position": str(position) if as_string
                                  else position})
        repeat = index > 0 and limit > 1 and base + index not in self.now_positions
        start = index - 1 if repeat else index
        size = limit // 2 + 1 if (start // max(limit, 1)) % self.SHORT_PAGE_EVERY == 3 else limit
        entries: list[dict] = []
        end = start
        while end < count and len(entries) < size:
            if not types or self.enterprise_type(end) in types:
                entries.append(make(end))
            end += 1
        position = base + end
        return json_response({"chunk_size": len(entries), "entries": entries,
                              "next_stream_position": str(position) if as_string else position})

    def admin_logs(self, args: t.Any, limit: int, types: set[str]) -> Response:
        """Chronological, duplicate-free, within [created_after, created_before]."""
        try:
            after = parse_time(args.get("created_after"))
            before = parse_time(args.get("created_before"))
        except ValueError as error:
            return self.error(400, "bad_request", f"Invalid created_after/created_before: "
                              f"{error}")
        if self.late:
            return self.admin_logs_with_late(args.get("stream_position"), after, before,
                                             limit, types)
        count = self.enterprise_count
        raw = args.get("stream_position")
        if raw in (None, "", "0"):
            index = 0
            if after is not None:
                seconds = (after - self.epoch).total_seconds()
                index = max(0, min(count, -int(-seconds // 1)))
        else:
            index = self.parse_position(raw, ENTERPRISE_BASE, count)
            if index is None:
                return self.error(400, "bad_request", f"Invalid stream_position {raw!r}")
        entries: list[dict] = []
        while index < count and len(entries) < limit:
            moment = self.time_of(index)
            if before is not None and moment > before:
                index = count
                break
            if (after is None or moment >= after) and (not types or
                                                       self.enterprise_type(index) in types):
                entries.append(self.enterprise_event(index))
            index += 1
        if not entries:
            return json_response({"chunk_size": 0, "entries": [], "next_stream_position": 0})
        return json_response({"chunk_size": len(entries), "entries": entries,
                              "next_stream_position": ENTERPRISE_BASE + index})

    def admin_logs_with_late(self, raw: str | None, after: datetime.datetime | None,
                             before: datetime.datetime | None, limit: int,
                             types: set[str]) -> Response:
        """`admin_logs` once late events exist: the window's events in time order, late ones
        among them; a position is an offset into that (fixed) window."""
        def fits(moment: datetime.datetime, event_type: str) -> bool:
            return ((after is None or moment >= after) and (before is None or moment <= before)
                    and (not types or event_type in types))

        window = [(self.time_of(index), index, None) for index in range(self.enterprise_count)
                  if fits(self.time_of(index), self.enterprise_type(index))]
        window += [(parse_time(event["created_at"]), -1, event) for event in self.late
                   if fits(parse_time(event["created_at"]), event["event_type"])]
        window.sort(key=lambda item: item[0])
        offset = 0 if raw in (None, "", "0") else int(raw) - ENTERPRISE_BASE
        if not 0 <= offset <= len(window):
            return self.error(400, "bad_request", f"Invalid stream_position {raw!r}")
        page = window[offset:offset + limit]
        if not page:
            return json_response({"chunk_size": 0, "entries": [], "next_stream_position": 0})
        entries = [event or self.enterprise_event(index) for _, index, event in page]
        return json_response({"chunk_size": len(entries), "entries": entries,
                              "next_stream_position": ENTERPRISE_BASE + offset + len(page)})


def oauth_error(error: str, description: str) -> Response:
    """How Box's token endpoint refuses: OAuth's `{"error", "error_description"}`, HTTP 400."""
    return json_response({"error": error, "error_description": description}, 400)
