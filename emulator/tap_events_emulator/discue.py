"""discue.io `GET /v1/events` as ../shared/apis/discue.md documents it.

- `X-API-KEY` authentication; a wrong key answers 401, and after `lock_after` failures within
  `lock_seconds` every request (even with the right key) answers 403 for `lock_seconds`;
- keyset paging: `startAfter` (epoch ms) + `startAfterId` return the events after that one, in
  stored order; `startAfter` alone has no effect, as documented; an unknown id resumes after
  the millisecond;
- events are stored `TIE` to a millisecond, so page boundaries fall inside one millisecond;
  within it the order is the order of storage, not of ids (the tap must not compare ids);
- only the last 24 hours are served: the first `expired` events lie before that window;
- `events` filters by category, `limit` caps the page;
- error bodies `{"title", "status"}`; with `rate_limit` (requests per second) a 429 carries
  `X-RateLimit-Reset` (epoch seconds), as the docs describe.
"""

from __future__ import annotations

import bisect
import datetime
import math
import string
import time
import typing as t
from collections import deque
from http import HTTPStatus

from werkzeug.routing import Map, Rule

from tap_events_emulator.base import EmulatedAPI, json_response

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

API_KEY = "emulator-discue-key"
CLIENT_ID = "Huhk616YWbmBa5GNNBYjh"
#: Events stored in the same millisecond.
TIE = 7
WINDOW_MS = 24 * 3600 * 1000
#: Initial events are spread over at most this long, ending an hour before the start, so
#: later `add_events` still land in the past and everything stays inside the 24-hour window.
SPREAD_MS = 22 * 3600 * 1000
NANOID_ALPHABET = string.ascii_letters + string.digits + "_-"

CATEGORIES = {
    "api_keys": ("api_key_added", "api_key_updated", "api_key_deleted"),
    "queues": ("queue_added", "queue_updated", "queue_deleted"),
    "listeners": ("listener_added", "listener_updated", "listener_deleted"),
    "messages": ("message_added", "message_published_ok", "message_published_not_ok"),
}
CATEGORY_NAMES = tuple(CATEGORIES)


class DiscueAPI(EmulatedAPI):
    name = "discue"
    tap_settings = {"api_key": API_KEY}
    url_map = Map([Rule("/v1/events", endpoint="events", methods=["GET"])])

    DEFAULT_LIMIT = 100
    MAX_LIMIT = 1000

    def __init__(self, *, events: int, seed: int, expired: int = 3 * TIE, rate_limit: int = 0,
                 lock_after: int = 5, lock_seconds: float = 60.0,
                 now: datetime.datetime | None = None) -> None:
        started = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
        super().__init__(events=events, seed=seed, now=started)
        started_ms = int(started.timestamp() * 1000)
        groups = events // TIE + 1
        # A prime spacing, so stamps do not all end in 000.
        self.spacing_ms = max(1, min(1009, SPREAD_MS // groups))
        self.first_ms = started_ms - 3600 * 1000 - groups * self.spacing_ms
        # Expired events have negative indexes and lie just before the 24-hour window.
        self.expired = expired
        self.expired_end_ms = started_ms - WINDOW_MS - 60 * 1000
        self.rate_limit = rate_limit
        self.rate_window = (0, 0)  # (epoch second, requests in it)
        self.lock_after = lock_after
        self.lock_seconds = lock_seconds
        self.failed_logins: deque[float] = deque()
        self.locked_until = 0.0

    def stream_counts(self) -> dict[str, int]:
        return {"discue_events": self.count}

    def error(self, status: int, code: str = "", message: str = "") -> Response:
        return json_response({"title": HTTPStatus(status).phrase, "status": status}, status)

    # ----------------------------------------------------------------- events

    def stored_at(self, index: int) -> int:
        group = index // TIE
        if group < 0:
            return self.expired_end_ms + group * self.spacing_ms
        return self.first_ms + group * self.spacing_ms

    def nanoid(self, *key: t.Any) -> str:
        """A 21-character id in nanoid's alphabet, as discue's ids are."""
        raw = bytes.fromhex(self.digest(*key, 1) + self.digest(*key, 2))
        return "".join(NANOID_ALPHABET[byte % 64] for byte in raw[:21])

    def event_id(self, index: int) -> str:
        return self.nanoid("event", index)

    def category(self, index: int) -> str:
        return CATEGORY_NAMES[self.rng("category", index).randrange(len(CATEGORY_NAMES))]

    def event(self, index: int) -> dict[str, t.Any]:
        rng = self.rng("event", index)
        category = self.category(index)
        queue = rng.randrange(20)
        event: dict[str, t.Any] = {
            "id": self.event_id(index),
            "type": rng.choice(CATEGORIES[category]),
            "stored_at": self.stored_at(index),
            "client": {"id": CLIENT_ID},
        }
        if category == "api_keys":
            key = rng.randrange(5)
            event["api_key"] = {"id": self.nanoid("api_key", key), "name": f"key-{key}"}
            return event
        event["queue"] = {"id": self.nanoid("queue", queue), "name": f"io.example/queue-{queue}"}
        if category == "listeners":
            event["listener"] = {"id": self.nanoid("listener", queue),
                                 "name": f"io.example/listener-{queue}"}
        if category == "messages":
            event["message"] = {"id": self.nanoid("message", index), "name": f"message-{index}"}
        return event

    def first_after(self, indexes: range, after_ms: int, after_id: str) -> int:
        """The index following event (`after_ms`, `after_id`) in stored order."""
        start = bisect.bisect_left(indexes, after_ms, key=self.stored_at)
        end = bisect.bisect_right(indexes, after_ms, key=self.stored_at)
        for position in range(start, end):
            if self.event_id(indexes[position]) == after_id:
                return indexes[position] + 1
        return indexes.start + end

    # ----------------------------------------------------------------- endpoint

    def events(self, request: Request) -> Response:
        now = time.time()
        if self.rate_limited(now):
            return self.rate_limit_response(now)
        refused = self.refuse_login(request, now)
        if refused is not None:
            return refused
        args = request.args
        category = args.get("events", "all")
        try:
            limit = int(args.get("limit", self.DEFAULT_LIMIT))
            after_ms = int(args["startAfter"]) if args.get("startAfter") else None
        except ValueError:
            return self.error(400)
        if limit < 1 or (category != "all" and category not in CATEGORIES):
            return self.error(400)
        limit = min(limit, self.MAX_LIMIT)
        with self.lock:
            indexes = range(-self.expired, self.count)
        # Only the last 24 hours exist.
        index = indexes.start + bisect.bisect_right(indexes, int(now * 1000) - WINDOW_MS,
                                                    key=self.stored_at)
        after_id = args.get("startAfterId")
        if after_ms is not None and after_id:
            index = max(index, self.first_after(indexes, after_ms, after_id))
        page: list[dict[str, t.Any]] = []
        while index < indexes.stop and len(page) < limit:
            if category == "all" or self.category(index) == category:
                page.append(self.event(index))
            index += 1
        return json_response({"events": page, "_links": {"self": {"href": request.url}}},
                             headers=self.rate_headers(now))

    def refuse_login(self, request: Request, now: float) -> Response | None:
        """401 for a wrong key; 403 for everyone once too many wrong keys came in a row."""
        with self.lock:
            if now < self.locked_until:
                return self.error(403)
            if request.headers.get("X-API-KEY") == API_KEY:
                return None
            self.failed_logins.append(now)
            while self.failed_logins and self.failed_logins[0] < now - self.lock_seconds:
                self.failed_logins.popleft()
            if len(self.failed_logins) >= self.lock_after:
                self.locked_until = now + self.lock_seconds
        return self.error(401)

    def rate_limited(self, now: float) -> bool:
        if not self.rate_limit:
            return False
        with self.lock:
            second, used = self.rate_window
            if second != int(now):
                second, used = int(now), 0
            self.rate_window = (second, used + 1)
            return used >= self.rate_limit

    def rate_headers(self, now: float) -> dict[str, str]:
        if not self.rate_limit:
            return {}
        used = self.rate_window[1]
        return {"X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
                "X-RateLimit-Reset": str(math.floor(now) + 1)}

    def rate_limit_response(self, now: float) -> Response:
        response = self.error(429)
        response.headers.update(self.rate_headers(now))
        return response
