"""The SDK internals tap-events leans on. If singer-sdk changes under them, this fails first.

Every private SDK member the tap touches is named in tap_events/sdk_internals.py (and only
there: tests/test_structure.py); each is pinned here by a digest of the SDK code it replaces or
relies on, or by a test of the behaviour it needs. Bookmarks rely on `is_sorted=True,
check_sorted=False` meaning "the value of the last record wins" (shared/notes/singer-sdk.md 1.1).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
from importlib.metadata import version

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.authenticators import OAuthAuthenticator
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.helpers._state import increment_state
from singer_sdk.plugin_base import PluginBase
from singer_sdk.singerlib import RecordMessage
from singer_sdk.streams.rest import RESTStream

from tap_events import sdk_internals
from tap_events.writer import BufferedRecordWriter

#: sha256 of the source of each SDK method EventStream replaces or relies on the calls of
#: (sdk_internals.py, `FastRecordPath`). A mismatch means: read the new SDK method,
#: carry its change into sdk_internals.py, then update the digest here.
SDK_METHOD_SHA256 = {
    # Replaced together by sdk_internals.FastRecordPath._write_record_message.
    "_write_record_message": "292b7bed39883bd999839ea8ac5153ab52287f6120f7203902892510b0cfbd08",
    "_generate_record_messages":
        "9b5f9fbcdedb7a1aec5673a44f51fd9bd88840f19f0fb29cba9953b9d9095bfe",
    # Skipped by FastRecordPath._process_record when there are no partitions and no children.
    "_process_record": "8529b9f3ce2f849db6858c120e7ea1b8ff246714ea48edb355ca3eb6a9c27c0b",
    # The loop calling both, once per record, with those arguments.
    "_sync_records": "8928dc7f50e9bf57cc98734b30e3953b0e19007f85fe020a0c80ccdbcf5d329f",
    # sdk_internals.FastRecordPath._increment_stream_state asks `may_bookmark` first.
    "_increment_stream_state": "cabc0edb2fd4f0000dbd140a870dae871400ba13293bd2ecd8bdd93d0fb033bc",
    # sdk_internals.write_state_message: STATE now, only when it changed.
    "_write_state_message": "f82ecd8d169868234742e45a855006fd2596c96cab9d3d9f975a13517c6e3fda",
}

#: The same for members of other SDK classes: (class, member) -> sha256 of its source.
SDK_MEMBER_SHA256 = {
    # sdk_internals.log_request_duration: the METRIC line the SDK's `_request` wrote.
    (RESTStream, "_write_request_duration_log"):
        "62adba1a9bac22dc380d92f820bcf74f176e33fff30d776df57aabc41b73ca60",
    # What EventStream.send_page replaces: auth, send, duration metric, validate_response.
    (RESTStream, "_request"): "be6df60d23d63d96d3dc747ab39a7fa0130e7a9500ca1e68f99357f544fbde01",
    # What EventStream.prepare_page does with the public get_http_request.
    (RESTStream, "_prepare_request"):
        "e546bfa3c36bc69f6592cfd47daf42b8f37a857382530af3472d1c200fc4fb2d",
    # The page loop EventStream.request_records copies (metric, order of events).
    (RESTStream, "request_records"):
        "54132e0f89b6a9a7a1798fef68c15ef9f62ddbd4e09142b7c0b74bf53b595a0f",
    # sdk_internals.TerminationHook replaces `_handle_termination`, which this installs for
    # SIGTERM and SIGINT.
    (PluginBase, "_setup_signal_handlers"):
        "eb4287001bdd7d19295fca7fc9102300795dfec825a1b4676e80974a09aa4f83",
    # BoxClientCredentials.update_access_token replaces it (the token request goes through
    # the tap's HTTP layer): same fields set, same error hook.
    (OAuthAuthenticator, "update_access_token"):
        "01f32e25ca92c4f3dbfcb65d59d8aacf86797fdb5b2d52bb7576ff8aa9d8c083",
}


def test_sdk_version_is_in_the_pinned_range():
    major, minor, *_ = (int(p) for p in version("singer-sdk").split(".")[:3])
    assert (major, minor) == (0, 54), "review client.py's SDK assumptions before moving on"


@pytest.mark.parametrize(("owner", "member"), sorted(SDK_MEMBER_SHA256, key=str))
def test_sdk_members_sdk_internals_relies_on_are_unchanged(owner, member):
    source = inspect.getsource(getattr(owner, member))
    assert hashlib.sha256(source.encode()).hexdigest() == SDK_MEMBER_SHA256[owner, member]


def test_restart_from_bookmark_moves_the_starting_value_the_sdk_reads():
    """sdk_internals.restart_from_bookmark: the SDK then starts from the bookmark."""
    from singer_sdk.helpers._state import get_starting_replication_value

    state = {"replication_key": "k", "replication_key_value": "900",
             "starting_replication_value": "100"}

    class OneState:
        def get_context_state(self, context):
            return state

    sdk_internals.restart_from_bookmark(OneState(), None)  # type: ignore[arg-type]
    assert get_starting_replication_value(state) == "900"


def test_the_config_as_given_is_kept_before_validation():
    """sdk_internals.config_as_given reads `_config`, set before the config is validated."""
    from singer_sdk.plugin_base import PluginBase

    source = inspect.getsource(PluginBase.__init__)
    assert source.index("self._config = config_dict") < source.index("self._validate_config")


def test_private_helpers_are_still_there():
    from singer_sdk.helpers import _catalog, _util

    assert callable(_catalog.pop_deselected_record_properties)
    assert sdk_internals.utc_now().tzinfo is not None
    assert _util.utc_now.__module__ == "singer_sdk.helpers._util"


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


def test_the_config_callback_still_says_whether_env_was_given():
    """`--config ENV`: the tap reads the environment itself and turns the SDK's parsing off
    (sdk_internals.take_env_parsing); `TapEvents.invoke` and `cb_discover` read the flag."""
    from tap_events.tap import TapEvents

    given = Tap.cb_config(None, None, ("ENV",))  # type: ignore[arg-type]
    assert given.parse_env is True
    assert sdk_internals.take_env_parsing(given) is True
    assert given.parse_env is False
    assert sdk_internals.take_env_parsing(Tap.cb_config(None, None, ())) is False  # type: ignore[arg-type]
    source = inspect.getsource(Tap.invoke) + inspect.getsource(Tap.cb_discover)
    assert source.count("parse_env_config=config.parse_env") == 2
    assert TapEvents.cb_config.__func__ is not Tap.cb_config.__func__
