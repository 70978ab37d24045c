"""What the streams of one run share: config, secrets, failures, and per API its HTTP and auth.

The tap makes one `RunContext` and hands it to every stream it builds, so streams never reach
into the tap by attribute name.
"""

from __future__ import annotations

import datetime
import typing as t
from dataclasses import dataclass, field

from tap_events.http import HttpClient

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from tap_events.source import Auth, Source


@dataclass
class RunContext:
    """One run's shared state. Filled in by the tap once its config is validated."""

    config: Mapping[str, t.Any] = field(default_factory=dict)
    #: Every secret value this run knows of, for redaction; tokens minted later join it.
    secrets: list[str] = field(default_factory=list)
    #: Streams that failed, with their one-line reason: the run then exits non-zero.
    failures: dict[str, str] = field(default_factory=dict)
    #: The tap's message writer.
    writer: t.Any = None
    #: When the run started: the upper bound of bookmarks that have no window of their own.
    started: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC))
    _http: dict[str, HttpClient] = field(default_factory=dict)
    _auth: dict[str, Auth] = field(default_factory=dict)

    def http(self, source: Source) -> HttpClient:
        """The API's one HTTP client, shared by its streams and its authenticator."""
        if source.name not in self._http:
            self._http[source.name] = HttpClient(api=source.name, config=self.config,
                                                 secrets=self.secrets,
                                                 settings=source.settings(self.config))
        return self._http[source.name]

    def auth(self, source: Source) -> Auth:
        """The API's authenticator, chosen from its settings once and shared by its streams
        (one token per run, refreshed for all)."""
        if source.name not in self._auth:
            self._auth[source.name] = source.authenticator(
                source.settings(self.config), self.http(source))
        return self._auth[source.name]

    def record_failure(self, stream_name: str, message: str) -> None:
        self.failures[stream_name] = message
