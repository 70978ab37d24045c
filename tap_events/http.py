"""The one road by which the tap talks HTTP: every request and every response passes here.

`HttpClient` is made once per API per run (`RunContext.http`) and shared by that API's
streams and authenticator. It owns the `requests` session, the timeouts, the retries with
back-off (Retry-After aware), the classification of a response (retriable, fatal, "retry once
with a fresh token"), the decoding of JSON bodies and the text of every HTTP error.

Every request names the setting its URL came from (`setting="box.token_url"`), so errors name
what to check, and rules about where a request may go can be written here once:
- `request` is the only call that puts a request on the wire (pages, token requests, OPTIONS,
  long polls, SSE streams): rules per request (credentials only to the origin of `setting`,
  a total deadline, failing fast on TLS/DNS errors) belong there;
- `chunks` is the only reader of a streamed body, `check` the only reader of a whole body:
  size caps belong there;
- `retrying` / `retry_wait` are the retry policy, `check` the classification.

Origin pinning: credentials travel only to the origin (scheme, host, port) of the setting a
request names. `request` follows redirects itself, and only within the origin of the request
they answer (which rules out https to http): `requests` would follow any redirect and strip
only `Authorization`, not an `X-API-KEY` header, nor a token request's re-POSTed form. TLS and
proxy settings from the environment (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`, `HTTPS_PROXY`,
`NO_PROXY`) are applied to every request here, as `Session.send` alone ignores them.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import socket
import threading
import time
import typing as t
import weakref
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import backoff
import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from singer_sdk.exceptions import RetriableAPIError
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import NameResolutionError

from tap_events import threads
from tap_events.errors import TapEventsError, note_setting
from tap_events.redact import printable, redact

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

#: Longest wait honoured for one Retry-After / X-RateLimit-Reset unless configured otherwise.
DEFAULT_MAX_RETRY_WAIT_SECONDS = 300
#: Seconds to connect, and to wait for the API's answer (or its next bytes), unless configured
#: otherwise: a dead socket is noticed within a minute, not the SDK's 300 s.
CONNECT_TIMEOUT_SECONDS = 10
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60
#: Largest answer accepted unless configured otherwise (`max_response_mb`): far above the
#: largest real page, far below what exhausts a worker's memory.
DEFAULT_MAX_RESPONSE_MB = 100
DEFAULT_MAX_TRIES = 6
#: A request's total deadline (headers and body), in read timeouts: a read timeout alone is
#: reset by every byte, so a server trickling a byte at a time would hold a run forever.
DEADLINE_READ_TIMEOUTS = 3
#: Decoded bytes read from a body at a time (a compressed chunk inflates to at most this
#: much more: urllib3 bounds each decoded read).
BODY_CHUNK_BYTES = 64 * 1024
#: Connections kept per host: every stream of an API may hold one open at once (tail mode).
POOL_SIZE = 32
#: Same-origin redirects followed for one request (`requests` allows 30).
MAX_REDIRECTS = 10
DEFAULT_PORTS = {"http": 80, "https": 443}

#: What is retried: what the SDK's `RESTStream.request_decorator` retries (singer-sdk 0.54).
RETRIED_ERRORS = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

Timeout = tuple[float, float]


class DeadlineExceeded(requests.exceptions.Timeout):
    """A request (headers and body) that did not end within its total deadline; retried
    like any timeout."""


class ResponseTooLarge(TapEventsError):
    """An answer larger than `max_response_mb` (decoded); not retried."""


class Deadline:
    """One request's total deadline: when it passes, the request's socket is shut down, so
    a read blocked on a trickling server returns at once (a timer thread does it)."""

    def __init__(self, seconds: float, setting: str) -> None:
        self.seconds = seconds
        #: The setting the URL came from, for the error.
        self.setting = setting
        self.expired = False
        self.done = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(max(0.0, seconds), self.expire)
        self.timer.daemon = True
        threads.start(self.timer)

    def watch(self, sock: socket.socket | None) -> None:
        """The socket the request is answered on (`WatchedConnection.getresponse`)."""
        with self.lock:
            self.sock = sock
            if self.expired:
                self.shut()

    def expire(self) -> None:
        with self.lock:
            if not self.done:
                self.expired = True
                self.shut()

    def shut(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def end(self) -> None:
        """The request is over: the socket may serve another request, so never shut it."""
        with self.lock:
            self.done = True
        self.timer.cancel()

    def error(self) -> DeadlineExceeded:
        error = DeadlineExceeded(
            f"no complete answer within {self.seconds:.3g} s (the request deadline, "
            f"{DEADLINE_READ_TIMEOUTS} x request_timeout_seconds)")
        note_setting(error, self.setting)
        return error


#: The deadline of the request this thread is sending (read by `WatchedConnection`).
_sending = threading.local()


class WatchedConnection(HTTPConnection):
    """Hands its socket to the deadline of the request being sent, before the headers."""

    def getresponse(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        deadline = getattr(_sending, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)


class WatchedHTTPSConnection(WatchedConnection, HTTPSConnection):
    pass


class WatchedPool(HTTPConnectionPool):
    ConnectionCls = WatchedConnection


class WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections report their socket to the request's `Deadline`."""

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": WatchedPool,
                                                   "https": WatchedHTTPSPool}


class Caller(t.Protocol):
    """Who sends a request (a stream): how it is named, and how its API words errors."""

    @property
    def name(self) -> str: ...

    @property
    def logger(self) -> logging.Logger: ...

    @property
    def error_prefix(self) -> str:
        """`Box stream 'box_events': `, the start of every message about this caller."""
        ...

    def api_error_text(self, response: requests.Response) -> str: ...

    def error_hint(self, status: int) -> str: ...

    def retry_after_refresh(self, response: requests.Response) -> bool: ...


class HttpClient:
    """One API's HTTP for one run: session, timeouts, retries, classification, error text."""

    def __init__(self, *, api: str, config: Mapping[str, t.Any], secrets: list[str],
                 settings: Mapping[str, t.Any] | None = None) -> None:
        #: The API's config key (`box`), which every setting name starts with.
        self.api = api
        #: The API's settings (defaults filled in): `request` pins each request's credentials
        #: to the origin of the URL setting it names.
        self.settings = settings if settings is not None else (config.get(api) or {})
        #: The run's secret values (shared with the log filter; tokens minted later join it).
        self.secrets = secrets
        self.max_tries = int(config.get("max_retries") or DEFAULT_MAX_TRIES)
        self.max_retry_wait = float(
            config.get("max_retry_wait_seconds") or DEFAULT_MAX_RETRY_WAIT_SECONDS)
        self.read_timeout = float(
            config.get("request_timeout_seconds") or DEFAULT_REQUEST_TIMEOUT_SECONDS)
        #: Set when a request gave up on connection errors after all its tries (see
        #: `retrying`); cleared by the next request that succeeds.
        self.unreachable = False
        #: `max_response_mb` as given (for errors naming it) and in bytes.
        self.max_response_mb = float(config.get("max_response_mb") or DEFAULT_MAX_RESPONSE_MB)
        self.max_response_bytes = int(self.max_response_mb * 2**20)
        #: When every request must have ended (monotonic; the tail's deadline), or None.
        self.ends_at: float | None = None
        self.session = requests.Session()
        adapter = DeadlineAdapter(pool_maxsize=POOL_SIZE)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    # ----------------------------------------------------------------- building

    def timeout(self, read: float | None = None) -> Timeout:
        """``(connect, read)`` seconds; `read` defaults to `request_timeout_seconds`."""
        return (CONNECT_TIMEOUT_SECONDS, self.read_timeout if read is None else read)

    @staticmethod
    def prepare(method: str, url: str, *, params: Mapping[str, t.Any] | None = None,
                headers: Mapping[str, str] | None = None, data: t.Any = None,
                ) -> requests.PreparedRequest:
        """A request with exactly these parts: no session auth, headers or cookies added.

        For requests whose credentials are chosen by hand (a token request carries them in
        its body; a long poll over plain http must carry none).
        """
        return requests.Request(method, url, params=params, headers=dict(headers or {}),
                                data=data).prepare()

    # ----------------------------------------------------------------- sending

    def request(self, request: requests.PreparedRequest, *, setting: str,
                timeout: Timeout | None = None, stream: bool = False,
                deadline: float | None = None) -> requests.Response:
        """Send `request`; the only place the tap puts a request on the wire.

        `setting` names where the URL came from (`box.api_url`): a network failure carries
        it (`errors.setting_of`) so the one-line error says what to check. A request that
        carries credentials goes only to that setting's origin; a redirect is followed only
        within the origin of the request it answers, else the request fails in one line.
        `stream=True` leaves the body unread, for `chunks`; otherwise it is read here
        (`read_body`). Headers and body, redirects included, must come within `deadline`
        seconds (default: a few read timeouts; never past `ends_at`), else `DeadlineExceeded`.
        """
        pinned = self.pinned_origin(setting)
        if origin(request.url) != pinned and self.carries_credentials(request):
            raise TapEventsError(
                f"refused to send the credentials of {setting} to {self.shown(request.url)}: "
                f"they only go to {pinned}")
        timeout = timeout or self.timeout()
        seconds = deadline if deadline is not None else DEADLINE_READ_TIMEOUTS * timeout[1]
        if self.ends_at is not None:
            seconds = min(seconds, self.ends_at - time.monotonic())
        watch = Deadline(seconds, setting)
        _sending.deadline = watch
        streaming = False
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = self.session.send(
                    request, timeout=timeout, allow_redirects=False,
                    **self.environment(request.url, stream=True))
                if not response.is_redirect:
                    _DEADLINES[response] = watch
                    if not stream:
                        self.read_body(response, setting)
                    streaming = stream
                    return response
                request = self.redirected(request, response, setting)
        except requests.exceptions.RequestException as error:
            if watch.expired:
                raise watch.error() from error
            note_setting(error, setting)
            fault = lasting_fault(error)
            if fault is not None:
                # Trying again cannot help: fail now, naming the URL and its setting.
                raise TapEventsError(
                    f"{fault} for {redact(safe_url(request.url), self.secrets)} "
                    f"(check {setting})") from error
            raise
        finally:
            _sending.deadline = None
            if not streaming:  # a streamed body's deadline ends with its reading (`chunks`)
                watch.end()
        response.close()
        raise TapEventsError(
            f"{setting}: more than {MAX_REDIRECTS} redirects, the last to "
            f"{self.shown(request.url)} (check {setting})", response)

    def redirected(self, request: requests.PreparedRequest, response: requests.Response,
                   setting: str) -> requests.PreparedRequest:
        """The request a redirect asks for, if it stays within the request's origin."""
        target = requote_uri(urljoin(request.url or "",
                                     self.session.get_redirect_target(response) or ""))
        source, destination = origin(request.url), origin(target)
        if destination != source:
            why = ("from https to plain http" if source.startswith("https:")
                   and destination.startswith("http:") else f"to another origin than {source}")
            response.close()
            raise TapEventsError(
                f"{setting}: HTTP {response.status_code} redirect to {self.shown(target)} "
                f"refused: credentials are not sent {why} (set {setting} to the URL the API "
                "answers at)", response)
        response.close()  # its connection goes back to the pool
        followed = request.copy()
        followed.url = target
        method = followed.method or "GET"
        self.session.rebuild_method(followed, response)
        if followed.method != method:  # 303 (and 301/302 after a POST): GET, without a body
            followed.body = None
            for header in ("Content-Length", "Content-Type", "Transfer-Encoding"):
                followed.headers.pop(header, None)
        return followed

    def environment(self, url: str | None, *, stream: bool) -> dict[str, t.Any]:
        """`send` arguments from the environment: proxies (`HTTPS_PROXY`, `NO_PROXY`) and CA
        bundle (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, else `SSL_CERT_FILE`), as
        `requests.get` would use them."""
        settings = dict(self.session.merge_environment_settings(url, {}, stream, None, None))
        if settings.get("verify") is True and os.environ.get("SSL_CERT_FILE"):
            settings["verify"] = os.environ["SSL_CERT_FILE"]
        return settings

    def pinned_origin(self, setting: str) -> str:
        """The origin of the URL in `setting` (`box.token_url`): where credentials may go."""
        return origin(str(self.settings.get(setting.partition(".")[2]) or ""))

    def is_pinned(self, url: str, setting: str) -> bool:
        """Whether credentials may go to `url` (the origin of `setting`)."""
        return origin(url) == self.pinned_origin(setting)

    def carries_credentials(self, request: requests.PreparedRequest) -> bool:
        """Whether `request` holds an Authorization header or a secret in a header or body."""
        if "Authorization" in request.headers:
            return True
        body = request.body.decode("latin-1") if isinstance(request.body, bytes) else str(
            request.body or "")
        text = " ".join([*request.headers.values(), body])
        return redact(text, self.secrets) != text

    def shown(self, url: str | None) -> str:
        """A URL as an error may show it: no query (`safe_url`), printable, secrets masked."""
        return printable(redact(safe_url(url), self.secrets))

    def chunks(self, response: requests.Response, size: int) -> Iterator[bytes]:
        """The body of a streamed response (`request(stream=True)`), as it arrives, within
        the request's deadline."""
        watch = _DEADLINES.get(response)
        try:
            yield from response.iter_content(chunk_size=size)
            if watch is not None and watch.expired:
                raise watch.error()
        except requests.exceptions.RequestException as error:
            if watch is not None and watch.expired:
                raise watch.error() from error
            raise
        finally:
            if watch is not None:
                watch.end()

    def read_body(self, response: requests.Response, setting: str) -> bytes:
        """Read a whole body, at most `max_response_mb` decoded, within the deadline."""
        watch = _DEADLINES.get(response)
        if watch is None or watch.done:  # read already (or not sent by `request`)
            return response.content
        body = bytearray()
        for chunk in self.chunks(response, BODY_CHUNK_BYTES):
            body += chunk
            if len(body) > self.max_response_bytes:
                response.close()
                raise ResponseTooLarge(
                    f"the answer from {setting} is larger than max_response_mb="
                    f"{self.max_response_mb:g} allows (decoded; raise max_response_mb if the "
                    "API really sends pages this large)", response)
        # requests keeps a read body here; `response.content` and `.text` then use it.
        response._content = bytes(body)
        return response._content

    # ----------------------------------------------------------------- responses

    def check(self, response: requests.Response, caller: Caller, *, setting: str,
              expects_json: bool = True) -> None:
        """Classify a response, and decode its JSON body once (inside the retry loop).

        429 and 5xx are retried, and so is a 401 the caller answers with a fresh token; any
        other 4xx is fatal. A truncated or garbled 200 body is retried like a dropped
        connection; after the last try it becomes a one-line error naming `setting`.
        """
        status = response.status_code
        if expects_json or status >= HTTPStatus.BAD_REQUEST:
            self.read_body(response, setting)
        if status == HTTPStatus.UNAUTHORIZED and caller.retry_after_refresh(response):
            raise RetriableAPIError(self.error_message(response, caller), response)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(self.error_message(response, caller), response)
        if status >= HTTPStatus.BAD_REQUEST:
            raise TapEventsError(self.error_message(response, caller), response)
        if expects_json:
            try:
                _BODIES[response] = decode(response.content)
            except ValueError as error:
                raise RetriableAPIError(
                    f"{caller.error_prefix}HTTP {status} with a body that is not valid JSON "
                    f"({error}); {len(response.content)} bytes received (check {setting}, "
                    "and any proxy between)",
                    response,
                ) from error

    def error_message(self, response: requests.Response, caller: Caller) -> str:
        """`Box stream 'box_events': HTTP 403 Forbidden: <the API's words> (<what to check>)`."""
        status = response.status_code
        reason = response.reason or ""
        hint = caller.error_hint(status)
        # The API's text is made printable: a CR or ESC in it must not forge a log line.
        reason = printable(reason)
        text = printable(caller.api_error_text(response))
        message = (
            f"{caller.error_prefix}HTTP {status} {reason}"
            + (f": {text}" if text else "")
            + (f" ({hint})" if hint else "")
        )
        return redact(message, self.secrets)

    # ----------------------------------------------------------------- retries

    def retrying(self, func: Callable[..., requests.Response], caller: Caller
                 ) -> Callable[..., requests.Response]:
        """`func` (one try) retried on `RETRIED_ERRORS` within `max_retries`.

        Each retry is logged in one line; python-backoff's own lines go to debug level, as the
        final failure is reported by the stream in one line too.
        """

        def waits() -> t.Generator[float, t.Any, None]:
            # Per request: python-backoff primes the generator, then sends each exception.
            attempt = 0
            error = yield  # type: ignore[misc]
            while True:
                attempt += 1
                error = yield self.retry_wait(error, attempt, caller)

        def log_retry(details: t.Mapping[str, t.Any]) -> None:
            error = details.get("exception")
            what = str(error) if isinstance(error, RetriableAPIError) else type(error).__name__
            caller.logger.warning("%s: retry %d in %.1f s after %s", caller.name,
                                  details.get("tries", 0), details.get("wait", 0.0),
                                  redact(what, self.secrets))

        def note_giveup(details: t.Mapping[str, t.Any]) -> None:
            if isinstance(details.get("exception"), requests.exceptions.ConnectionError):
                self.unreachable = True

        def note_success(_details: t.Mapping[str, t.Any]) -> None:
            self.unreachable = False

        return backoff.on_exception(
            waits,
            RETRIED_ERRORS,
            # An API that refused every connection of a whole retry budget is not waited
            # for again by its next stream: a dead API fails the run within one budget.
            max_tries=lambda: 1 if self.unreachable else self.max_tries,
            # Past the run's end (the tail's deadline) nothing is retried.
            giveup=lambda _error: self.ends_at is not None and time.monotonic() >= self.ends_at,
            on_backoff=log_retry,
            on_giveup=note_giveup,
            on_success=note_success,
            jitter=backoff.random_jitter,
            logger=caller.logger,
            backoff_log_level=logging.DEBUG,
            giveup_log_level=logging.DEBUG,
        )(func)

    def retry_wait(self, error: Exception, attempt: int, caller: Caller) -> float:
        """Seconds to wait before the next try: what the API asked for, else back-off."""
        cap = self.max_retry_wait
        response = getattr(error, "response", None)
        if response is not None and response.status_code == HTTPStatus.UNAUTHORIZED:
            return 0.0  # the one retry with a fresh token (`Caller.retry_after_refresh`)
        asked = retry_after_seconds(response) if response is not None else None
        if asked is not None:
            if asked > cap:
                raise TapEventsError(
                    f"{caller.error_prefix}the API asked to wait {asked:.0f} s, more than "
                    f"max_retry_wait_seconds={cap:.0f}",
                    response,
                ) from error
            return asked
        return min(cap, float(2 ** (attempt - 1)))


def lasting_fault(error: requests.exceptions.RequestException) -> str | None:
    """What is wrong, when a failed request cannot succeed by trying again: a TLS handshake
    or certificate error, or a host name that does not resolve. None for faults that may
    heal (refused or reset connections, timeouts), which keep the retry budget."""
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS handshake failed ({innermost_reason(error)})"
    seen: set[int] = set()
    pending: list[t.Any] = [error]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, NameResolutionError | socket.gaierror):
            return "unknown host"
        pending += [getattr(cause, "reason", None), cause.__cause__, cause.__context__,
                    *[arg for arg in getattr(cause, "args", ()) if isinstance(arg, Exception)]]
    return None


def innermost_reason(error: BaseException) -> str:
    """The SSL library's own words (`CERTIFICATE_VERIFY_FAILED`, `WRONG_VERSION_NUMBER`)."""
    text = str(error)
    found = re.search(r"\[SSL: ([A-Z_]+)\]|certificate verify failed[^)'\"]*", text)
    return (found.group(1) or found.group(0)) if found else type(error).__name__


def safe_url(url: str | None) -> str:
    """`scheme://host[:port]/path`: no query (it may carry a cursor or a key)."""
    parts = urlsplit(url or "")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


#: The deadline of each response whose body is still to be read (`chunks`).
_DEADLINES: weakref.WeakKeyDictionary[requests.Response, Deadline] = weakref.WeakKeyDictionary()
#: Decoded JSON bodies, by response (see `page_body`); each goes with its response.
_BODIES: weakref.WeakKeyDictionary[requests.Response, t.Any] = weakref.WeakKeyDictionary()


def page_body(response: requests.Response) -> t.Any:
    """The decoded JSON body of a response `HttpClient.check` accepted (paginators read it)."""
    try:
        return _BODIES[response]
    except KeyError:
        body = _BODIES[response] = decode(response.content)
        return body


def origin(url: str | None) -> str:
    """`https://api.box.com:443`: scheme, host and port, what a credential is pinned to."""
    parts = urlsplit(url or "")
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname or ''}:{port}"


def decode(body: bytes) -> t.Any:
    """Decode JSON with orjson; the stdlib takes what orjson refuses (ints over 64 bits)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def retry_after_seconds(response: requests.Response) -> float | None:
    """`Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch or seconds)."""
    headers = response.headers
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.replace(".", "", 1).isdigit():
            return float(value)
        when = http_date(value)
        if when is None:
            return None
        # Measured against the server's own clock when it says what time it is: a server
        # whose clock runs ahead of this machine's must not turn 2 s into an hour.
        now = http_date(headers.get("Date", "")) or time.time()
        return max(0.0, when - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset and reset.replace(".", "", 1).isdigit():
        number = float(reset)
        # Epoch seconds are large; small numbers are a delay.
        return max(0.0, number - time.time()) if number > 1e9 else number
    return None


def http_date(value: str) -> float | None:
    """An HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`) as epoch seconds; None if it is not one."""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


logging.getLogger("backoff").setLevel(logging.ERROR)
