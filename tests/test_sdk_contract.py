"""The SDK internals tap-events leans on. If singer-sdk changes under them, this fails first.

`EventStream.checkpoint()` calls the SDK's private `Stream._write_state_message` to emit STATE
between pages; bookmarks rely on `is_sorted=True, check_sorted=False` meaning "the value of the
last record wins" (shared/notes/singer-sdk.md 1.1).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
from importlib.metadata import version

import pytest
from singer_sdk import Stream
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.helpers._state import increment_state
from singer_sdk.singerlib import RecordMessage
from singer_sdk.streams.rest import RESTStream

from tap_events.writer import BufferedRecordWriter

#: sha256 of the source of each SDK method EventStream replaces or relies on the calls of
#: (client.py, "The SDK's per-record path ..."). A mismatch means: read the new SDK method,
#: carry its change into client.py, then update the digest here.
SDK_METHOD_SHA256 = {
    # Replaced together by EventStream._write_record_message.
    "_write_record_message": "292b7bed39883bd999839ea8ac5153ab52287f6120f7203902892510b0cfbd08",
    "_generate_record_messages":
        "9b5f9fbcdedb7a1aec5673a44f51fd9bd88840f19f0fb29cba9953b9d9095bfe",
    # Skipped by EventStream._process_record when there are no partitions and no children.
    "_process_record": "8529b9f3ce2f849db6858c120e7ea1b8ff246714ea48edb355ca3eb6a9c27c0b",
    # The loop calling both, once per record, with those arguments.
    "_sync_records": "8928dc7f50e9bf57cc98734b30e3953b0e19007f85fe020a0c80ccdbcf5d329f",
}


def test_sdk_version_is_in_the_pinned_range():
    major, minor, *_ = (int(p) for p in version("singer-sdk").split(".")[:3])
    assert (major, minor) == (0, 54), "review client.py's SDK assumptions before moving on"


def test_write_state_message_is_still_a_no_argument_method():
    method = Stream._write_state_message
    assert list(inspect.signature(method).parameters) == ["self"]
    assert "is_flushed" in inspect.getsource(method)


def test_request_records_parses_each_page_after_the_previous_one_is_yielded():
    source = inspect.getsource(RESTStream.request_records)
    # parse_response(page N+1) runs only after `yield from records` of page N.
    assert source.index("yield from records") < source.rindex("paginator.advance(resp)")
    assert source.index("self.parse_response(resp)") < source.index("yield first_record")


def test_unchecked_sorted_bookmark_takes_the_last_value():
    state: dict = {"replication_key": "stream_position", "replication_key_value": "900"}
    increment_state(
        state,
        latest_record={"stream_position": "100"},
        replication_key="stream_position",
        is_sorted=True,
        check_sorted=False,
    )
    assert state["replication_key_value"] == "100"


@pytest.mark.parametrize("method", sorted(SDK_METHOD_SHA256))
def test_sdk_methods_client_py_replaces_are_unchanged(method):
    source = inspect.getsource(getattr(Stream, method))
    assert hashlib.sha256(source.encode()).hexdigest() == SDK_METHOD_SHA256[method]


def test_record_lines_match_the_sdk_writers():
    """`BufferedRecordWriter.write_record` writes the bytes the SDK's msgspec writer writes
    for the same RecordMessage, so targets see no difference."""
    moment = datetime.datetime(2026, 11, 22, 17, 58, 39, 336511, tzinfo=datetime.UTC)
    record = {"event_id": "1", "n": 2, "nested": {"a": [1, None]}, "price": 1.5}
    expected = bytes(MsgSpecWriter().format_message(
        RecordMessage(stream="box_events", record=record, version=7, time_extracted=moment)))
    writer = BufferedRecordWriter()
    writer.write_record("box_events", record, 7, moment)
    assert bytes(writer._block) == expected
    writer._block.clear()  # nothing for the exit-time flush to print


def test_the_sdk_routes_sigterm_and_sigint_to_handle_termination():
    """TapEvents replaces `_handle_termination` (tap.py: the final STATE last, the run ended
    within seconds); that only works while the SDK installs it for both signals."""
    from singer_sdk.plugin_base import PluginBase

    source = inspect.getsource(PluginBase._setup_signal_handlers)
    assert "signal.SIGINT, self._handle_termination" in source
    assert "signal.SIGTERM, self._handle_termination" in source
