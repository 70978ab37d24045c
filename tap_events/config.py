"""Policy on the tap's settings that the JSON schema cannot say: dates, URLs, secrets.

Kept apart from the tap so API modules can ask it (is this URL safe for credentials?)
without importing the tap, which imports them.
"""

from __future__ import annotations

import datetime
import typing as t
from urllib.parse import urlsplit

from tap_events.redact import secret_text

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_events.source import Source


def is_safe_url(url: str) -> bool:
    """Whether credentials may travel to `url`: https, or plain http to this machine only."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def secret_values(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """Every secret in the config, as text: settings marked secret (whatever their type, as
    a wrongly typed one is still a secret; as given and as used, surrounding whitespace
    stripped), and what each API derives from them."""
    values: list[str] = []
    for source in sources:
        settings = config.get(source.name)
        if not isinstance(settings, dict):
            continue
        for key in source.secret_settings:
            values += secret_text(settings.get(key))
        if source.derived_secrets:
            used = source.settings(config)
            values += source.derived_secrets(used)
            if used != settings:
                values += source.derived_secrets(settings)
    return values


def padded_secrets(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """`box.client_secret`: the secret settings given with surrounding whitespace (a secret
    file mounted into a variable keeps its newline), which the tap strips."""
    return [f"{source.name}.{key}" for source in sources
            if isinstance(settings := config.get(source.name), dict)
            for key in source.secret_settings
            if isinstance(value := settings.get(key), str) and value != value.strip()]


def settings_errors(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """What the JSON schema cannot say: date formats, and secrets only over TLS."""
    errors = []
    start_date = config.get("start_date")
    if start_date:
        try:
            parsed = datetime.datetime.fromisoformat(start_date)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors.append(
                f"start_date {start_date!r} is not an ISO 8601 date-time with a UTC offset "
                "(e.g. 2026-01-01T00:00:00Z)"
            )
    for source in sources:
        if not source.is_configured(config):
            continue
        for key, value in source.settings(config).items():
            if key.endswith("_url") and isinstance(value, str) and not is_safe_url(value):
                errors.append(
                    f"{source.name}.{key} {value!r}: credentials are only sent over https "
                    "(plain http is allowed to 127.0.0.1/localhost only)"
                )
    return errors
