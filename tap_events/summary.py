"""The run summary: what a run did, per stream and in total, for a person and a scheduler.

At the end of a sync the tap logs one line per stream (records, bookmark before → after,
time, status) and one total line (records, APIs, failed streams, exit code), then the same
facts as one JSON line on stderr (`{"type": "RUN_SUMMARY", ...}`), the run's last line, so a
scheduler can alert on `exit_code` or `failed_streams` without parsing prose. A run ended by
SIGTERM/SIGINT is summarized too, after its final STATE, naming the signal (`ended_by`); when
stdout did not take that STATE the bookmarks after are unknown (the target kept an earlier
one).

Bookmarks come from the run's input state and its last STATE; records, time and status from
the process that ran the stream. In parallel mode that is an API's child process, which sends
its `StreamReport`s to the parent on a pipe (`tap_events.parallel`); the streams of a child
that died before sending them are reported failed, their records unknown.
"""

from __future__ import annotations

import json
import sys
import typing as t
from dataclasses import asdict, dataclass

from tap_events.redact import printable, redact

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Mapping

#: The `type` of the machine-readable summary line.
SUMMARY_TYPE = "RUN_SUMMARY"
#: Bookmarks are shown whole up to this length in the log lines (a cursor can be long).
MAX_BOOKMARK_CHARS = 60
#: Records or bookmarks the summary cannot know (a process that died, a STATE not written).
UNKNOWN = "unknown"


@dataclass
class StreamReport:
    """What one stream did this run."""

    stream: str
    api: str
    #: Records written; None when unknown (its process died before reporting).
    records: int | None = 0
    seconds: float = 0.0
    #: "ok" or "failed".
    status: str = "ok"


def bookmark_of(state: Mapping[str, t.Any] | None, stream: str) -> str | None:
    """The bookmark `state` holds for `stream`, as text (partitioned: the latest of them)."""
    stream_state = ((state or {}).get("bookmarks") or {}).get(stream) or {}
    if stream_state.get("replication_key_value") is not None:
        return str(stream_state["replication_key_value"])
    partitions = stream_state.get("partitions") or []
    values = [str(partition["replication_key_value"]) for partition in partitions
              if isinstance(partition, dict)
              and partition.get("replication_key_value") is not None]
    if values:
        return f"{max(values)} (latest of {len(partitions)} partitions)"
    return None


class RunSummary:
    """The summary of one run, from its stream reports and its first and last state."""

    def __init__(self, reports: Iterable[StreamReport], *, before: Mapping[str, t.Any] | None,
                 after: Mapping[str, t.Any] | None, exit_code: int, secrets: list[str],
                 ended_by: str | None = None) -> None:
        """`after` is the state of the run's last STATE, None when it is not known (stdout
        did not take the final STATE); `ended_by` the signal that ended the run, if one did."""
        self.reports = sorted(reports, key=lambda report: report.stream)
        self.before = before
        self.after = after
        self.exit_code = exit_code
        self.secrets = secrets
        self.ended_by = ended_by

    def bookmarks(self, stream: str) -> tuple[str | None, str | None]:
        """Before → after, secrets masked (a cursor is the API's text)."""
        return self.masked(bookmark_of(self.before, stream)), self.masked(
            bookmark_of(self.after, stream))

    def shown_after(self, bookmark: str | None) -> str:
        return UNKNOWN if self.after is None else shown(bookmark)

    def masked(self, bookmark: str | None) -> str | None:
        return None if bookmark is None else printable(redact(bookmark, self.secrets))

    @property
    def apis(self) -> list[str]:
        return sorted({report.api for report in self.reports})

    @property
    def failed(self) -> list[str]:
        return [report.stream for report in self.reports if report.status != "ok"]

    @property
    def records(self) -> int:
        return sum(report.records or 0 for report in self.reports)

    def lines(self) -> list[str]:
        """One line per stream, then the total line."""
        lines = []
        for report in self.reports:
            before, after = self.bookmarks(report.stream)
            records = UNKNOWN if report.records is None else str(report.records)
            lines.append(f"Run summary: {report.stream}: {records} records, bookmark "
                         f"{shown(before)} → {self.shown_after(after)}, "
                         f"{report.seconds:.1f} s, {report.status}")
        failed = self.failed
        lines.append(
            f"Run summary: {self.records} records from {len(self.apis)} API(s) "
            f"({', '.join(self.apis) or 'none'}), {len(failed)} failed stream(s)"
            f"{' (' + ', '.join(failed) + ')' if failed else ''}, exit code {self.exit_code}"
            f"{f', ended by {self.ended_by}' if self.ended_by else ''}")
        return lines

    def json_line(self) -> str:
        """The machine-readable summary: one JSON object on one line."""
        streams = []
        for report in self.reports:
            before, after = self.bookmarks(report.stream)
            streams.append({**asdict(report), "seconds": round(report.seconds, 3),
                            "bookmark_before": before, "bookmark_after": after})
        return json.dumps({
            "type": SUMMARY_TYPE, "exit_code": self.exit_code, "ended_by": self.ended_by,
            "records": self.records, "apis": self.apis, "failed_streams": self.failed,
            "streams": streams,
        }, ensure_ascii=False)

    def log(self, logger: logging.Logger) -> None:
        """The summary lines, then the JSON line alone on stderr (not a log record, so it
        parses as it is)."""
        for line in self.lines():
            logger.info("%s", line)
        for handler in logger.handlers or logger.root.handlers:
            handler.flush()
        print(self.json_line(), file=sys.stderr, flush=True)


def shown(bookmark: str | None) -> str:
    """A bookmark in a log line: "none", or the value, cut to `MAX_BOOKMARK_CHARS`."""
    if bookmark is None:
        return "none"
    return bookmark if len(bookmark) <= MAX_BOOKMARK_CHARS else (
        bookmark[:MAX_BOOKMARK_CHARS - 1] + "…")


def send_reports(fd: int, reports: Iterable[StreamReport]) -> None:
    """A parallel child's reports, to its parent's pipe. A few hundred bytes per stream, far
    below what a pipe holds, so the write never waits for the parent to read."""
    with open(fd, "wb") as pipe:
        pipe.write(json.dumps([asdict(report) for report in reports]).encode())


def child_reports(api: str, streams: Iterable[str], sent: bytes, status: int
                  ) -> list[StreamReport]:
    """The reports a child sent for its `streams`. A stream it sent none for (the child died)
    is failed with its records unknown; so is every stream of a child that failed without
    saying which stream did."""
    try:
        given = {entry["stream"]: StreamReport(**entry) for entry in json.loads(sent or b"[]")}
    except (ValueError, TypeError, KeyError):
        given = {}
    reports = [given.get(stream) or StreamReport(stream=stream, api=api, records=None,
                                                  status="failed")
               for stream in sorted(streams)]
    if status and all(report.status == "ok" for report in reports):
        for report in reports:
            report.status = "failed"
    return reports

