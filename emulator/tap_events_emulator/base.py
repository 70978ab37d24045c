"""What every emulated API shares: deterministic data, routing, credentials, a request log."""

from __future__ import annotations

import datetime
import hashlib
import random
import threading
import typing as t
from collections import deque

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

#: Spacing of generated events in time. The first event lies this many seconds times the
#: initial event count before the emulator started, so every event is in the past.
EVENT_SPACING_SECONDS = 1


def parse_time(value: str | None) -> datetime.datetime | None:
    """An ISO 8601 query parameter; a `+` offset arrives as a space when not URL-encoded."""
    if not value:
        return None
    moment = datetime.datetime.fromisoformat(value.replace(" ", "+"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment


def json_response(body: t.Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers,
                    content_type="application/json")


class EmulatedAPI:
    """One API: subclasses declare `name`, `url_map` and the endpoint methods it names."""

    name: t.ClassVar[str]
    url_map: t.ClassVar[Map]
    #: The path prefix of the requests that read events (not a token endpoint's): tests aim
    #: faults at it to hit the event streams of this API and nothing else.
    fault_path: t.ClassVar[str] = ""
    #: The values this API answers to, by the name of the tap's setting (`tap_events.sources`):
    #: one of the tap's credential sets, and the ids the data is generated for. The URL
    #: settings are not listed: `tap_config` derives them from the tap's defaults.
    tap_settings: t.ClassVar[dict[str, t.Any]]

    def __init__(self, *, events: int, seed: int, now: datetime.datetime | None = None) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        #: Notified when events are added: wakes long polls and open streams waiting for them.
        self.added = threading.Condition(self.lock)
        self.requests: deque[dict[str, t.Any]] = deque(maxlen=10_000)
        started = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
        # Events are a function of their index: memory does not grow with the event count.
        self.epoch = started - datetime.timedelta(seconds=(events + 3600) * EVENT_SPACING_SECONDS)
        self.count = events

    # ----------------------------------------------------------------- data helpers

    def rng(self, *key: t.Any) -> random.Random:
        """A generator seeded by (seed, key): the same event always looks the same."""
        return random.Random(f"{self.seed}:{self.name}:{':'.join(map(str, key))}")

    def digest(self, *key: t.Any) -> str:
        return hashlib.sha1(f"{self.seed}:{self.name}:{key}".encode()).hexdigest()

    def time_of(self, index: int) -> datetime.datetime:
        return self.epoch + datetime.timedelta(seconds=index * EVENT_SPACING_SECONDS)

    def add_events(self, count: int, **options: t.Any) -> dict[str, t.Any]:
        """Append `count` new events (between two runs of a test or the demo)."""
        with self.lock:
            self.count += count
            self.added.notify_all()
            return {"events": self.count}

    def stream_counts(self) -> dict[str, int]:
        """Distinct events each tap stream should load from this API with the default
        `tap_config` (tests and the end-to-end check compare warehouse rows with these)."""
        raise NotImplementedError

    def stats(self) -> dict[str, t.Any]:
        return {"events": self.count, "streams": self.stream_counts(),
                "requests": list(self.requests)}

    # ----------------------------------------------------------------- dispatch

    def handle(self, request: Request, path: str) -> Response:
        self.requests.append(
            {"method": request.method, "path": path, "query": request.args.to_dict(flat=False)}
        )
        adapter = self.url_map.bind("emulator", path_info=path)
        try:
            endpoint, values = adapter.match(method=request.method)
        except NotFound:
            return self.error(404, "not_found", f"No such endpoint: {path}")
        except MethodNotAllowed:
            return self.error(405, "method_not_allowed", f"{request.method} not allowed")
        except HTTPException as error:
            return self.error(error.code or 400, "bad_request", str(error))
        return getattr(self, endpoint)(request, **values)

    def error(self, status: int, code: str, message: str) -> Response:
        """The API's own error body; subclasses shape it like the real API."""
        return json_response({"status": status, "code": code, "message": message}, status)
