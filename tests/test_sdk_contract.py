"""The SDK internals tap-events leans on. If singer-sdk changes under them, this fails first.

`EventStream.checkpoint()` calls the SDK's private `Stream._write_state_message` to emit STATE
between pages; bookmarks rely on `is_sorted=True, check_sorted=False` meaning "the value of the
last record wins" (shared/notes/singer-sdk.md 1.1).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from singer_sdk import Stream
from singer_sdk.helpers._state import increment_state
from singer_sdk.streams.rest import RESTStream

SDK_GENERATE_RECORD_MESSAGES_SHA256 = (
    "9b5f9fbcdedb7a1aec5673a44f51fd9bd88840f19f0fb29cba99"
    "53b9d9095bfe"
)


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


def test_generate_record_messages_is_the_one_client_py_replaces():
    """EventStream._generate_record_messages copies this SDK method minus two steps; if the
    SDK's version changes, review the copy (then update the digest)."""
    import hashlib

    source = inspect.getsource(Stream._generate_record_messages)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == SDK_GENERATE_RECORD_MESSAGES_SHA256
