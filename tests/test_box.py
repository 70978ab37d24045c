"""Box Events against the emulator, through the real `tap-events` CLI."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from tap_events_emulator.box import ENTERPRISE_BASE, USER_BASE
from tests.support import discover, log_lines, retry_waits, run_tap


def box_only(config: dict, **box_settings) -> dict:
    return {"box": {**config["box"], **box_settings}}


def records_before(run, state_index: int) -> list[dict]:
    """Records written before the `state_index`-th STATE message (what a target had)."""
    seen = 0
    records = []
    for message in run.messages:
        if message["type"] == "STATE":
            if seen == state_index:
                return records
            seen += 1
        elif message["type"] == "RECORD":
            records.append(message)
    raise AssertionError(f"run wrote only {seen} STATE messages")


def test_discover_with_empty_config_lists_box_streams():
    catalog = discover({})
    streams = {entry["tap_stream_id"]: entry for entry in catalog["streams"]}
    assert {"box_events", "box_enterprise_events"} <= set(streams)
    assert streams["box_events"]["key_properties"] == ["event_id"]
    schema = streams["box_events"]["schema"]["properties"]
    assert {"event_id", "created_by", "source", "additional_details", "stream_position"} <= set(
        schema
    )


def test_full_sync_emits_every_event_once(emulator, config):
    run = run_tap(box_only(config, page_size=100))
    assert run.returncode == 0, run.stderr
    counts = emulator.stream_counts()
    for stream in ("box_events", "box_enterprise_events"):
        ids = run.ids(stream)
        assert len(ids) == counts[stream]
        assert len(set(ids)) == len(ids), f"{stream} emitted a duplicate"
    # The user feed repeats the last event of each page: the tap dropped every repeat.
    user_pages = [r for r in emulator.requests("box") if r["query"].get("stream_type") == ["all"]]
    assert len(user_pages) > 12
    # A short page did not end the run: the emulator serves half pages while more exist.
    assert run.bookmark("box_events")["replication_key_value"] == str(USER_BASE + 1200)


def test_state_after_every_page_and_resume_from_mid_run_state(emulator, config):
    cfg = box_only(config, page_size=100)
    first = run_tap(cfg, streams=["box_events"])
    assert first.returncode == 0, first.stderr
    assert len(first.states) >= 12, "a STATE message is expected after every page"
    all_ids = set(first.ids("box_events"))

    # The run is killed after its 4th STATE: the target holds what came before it.
    state = first.states[4]
    kept = {m["record"]["event_id"] for m in records_before(first, 4)}
    position = state["bookmarks"]["box_events"]["replication_key_value"]
    assert USER_BASE < int(position) < USER_BASE + 1200

    resumed = run_tap(cfg, state=state, streams=["box_events"])
    assert resumed.returncode == 0, resumed.stderr
    assert kept | set(resumed.ids("box_events")) == all_ids
    # Resuming re-reads at most the page in flight (the feed's repeat), not the whole feed.
    assert len(resumed.ids("box_events")) <= len(all_ids) - len(kept) + 1


def test_twenty_digit_position_round_trips_exactly(emulator, config):
    cfg = box_only(config)
    first = run_tap(cfg, streams=["box_events"])
    position = first.bookmark("box_events")["replication_key_value"]
    assert isinstance(position, str) and len(position) == 20
    assert position == str(USER_BASE + 1200)  # exact: no float on the way

    emulator.add_events("box", 30, feed="user")
    state = json.loads(json.dumps(first.final_state))
    second = run_tap(cfg, state=state, streams=["box_events"])
    sent = [r["query"]["stream_position"][0] for r in emulator.requests("box")
            if r["query"].get("stream_type") == ["all"]]
    assert position in sent, "the next run must send the bookmark back digit for digit"
    new = set(second.ids("box_events")) - set(first.ids("box_events"))
    assert len(new) == 30  # plus the one event Box repeats at the start of a page
    assert second.bookmark("box_events")["replication_key_value"] == str(USER_BASE + 1230)


def test_empty_page_keeps_bookmark(emulator, config):
    cfg = box_only(config, enterprise_stream_type="admin_logs_streaming")
    first = run_tap(cfg)
    bookmarks = first.final_state["bookmarks"]
    second = run_tap(cfg, state=first.final_state)
    assert second.returncode == 0, second.stderr
    assert second.records() == []
    for stream in ("box_events", "box_enterprise_events"):
        bookmark = second.final_state["bookmarks"][stream]
        assert bookmark["replication_key_value"] == bookmarks[stream]["replication_key_value"]
        # Only the time the feed was read through moves on: nothing was missed until now.
        assert bookmark["position_time"] > bookmarks[stream]["position_time"]


def test_admin_logs_empty_page_position_zero_keeps_bookmark(emulator, config):
    cfg = box_only(config)  # enterprise feed: admin_logs answers an empty page with position 0
    first = run_tap(cfg, streams=["box_enterprise_events"])
    bookmark = first.bookmark("box_enterprise_events")
    assert bookmark["replication_key"] == "created_at"
    second = run_tap(cfg, state=first.final_state, streams=["box_enterprise_events"])
    assert second.bookmark("box_enterprise_events") == bookmark
    assert all(r["stream_position"] != "0" for r in first.records())


def test_admin_logs_window_is_kept_on_every_page_and_resumes(emulator, config):
    cfg = box_only(config, page_size=200)
    first = run_tap(cfg, streams=["box_enterprise_events"])
    windows = {(r["query"].get("created_after", [None])[0], r["query"]["created_before"][0])
               for r in emulator.requests("box") if r["path"] == "/2.0/events"}
    assert len(windows) == 1, "created_after/created_before must not change within a run"

    emulator.add_events("box", 25, feed="enterprise")
    second = run_tap(cfg, state=first.final_state, streams=["box_enterprise_events"])
    new_ids = set(second.ids("box_enterprise_events")) - set(first.ids("box_enterprise_events"))
    assert len(new_ids) == 25


def test_admin_logs_starts_at_start_date(emulator, config):
    first_event = emulator.app.apis["box"].time_of(1000)
    cfg = {**box_only(config), "start_date": first_event.isoformat()}
    run = run_tap(cfg, streams=["box_enterprise_events"])
    assert run.returncode == 0, run.stderr
    assert len(run.records()) == 200


def test_streaming_feed_duplicates_are_emitted_once(emulator, config):
    cfg = box_only(config, enterprise_stream_type="admin_logs_streaming", page_size=50)
    run = run_tap(cfg, streams=["box_enterprise_events"])
    ids = run.ids("box_enterprise_events")
    assert len(ids) == len(set(ids)) == 1200
    assert len(emulator.requests("box")) > 24  # many pages, each repeating one event


def test_event_types_filter_is_sent(emulator, config):
    cfg = box_only(config, event_types=["LOGIN", "UPLOAD"])
    run = run_tap(cfg, streams=["box_enterprise_events"])
    assert run.records() and {r["event_type"] for r in run.records()} <= {"LOGIN", "UPLOAD"}


def test_429_with_retry_after_is_waited_out(emulator, config):
    emulator.inject("box", "status", status=429, headers={"Retry-After": "2"}, times=1,
                    body={"type": "error", "status": 429, "code": "rate_limit_exceeded",
                          "message": "Request rate limit exceeded"}, after=1)
    started = time.monotonic()
    run = run_tap(box_only(config), streams=["box_events"])
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started >= 2
    assert len(set(run.ids("box_events"))) == 1200
    # Retry-After: 2, plus the jitter (up to 1 s) that keeps clients from retrying at once.
    waits = retry_waits(run)
    assert len(waits) == 1 and 2.0 <= waits[0] <= 3.0, run.stderr


def test_bad_token_is_one_line_error_without_secret(emulator, config):
    secret = "not-a-valid-token-7f3a9c"
    cfg = {"box": {"api_url": config["box"]["api_url"], "access_token": secret}}
    run = run_tap(cfg)
    assert run.returncode == 1
    errors = log_lines(run, "ERROR")
    assert any("Box stream 'box_events': HTTP 401" in e and "box.access_token" in e
               for e in errors), run.stderr
    assert secret not in run.stderr + run.stdout
    assert "Traceback" not in run.stderr


def test_wrong_client_secret_names_the_settings(emulator, config):
    secret = "wrong-secret-value-123"
    cfg = box_only(config, client_secret=secret)
    run = run_tap(cfg, streams=["box_events"])
    assert run.returncode == 1
    assert any("Box token request failed: HTTP 400: invalid_client" in e and
               "box.client_secret" in e for e in log_lines(run, "ERROR")), run.stderr
    assert secret not in run.stderr + run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("feed", ["changes", "sync"])
def test_user_stream_type_is_sent(emulator, config, feed):
    run = run_tap(box_only(config, user_stream_type=feed), streams=["box_events"])
    assert run.returncode == 0
    pages = [r for r in emulator.requests("box") if r["path"] == "/2.0/events"]
    assert {r["query"]["stream_type"][0] for r in pages} == {feed}


def position_state(stream: str, position: str, days_ago: float | None) -> dict:
    bookmark = {"replication_key": "stream_position", "replication_key_value": position}
    if days_ago is not None:
        moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
        bookmark["position_time"] = moment.isoformat()
    return {"bookmarks": {stream: bookmark}}


@pytest.mark.parametrize(("setting", "feed", "stream", "base", "kept_days"), [
    ("user_stream_type", "all", "box_events", USER_BASE, 21),
    ("user_stream_type", "sync", "box_events", USER_BASE, 31),
    ("enterprise_stream_type", "admin_logs_streaming", "box_enterprise_events",
     ENTERPRISE_BASE, 14),
])
def test_position_older_than_the_feed_keeps_events_is_a_gap(emulator, config, setting, feed,
                                                            stream, base, kept_days):
    cfg = box_only(config, **{setting: feed})
    position = str(base + 600)

    old = run_tap(cfg, state=position_state(stream, position, kept_days + 1), streams=[stream])
    assert old.returncode == 1
    # What still exists after the position is loaded all the same, and bookmarked.
    assert len(old.ids(stream)) == 600 + 1  # the feed repeats the event at the position
    assert old.bookmark(stream)["replication_key_value"] == str(base + 1200)
    gap = [line for line in log_lines(old, "ERROR") if "may be missing" in line]
    assert gap and f"Box keeps events for {kept_days} d" in gap[0]
    assert f"the bookmark is {kept_days + 1} d old" in gap[0] and "box.allow_gap" in gap[0]

    young = run_tap(cfg, state=position_state(stream, position, kept_days - 1),
                    streams=[stream])
    assert young.returncode == 0, young.stderr
    assert not log_lines(young, "ERROR")
    assert any("run the tap more often" in line for line in log_lines(young, "WARNING"))

    acknowledged = run_tap(box_only(cfg, allow_gap=True),
                           state=position_state(stream, position, kept_days + 1),
                           streams=[stream])
    assert acknowledged.returncode == 0, acknowledged.stderr
    assert any("acknowledged by box.allow_gap" in line
               for line in log_lines(acknowledged, "WARNING"))


def test_position_state_without_a_time_is_not_checked_and_gains_one(emulator, config):
    """States written before `position_time` existed still resume, exactly where they were."""
    state = position_state("box_events", str(USER_BASE + 600), days_ago=None)
    before = datetime.datetime.now(datetime.UTC)
    run = run_tap(box_only(config), state=state, streams=["box_events"])
    assert run.returncode == 0, run.stderr
    assert not log_lines(run, "ERROR") and not log_lines(run, "WARNING")
    assert len(run.ids("box_events")) == 601
    bookmark = run.bookmark("box_events")
    assert bookmark["replication_key_value"] == str(USER_BASE + 1200)
    # Read through the moment the final empty page was asked for.
    assert datetime.datetime.fromisoformat(bookmark["position_time"]) >= before


def test_position_time_is_the_last_page_read_not_the_run_end(emulator, config):
    """A STATE between pages carries the time of the newest event read, not the clock."""
    run = run_tap(box_only(config, page_size=100), streams=["box_events"])
    middle = run.states[3]["bookmarks"]["box_events"]
    newest = datetime.datetime.fromisoformat(middle["position_time"])
    api = emulator.app.apis["box"]
    index = int(middle["replication_key_value"]) - USER_BASE
    # The page ending at that position ends with event index-1, recorded a second after it.
    assert newest == api.time_of(index - 1) + datetime.timedelta(seconds=1)


def test_initial_position_now_stores_the_current_position_then_reads_only_new_events(
        emulator, config):
    """`box.initial_position: now`: the first run asks `stream_position=now` of both feeds
    that take a position, emits nothing and bookmarks the position Box answered; the next
    run emits exactly the events added in between."""
    cfg = box_only(config, initial_position="now", enterprise_stream_type="admin_logs_streaming")
    api = emulator.app.apis["box"]

    first = run_tap(cfg)

    assert first.returncode == 0, first.stderr
    assert first.records() == []
    sent = [r["query"]["stream_position"] for r in emulator.requests("box")
            if r["path"] == "/2.0/events"]
    assert sent == [["now"], ["now"]]
    assert first.bookmark("box_events")["replication_key_value"] == str(USER_BASE + 1200)
    assert first.bookmark("box_enterprise_events")["replication_key_value"] == str(
        ENTERPRISE_BASE + 1200)
    assert "position_time" in first.bookmark("box_events")

    emulator.add_events("box", 7)
    second = run_tap(cfg, state=first.final_state)

    assert second.returncode == 0, second.stderr
    assert second.ids("box_events") == [api.user_event(i)["event_id"] for i in range(1200, 1207)]
    assert second.ids("box_enterprise_events") == [
        api.enterprise_event(i)["event_id"] for i in range(1200, 1207)]
    assert second.bookmark("box_events")["replication_key_value"] == str(USER_BASE + 1207)


def test_initial_position_does_not_apply_to_admin_logs_or_a_bookmark(emulator, config):
    """`admin_logs` is a time window from start_date; a stream with a bookmark resumes."""
    cfg = box_only(config, initial_position="now")
    state = position_state("box_events", str(USER_BASE + 1000), days_ago=1)

    run = run_tap(cfg, state=state)

    assert run.returncode == 0, run.stderr
    assert len(run.ids("box_enterprise_events")) == 1200
    assert len(run.ids("box_events")) == 200 + 1  # the feed repeats the event at the position
