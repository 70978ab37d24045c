"""Every top-level date-time of a record in UTC: RFC 3339 ending in `Z`, the instant as sent.

Why: target-postgres (and other targets) store a `date-time` as `timestamp without time zone`.
Through COPY PostgreSQL drops a UTC offset instead of applying it, and through INSERT it
converts to the *session's* time zone, so a Box `created_at` of `10:53:43-08:00` could land 8
hours off. Written as `18:53:43Z`, it lands as 18:53:43 on both paths once the loader's session
runs in UTC (meltano.yml sets PGTZ). It also makes date-time bookmarks (Box `admin_logs`
`created_at`, Socotra `timestamp`) comparable as strings, which is how the SDK compares them.

Only top-level fields: nested objects are stored as JSON by the target and keep the API's text.
The fraction of a second is kept as sent (Alpaca sends nanoseconds, more than a Python
datetime holds): an offset is whole minutes, so converting never touches it.

A value that is not a date-time with an offset (`2025-01-01T10:00:00`, `yesterday`, `17`) is
passed on as sent, never dropped: the instant it means cannot be known, and the event is still
worth loading. The stream logs one warning per field naming the value.
"""

from __future__ import annotations

import datetime
import functools
import logging
import typing as t


def date_time_fields(schema: t.Mapping[str, t.Any]) -> tuple[str, ...]:
    """The top-level properties a JSON schema declares as `format: date-time`."""
    return tuple(name for name, prop in (schema.get("properties") or {}).items()
                 if isinstance(prop, dict) and prop.get("format") == "date-time")


def utc_text(value: str) -> str | None:
    """`value`, an ISO 8601 date-time with a UTC offset, as RFC 3339 UTC text ending in `Z`.

    `2012-12-12T10:53:43-08:00` → `2012-12-12T18:53:43Z`; `…43.5+02:00` → `…41.5Z` (the
    fraction kept digit for digit); a value already in that form comes back unchanged. None
    when `value` is not a date-time, has no offset, or is out of the representable range.
    """
    try:
        # Parsed even when already UTC: it checks the numbers (no month 13 passes unnoticed).
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return _utc_text_lowercase(value)
    # The separators of `YYYY-MM-DDTHH:MM:SS` and what follows the seconds (`Z`, `.`, `±`).
    marks = value[4:20:3]
    if value[-1] == "Z":
        if marks == "--T::Z" or (marks == "--T::." and len(value) > 21):
            # Most values: RFC 3339 in UTC already. Parsing accepted it, so what lies
            # between the seconds and the `Z` is `.digits`.
            return value
    elif (marks[:5] == "--T::" and value[-3] == ":" and value[-6] in "+-"
          and ((marks[5] in "+-" and len(value) == 25) or (marks[5] == "." and len(value) > 26))):
        # RFC 3339 with an offset, which is whole minutes: only the date, hour and minute
        # change; seconds and fraction are copied as sent.
        minute = utc_minute(value[:16], value[-6:])
        return None if minute is None else f"{minute}{value[16:-6]}Z"
    if moment.tzinfo is None:
        return None
    # ISO 8601 forms RFC 3339 leaves out (`20250114T160551Z`, `16:05Z`, `+0200`, a space for
    # the `T`): rewritten whole, to microseconds.
    try:
        return moment.astimezone(datetime.UTC).replace(tzinfo=None).isoformat() + "Z"
    except OverflowError:
        return None


@functools.lru_cache(maxsize=4096)
def utc_minute(local_minute: str, offset: str) -> str | None:
    """`YYYY-MM-DDTHH:MM` at `offset` (`-08:00`) as the same minute in UTC; None when out of
    range.

    Cached: converting a datetime costs ~10 times parsing one on CPython 3.11, and the events
    of a page share their minute and offset (time-ordered feeds, one enterprise's offset).
    """
    try:
        moment = datetime.datetime.fromisoformat(f"{local_minute}:00{offset}")
        return moment.astimezone(datetime.UTC).isoformat()[:16]
    except (ValueError, OverflowError):
        return None


def _utc_text_lowercase(value: str) -> str | None:
    """RFC 3339 allows a lower-case `t` and `z`, which Python refuses."""
    upper = value.upper()
    if upper == value or not value.isascii():
        return None
    return utc_text(upper)


class UtcTimestamps:
    """Converts the top-level date-times of one stream's records to UTC, in place."""

    def __init__(self, schema: t.Mapping[str, t.Any], stream: str,
                 logger: logging.Logger) -> None:
        #: Computed once per stream: the per-record work is a lookup per date-time field.
        self.fields = date_time_fields(schema)
        self.stream = stream
        self.logger = logger
        #: Fields already warned about: one warning per field and run, however many values.
        self.warned: set[str] = set()

    def convert(self, record: dict[str, t.Any]) -> None:
        for field in self.fields:
            value = record.get(field)
            if value is None:
                continue
            utc = utc_text(value) if isinstance(value, str) else None
            if utc is None:
                self.warn(field, value)
            elif utc is not value:
                record[field] = utc

    def warn(self, field: str, value: t.Any) -> None:
        if field in self.warned:
            return
        self.warned.add(field)
        self.logger.warning(
            "%s: field '%s' holds %.60r, not a date-time with a UTC offset; such values are "
            "loaded as sent, not converted to UTC (logged once per field)",
            self.stream, field, value,
        )
