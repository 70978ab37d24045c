"""Bookmarks never lie: late, odd or hostile data, state and tokens (issue 15).

Every test runs the real `tap-events` CLI over real sockets against the emulator (faults of
its own) and checks what a user relies on: which events came out, the bookmark, the exit
status and the one line that explains a failure.
"""

from __future__ import annotations

import email.utils
import json
import subprocess
import time

import pytest

from tap_events import ulid
from tap_events_emulator import start_emulator
from tap_events_emulator.socotra import TENANTS as SOCOTRA_TENANTS
from tests.hostile import Answer, HostileServer, Seen
from tests.reliability import one_api_config
from tests.support import (
    clean_env,
    discover,
    log_lines,
    retry_waits,
    run_tap,
    select_streams,
    tap_command,
)

# ------------------------------------------------------------------------------ Retry-After


def without_signpost(bookmark: dict) -> dict:
    """A bookmark minus the SDK's `replication_key_signpost` (the run's start, not a cursor)."""
    return {key: value for key, value in bookmark.items() if key != "replication_key_signpost"}


def discue_page(events: list[dict]) -> Answer:
    return Answer.json({"events": events})


def test_retry_after_date_is_read_against_the_servers_date_header():
    """A server whose clock runs an hour ahead asks for 1 s as an HTTP date: 1 s it is.

    Read against this machine's clock it would be 3,601 s, past max_retry_wait_seconds.
    """
    events = [{"id": f"ev{n}", "type": "queue_created", "stored_at": 1764000000000 + n}
              for n in range(3)]

    def answer(seen: Seen) -> Answer:
        if len(server.seen) == 1:
            ahead = time.time() + 3600
            return Answer.json({"title": "Service Unavailable", "status": 503}, 503,
                               Date=email.utils.formatdate(ahead, usegmt=True),
                               **{"Retry-After": email.utils.formatdate(ahead + 1, usegmt=True)})
        after = seen.query.get("startAfter")
        return discue_page([] if after else events)

    server = HostileServer(answer)
    try:
        run = run_tap({"discue": {"api_url": server.url, "api_key": "k"},
                       "max_retry_wait_seconds": 30})
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert run.ids("discue_events", "id") == ["ev0", "ev1", "ev2"]
    # 1 s by the server's clock (plus up to 1 s of jitter), not the hour its clock runs ahead.
    waits = retry_waits(run)
    assert len(waits) == 1 and 0.0 <= waits[0] <= 2.0, run.stderr


# ------------------------------------------------------------------------------ malformed 200s

#: One incremental stream per API, and a 200 answer a gateway might send instead of a page.
ENVELOPE_CASES = [
    ("box", "box_events"),
    ("socotra", "socotra_events"),
    ("discue", "discue_events"),
    ("alpaca", "alpaca_trade_events"),
]


@pytest.mark.parametrize(("api", "stream"), ENVELOPE_CASES)
def test_a_200_without_the_envelope_is_never_caught_up(emulator, api, stream):
    """A JSON error with status 200: retried, then one line; the bookmark does not move
    (for Box, neither does its time: the retention guard stays armed)."""
    config = one_api_config(emulator.url, api, max_retries=2)
    first = run_tap(config, streams=[stream])
    assert first.returncode == 0, first.stderr
    emulator.add_events(api, 5)
    emulator.inject(api, "status", path=emulator.app.apis[api].fault_path, status=200,
                    times=1000, body={"message": "Service temporarily unavailable"})
    second = run_tap(config, state=first.final_state, streams=[stream])
    assert second.returncode == 1, second.stderr
    assert second.records(stream) == []
    errors = log_lines(second, "ERROR")
    assert any(f"stream '{stream}'" in line and "not a page of events" in line
               for line in errors), second.stderr
    assert without_signpost(second.bookmark(stream)) == without_signpost(first.bookmark(stream))


def test_one_malformed_200_is_retried_and_the_run_completes(emulator):
    config = one_api_config(emulator.url, "box")
    first = run_tap(config, streams=["box_events"])
    emulator.add_events("box", 5, feed="user")
    emulator.inject("box", "status", path="/2.0/events", status=200, times=1,
                    body="<html><body>Gateway</body></html>")
    second = run_tap(config, state=first.final_state, streams=["box_events"])
    assert second.returncode == 0, second.stderr
    assert len(set(second.ids("box_events")) - set(first.ids("box_events"))) == 5
    assert any("not a page of events" in line for line in log_lines(second, "WARNING"))


# ------------------------------------------------------------------------------ Box admin_logs


def test_admin_logs_events_indexed_late_arrive_in_the_next_run(emulator):
    """Box indexes admin_logs events late: stamped before the newest event already loaded,
    visible only after the run. The next run re-reads `box.lookback_minutes` and loads them,
    each once; the bookmark does not go back."""
    config = one_api_config(emulator.url, "box")
    first = run_tap(config, streams=["box_enterprise_events"])
    assert first.returncode == 0, first.stderr
    bookmark = first.bookmark("box_enterprise_events")["replication_key_value"]
    emulator.add_events("box", 3, feed="late", seconds_before=120)
    late = {event["event_id"] for event in emulator.app.apis["box"].late}

    second = run_tap(config, state=first.final_state, streams=["box_enterprise_events"])
    assert second.returncode == 0, second.stderr
    ids = second.ids("box_enterprise_events")
    assert late <= set(ids)
    assert len(ids) == len(set(ids)), "the overlap is dropped within a run"
    assert second.bookmark("box_enterprise_events")["replication_key_value"] == bookmark
    loaded = set(first.ids("box_enterprise_events")) | set(ids)
    assert len(loaded) == emulator.stream_counts()["box_enterprise_events"]


# ------------------------------------------------------------------------------ future stamps

#: (api, stream, field, a value stamped in 2099, API settings): the last event of the next
#: page gets the value, so it would be the bookmark.
FUTURE_CASES = [
    ("socotra", "socotra_events", "timestamp", "2099-01-01T00:00:00.000Z",
     {"lookback_minutes": 0}),
    ("discue", "discue_events", "stored_at", 4070908800000, {}),
    ("box", "box_enterprise_events", "created_at", "2099-01-01T00:00:00-08:00",
     {"lookback_minutes": 0}),
    ("alpaca", "alpaca_trade_events", "event_id",
     ulid.encode(4070908800000, 12345), {"lookback_minutes": 0}),
]


@pytest.mark.parametrize(("api", "stream", "field", "value", "settings"), FUTURE_CASES,
                         ids=[case[0] for case in FUTURE_CASES])
def test_an_event_stamped_in_2099_does_not_move_the_bookmark(emulator, api, stream, field,
                                                             value, settings):
    config = one_api_config(emulator.url, api, settings=settings)
    first = run_tap(config, streams=[stream])
    assert first.returncode == 0, first.stderr
    feed = {"feed": "enterprise"} if api == "box" else {}
    emulator.add_events(api, 3, **feed)
    emulator.inject(api, "mutate", path=emulator.app.apis[api].fault_path, times=2,
                    options={"keys": [field], "value": value, "last": True})
    second = run_tap(config, state=first.final_state, streams=[stream])
    assert second.returncode == 0, second.stderr
    # Emitted (date-times as UTC text: `2099-01-01T08:00:00Z`).
    assert any(str(value)[:4] in str(record[field]) for record in second.records(stream))
    assert any("2099" in line and "upper bound" in line
               for line in log_lines(second, "WARNING")), second.stderr
    assert "2099" not in json.dumps(second.final_state)
    assert "4070908800000" not in json.dumps(second.final_state)

    loaded = emulator.stream_counts()[stream]
    emulator.add_events(api, 30, **feed)  # spread over the API's streams: some for this one
    arrived = emulator.stream_counts()[stream] - loaded
    assert arrived > 0
    third = run_tap(config, state=second.final_state, streams=[stream])
    assert third.returncode == 0, third.stderr
    keys = primary_keys(stream)
    before = {key_of(r, keys) for run in (first, second) for r in run.records(stream)}
    # Where the 2099 value replaced the key itself (Alpaca's id), the event it replaced
    # arrives under its real id too, now that the server stopped lying.
    expected = arrived + (1 if field in keys else 0)
    assert len({key_of(r, keys) for r in third.records(stream)} - before) == expected, \
        "the next run still reads what arrives"


def primary_keys(stream: str) -> list[str]:
    return {"socotra_events": ["tenant_locator", "locator"], "discue_events": ["id"]}.get(
        stream, ["event_id"])


def key_of(record: dict, keys: list[str]) -> tuple:
    return tuple(record[key] for key in keys)


# ------------------------------------------------------------------------------ bookmarks written

#: (api, stream, field, value the next run would refuse)
UNWRITABLE = [
    ("discue", "discue_events", "stored_at", -5),
    ("socotra", "socotra_events", "timestamp", "yesterday"),
]


@pytest.mark.parametrize(("api", "stream", "field", "value"), UNWRITABLE,
                         ids=[case[0] for case in UNWRITABLE])
def test_a_cursor_the_next_run_would_refuse_is_never_written(emulator, api, stream, field,
                                                             value):
    config = one_api_config(emulator.url, api)
    emulator.inject(api, "mutate", path=emulator.app.apis[api].fault_path, after=1,
                    options={"keys": [field], "value": value, "last": True})
    first = run_tap(config, streams=[stream])
    assert first.returncode == 1, first.stderr
    errors = log_lines(first, "ERROR")
    assert any(f"stream '{stream}'" in line and f"'{field}'" in line and repr(value) in line
               for line in errors), first.stderr
    assert "Traceback" not in first.stderr
    assert repr(value) not in json.dumps(first.final_state)
    # Whatever the failed run wrote, the next run reads it and completes.
    second = run_tap(config, state=first.final_state, streams=[stream])
    assert second.returncode == 0, second.stderr


# ------------------------------------------------------------------------------ bookmarks read

ALPACA_TRADES = "alpaca_trade_events"
MALFORMED_STATES = [
    ("box", {"box_events": {"replication_key": "stream_position",
                            "replication_key_value": 1.2345678901234567e+19}},
     "box_events", "1.2345678901234567e+19"),
    ("alpaca", {ALPACA_TRADES: {"replication_key": "max_event_ulid",
                                "replication_key_value": "2026-12-01T00:00:00Z"}},
     ALPACA_TRADES, "2026-12-01T00:00:00Z"),
    ("discue", {"discue_events": {"replication_key": "cursor",
                                  "replication_key_value": "1747038614499"}},
     "discue_events", "1747038614499"),
    ("socotra", {"socotra_events": {"partitions": [
        {"context": {"tenant_locator": "8b4f2d2e-6a55-4c51-9d3b-0f4c7f0f2a11"},
         "replication_key": "timestamp", "replication_key_value": "soon"}]}},
     "socotra_events", "soon"),
    ("discue", {"discue_events": "1747038614499:abc"}, "discue_events", "1747038614499:abc"),
    ("socotra", {"socotra_events": {"partitions": {"a": 1}}}, "socotra_events", "partitions"),
]


@pytest.mark.parametrize(("api", "bookmarks", "stream", "named"), MALFORMED_STATES,
                         ids=[f"{case[0]}-{n}" for n, case in enumerate(MALFORMED_STATES)])
def test_a_malformed_bookmark_fails_the_run_before_any_request(emulator, api, bookmarks,
                                                               stream, named):
    config = one_api_config(emulator.url, api)
    run = run_tap(config, state={"bookmarks": bookmarks})
    assert run.returncode == 1, run.stderr
    errors = log_lines(run, "ERROR")
    assert any(f"'{stream}'" in line and named in line for line in errors), run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests(api) == [], "no request before the state was read"
    assert run.records() == []


def test_a_state_that_is_not_an_object_of_bookmarks_is_one_line(emulator):
    run = run_tap(one_api_config(emulator.url, "discue"), state={"bookmarks": ["discue"]})
    assert run.returncode == 1, run.stderr
    assert any("'bookmarks' is a JSON array" in line for line in log_lines(run, "ERROR"))
    assert "Traceback" not in run.stderr
    assert emulator.requests("discue") == []


# ------------------------------------------------------------------------------ feed switches


def test_the_replication_key_comes_from_the_feed_setting_not_the_catalog(emulator):
    """A catalog discovered under `admin_logs` (key `created_at`), run on
    `admin_logs_streaming`: the bookmark is a position, and the next run sends it back."""
    catalog = select_streams(discover({}), {"box_enterprise_events"})
    entry = next(e for e in catalog["streams"] if e["tap_stream_id"] == "box_enterprise_events")
    assert entry["replication_key"] == "created_at"
    config = one_api_config(emulator.url, "box",
                            settings={"enterprise_stream_type": "admin_logs_streaming"})
    first = run_tap(config, catalog=catalog)
    assert first.returncode == 0, first.stderr
    bookmark = first.bookmark("box_enterprise_events")
    assert bookmark["replication_key"] == "stream_position"
    assert bookmark["replication_key_value"].isdigit()
    emulator.add_events("box", 3, feed="enterprise")
    second = run_tap(config, catalog=catalog, state=first.final_state)
    assert second.returncode == 0, second.stderr
    assert len(set(second.ids("box_enterprise_events"))
               - set(first.ids("box_enterprise_events"))) == 3


def test_a_bookmark_of_another_feed_is_not_sent(emulator):
    """A time bookmarked on `admin_logs`, then the setting switches to the streaming feed:
    the time is never sent as a position; the stream starts as on a first run, saying why."""
    config = one_api_config(emulator.url, "box")
    first = run_tap(config, streams=["box_enterprise_events"])
    assert first.bookmark("box_enterprise_events")["replication_key"] == "created_at"
    switched = one_api_config(emulator.url, "box",
                              settings={"enterprise_stream_type": "admin_logs_streaming"})
    second = run_tap(switched, state=first.final_state, streams=["box_enterprise_events"])
    assert second.returncode == 0, second.stderr
    sent = [r["query"].get("stream_position", [""])[0] for r in emulator.requests("box")
            if r["query"].get("stream_type") == ["admin_logs_streaming"]]
    assert sent and all(position.isdigit() for position in sent), sent
    assert len(set(second.ids("box_enterprise_events"))) == \
        emulator.stream_counts()["box_enterprise_events"]
    assert any("does not fit this feed" in line for line in log_lines(second, "WARNING"))


# ------------------------------------------------------------------------------ partitions


def test_a_tenant_the_token_cannot_read_does_not_stop_the_others(emulator):
    """The first tenant answers 403: one line naming it and the status; the second tenant
    loads everything with its bookmark; the run exits non-zero at the end."""
    first_tenant, second_tenant = SOCOTRA_TENANTS
    emulator.inject("socotra", "status", path=f"/event/{first_tenant}/", status=403,
                    times=1000, body={"title": "Forbidden", "status": 403})
    run = run_tap(one_api_config(emulator.url, "socotra"), streams=["socotra_events"])
    assert run.returncode == 1, run.stderr
    errors = [line for line in log_lines(run, "ERROR") if first_tenant in line]
    assert errors and all("403" in line for line in errors), run.stderr
    assert "Traceback" not in run.stderr
    records = run.records("socotra_events")
    assert {r["tenant_locator"] for r in records} == {second_tenant}
    expected = emulator.app.apis["socotra"].tenant_counts()[second_tenant]
    assert len({r["locator"] for r in records}) == expected
    partitions = run.bookmark("socotra_events")["partitions"]
    done = [p for p in partitions if p["context"]["tenant_locator"] == second_tenant]
    assert done and done[0]["replication_key_value"] == records[-1]["timestamp"]


# ------------------------------------------------------------------------------ Box tokens


def box_token_requests(emulator) -> int:
    return sum(1 for r in emulator.requests("box") if r["path"] == "/oauth2/token")


def test_every_401_gets_a_new_token_and_one_retry():
    """Box refuses each token after 3 requests: a long run meets many 401s, each answered
    with a new token and one retry; every event arrives once."""
    server = start_emulator(events=1200, seed=3, options={"box": {"token_uses": 3}})
    try:
        config = one_api_config(server.url, "box", settings={"page_size": 100})
        run = run_tap(config, streams=["box_events"])
        assert run.returncode == 0, run.stderr
        ids = run.ids("box_events")
        assert len(ids) == len(set(ids)) == 1200
        assert box_token_requests(server) >= 5
    finally:
        server.stop()


@pytest.mark.parametrize("after", [0, 2], ids=["first-request", "mid-run"])
def test_a_401_right_after_a_fresh_token_fails_without_a_loop(emulator, after):
    emulator.inject("box", "status", path="/2.0/events", status=401, after=after, times=1000,
                    body={"type": "error", "status": 401, "code": "unauthorized",
                          "message": "Unauthorized"})
    run = run_tap(one_api_config(emulator.url, "box", settings={"page_size": 100}),
                  streams=["box_events"])
    assert run.returncode == 1, run.stderr
    # The run's token, then one new token for the one retry; the retry's 401 fails the stream.
    assert box_token_requests(emulator) == 2
    refused = 1000 - sum(fault.times for fault in emulator.app.faults)
    assert refused == 2, f"{refused} requests refused: the 401 to a fresh token was retried"
    assert any("stream 'box_events': HTTP 401" in line for line in log_lines(run, "ERROR"))
    assert "Traceback" not in run.stderr


def test_the_token_endpoint_is_retried_like_any_request(emulator):
    emulator.inject("box", "status", path="/oauth2/token", status=503, times=2,
                    headers={"Retry-After": "0"}, body={"error": "temporarily_unavailable"})
    run = run_tap(one_api_config(emulator.url, "box"), streams=["box_events"])
    assert run.returncode == 0, run.stderr
    assert len(set(run.ids("box_events"))) == emulator.stream_counts()["box_events"]
    # The two 503s were the emulator's faults (not logged by the API); one token was minted.
    assert box_token_requests(emulator) == 1
    retries = [line for line in log_lines(run, "WARNING") if "Box token request: retry" in line]
    assert len(retries) == 2 and "HTTP 503" in retries[0], run.stderr


def test_a_dead_token_url_is_named_as_the_setting_to_check(emulator):
    dead = HostileServer(lambda seen: Answer())
    url = dead.url
    dead.stop()  # nothing listens there any more: connections are refused
    config = one_api_config(emulator.url, "box", max_retries=2,
                            settings={"token_url": f"{url}/oauth2/token"})
    run = run_tap(config, streams=["box_events"])
    assert run.returncode == 1, run.stderr
    errors = log_lines(run, "ERROR")
    assert any("box.token_url" in line and "box.api_url" not in line
               for line in errors), run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests("box") == []


def test_client_credentials_without_subject_id_fail_before_any_request(emulator):
    config = one_api_config(emulator.url, "box")
    del config["box"]["subject_id"]
    run = run_tap(config)
    assert run.returncode != 0
    assert "box.subject_id" in run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests("box") == []


# ------------------------------------------------------------------------------ state files


@pytest.mark.parametrize("content", [b'{"bookmarks": {', b"\xff\xfe{}", b'["discue_events"]'],
                         ids=["cut-short", "not-utf8", "a-list"])
def test_an_unreadable_state_file_is_one_line_before_any_request(emulator, tmp_path, content):
    command = tap_command(tmp_path, one_api_config(emulator.url, "discue"), state={})
    (tmp_path / "state.json").write_bytes(content)
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=clean_env())
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "state file" in errors[0] and "state.json" in errors[0], \
        run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests("discue") == []
    assert '"RECORD"' not in run.stdout


# ------------------------------------------------------------------------------ Alpaca ids

#: Valid ULIDs (2023-10-12), the id from Alpaca's own docs with I and L (Crockford: 1), and
#: two ids that are no ULID however read.
ALPACA_IDS = ["01HCMKKNRK7S5C1JYP50QGDECQ", "01HCMQR4S73L9G6EHI0JKL2M3N", "evt-42",
              "01HCMKNJJRJ4E3RNFA1XR8CX7R", "evt-43"]


def test_odd_alpaca_ids_are_decoded_or_emitted_without_moving_the_cursor():
    events = [{"event_id": event_id, "event": "fill", "at": "2023-10-12T15:00:00Z"}
              for event_id in ALPACA_IDS]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode()
    server = HostileServer(lambda seen: Answer(200, body,
                                               {"Content-Type": "text/event-stream"}))
    try:
        run = run_tap({"alpaca": {"api_url": server.url, "api_key": "k", "api_secret": "s"}},
                      streams=["alpaca_trade_events"])
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert run.ids("alpaca_trade_events") == ALPACA_IDS, "each emitted once, as sent"
    # The docs' id decodes (I and L as 1) to the greatest ULID: it is the bookmark.
    decoded = "01HCMQR4S7319G6EH10JK12M3N"
    assert run.bookmark("alpaca_trade_events")["replication_key_value"] == decoded
    odd = [line for line in log_lines(run, "WARNING") if "is not a ULID" in line]
    assert len(odd) == 1 and "evt-42" in odd[0], run.stderr
