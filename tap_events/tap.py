"""The tap: its settings, its streams, and how a run ends."""

from __future__ import annotations

import logging
import sys
import typing as t

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter

from tap_events.redact import RedactingFilter, redact
from tap_events.sources import SOURCES

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream


class TapEvents(Tap):
    """Singer tap for SaaS event streams."""

    name = "tap-events"
    package_name = "tap-events"
    # msgspec encodes RECORD lines several times faster than the SDK's simplejson writer.
    message_writer_class = MsgSpecWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Lower bound for the first run of every stream that can filter by "
            "time (ISO 8601, e.g. 2026-01-01T00:00:00Z). Later runs continue from state.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=1, maximum=50),
            default=6,
            description="Tries per request on 429, 5xx, timeouts and dropped connections.",
        ),
        th.Property(
            "max_retry_wait_seconds",
            th.IntegerType(minimum=1),
            default=300,
            description="Longest single wait honoured when an API sends Retry-After or "
            "X-RateLimit-Reset; a longer request fails the stream instead of stalling the run.",
        ),
        *(source.config_property for source in SOURCES),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.failures: dict[str, str] = {}
        super().__init__(*args, **kwargs)
        self.secret_values = self._collect_secrets()
        redacting = RedactingFilter(self.secret_values)
        for handler in logging.getLogger().handlers:
            handler.addFilter(redacting)

    def _collect_secrets(self) -> list[str]:
        values: list[str] = []
        for source in SOURCES:
            settings = self.config.get(source.name) or {}
            values += [str(settings[key]) for key in source.secret_settings if settings.get(key)]
            if source.derived_secrets:
                values += source.derived_secrets(settings)
        return values

    def discover_streams(self) -> list[Stream]:
        """Every stream of every API, whatever is configured: a sync skips the rest."""
        return [stream(tap=self) for source in SOURCES for stream in source.streams]

    def record_failure(self, stream_name: str, message: str) -> None:
        self.failures[stream_name] = message

    def sync_all(self) -> None:
        """Sync every selected stream; a failed stream does not stop the others.

        The run still ends non-zero when any stream failed, so a scheduler alerts, and the
        state each stream emitted before failing is kept.
        """
        super().sync_all()
        if self.failures:
            summary = "; ".join(f"{name}: {msg}" for name, msg in self.failures.items())
            self.logger.error(
                "%d stream(s) failed: %s",
                len(self.failures),
                redact(summary, self.secret_values),
            )
            sys.exit(1)


if __name__ == "__main__":
    TapEvents.cli()
