"""A stream read from Server-Sent Events: one connection per "page", reconnected as needed.

What every SSE API shares lives here: the streamed connection (`text/event-stream`, body read
as it arrives through the API's `HttpClient`), the idle timeout (any byte resets it), the
chunk loop, the reconnect budget and the tail mode (one connection held open until the
tail's budget ends). An API module subclasses `SSEStream` and declares what is true of its
API: the settings, the schemas, what its comment lines mean (`read_comment`), its cursor
(`is_new`) and the bounds of each connection (`start_run`, `read_from`, `bound_params`).

How it sits on the SDK: one SSE connection is one "page". The request is sent with
`stream=True`, so `validate_response` sees the status before any body is read and the
authenticator, connect-time retries and error handling apply unchanged. The paginator asks for
another connection after every one that brought new events, starting where `read_from` says;
the SDK ends the stream at the first connection with nothing new that closed cleanly. A
connection cut short (a comment meaning so, a dropped socket, silence past the idle timeout)
asks for another connection even when it brought nothing, within the retry budget.
"""

from __future__ import annotations

import datetime
import time
import typing as t
from dataclasses import dataclass

import requests
from singer_sdk.pagination import BaseAPIPaginator

from tap_events import sse
from tap_events.client import CursorStream
from tap_events.errors import TapEventsError
from tap_events.http import DEADLINE_READ_TIMEOUTS, DeadlineExceeded

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_events.http import Timeout

#: Bytes asked of the socket at a time. Chunked responses hand over each event as it comes.
READ_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class Connection:
    """The paginator's token: which connection of the run, reading from when."""

    number: int
    since: datetime.datetime


class ReconnectPaginator(BaseAPIPaginator[Connection | None]):
    """One SSE connection per page; the stream decides where the next one starts."""

    def __init__(self, stream: SSEStream) -> None:
        super().__init__(start_value=None)
        self.stream = stream

    def get_next(self, response: requests.Response) -> Connection | None:
        if self.stream.tail is not None and self.stream.tail.over:
            return None
        number = self.current_value.number + 1 if self.current_value else 1
        return Connection(number, self.stream.read_from())

    def continue_if_empty(self, response: requests.Response) -> bool:
        """A connection cut short with nothing new is retried; a clean one ends the stream."""
        return bool(self.stream.interruption)


class SSEStream(CursorStream):
    """One SSE endpoint; API modules fill in the hooks below the line "the API's part"."""

    expects_json = False
    # The next connection starts from what this one delivered: nothing to fetch ahead.
    PREFETCH = False
    # A replay is one long response: STATE every this many records, not only between pages.
    STATE_MSG_FREQUENCY = 1000
    #: The setting (under the API's key) holding the idle timeout in seconds.
    idle_timeout_setting: t.ClassVar[str] = "idle_timeout_seconds"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        #: Why the last connection was cut short (None: it ended cleanly).
        self.interruption: str | None = None
        self._interruptions = 0

    @property
    def http_headers(self) -> dict:
        return {**super().http_headers, "Accept": "text/event-stream"}

    @property
    def idle_seconds(self) -> float:
        return float(self.settings[self.idle_timeout_setting])

    @property
    def timeout(self) -> Timeout:  # type: ignore[override]
        """The read timeout is the idle timer: any byte (an event, a heartbeat) resets it.

        While tailing it is also cut to the time left, so a quiet stream ends on time.
        """
        idle = self.idle_seconds
        return self.http.timeout(idle if self.tail is None else self.tail.read_timeout(idle))

    def envelope_problem(self, response: requests.Response) -> str | None:
        """An answer that is not an event stream (a gateway's JSON or HTML with status 200)
        would read as a stream that closed with nothing new: "caught up"."""
        kind = response.headers.get("Content-Type", "")
        if kind.split(";")[0].strip().lower() == "text/event-stream":
            return None
        response.close()
        return f"Content-Type {kind or 'missing'!r} instead of 'text/event-stream'"

    @property
    def request_deadline(self) -> float:
        """A connection ends by the replay's upper bound (`upper_bound`) plus a grace of a
        few read timeouts (idle or request, the longer; a long replay takes time to send);
        a server still sending heartbeats then is cut, and the next connection resumes where
        this one stopped. Tailing: the tail's deadline."""
        if self.tail is not None:
            return self.tail.remaining()
        bound = self.upper_bound()
        now = datetime.datetime.now(datetime.UTC)
        left = 0.0 if bound is None else (bound - now).total_seconds()
        grace = DEADLINE_READ_TIMEOUTS * max(self.idle_seconds, self.http.read_timeout)
        return max(0.0, left) + grace

    def tail_records(self, context: Context | None) -> Iterator[dict]:
        """One open connection, reconnected as needed, until the tail's budget ends."""
        yield from self.request_records(context)

    def get_new_paginator(self) -> ReconnectPaginator:
        return ReconnectPaginator(self)

    def get_url_params(self, context: Context | None, next_page_token: Connection | None
                       ) -> dict[str, t.Any]:
        """The bounds of the next connection; the first one of a sync starts the run."""
        if next_page_token is None:
            self.start_run(context)
        since = next_page_token.since if next_page_token else self.read_from()
        return self.bound_params(since)

    # ----------------------------------------------------------------- reading

    def parse_page(self, body: None, response: requests.Response) -> Iterator[dict]:
        """The new events of one connection, until it closes or must be reconnected.

        Each event is yielded only once the previous one was written (the SDK pulls the next
        record after writing one), so the cursor always describes what was emitted.
        """
        interruption: str | None = None
        fresh = 0
        chunks: Iterable[bytes] = self.http.chunks(response, READ_CHUNK_BYTES)
        if self.tail is not None:
            # Tailing: other streams write while this one waits; the budget ends the read.
            chunks = self.tail.body_chunks(response, iter(chunks), self.timeout[1])
        try:
            for item in sse.parse(chunks, self.http.max_response_bytes):
                if isinstance(item, sse.Comment):
                    interruption = self.read_comment(item.text)
                    if interruption:
                        break
                    continue
                try:
                    events = self.events_of(item)
                except ValueError as error:
                    interruption = f"an event that is not valid JSON ({error})"
                    break
                for event in events:
                    if self.is_new(event):
                        fresh += 1
                        yield event
        except requests.exceptions.RequestException as error:
            interruption = self.describe_lost_connection(error)
        except sse.TooLong as error:
            raise TapEventsError(
                f"{self.error_prefix}{error}, more than max_response_mb="
                f"{self.http.max_response_mb:g} allows (raise max_response_mb if the API "
                "really sends events this large)",
                response,
            ) from None
        finally:
            response.close()
        if self.tail is not None:
            # The budget's end is no interruption; a close before it is one (the server
            # never ends a stream without an upper bound by itself).
            interruption = None if self.tail.over else interruption or "a closed connection"
        self.interruption = interruption
        if interruption:
            self.before_reconnect(interruption, fresh)
        else:
            self._interruptions = 0

    def events_of(self, item: sse.Event) -> list[dict]:
        """A `data:` payload: one JSON event or a list of them."""
        payload = self.decode(item.data.encode())
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(event, dict) for event in events):
            raise ValueError(f"expected an object or a list of objects: {item.data[:80]!r}")
        return events

    def describe_lost_connection(self, error: requests.exceptions.RequestException) -> str:
        if isinstance(error, DeadlineExceeded):
            return f"a connection still open past the replay's bound ({error})"
        if "timed out" in str(error).lower():
            return f"no event or heartbeat for {self.settings[self.idle_timeout_setting]} s"
        return f"a lost connection ({type(error).__name__})"

    #: Interruptions followed by a new connection at once: waiting would only lose more.
    RECONNECT_AT_ONCE: t.ClassVar[tuple[str, ...]] = ()

    def before_reconnect(self, interruption: str, fresh: int) -> None:
        """Count connections cut short without a new event; wait before the next one.

        Cuts back off like a failed request (except `RECONNECT_AT_ONCE`). The budget is
        `max_retries` cuts in a row.
        """
        self._interruptions = 0 if fresh else self._interruptions + 1
        if self._interruptions >= self.backoff_max_tries():
            raise TapEventsError(
                f"{self.error_prefix}the stream was cut short by {interruption} "
                f"{self._interruptions} times in a row without a new event "
                f"(check {self.setting_name(self.url_setting)} and the network)"
            )
        wait = 0.0
        if not any(reason in interruption for reason in self.RECONNECT_AT_ONCE):
            wait = self.retry_wait(RuntimeError(interruption), self._interruptions + 1)
        self.logger.warning("%s: reconnecting in %.1f s after %s", self.name, wait,
                            interruption)
        if wait and self.tail is not None:
            self.tail.sleep(wait)
        elif wait:
            time.sleep(wait)

    # ----------------------------------------------------------------- the API's part

    def start_run(self, context: Context | None) -> None:
        """Once per sync, before the first connection: fix the run's bounds, read the bookmark."""

    def upper_bound(self) -> datetime.datetime | None:
        """Up to when the next connection replays (None: no upper bound)."""
        return None

    def read_from(self) -> datetime.datetime:
        """Where the next connection starts."""
        raise NotImplementedError

    def bound_params(self, since: datetime.datetime) -> dict[str, t.Any]:
        """The query parameters bounding a connection that starts at `since`."""
        raise NotImplementedError

    def is_new(self, event: dict) -> bool:
        """Whether to emit `event` (not yet emitted this run); stamps it with the cursor."""
        raise NotImplementedError

    def read_comment(self, text: str) -> str | None:
        """Why a comment line means "reconnect", or None (a heartbeat, anything else)."""
        return None
