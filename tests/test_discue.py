"""discue.io usage events against the emulator: keyset paging, ties, the 24-hour guard, errors."""

from __future__ import annotations

import datetime
import time

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tap_events.retention import duration_text
from tap_events.sources.discue import format_cursor, parse_cursor
from tap_events_emulator import discue as emulated
from tap_events_emulator import start_emulator, tap_config
from tests.support import log_lines, run_tap

STREAM = "discue_events"
#: Not a multiple of the emulator's 7 events per millisecond: pages end inside a millisecond.
PAGE = 97


def discue_config(emulator, **settings) -> dict:
    config = tap_config(emulator.url)
    config["discue"].update({"page_size": PAGE, **settings})
    return config


def api(emulator) -> emulated.DiscueAPI:
    return emulator.app.apis["discue"]


def bookmark_state(hours_ago: float, event_id: str = "V1StGXR8_Z5jdHi6B-myT") -> dict:
    stored_at = int((time.time() - hours_ago * 3600) * 1000)
    return {"bookmarks": {STREAM: {"replication_key": "cursor",
                                   "replication_key_value": format_cursor((stored_at, event_id))}}}


def iso_second(stored_at_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(stored_at_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_full_sync_loads_each_event_of_the_last_24_hours_once(emulator):
    run = run_tap(discue_config(emulator), streams=[STREAM])

    assert run.returncode == 0, run.stderr
    records = run.records(STREAM)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == emulator.stream_counts()[STREAM] == 1200
    # The emulator holds older events too; discue no longer serves them.
    assert api(emulator).expired > 0
    assert api(emulator).event_id(-1) not in set(ids)
    window_start = (time.time() - 24 * 3600) * 1000
    assert all(r["stored_at"] > window_start for r in records)
    # Oldest first, and stored_at is also there as a date-time.
    assert [r["stored_at"] for r in records] == sorted(r["stored_at"] for r in records)
    first = records[0]
    assert datetime.datetime.fromisoformat(first["stored_at_datetime"]) == (
        datetime.datetime.fromtimestamp(first["stored_at"] / 1000, datetime.UTC))
    # Pages did end inside a millisecond, and were continued with the id as tie-breaker.
    boundaries = range(PAGE, len(records), PAGE)
    split = [k for k in boundaries if records[k - 1]["stored_at"] == records[k]["stored_at"]]
    assert split
    sent = [r["query"] for r in emulator.requests("discue") if "startAfter" in r["query"]]
    assert {"startAfter": [str(records[split[0] - 1]["stored_at"])],
            "startAfterId": [records[split[0] - 1]["id"]],
            "events": ["all"], "limit": [str(PAGE)]} in sent
    assert run.bookmark(STREAM)["replication_key_value"] == (
        f"{records[-1]['stored_at']:013d}:{records[-1]['id']}")
    assert not log_lines(run, "ERROR") and not log_lines(run, "WARNING")


def test_resume_inside_a_millisecond_neither_loses_nor_repeats(emulator):
    config = discue_config(emulator)
    first = run_tap(config, streams=[STREAM])
    assert first.returncode == 0, first.stderr
    ids = first.ids(STREAM, "id")
    stamps = {r["id"]: r["stored_at"] for r in first.records(STREAM)}

    # A STATE written between two pages whose events share one millisecond.
    tied = next(
        state for state in first.states[:-1]
        if (cursor := state.get("bookmarks", {}).get(STREAM, {}).get("replication_key_value"))
        and (position := parse_cursor(cursor))[1] in ids[:-1]
        and stamps[ids[ids.index(position[1]) + 1]] == position[0]
    )
    done = ids.index(parse_cursor(tied["bookmarks"][STREAM]["replication_key_value"])[1]) + 1
    resumed = run_tap(config, state=tied, streams=[STREAM])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.ids(STREAM, "id") == ids[done:]

    # New events stored in the bookmark's own millisecond and after it.
    emulator.add_events("discue", 10)
    later = run_tap(config, state=first.final_state, streams=[STREAM])
    assert later.returncode == 0, later.stderr
    new = later.records(STREAM)
    assert len(new) == len({r["id"] for r in new}) == 10
    assert not {r["id"] for r in new} & set(ids)
    last_stamp = stamps[ids[-1]]
    assert new[0]["stored_at"] == last_stamp
    assert len(ids) + len(new) == emulator.stream_counts()[STREAM]


def test_gap_guard_fails_the_run_on_a_25_hour_old_bookmark(emulator):
    state = bookmark_state(hours_ago=25)
    since = parse_cursor(state["bookmarks"][STREAM]["replication_key_value"])[0]

    run = run_tap(discue_config(emulator), state=state, streams=[STREAM])

    # What still exists is loaded and bookmarked, and the run still fails.
    assert run.returncode == 1
    records = run.records(STREAM)
    assert len(records) == emulator.stream_counts()[STREAM]
    assert run.bookmark(STREAM)["replication_key_value"] == records[-1]["cursor"]
    assert run.messages[-1]["type"] == "STATE"
    errors = log_lines(run, "ERROR")
    gap = next(line for line in errors if "may be missing" in line)
    assert f"events recorded between {iso_second(since)} and " in gap
    assert "(1 h)" in gap and "the bookmark is 25 h old" in gap and "24 h" in gap
    assert "discue.allow_gap" in gap
    assert "discue_events" in errors[-1] and "may be missing" in errors[-1]

    acknowledged = run_tap(discue_config(emulator, allow_gap=True), state=state,
                           streams=[STREAM])
    assert acknowledged.returncode == 0, acknowledged.stderr
    assert len(acknowledged.records(STREAM)) == len(records)
    assert not log_lines(acknowledged, "ERROR")
    assert any("acknowledged by discue.allow_gap" in line
               for line in log_lines(acknowledged, "WARNING"))


def test_gap_guard_stays_quiet_on_a_23_hour_old_bookmark(emulator):
    run = run_tap(discue_config(emulator), state=bookmark_state(hours_ago=23), streams=[STREAM])

    assert run.returncode == 0, run.stderr
    assert len(run.records(STREAM)) == emulator.stream_counts()[STREAM]
    assert not log_lines(run, "ERROR")
    # Close to the limit: a warning, so the schedule can be fixed before data is lost.
    assert any("23 h old" in line and "run the tap more often" in line
               for line in log_lines(run, "WARNING"))


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_not_retried_and_names_the_setting(emulator, status):
    bad_key = "wrong-discue-key-5f2a"
    config = discue_config(emulator, api_key=bad_key)
    if status == 403:
        # Earlier failed logins made discue refuse every key for a while.
        lock_out(emulator)
        config = discue_config(emulator)
    before = len(emulator.requests("discue"))

    run = run_tap(config, streams=[STREAM])

    assert run.returncode == 1
    assert len(emulator.requests("discue")) == before + 1
    assert not run.records(STREAM)
    errors = [line for line in log_lines(run, "ERROR") if "HTTP" in line]
    assert errors and all(line.endswith(")") and f"HTTP {status}" in line
                          and "check discue.api_key" in line and "not retried" in line
                          for line in errors)
    assert "retry" not in "\n".join(log_lines(run, "WARNING"))
    assert "Traceback" not in run.stderr
    assert bad_key not in run.stderr + run.stdout


def lock_out(emulator) -> None:
    url = f"{emulator.url}/discue/v1/events"
    for _ in range(api(emulator).lock_after):
        refused = requests.get(url, headers={"X-API-KEY": "nope"}, timeout=30)
        assert refused.status_code == 401
        assert refused.json() == {"title": "Unauthorized", "status": 401}


def test_emulator_locks_out_every_key_after_repeated_failed_logins(emulator):
    lock_out(emulator)
    locked = requests.get(f"{emulator.url}/discue/v1/events",
                          headers={"X-API-KEY": emulated.API_KEY}, timeout=30)
    assert locked.status_code == 403
    assert locked.json() == {"title": "Forbidden", "status": 403}


def test_rate_limited_pages_are_retried_and_load_once():
    server = start_emulator(events=400, seed=3, options={"discue": {"rate_limit": 4}})
    try:
        run = run_tap(discue_config(server, page_size=40), streams=[STREAM])
        sent = server.requests("discue")
    finally:
        server.stop()

    assert run.returncode == 0, run.stderr
    ids = run.ids(STREAM, "id")
    assert len(ids) == len(set(ids)) == 400
    assert any("HTTP 429" in line for line in log_lines(run, "WARNING"))
    assert len(sent) > 11  # 10 pages and the empty one, plus the refused tries


def test_event_filter_reads_one_category(emulator):
    run = run_tap(discue_config(emulator, event_filter="queues"), streams=[STREAM])

    assert run.returncode == 0, run.stderr
    expected = [api(emulator).event_id(i) for i in range(1200)
                if api(emulator).category(i) == "queues"]
    assert run.ids(STREAM, "id") == expected
    assert all(r["type"].startswith("queue_") and r["queue"]["id"] for r in run.records(STREAM))


def test_start_date_skips_older_events_on_a_first_run(emulator):
    middle = api(emulator).stored_at(600)
    config = discue_config(emulator)
    config["start_date"] = datetime.datetime.fromtimestamp(
        middle / 1000, datetime.UTC).isoformat()

    run = run_tap(config, streams=[STREAM])

    assert run.returncode == 0, run.stderr
    expected = [i for i in range(1200) if api(emulator).stored_at(i) >= middle]
    assert run.ids(STREAM, "id") == [api(emulator).event_id(i) for i in expected]


def test_a_bookmark_that_is_not_a_position_is_one_clear_error(emulator):
    state = {"bookmarks": {STREAM: {"replication_key": "cursor",
                                    "replication_key_value": "2026-01-01T00:00:00Z"}}}
    run = run_tap(discue_config(emulator), state=state, streams=[STREAM])

    assert run.returncode == 1
    assert not emulator.requests("discue")
    assert any("is not a position `<stored_at ms>:<event id>`" in line
               for line in log_lines(run, "ERROR"))
    assert "Traceback" not in run.stderr


@given(stored_at=st.integers(0, 10**13 - 1), event_id=st.text(min_size=1))
def test_cursor_round_trips(stored_at, event_id):
    assert parse_cursor(format_cursor((stored_at, event_id))) == (stored_at, event_id)


def test_duration_text_reads_like_a_person_wrote_it():
    hours = datetime.timedelta(hours=1)
    assert duration_text(25 * hours + datetime.timedelta(seconds=59)) == "25 h"
    assert duration_text(hours + datetime.timedelta(minutes=3)) == "1 h 3 min"
    assert duration_text(14 * 24 * hours) == "14 d"
    assert duration_text(50 * hours) == "2 d 2 h"
    assert duration_text(datetime.timedelta(seconds=90)) == "1 min"
