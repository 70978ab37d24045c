"""The tap: its settings, its streams, and how a run ends."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import signal
import sys
import typing as t

import click
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.singerlib import StateMessage

from tap_events import config, parallel, sdk_internals, tail
from tap_events.client import EventStream
from tap_events.errors import shape
from tap_events.http import DEFAULT_MAX_RESPONSE_MB
from tap_events.redact import RedactingFilter, redact
from tap_events.run import RunContext
from tap_events.sources import SOURCES
from tap_events.summary import RunSummary, StreamReport, child_reports, send_reports
from tap_events.writer import (
    STDOUT_CLOSED_STATUS,
    BufferedRecordWriter,
    end_after_signal_anyway,
    end_process,
)

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from singer_sdk.streams import Stream

#: Environment variables of `--config ENV` start with this (`TAP_EVENTS_BOX_CLIENT_ID`).
ENV_PREFIX = "TAP_EVENTS_"


class TapEvents(sdk_internals.TerminationHook):
    """Singer tap for SaaS event streams."""

    name = "tap-events"
    package_name = "tap-events"
    # msgspec encodes RECORD lines several times faster than the SDK's simplejson writer.
    message_writer_class = BufferedRecordWriter

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
            th.IntegerType(minimum=1, maximum=3600),
            default=300,
            description="Longest single wait honoured when an API sends Retry-After or "
            "X-RateLimit-Reset; a longer request fails the stream instead of stalling the run.",
        ),
        th.Property(
            "request_timeout_seconds",
            config.number(minimum=0.1, maximum=3600),
            default=60,
            description="How long to wait for an API to answer a request, or to send the next "
            "bytes of an answer, before the request is retried (connecting has 10 s). A whole "
            "request, headers and body, must end within 3 times this, so a server trickling "
            "bytes cannot hold a run. Alpaca's streams use alpaca.idle_timeout_seconds instead, "
            "as their answers pause between heartbeats; a replay must end within 3 read "
            "timeouts after its upper bound.",
        ),
        th.Property(
            "max_response_mb",
            th.NumberType(minimum=1),
            default=DEFAULT_MAX_RESPONSE_MB,
            description="Largest answer the tap accepts from an API, in MB (2^20 bytes), "
            "counted after decompression: one page or token response, and one Server-Sent "
            "Events line or event (Alpaca). Past it the request fails, not retried, with an "
            "error naming this setting, so a broken or hostile server cannot exhaust memory.",
        ),
        th.Property(
            "parallel_apis",
            th.BooleanType,
            default=True,
            description="Extract the selected streams of different APIs in parallel, one "
            "process per API, merged into one valid Singer output (a run takes about as long "
            "as its slowest API). Streams of one API always run one after the other.",
        ),
        *tail.SETTINGS,
        *(source.config_property for source in SOURCES),
    ).to_dict()

    # ----------------------------------------------------------------- command line
    # The SDK's CLI reads the files; these public hooks make a bad file one line naming it.

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]
                  ) -> t.Any:
        """`--config FILE` and `--config ENV`: a file the tap cannot use, or a variable that
        does not fit its setting, is one line and exit 1. With ENV, nested settings come from
        `TAP_EVENTS_<API>_<SETTING>` (Meltano's names), typed as the schema says."""
        try:
            # Each file is read once: a parallel child's config is a pipe (`/dev/fd/N`).
            files = [config.read_json_object(path, "config") for path in value if path != "ENV"]
            given = super().cb_config(ctx, param, tuple(path for path in value if path == "ENV"))
            for read in files:
                given.config.update(read)
            if sdk_internals.take_env_parsing(given):
                given.config.update(config.settings_from_env(
                    cls.config_jsonschema, os.environ, ENV_PREFIX))
        except (config.InputFileError, ValueError) as error:
            cls.logger.error("%s", error)
            ctx.exit(1)
        return given

    @classmethod
    def print_version(cls, print_fn: t.Callable[[t.Any], None] = print) -> None:
        """The version banner, once per run: not again by each API's parallel process."""
        if not parallel.is_child():
            super().print_version(print_fn=print_fn)

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, with --state and --catalog read by `invoke` (not by click, whose
        error for a missing file is a usage screen)."""
        command = super().get_singer_command()
        for option in command.params:
            if option.name in ("state", "catalog"):
                option.type = click.STRING
        return command

    # The SDK's `invoke` takes open files; here click hands over paths (see
    # `get_singer_command`), opened below, hence the different signature.
    @classmethod
    def invoke(cls, *, state: str | None = None,  # type: ignore[override]
               catalog: str | None = None, **kwargs: t.Any) -> None:
        try:
            files = {what: None if path is None
                     else io.StringIO(json.dumps(config.read_json_object(path, what)))
                     for what, path in (("state", state), ("catalog", catalog))}
        except config.InputFileError as error:
            cls.logger.error("%s", error)
            sys.exit(1)
        super().invoke(**kwargs, state=files["state"], catalog=files["catalog"])

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        #: What this run's streams share; filled in once the config is known.
        self.run = RunContext()
        if parallel.is_child():
            parallel.watch_parent()
            tagging = ChildLogFilter(parallel.child_api() or "?")
            for handler in logging.getLogger().handlers:
                handler.addFilter(tagging)
        #: Set once a signal asked the run to end.
        self.ending = False
        #: The tail phase while it runs (tap_events/tail.py).
        self.tail_run: tail.TailRun | None = None
        #: Once the sync began: the APIs synced (their selected streams) and the input state,
        #: for the run summary however the run ends.
        self.synced: tuple[dict[str, set[str]], Mapping[str, t.Any]] | None = None
        try:
            super().__init__(*args, **kwargs)
        except ConfigValidationError as error:
            # jsonschema quotes the value it refuses: a secret in the wrong type would be shown.
            secrets = config.secret_values(sdk_internals.config_as_given(self), SOURCES)
            raise ConfigValidationError(
                str(error),
                errors=[redact(message, secrets) for message in error.errors],
                schema=error.schema,
            ) from None
        self.run.config = self.config
        self.run.writer = self.message_writer
        self.run.secrets += config.secret_values(self.config, SOURCES)
        redacting = RedactingFilter(self.run.secrets)
        for handler in logging.getLogger().handlers:
            handler.addFilter(redacting)
        for setting in config.padded_secrets(self.config, SOURCES):
            self.logger.debug("%s: surrounding whitespace removed from the value", setting)
        if kwargs.get("validate_config", True):
            errors = config.settings_errors(self.config, SOURCES)
            if errors:
                raise ConfigValidationError("Config validation failed", errors=errors)

    @property
    def failures(self) -> dict[str, str]:
        """Streams that failed this run, with their one-line reason."""
        return self.run.failures

    @property
    def secret_values(self) -> list[str]:
        """Every secret value this run knows of (redacted from logs and errors)."""
        return self.run.secrets

    def discover_streams(self) -> list[Stream]:
        """Every stream of every API, whatever is configured: a sync skips the rest."""
        streams = []
        for source in SOURCES:
            given = self.config.get(source.name)
            settings = source.settings(self.config) if isinstance(given, dict | None) else {}
            streams += [stream.for_settings(settings)(self, source=source, run=self.run)
                        for stream in source.streams]
        return streams

    def listening_streams(self) -> list[EventStream]:
        """The streams a tail phase listens on: selected, of a configured API."""
        return [stream for stream in self.streams.values()
                if isinstance(stream, EventStream) and stream.selected
                and stream.source.is_configured(self.config)]

    def record_failure(self, stream_name: str, message: str) -> None:
        self.run.record_failure(stream_name, message)

    def load_state(self, state: dict[str, t.Any]) -> None:
        """The SDK's merge of the state, for the entries it can read; what it cannot read
        (odd shapes) is kept as a problem, reported before any request (`check_state`)."""
        self.state_shape_problems: list[str] = []
        if not isinstance(state, dict):
            self.state_shape_problems.append(
                f"the state is {shape(state)}, not an object with 'bookmarks'; fix or remove "
                "the state")
            return
        bookmarks = state.get("bookmarks", {})
        if not isinstance(bookmarks, dict):
            self.state_shape_problems.append(
                f"the state's 'bookmarks' is {shape(bookmarks)}, not an object of streams; "
                "fix or remove the state")
            return
        readable = {}
        for name, entry in bookmarks.items():
            if isinstance(entry, dict):
                readable[name] = entry
            else:
                self.state_shape_problems.append(
                    f"the state's bookmark of stream '{name}' is {shape(entry)} "
                    f"{str(entry)[:80]!r}, not an object; fix or remove it in the state")
        super().load_state({**state, "bookmarks": readable})

    def check_state(self) -> None:
        """Read every bookmark before any request: a malformed one fails the run in one
        line naming the stream and the value (never a silent restart from the beginning).
        Bookmarks of streams the tap does not have: `warn_of_foreign_bookmarks`."""
        problems = list(getattr(self, "state_shape_problems", []))
        for name, entry in (self.state.get("bookmarks") or {}).items():
            stream = self.streams.get(name)
            if (isinstance(stream, EventStream) and stream.selected
                    and stream.source.is_configured(self.config)):
                problems += stream.state_problems(entry)
        if problems:
            for problem in problems:
                self.logger.error("%s", redact(problem, self.run.secrets))
            sys.exit(1)

    # `Tap.sync_all` is @final in singer-sdk's annotations; this override calls it (or runs
    # one process per API) and ends the run non-zero when a stream failed.
    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync every selected stream; a failed stream does not stop the others.

        The run still ends non-zero when any stream failed, so a scheduler alerts, and the
        state each stream emitted before failing is kept.
        """
        self.check_state()
        apis = self.apis_to_sync()
        self.log_unconfigured_apis()
        self.warn_of_foreign_bookmarks()
        if not apis:
            self.logger.error("%s", self.nothing_to_sync())
            sys.exit(1)
        before = copy.deepcopy(self.state or {})
        self.synced = (apis, before)
        if len(apis) > 1 and self.config.get("parallel_apis", True) and can_fork_output():
            # Each API's process also tails its own streams when tail_seconds is set.
            reports, after = self.sync_apis_in_parallel(apis)
        else:
            super().sync_all()
            tail.listen(self)  # with tail_seconds set: listen for new events within the budget
            reports, after = self.stream_reports(apis), self.state
        exit_code = 1 if self.failures else 0
        if self.failures:
            summary = "; ".join(f"{name}: {msg}" for name, msg in self.failures.items())
            self.logger.error(
                "%d stream(s) failed: %s",
                len(self.failures),
                redact(summary, self.run.secrets),
            )
        self.report_run(reports, before=before, after=after, exit_code=exit_code)
        if exit_code:
            sys.exit(exit_code)

    def stream_reports(self, apis: dict[str, set[str]]) -> list[StreamReport]:
        """What each stream this process synced did (records, time, status)."""
        reports = []
        for api, names in apis.items():
            for name in sorted(names):
                stream = self.streams[name]
                reports.append(StreamReport(
                    stream=name, api=api, records=getattr(stream, "records_written", 0),
                    seconds=getattr(stream, "sync_seconds", 0.0),
                    status="failed" if name in self.failures else "ok"))
        return reports

    def report_run(self, reports: list[StreamReport], *, before: Mapping[str, t.Any],
                   after: Mapping[str, t.Any] | None, exit_code: int,
                   ended_by: str | None = None) -> None:
        """The run summary (tap_events/summary.py); a parallel child sends its reports to the
        parent instead, which summarizes every API."""
        fd = parallel.report_fd()
        if fd is not None:
            send_reports(fd, reports)
            return
        RunSummary(reports, before=before, after=after, exit_code=exit_code,
                   secrets=self.run.secrets, ended_by=ended_by).log(self.logger)

    def warn_of_foreign_bookmarks(self) -> None:
        """One warning for bookmarks of streams this tap does not have (the state file of
        another tap, or of a stream since renamed): they are kept, but never read."""
        foreign = sorted(set((self.state or {}).get("bookmarks") or {}) - set(self.streams))
        if foreign and not parallel.is_child():
            self.logger.warning(
                "The state holds bookmarks for %d stream(s) this tap does not have: %s (is it "
                "the state of another tap?); they are passed on unchanged and not used",
                len(foreign), ", ".join(foreign))

    def on_termination_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: the final STATE is the last line, and the run ends within seconds
        whatever it was doing (a request, a retry wait, a long poll, a write to a target
        that stopped reading). Runs on the main thread, wherever it was
        (`sdk_internals.TerminationHook`)."""
        if self.ending:
            return  # the same Ctrl-C reaches the run twice (terminal and parallel parent)
        self.ending = True
        end_after_signal_anyway(signum)
        writer = getattr(self, "message_writer", None)  # None while the SDK starts up
        if isinstance(writer, BufferedRecordWriter) and writer.inside():
            # Interrupted half-way through a line: done when that line is whole.
            writer.defer(lambda: self.end_on_signal(signum))
            return
        self.end_on_signal(signum)

    def end_on_signal(self, signum: int) -> t.NoReturn:
        """Write the final STATE after what was emitted, then end the process: status 0, or
        128 + the signal's number (as a shell reports a killed process, and as Meltano ends
        itself on SIGTERM) when stdout did not take the STATE within
        `BufferedRecordWriter.FINISH_SECONDS`, so the scheduler knows the bookmark is an
        older one."""
        name = signal.Signals(signum).name
        self.logger.info("%s received: writing the final state and ending the run", name)
        writer = getattr(self, "message_writer", None)
        if not isinstance(writer, BufferedRecordWriter):
            raise SystemExit(128 + signum)  # still starting up: nothing was written

        def final_state() -> StateMessage:
            if self.tail_run is not None:
                self.tail_run.stop()
            return StateMessage(value=self.state)

        written = writer.finish(final_state)
        if not written:
            self.say_final_state_unwritten(signum, writer.FINISH_SECONDS)
        reports = self.stream_reports(self.synced[0]) if self.synced else []
        self.end_signalled(signum, reports, after=self.state if written else None,
                           status=0 if written else 128 + signum)

    def say_final_state_unwritten(self, signum: int, seconds: float) -> None:
        """One line saying the final STATE could not be written (the run ends 128 + the
        signal)."""
        self.logger.error(
            "%s: stdout did not take the final state within %g s (the target is not reading); "
            "ending without it, the target keeps the last state it received",
            signal.Signals(signum).name, seconds,
        )

    def end_signalled(self, signum: int, reports: list[StreamReport], *,
                      after: Mapping[str, t.Any] | None, status: int) -> t.NoReturn:
        """The run summary of a run a signal ended (`after`: the state of its final STATE,
        None when that was not written), then the end of the process with `status`."""
        if self.synced is not None:
            self.report_run(reports, before=self.synced[1], after=after, exit_code=status,
                            ended_by=signal.Signals(signum).name)
        end_process(status)

    def apis_to_sync(self) -> dict[str, set[str]]:
        """The selected streams of each configured API, by API name."""
        apis: dict[str, set[str]] = {}
        for source in SOURCES:
            if not source.is_configured(self.config):
                continue
            names = {stream.name for stream in source.streams}
            selected = {name for name in names if name in self.streams
                        and self.streams[name].selected}
            if selected:
                apis[source.name] = selected
        return apis

    def selected_stream_names(self) -> list[str]:
        return [name for name, stream in self.streams.items() if stream.selected]

    def log_unconfigured_apis(self) -> None:
        """One line per API whose streams are selected but which has no settings at all."""
        if parallel.is_child():
            return  # the parent said it
        selected = set(self.selected_stream_names())
        for source in SOURCES:
            names = [stream.name for stream in source.streams if stream.name in selected]
            if names and not source.is_configured(self.config):
                self.logger.info("Skipping %s (%s): not configured (set %s)", source.label,
                                 ", ".join(names), source.credentials_hint())

    def nothing_to_sync(self) -> str:
        """Why a sync has nothing to do: which APIs are configured, which streams selected."""
        configured = [source.name for source in SOURCES if source.is_configured(self.config)]
        selected = self.selected_stream_names()
        if selected and len(selected) == len(self.streams):
            selected = [f"all {len(selected)}"]
        return (
            "Nothing to sync: no selected stream belongs to a configured API (configured "
            f"APIs: {', '.join(configured) or 'none'}; selected streams: "
            f"{', '.join(selected) or 'none'}). Set an API's credentials (see "
            "sample_config.json) or select its streams in the catalog."
        )

    def sync_apis_in_parallel(self, apis: dict[str, set[str]]
                              ) -> tuple[list[StreamReport], Mapping[str, t.Any]]:
        """One tap process per API (`tap_events.parallel`); a failed API fails the run.
        Returns what each stream did and the state of the last STATE written."""
        labels = {source.name: source.label for source in SOURCES}
        self.logger.info("Extracting %s in parallel, one process each",
                         ", ".join(labels[api] for api in apis))
        sys.stdout.flush()
        # Unbuffered: the parent's writer thread knows exactly what reached stdout.
        with open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) as out:
            try:
                finished = parallel.run(self.config, self.catalog.to_dict(), self.state or {},
                                        apis, out)
            except parallel.StdoutClosed as error:
                self.logger.error("%s", error)
                end_process(STDOUT_CLOSED_STATUS)
            except parallel.Stopped as stopped:
                self.end_stopped(stopped, labels)
        for api, status in finished.statuses.items():
            if status:
                self.record_failure(labels[api], f"its process ended with status {status} "
                                    "(its error is logged above)")
        return api_reports(apis, finished, finished.statuses), finished.state

    def end_stopped(self, stopped: parallel.Stopped, labels: dict[str, str]) -> t.NoReturn:
        """After SIGTERM/SIGINT in parallel mode: status 0 when every API's process ended
        cleanly and the last STATE reached stdout, else as `end_on_signal` says. A process
        the signal ended before it had set up its handler wrote nothing: not a failure."""
        finished = stopped.finished
        failed = {api: status for api, status in finished.statuses.items()
                  if status not in (0, -stopped.signum)}
        if not stopped.complete:
            self.say_final_state_unwritten(stopped.signum, parallel.FINISH_SECONDS)
        elif failed:
            self.logger.error("%s: ended with %s", stopped, ", ".join(
                f"{labels[api]} status {status}" for api, status in failed.items()))
        apis = self.synced[0] if self.synced else {}
        self.end_signalled(stopped.signum, api_reports(apis, finished, failed),
                           after=finished.state if stopped.complete else None,
                           status=0 if stopped.complete and not failed else 128 + stopped.signum)


def api_reports(apis: Mapping[str, set[str]], finished: parallel.Finished,
                failed: Mapping[str, int]) -> list[StreamReport]:
    """What each stream of `apis` did, as its API's process reported it (`failed`: the exit
    status of each API process that failed)."""
    return [report for api, streams in apis.items() for report in child_reports(
        api, streams, finished.reports.get(api, b""), failed.get(api, 0))]


class ChildLogFilter(logging.Filter):
    """In an API's parallel process: every line tagged with its API (`[box] ...`), so the
    interleaved lines of several APIs can be told apart; none of the SDK's lines that are
    said once by the parent or are about the other APIs' streams, which run in their own
    processes. METRIC lines keep the SDK's format (they carry the stream in their tags)."""

    #: What the SDK says in every process, or about streams that are not this process's.
    SAID_ELSEWHERE = ("Skipping deselected stream", "Skipping parse of env var settings")

    def __init__(self, api: str) -> None:
        super().__init__()
        self.tag = f"[{api}] "

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.SAID_ELSEWHERE):
            return False
        if not record.name.startswith("singer_sdk.metrics") and not message.startswith(
                self.tag):
            record.msg, record.args = self.tag + message, None
        return True


def can_fork_output() -> bool:
    """Parallel APIs need a real stdout to hand over and must not nest."""
    if parallel.is_child():
        return False
    try:
        sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


if __name__ == "__main__":
    TapEvents.cli()
