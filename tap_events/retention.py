"""Retention guard: when a bookmark is older than an API keeps events, say what may be lost.

APIs that purge old events (discue after 24 h, Box feeds after 14 to 365 days) turn a long gap
between runs into silent, permanent data loss. `EventStream.check_retention` asks
`gap_report` at the start of a stream and fails the run at its end, once what still exists
has been loaded, unless the user acknowledged the gap with `<api>.allow_gap`.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from singer_sdk import typing as th

from tap_events.errors import prefix

#: The setting, under an API's key, that acknowledges a gap past that API's retention. Listed
#: in the settings of every API whose streams set `EventStream.retention`.
ALLOW_GAP_SETTING = th.Property(
    "allow_gap", th.BooleanType, default=False,
    description="Acknowledge a gap: when the bookmark is older than the API keeps events, "
    "the run logs the gap as a warning and ends with status 0 instead of failing. Set it for "
    "one run after an outage, then unset it so the next gap alerts again.",
)
#: Past this share of the retention a bookmark earns a warning: the next missed run loses data.
WARNING_SHARE = 0.8


@dataclass(frozen=True)
class GapReport:
    level: int
    message: str
    #: True when the run must fail for it (an unacknowledged gap).
    is_gap: bool


def gap_report(
    *,
    label: str,
    stream: str,
    api: str,
    since: datetime.datetime,
    retention: datetime.timedelta,
    acknowledged: bool,
    now: datetime.datetime | None = None,
) -> GapReport | None:
    """What to log for a bookmark recorded at `since`; None while it is comfortably young."""
    now = now or datetime.datetime.now(datetime.UTC)
    age = now - since
    kept = f"{label} keeps events for {duration_text(retention)}"
    if age <= retention:
        if age <= retention * WARNING_SHARE:
            return None
        return GapReport(
            logging.WARNING,
            f"{prefix(label, stream)}the bookmark is {duration_text(age)} old and {kept}: "
            "run the tap more often, or the next missed run loses events for good",
            is_gap=False,
        )
    oldest_kept = now - retention
    setting = f"{api}.{ALLOW_GAP_SETTING.name}"
    message = (
        f"{prefix(label, stream)}events recorded between {iso_second(since)} and "
        f"{iso_second(oldest_kept)} ({duration_text(oldest_kept - since)}) may be missing for "
        f"good: the bookmark is {duration_text(age)} old and {kept} (run the tap at least "
        f"every {duration_text(retention)}; set {setting}=true to acknowledge this gap)"
    )
    if acknowledged:
        return GapReport(logging.WARNING, f"{message}; acknowledged by {setting}", is_gap=False)
    return GapReport(logging.ERROR, message, is_gap=True)


def duration_text(span: datetime.timedelta) -> str:
    """`25 h 3 min`, `14 d 2 h`, `40 min`: a span as people read it in a log line.

    Under two days in hours, so a 24-hour retention reads `24 h`, not `1 d`.
    """
    minutes = int(span.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days >= 2:
        return f"{days} d {hours} h" if hours else f"{days} d"
    hours += 24 * days
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def iso_second(moment: datetime.datetime) -> str:
    """`2026-11-21T09:15:02Z`."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
