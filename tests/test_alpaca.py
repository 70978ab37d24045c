"""Alpaca Broker SSE streams against the emulator, through the real `tap-events` CLI."""

from __future__ import annotations

import datetime
import time

import pytest
import requests

from tap_events import ulid
from tap_events.redact import basic_credentials
from tap_events.sources.alpaca import CURSOR_FIELD
from tap_events.tap import TapEvents
from tap_events_emulator import alpaca as emulated
from tap_events_emulator import start_emulator, tap_config
from tests.support import discover, log_lines, run_tap

STREAMS = {feed.stream: feed for feed in emulated.FEEDS}
TRADES = "alpaca_trade_events"
PER_STREAM = 240  # the `emulator` fixture's 1200 events dealt to five streams


def alpaca_only(config: dict, **settings) -> dict:
    return {"alpaca": {**config["alpaca"], **settings}}


def ids(run, stream: str) -> list[str]:
    return run.ids(stream, STREAMS[stream].id_field)


def requests_to(emulator, stream: str) -> list[dict]:
    path = STREAMS[stream].path
    return [r for r in emulator.requests("alpaca") if r["path"] == path]


def assert_exactly_once(run, emulator, stream: str) -> list[str]:
    emitted = ids(run, stream)
    assert len(emitted) == len(set(emitted)), f"{stream} emitted a duplicate"
    assert len(emitted) == emulator.stream_counts()[stream], f"{stream} lost events"
    return emitted


def test_discover_lists_the_five_streams_keyed_by_ulid():
    streams = {e["tap_stream_id"]: e for e in discover({})["streams"]}
    for name, feed in STREAMS.items():
        assert streams[name]["key_properties"] == [feed.id_field]
        assert streams[name]["replication_key"] == CURSOR_FIELD
    admin = streams["alpaca_admin_action_events"]["schema"]["properties"]
    # The deprecated nested objects and their flat replacements are both kept.
    assert {"belongs_to", "created_by", "belongs_to_kind", "belongs_to_id_reference",
            "created_by_kind", "created_by_id_reference", "context"} <= set(admin)


def test_bounded_replay_emits_every_event_once_and_ends(emulator, config):
    started = time.monotonic()
    run = run_tap(alpaca_only(config))
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 30
    for stream in STREAMS:
        emitted = assert_exactly_once(run, emulator, stream)
        assert len(emitted) == PER_STREAM
        # The bookmark is the greatest id, though the emulator sends some pairs out of order.
        assert emitted != sorted(emitted)
        assert run.bookmark(stream)["replication_key_value"] == max(emitted)
    for request in emulator.requests("alpaca"):
        assert request["query"].keys() == {"since", "until"}, request


def test_no_request_is_ever_sent_without_a_bound(emulator, config):
    """Without `until` the emulated stream never ends (heartbeats only): the tap must not
    hang on it, so it must never send one."""
    url = f"{emulator.url}/alpaca{STREAMS[TRADES].path}"
    auth = (emulated.API_KEY, emulated.API_SECRET)
    with requests.get(url, params={"since": "1970-01-01"}, auth=auth, stream=True,
                      timeout=5) as response:
        deadline = time.monotonic() + 1.5
        chunks = []
        for chunk in response.iter_content(chunk_size=None):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                break
        assert time.monotonic() > deadline, "an unbounded stream closed by itself"
        assert chunks[-1] == b":heartbeat\n\n"

    ours = len(requests_to(emulator, TRADES))
    started = time.monotonic()
    run = run_tap(alpaca_only(config), streams=[TRADES], timeout=60)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 20
    sent = requests_to(emulator, TRADES)[ours:]
    assert len(sent) >= 2
    assert all(r["query"].get("until") and r["query"].get("since") for r in sent)


def test_internal_error_half_way_still_emits_every_event_once(emulator, config):
    emulator.inject("alpaca", "sse_internal_error", path=STREAMS[TRADES].path,
                    options={"at": 120})
    run = run_tap(alpaca_only(config), streams=[TRADES])
    assert run.returncode == 0, run.stderr
    emitted = assert_exactly_once(run, emulator, TRADES)
    assert run.bookmark(TRADES)["replication_key_value"] == max(emitted)
    sent = requests_to(emulator, TRADES)
    assert len(sent) >= 3  # cut, re-read, confirmation
    # The re-read starts lookback_minutes before the newest event emitted, not from scratch.
    newest_before_cut = max(emitted[:120])
    expected = ulid.datetime_of(newest_before_cut) - datetime.timedelta(minutes=5)
    assert sent[1]["query"]["since"] == [expected.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert any("internal server error" in line for line in log_lines(run, "WARNING"))


def test_slow_client_comment_causes_a_reread_and_a_warning(emulator, config):
    emulator.inject("alpaca", "sse_slow_client", path=STREAMS[TRADES].path,
                    options={"at": 60, "dropped": 25})
    run = run_tap(alpaca_only(config), streams=[TRADES])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, TRADES)  # the 25 dropped events were re-read
    warnings = log_lines(run, "WARNING")
    assert any("Alpaca dropped 25 messages" in line for line in warnings), run.stderr
    assert len(requests_to(emulator, TRADES)) >= 3


def test_silent_stream_is_reconnected_after_the_idle_timeout(emulator, config):
    emulator.inject("alpaca", "sse_stall", path=STREAMS[TRADES].path,
                    options={"at": 100, "seconds": 3})
    started = time.monotonic()
    run = run_tap(alpaca_only(config, idle_timeout_seconds=0.5), streams=[TRADES])
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 15
    assert_exactly_once(run, emulator, TRADES)
    assert any("no event or heartbeat for 0.5 s" in line for line in log_lines(run, "WARNING"))


def test_connection_dropped_mid_body_is_reread(emulator, config):
    emulator.inject("alpaca", "drop", path=STREAMS[TRADES].path)
    run = run_tap(alpaca_only(config), streams=[TRADES])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, TRADES)
    assert any("lost connection" in line for line in log_lines(run, "WARNING")), run.stderr


def test_endless_interruptions_end_in_one_error_line(emulator, config):
    emulator.inject("alpaca", "sse_internal_error", path=STREAMS[TRADES].path, times=50,
                    options={"at": 0})
    run = run_tap({**alpaca_only(config), "max_retries": 2, "max_retry_wait_seconds": 1},
                  streams=[TRADES])
    assert run.returncode == 1
    errors = log_lines(run, "ERROR")
    assert any("Alpaca stream 'alpaca_trade_events': the stream was cut short by the "
               "server's 'internal server error' notice 2 times in a row" in e
               for e in errors), run.stderr
    assert "Traceback" not in run.stderr


def test_resume_from_state_emits_new_events_and_the_overlap(emulator, config):
    cfg = alpaca_only(config)
    first = run_tap(cfg)
    assert first.returncode == 0, first.stderr
    emulator.add_events("alpaca", 50)  # 10 per stream
    second = run_tap(cfg, state=first.final_state)
    assert second.returncode == 0, second.stderr
    for stream in STREAMS:
        old, new = set(ids(first, stream)), ids(second, stream)
        assert len(new) == len(set(new)), f"{stream} emitted an event twice in one run"
        # Exactly the 10 new events, plus the overlap re-read (which the target upserts).
        assert len(set(new) - old) == 10, stream
        assert len(new) < len(old), f"{stream} re-read more than the lookback overlap"
        assert second.bookmark(stream)["replication_key_value"] == max([*old, *new])
        # It re-read a small overlap before the bookmark, not the whole history.
        bookmark = first.bookmark(stream)["replication_key_value"]
        since = requests_to(emulator, stream)[-2]["query"]["since"][0]
        expected = ulid.datetime_of(bookmark) - datetime.timedelta(minutes=5)
        assert since == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    third = run_tap(cfg, state=second.final_state)
    for stream in STREAMS:
        assert set(ids(third, stream)) <= set(ids(first, stream)) | set(ids(second, stream))
    assert third.final_state["bookmarks"] == second.final_state["bookmarks"]


def test_state_every_thousand_events_is_a_resume_point():
    server = start_emulator(events={"alpaca": 5 * 2500}, seed=5)
    try:
        cfg = {"alpaca": tap_config(server.url)["alpaca"]}
        first = run_tap(cfg, streams=[TRADES])
        assert first.returncode == 0, first.stderr
        all_ids = ids(first, TRADES)
        assert len(all_ids) == len(set(all_ids)) == 2500
        # STATE after records 1000 and 2000 (in one response), then at the end.
        positions, count = [], 0
        for message in first.messages:
            if message["type"] == "RECORD":
                count += 1
            elif message["type"] == "STATE":
                positions.append(count)
        assert {1000, 2000} <= set(positions), positions
        mid_state = first.states[positions.index(1000)]
        assert mid_state["bookmarks"][TRADES]["replication_key_value"] == max(all_ids[:1000])

        # The run is killed after that STATE: the resumed run brings all the rest (and
        # re-reads the lookback overlap, which the target upserts).
        resumed = ids(run_tap(cfg, state=mid_state, streams=[TRADES]), TRADES)
        assert set(all_ids[:1000]) | set(resumed) == set(all_ids)
        assert len(resumed) == len(set(resumed))
        assert len(resumed) < 2500 - 1000 + 400
    finally:
        server.stop()


def test_start_date_limits_the_first_run(emulator, config):
    api = emulator.app.apis["alpaca"]
    start = api.time_of(1000)  # global index 1000: the last 200 events of 1200
    run = run_tap({**alpaca_only(config), "start_date": start.isoformat()})
    assert run.returncode == 0, run.stderr
    assert sum(len(ids(run, s)) for s in STREAMS) == 200
    first = requests_to(emulator, TRADES)[0]["query"]["since"][0]
    assert first == start.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("query", "message"), [
    ({"until": "2026-01-01"}, "until requires since"),
    ({"since_id": "01JNGQDKNRM9S346Q3D25VT4F5", "until": "2026-01-01"}, "until requires since"),
    ({"until_id": "01JNGQDKNRM9S346Q3D25VT4F5"}, "until_id requires since_id"),
    ({"since": "2026-01-01", "since_id": "01JNGQDKNRM9S346Q3D25VT4F5"}, "mutually exclusive"),
    ({"since": "2026-01-01T00:00:00 01:00"}, "not an RFC 3339 date-time"),
])
def test_emulator_refuses_broken_parameter_rules(emulator, query, message):
    response = requests.get(f"{emulator.url}/alpaca/v2/events/trades", params=query,
                            auth=(emulated.API_KEY, emulated.API_SECRET), timeout=5)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_v1_stream_pairs_since_ulid_with_until_ulid(emulator):
    url = f"{emulator.url}/alpaca/v1/events/accounts/status"
    auth = (emulated.API_KEY, emulated.API_SECRET)
    bad = requests.get(url, params={"until_ulid": "01JNGQDKNRM9S346Q3D25VT4F5"}, auth=auth,
                       timeout=5)
    assert bad.status_code == 400 and "until_ulid requires since_ulid" in bad.text
    high = ulid.encode(ulid.milliseconds(datetime.datetime.now(datetime.UTC)), 2**80 - 1)
    good = requests.get(url, params={"since_ulid": "00000000000000000000000000",
                                     "until_ulid": high}, auth=auth, timeout=10)
    assert good.status_code == 200
    assert good.text.count("event_ulid") == PER_STREAM


def test_bad_credentials_are_one_line_error_without_secret(emulator, config):
    secret = "wrong-alpaca-secret-42"
    cfg = alpaca_only(config, api_secret=secret)
    run = run_tap(cfg, streams=[TRADES])
    assert run.returncode == 1
    assert any("Alpaca stream 'alpaca_trade_events': HTTP 401" in e and
               "alpaca.api_key and alpaca.api_secret" in e for e in log_lines(run, "ERROR"))
    output = run.stderr + run.stdout
    assert secret not in output
    assert basic_credentials(emulated.API_KEY, secret) not in output
    assert "Traceback" not in run.stderr


def test_basic_token_is_treated_as_a_secret(config):
    tap = TapEvents(config=alpaca_only(config), setup_mapper=False)
    token = basic_credentials(emulated.API_KEY, emulated.API_SECRET)
    assert emulated.API_SECRET in tap.secret_values
    assert token in tap.secret_values


def test_add_events_adds_exactly_that_many_rows(emulator):
    before = sum(n for s, n in emulator.stream_counts().items() if s in STREAMS)
    emulator.add_events("alpaca", 7)
    after = sum(n for s, n in emulator.stream_counts().items() if s in STREAMS)
    assert after - before == 7
