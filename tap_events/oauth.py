"""OAuth 2.0 Client Credentials Grant, with its token requests on the API's HTTP layer.

The SDK's `OAuthAuthenticator` keeps the token and its expiry; what changes here is where the
token request goes: through the API's `HttpClient` (tap_events/http.py), like every other
request, naming its setting (`box.token_url`) in errors. An API module subclasses
`ClientCredentials` and declares its extra body fields and what to check on failure.
"""

from __future__ import annotations

import datetime
import typing as t

from singer_sdk.authenticators import OAuthAuthenticator

from tap_events import sdk_internals
from tap_events.errors import TapEventsError
from tap_events.http import decode

if t.TYPE_CHECKING:
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

    def update_access_token(self) -> None:
        """Mint a token: one POST to the token endpoint; the new token joins the run's secrets."""
        self.logger.info("Requesting new access token")
        requested = sdk_internals.utc_now()
        request = self.http.prepare("POST", self.auth_endpoint, data=self.oauth_request_payload)
        response = self.http.request(request, setting=self.token_url_setting)
        if not response.ok:
            self.handle_error(content=response.text, status_code=response.status_code)
        try:
            body = decode(response.content)
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as error:
            raise TapEventsError(
                f"{self.label} token request failed: HTTP {response.status_code} without an "
                f"access_token ({type(error).__name__}) (check {self.token_url_setting})"
            ) from None
        self.access_token = token
        self.http.secrets.append(token)
        expiration = body.get("expires_in", self.DEFAULT_EXPIRATION_SECONDS)
        self.expires_in = int(expiration) if expiration else None
        self.last_refreshed = requested

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
        raise TapEventsError(f"{self.label} token request failed: HTTP {status_code}: {text} "
                             f"(check {self.credentials_hint})")
