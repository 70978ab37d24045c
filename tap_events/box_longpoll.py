"""Box's long-poll protocol (../shared/apis/box.md, "Long-poll protocol"), for tail mode.

`OPTIONS /events` names a realtime server; a GET there waits until the feed has news
(`new_change`: read from the bookmark, then wait again) or the server wants a new subscription
(`reconnect`: ask OPTIONS again). Every request goes through the API's `HttpClient`; the token
only travels over https (Box's realtime URLs are plain http: the channel in the URL names the
subscription).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_events.client import EventStream
from tap_events.errors import TapEventsError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context


@dataclass(frozen=True)
class RealtimeServer:
    """One entry of `OPTIONS /events`: where to long-poll, for how long, how often."""

    url: str
    max_retries: int
    retry_timeout: float


class LongPollStream(EventStream):
    """A stream that listens by long-polling while tailing (`tail_records`)."""

    #: Long-poll answers (`message`) beside Box's own `new_change` and `reconnect`.
    TIMED_OUT = "timed out"
    FAILED = "failed"
    REFUSED = "refused"

    #: Set once the realtime server refused this run: the stream then polls.
    long_poll_refused = False

    def realtime_params(self) -> dict[str, str]:
        """The query of `OPTIONS /events` (which feed to subscribe to)."""
        return {}

    def poll_position(self) -> str:
        """The feed position a long poll waits past."""
        raise NotImplementedError

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
        params = self.realtime_params()
        prepared = self.build_prepared_request(
            method="OPTIONS", url=f"{self.url_base}{self.path}", params=params,
            headers=self.http_headers)
        response = self.request_decorator(self.send_page)(prepared, None)
        try:
            entry = self.page_body(response)["entries"][0]
            return RealtimeServer(
                url=str(entry["url"]),
                # The spec types these as strings, the guide's sample as numbers.
                max_retries=max(1, int(entry.get("max_retries", 10))),
                retry_timeout=float(entry.get("retry_timeout", 610)),
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise TapEventsError(
                f"{self.error_prefix}OPTIONS /events did not name a realtime server "
                f"({type(error).__name__}: {error}): {response.text[:200]}", response
            ) from error

    def long_poll(self, server: RealtimeServer) -> str:
        """One wait on the realtime server: its `message`, or what went wrong."""
        params = {"stream_position": self.poll_position()}
        # The token only goes to the API's own origin: Box's realtime servers are elsewhere
        # (and plain http), and the channel in the URL is what names the subscription.
        setting = self.setting_name(self.url_setting)
        if self.http.is_pinned(server.url, setting):
            prepared = self.build_prepared_request(
                method="GET", url=server.url, params=params, headers=self.http_headers)
        else:
            prepared = self.http.prepare("GET", server.url, params=params,
                                         headers={"User-Agent": self.user_agent})
        assert self.tail is not None
        try:
            with self.tail.waiting():
                # The realtime server's URL comes from OPTIONS at the API's URL.
                response = self.http.request(
                    prepared, setting=setting,
                    timeout=self.http.timeout(self.tail.read_timeout(server.retry_timeout)))
        except requests.exceptions.Timeout:
            return self.TIMED_OUT
        except requests.exceptions.RequestException as error:
            self.logger.warning("%s: long poll failed: %s", self.name, type(error).__name__)
            return self.FAILED
        status = response.status_code
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            return self.REFUSED
        try:
            # A wake-up (`{"message": "new_change"}`), not a page: no `entries` envelope.
            self.classify(response)
        except RetriableAPIError as error:
            self.logger.warning("%s: long poll failed: %s", self.name, error)
            return self.FAILED
        except TapEventsError as error:
            # A 4xx from the realtime server (a `max_retries` error among them): start over.
            return str(error)
        body = self.page_body(response)
        return str(body.get("message") if isinstance(body, dict) else body)


