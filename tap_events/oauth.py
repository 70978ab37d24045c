"""OAuth 2.0 Client Credentials Grant, with its token requests on the API's HTTP layer.

The SDK's `OAuthAuthenticator` keeps the token and its expiry; what changes here is where the
token request goes: through the API's `HttpClient` (tap_events/http.py), like every other
request, naming its setting (`box.token_url`) in errors. An API module subclasses
`ClientCredentials` and declares its extra body fields and what to check on failure.
"""

from __future__ import annotations

import datetime
import typing as t
from http import HTTPStatus

from singer_sdk.authenticators import OAuthAuthenticator
from singer_sdk.exceptions import RetriableAPIError

from tap_events import sdk_internals
from tap_events.errors import TapEventsError
from tap_events.http import RETRIED_ERRORS, decode
from tap_events.redact import printable, redact

if t.TYPE_CHECKING:
    import requests

    from tap_events.http import HttpClient


class ClientCredentials(OAuthAuthenticator):
    """Client Credentials Grant: the tap mints its own tokens and refreshes them."""

    #: How the API is named in errors.
    label: t.ClassVar[str]
    #: The setting holding the token endpoint's URL (`box.token_url`).
    token_url_setting: t.ClassVar[str]
    #: What to check when the token endpoint refuses the credentials.
    credentials_hint: t.ClassVar[str]
    #: How long a token lives when the API does not say.
    DEFAULT_EXPIRATION_SECONDS = 3600
    #: Refresh this long before expiry so a token never dies between check and use.
    EARLY_REFRESH_SECONDS = 60
    #: Shortest token life accepted: 0 or less means the token is dead on arrival (a short
    #: one is minted again before each use, `is_token_valid`).
    MIN_EXPIRATION_SECONDS = 1

    def __init__(self, *, token_url: str, client_id: str, client_secret: str,
                 http: HttpClient) -> None:
        #: Token requests go through the API's HTTP client like every other request.
        self.http = http
        super().__init__(auth_endpoint=token_url, client_id=client_id,
                         client_secret=client_secret,
                         default_expiration=self.DEFAULT_EXPIRATION_SECONDS)
        #: The streams whose last answer was a 401 that made the token be minted again: one
        #: new token and one retry per 401 (`EventStream.retry_after_refresh`).
        self.refreshed_for: set[str] = set()

    @property
    def oauth_request_body(self) -> dict:
        return {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret, **self.extra_body()}

    def extra_body(self) -> dict[str, str]:
        """The API's own fields of the token request."""
        return {}

    def is_token_valid(self) -> bool:
        if self.last_refreshed is None or not self.access_token:
            return False
        if not self.expires_in:
            return True
        age = (datetime.datetime.now(datetime.UTC) - self.last_refreshed).total_seconds()
        return age < self.expires_in - self.EARLY_REFRESH_SECONDS

    # ----------------------------------------------------------------- minting

    @property
    def name(self) -> str:
        """How retries of the token request are logged (`HttpClient.retrying`)."""
        return f"{self.label} token request"

    @property
    def error_prefix(self) -> str:
        return f"{self.label} token request failed: "

    def api_error_text(self, response: requests.Response) -> str:
        return response.text[:200].strip()

    def error_hint(self, status: int) -> str:
        return f"check {self.token_url_setting}; retried with back-off"

    def retry_after_refresh(self, response: requests.Response) -> bool:
        return False

    def request_token(self) -> requests.Response:
        """One try at the token request: 429 and 5xx are retried (`HttpClient.check`), like
        every data request; the API refusing the credentials is not."""
        request = self.http.prepare("POST", self.auth_endpoint, data=self.oauth_request_payload)
        response = self.http.request(request, setting=self.token_url_setting)
        status = response.status_code
        if HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR \
                and status != HTTPStatus.TOO_MANY_REQUESTS:
            self.handle_error(content=response.text, status_code=status)
        # The body is read here (size cap) and checked by `token_answer`: a 200 that is not a
        # token (a portal's sign-in page) will not heal by asking again.
        self.http.check(response, self, setting=self.token_url_setting, expects_json=False)
        return response

    def update_access_token(self) -> None:
        """Mint a token through the API's HTTP client and its retry policy (429, 5xx,
        connection errors, `max_retries`); failures name the token URL's setting. The new
        token joins the run's secrets."""
        self.logger.info("Requesting new access token")
        requested = sdk_internals.utc_now()
        try:
            response = self.http.retrying(self.request_token, self)()
        except RETRIED_ERRORS as error:
            what = str(error) if isinstance(error, RetriableAPIError) \
                else f"{type(error).__name__}: {error}"
            raise TapEventsError(
                # The words of every stream failure after retries (`describe_failure`).
                f"{self.label} token request failed after retries: "
                f"{redact(what.removeprefix(self.error_prefix), self.http.secrets)} "
                f"(check {self.token_url_setting} and the network)".replace("\n", " ")
            ) from None
        body = self.token_answer(response)
        token = body["access_token"]
        self.access_token = token
        self.http.secrets.append(token)
        self.expires_in = body["expires_in"]
        self.last_refreshed = requested

    def token_answer(self, response: requests.Response) -> dict[str, t.Any]:
        """The token endpoint's 2xx answer, checked: `access_token` a non-empty string and
        `expires_in` (default `DEFAULT_EXPIRATION_SECONDS`) long enough to be used at all.
        A hostile or broken answer (HTML from a portal, a number for a token) is one line."""
        try:
            body = decode(response.content)
        except ValueError:
            kind = printable(response.headers.get("Content-Type", "no Content-Type"))
            raise self.token_error(f"HTTP {response.status_code} with a body that is not JSON "
                                   f"({kind}, {len(response.content)} bytes)") from None
        if not isinstance(body, dict):
            raise self.token_error(f"HTTP {response.status_code} with a JSON "
                                   f"{type(body).__name__}, not an object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token.strip():
            what = "no access_token" if token is None else (
                "an empty access_token" if isinstance(token, str)
                else f"an access_token that is a {json_type(token)}, not a string")
            if token not in (None, ""):
                self.http.secrets.append(str(token))  # whatever it is, it is not to be shown
            raise self.token_error(f"HTTP {response.status_code} with {what}")
        expires_in = body.get("expires_in", self.DEFAULT_EXPIRATION_SECONDS)
        if expires_in in (None, ""):
            expires_in = self.DEFAULT_EXPIRATION_SECONDS
        try:
            expires_in = float(expires_in)
        except (TypeError, ValueError):
            raise self.token_error(f"expires_in is a {json_type(expires_in)}, not a number"
                                   ) from None
        if not expires_in >= self.MIN_EXPIRATION_SECONDS:  # also refuses NaN
            raise self.token_error(f"expires_in {expires_in:g} s: a token must live at least "
                                   f"{self.MIN_EXPIRATION_SECONDS} s")
        return {**body, "access_token": token, "expires_in": int(expires_in)}

    def token_error(self, what: str) -> TapEventsError:
        return TapEventsError(f"{self.label} token request failed: {what} "
                              f"(check {self.token_url_setting})")

    def invalidate(self) -> None:
        """Forget the token: the next request mints a new one."""
        self.access_token = None
        self.last_refreshed = None

    def handle_error(self, *, content: str, status_code: int | None) -> None:
        """Token failures come in OAuth form: {"error", "error_description"}."""
        try:
            body = decode(content.encode())
            text = f"{body.get('error')}: {body.get('error_description')}"
        except (ValueError, AttributeError):
            text = content[:200]
        text = printable(text)
        raise TapEventsError(f"{self.label} token request failed: HTTP {status_code}: {text} "
                             f"(check {self.credentials_hint})")


def json_type(value: t.Any) -> str:
    """How JSON names the type of a decoded value (`number`, `object`)."""
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)
