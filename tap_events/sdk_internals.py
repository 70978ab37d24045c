"""Every private singer-sdk member tap-events touches, each with why, in this one module.

singer-sdk offers no public hook for these; each is pinned by a digest or behaviour test in
tests/test_sdk_contract.py, so an SDK upgrade that changes one fails the tests instead of
silently changing what the tap does. Nothing else in `tap_events` names a private SDK member.
"""

from __future__ import annotations

import datetime
import typing as t

from singer_sdk import RESTStream, Tap
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now as _utc_now

from tap_events.writer import BufferedRecordWriter

if t.TYPE_CHECKING:
    from types import FrameType

    import requests
    from singer_sdk.helpers.types import Context


def utc_now() -> datetime.datetime:
    """The SDK's clock (`helpers._util.utc_now`), so `time_extracted` matches what it writes."""
    return _utc_now()


def write_state_message(stream: RESTStream) -> None:
    """Emit STATE now, if it changed.

    The SDK emits STATE only every STATE_MSG_FREQUENCY records and has no public hook for
    "now"; `_write_state_message` is the method it calls itself for that.
    """
    stream._write_state_message()


def restart_from_bookmark(stream: RESTStream, context: Context | None) -> None:
    """Make the stream's next request start at its current bookmark.

    The SDK fixes a stream's starting value once per sync (the state key
    `starting_replication_value`, read by `get_starting_replication_key_value`); a stream
    that reads again and again within one sync (tail mode) must move it itself.
    """
    state = stream.get_context_state(context)
    if state.get("replication_key_value") is not None:
        state["starting_replication_value"] = state["replication_key_value"]


def log_request_duration(stream: RESTStream, response: requests.Response,
                         context: Context | None) -> None:
    """The SDK's `http_request_duration` METRIC line, as its own `_request` writes it."""
    stream._write_request_duration_log(
        endpoint=stream.path, response=response, context=context, extra_tags=None)


def config_as_given(tap: Tap) -> t.Mapping[str, t.Any]:
    """The config the tap was handed, also when validating it failed (`Tap._config`): the
    error message must redact the secrets in it."""
    return getattr(tap, "_config", None) or {}


def take_env_parsing(config_input: t.Any) -> bool:
    """Whether `--config ENV` was given; the SDK then parses no environment itself.

    The SDK's `--config` callback returns a `_ConfigInput` whose `parse_env` makes the tap
    read top-level settings only (`TAP_EVENTS_START_DATE`), numbers as strings; the tap reads
    the environment itself instead (nested settings as Meltano names them, typed).
    """
    parse_env = bool(config_input.parse_env)
    config_input.parse_env = False
    return parse_env


class FastRecordPath(RESTStream):
    """The SDK's per-record path, minus the parts that do nothing for these streams.

    The SDK spends more time on bookkeeping than on the record. The two private methods below
    replace `_write_record_message` (+ `_generate_record_messages`) and `_process_record`;
    each is pinned by a digest of the SDK method it replaces.
    """

    #: Records this stream has written this run (for the run summary).
    records_written = 0

    def check_keys(self, record: t.Any, *, present_only: bool = False) -> None:
        """Refuse a record whose key is broken (the stream base says how)."""

    def time_extracted(self) -> datetime.datetime:
        return utc_now()

    @property
    def has_deselected_fields(self) -> bool:
        if not hasattr(self, "_has_deselected_fields"):
            self._has_deselected_fields = not all(self.mask.values())
        return self._has_deselected_fields

    @property
    def record_writer(self) -> t.Any:
        """The tap's message writer."""
        raise NotImplementedError

    def _write_record_message(self, record: dict) -> None:
        """The SDK's `_write_record_message` + `_generate_record_messages`, minus waste.

        Same output as the SDK's: the record through each stream map, one RECORD line each,
        then the state marked unflushed. What goes: the walk that drops deselected fields runs
        only when the catalog deselects something (the SDK walks every record, 10 % of its
        per-record time); no type conformance (TYPE_CONFORMANCE_LEVEL); no `RecordMessage`
        object and `to_dict` per record: the writer encodes the line directly, with
        `time_extracted` taken once a second instead of once a record.
        """
        self.check_keys(record)
        writer = self.record_writer
        if not isinstance(writer, BufferedRecordWriter):
            super()._write_record_message(record)
            self.records_written += 1
            return
        if self.has_deselected_fields:
            pop_deselected_record_properties(record, self.schema, self.mask)
        extracted = self.time_extracted()
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                writer.write_record(
                    stream_map.stream_alias, mapped, self._stream_version, extracted
                )
        # Counted once the writer took it: a write stopped by a signal does not count.
        self.records_written += 1
        self.state_manager.is_flushed = False

    def may_bookmark(self, record: dict, context: Context | None) -> bool:
        """Whether `record` may move the bookmark (the stream base says when)."""
        return True

    def _increment_stream_state(self, latest_record: dict, *,
                                context: Context | None = None) -> None:
        """The SDK's bookmark step, asked first whether this record may move the bookmark.

        The SDK has no public hook between "record written" and "bookmark moved"; the tap
        needs one to refuse a bookmark the next run could not read and one past the run's
        upper bound (an event stamped in 2099).
        """
        if self.may_bookmark(latest_record, context):
            super()._increment_stream_state(latest_record, context=context)

    def _process_record(
        self,
        record: dict,
        child_context: Context | None = None,
        partition_context: Context | None = None,
    ) -> None:
        """The SDK copies partition keys into the record and syncs child streams per record;
        a stream without partitions and children has neither, so the per-record call of a
        generator and a stream-map filter is skipped."""
        if partition_context or self.child_streams:
            super()._process_record(record, child_context, partition_context)


class TerminationHook(Tap):
    """SIGTERM/SIGINT reach `on_termination_signal` instead of the SDK's handler.

    The SDK installs `_handle_termination` for both signals; its own writes STATE and raises
    SystemExit wherever the main thread was: a deadlock when that was a blocked write to
    stdout (the writer's lock is held), and RECORD lines after the "final" STATE when other
    code still ran on the way out. The tap's handler ends the run itself (tap.py).
    """

    def on_termination_signal(self, signum: int) -> None:
        """Override: end the run after SIGTERM/SIGINT."""
        raise NotImplementedError

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        self.on_termination_signal(signum)
