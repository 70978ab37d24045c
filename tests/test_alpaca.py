"""Alpaca Broker SSE streams against the emulator, through the real `tap-events` CLI."""

from __future__ import annotations

import datetime
import json
import time
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from tap_events import ulid
from tap_events.redact import basic_credentials
from tap_events.sources.alpaca import CURSOR_FIELD, SOURCE
from tap_events.tap import TapEvents
from tap_events_emulator import alpaca as emulated
from tap_events_emulator import start_emulator, tap_config
from tests.support import discover, log_lines, run_tap

STREAMS = {feed.stream: feed for feed in emulated.FEEDS}
#: The bound parameters each tap stream sends.
BOUNDS = {stream.name: stream.bound_parameters for stream in SOURCE.streams}
TRADES = "alpaca_trade_events"
#: How long run_tap lets one run take (start-up on a loaded machine included).
RUN_TIMEOUT = 120
ACTIVITIES = "alpaca_activity_events"
#: Alpaca's documentation samples (read at test time, never copied into the repository).
REALDATA = Path(__file__).parent.parent.parent / "shared" / "realdata" / "payloads" / "alpaca"
PER_STREAM = 120  # the `emulator` fixture's 1200 events dealt to ten streams
NEW_STREAMS = {  # the issue-18 streams: key, cursor parameters
    ACTIVITIES: (["ref_id"], ("since_id", "until_id")),
    "alpaca_nta_events": (["event_ulid"], ("since_ulid", "until_ulid")),
    "alpaca_transfer_status_events": (["event_ulid"], ("since_ulid", "until_ulid")),
    "alpaca_system_events": (["event_id"], ("since", "until")),
    "alpaca_ipo_events": (["event_id"], ("since", "until")),
}


def alpaca_only(config: dict, **settings) -> dict:
    return {"alpaca": {**config["alpaca"], **settings}}


def ids(run, stream: str) -> list[str]:
    """The event ULIDs a run emitted (the cursor's values)."""
    return run.ids(stream, STREAMS[stream].id_field)


def keys(run, stream: str) -> list[str]:
    """The primary keys a run emitted (an activity's `ref_id`, else the ULID)."""
    return run.ids(stream, STREAMS[stream].key)


def requests_to(emulator, stream: str) -> list[dict]:
    path = STREAMS[stream].path
    return [r for r in emulator.requests("alpaca") if r["path"] == path]


def assert_exactly_once(run, emulator, stream: str) -> list[str]:
    emitted = keys(run, stream)
    assert len(emitted) == len(set(emitted)), f"{stream} emitted a duplicate"
    assert len(emitted) == emulator.stream_counts()[stream], f"{stream} lost events"
    return emitted


def assert_bounded_and_paired(request: dict) -> None:
    """An upper bound, the pairing rules kept (the emulator's parser is Alpaca's rules),
    and never the deprecated integer ids on v1 nor a time pair on the Activity stream."""
    feed = emulated.FEED_BY_PATH[request["path"]]
    query = {key: values[-1] for key, values in request["query"].items()}
    assert all(len(values) == 1 for values in request["query"].values()), request
    assert {"until", "until_id", "until_ulid"} & query.keys(), f"no upper bound: {request}"
    emulated.Bounds.parse(query, feed)  # raises ParameterError on a broken rule
    if feed.v1:
        assert not {"since_id", "until_id"} & query.keys(), request
    if feed.stream == ACTIVITIES:
        assert not {"since", "until"} & query.keys(), request


def test_discover_lists_every_stream_with_its_key():
    streams = {e["tap_stream_id"]: e for e in discover({})["streams"]}
    for name, feed in STREAMS.items():
        assert streams[name]["key_properties"] == [feed.key]
        assert streams[name]["replication_key"] == CURSOR_FIELD
    for name, (key, bounds) in NEW_STREAMS.items():
        assert streams[name]["key_properties"] == key
        assert BOUNDS[name] == bounds
    admin = streams["alpaca_admin_action_events"]["schema"]["properties"]
    # The deprecated nested objects and their flat replacements are both kept.
    assert {"belongs_to", "created_by", "belongs_to_kind", "belongs_to_id_reference",
            "created_by_kind", "created_by_id_reference", "context"} <= set(admin)
    activity = streams[ACTIVITIES]["schema"]
    assert activity["properties"]["details"]["type"] == ["object", "null"]
    assert {"event_id", "ref_id", "previous_id", "activity_type", "activity_subtype", "at",
            "details"} <= set(activity["properties"])
    assert {"event_id", "ref_id"} <= set(activity["required"])


def test_bounded_replay_emits_every_event_once_and_ends(emulator, config):
    # Ends by itself: run_tap fails a run that outlasts its timeout.
    run = run_tap(alpaca_only(config))
    assert run.returncode == 0, run.stderr
    for stream in STREAMS:
        emitted = assert_exactly_once(run, emulator, stream)
        assert len(emitted) == PER_STREAM - (PER_STREAM // 25 if stream == ACTIVITIES else 0)
        # The bookmark is the greatest id, though the emulator sends some pairs out of order.
        event_ids = ids(run, stream)
        assert event_ids != sorted(event_ids)
        assert run.bookmark(stream)["replication_key_value"] == max(event_ids)
    for request in emulator.requests("alpaca"):
        stream = emulated.FEED_BY_PATH[request["path"]].stream
        assert request["query"].keys() == set(BOUNDS[stream]), request
        assert_bounded_and_paired(request)


def test_no_request_is_ever_sent_without_a_bound(emulator, config):
    """Without `until` the emulated stream never ends (heartbeats only): the tap must not
    hang on it, so it must never send one."""
    url = f"{emulator.url}/alpaca{STREAMS[TRADES].path}"
    auth = (emulated.API_KEY, emulated.API_SECRET)
    with requests.get(url, params={"since": "1970-01-01"}, auth=auth, stream=True,
                      timeout=30) as response:
        deadline = time.monotonic() + 1.5
        chunks = []
        for chunk in response.iter_content(chunk_size=None):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                break
        assert time.monotonic() > deadline, "an unbounded stream closed by itself"
        assert chunks[-1] == b":heartbeat\n\n"

    ours = len(requests_to(emulator, TRADES))
    # A request without `until` would hang the run until run_tap's timeout fails it.
    run = run_tap(alpaca_only(config), streams=[TRADES])
    assert run.returncode == 0, run.stderr
    sent = requests_to(emulator, TRADES)[ours:]
    assert len(sent) >= 2
    assert all(r["query"].get("until") and r["query"].get("since") for r in sent)


def lower_bound(request: dict) -> datetime.datetime:
    """A request's lower bound as a time: `since`, or the time of its ULID bound."""
    query = request["query"]
    if "since" in query:
        return datetime.datetime.fromisoformat(query["since"][0])
    return ulid.datetime_of((query.get("since_id") or query["since_ulid"])[0])


def rounded_down(moment: datetime.datetime, stream: str) -> datetime.datetime:
    """What the tap sends for a lower bound: whole seconds, as a time or as a ULID."""
    moment = moment.replace(microsecond=0)
    if BOUNDS[stream][0] == "since":
        return moment
    return ulid.datetime_of(ulid.encode(ulid.milliseconds(moment), 0))


#: Streams whose hostile behaviours are replayed: one per bound kind and framing.
HOSTILE = [TRADES, ACTIVITIES, "alpaca_nta_events", "alpaca_system_events",
           "alpaca_ipo_events"]


@pytest.mark.parametrize("stream", HOSTILE)
def test_internal_error_half_way_still_emits_every_event_once(emulator, config, stream):
    emulator.inject("alpaca", "sse_internal_error", path=STREAMS[stream].path,
                    options={"at": 60})
    run = run_tap(alpaca_only(config), streams=[stream])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, stream)
    emitted = ids(run, stream)
    assert run.bookmark(stream)["replication_key_value"] == max(emitted)
    sent = requests_to(emulator, stream)
    assert len(sent) >= 3  # cut, re-read, confirmation
    # The re-read starts lookback_minutes before the newest event emitted, not from scratch.
    api, feed = emulator.app.apis["alpaca"], STREAMS[stream]
    size = api.feed_size(feed)
    before_cut = {api.event(feed, api.delivered_position(slot, size))[feed.id_field]
                  for slot in range(60)}
    newest_before_cut = max(before_cut & set(emitted))
    expected = ulid.datetime_of(newest_before_cut) - datetime.timedelta(minutes=5)
    assert lower_bound(sent[1]) == rounded_down(expected, stream)
    assert any("internal server error" in line for line in log_lines(run, "WARNING"))
    for request in sent:
        assert_bounded_and_paired(request)


@pytest.mark.parametrize("stream", HOSTILE)
def test_slow_client_comment_causes_a_reread_and_a_warning(emulator, config, stream):
    emulator.inject("alpaca", "sse_slow_client", path=STREAMS[stream].path,
                    options={"at": 30, "dropped": 25})
    run = run_tap(alpaca_only(config), streams=[stream])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, stream)  # the 25 dropped events were re-read
    warnings = log_lines(run, "WARNING")
    assert any("Alpaca dropped 25 messages" in line for line in warnings), run.stderr
    assert len(requests_to(emulator, stream)) >= 3


@pytest.mark.parametrize("stream", [TRADES, ACTIVITIES])
def test_silent_stream_is_reconnected_after_the_idle_timeout(emulator, config, stream):
    # The stream falls silent for far longer than run_tap waits: only a reconnect after the
    # idle timeout lets the run end at all.
    emulator.inject("alpaca", "sse_stall", path=STREAMS[stream].path,
                    options={"at": 50, "seconds": 10 * RUN_TIMEOUT})
    run = run_tap(alpaca_only(config, idle_timeout_seconds=0.5), streams=[stream],
                  timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, stream)
    assert any("no event or heartbeat for 0.5 s" in line for line in log_lines(run, "WARNING"))


@pytest.mark.parametrize("stream", HOSTILE)
def test_connection_dropped_mid_body_is_reread(emulator, config, stream):
    emulator.inject("alpaca", "drop", path=STREAMS[stream].path)
    run = run_tap(alpaca_only(config), streams=[stream])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, stream)
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
    emulator.add_events("alpaca", 10 * len(STREAMS))  # 10 per stream
    second = run_tap(cfg, state=first.final_state)
    assert second.returncode == 0, second.stderr
    for stream in STREAMS:
        old, new = set(keys(first, stream)), keys(second, stream)
        assert len(new) == len(set(new)), f"{stream} emitted an event twice in one run"
        # Exactly the new events, plus the overlap re-read (which the target upserts).
        added = emulator.stream_counts()[stream] - len(old)
        assert added >= 9
        assert len(set(new) - old) == added, stream
        assert len(new) < len(old), f"{stream} re-read more than the lookback overlap"
        all_ids = [*ids(first, stream), *ids(second, stream)]
        assert second.bookmark(stream)["replication_key_value"] == max(all_ids)
        # It re-read a small overlap before the bookmark, not the whole history.
        bookmark = first.bookmark(stream)["replication_key_value"]
        expected = ulid.datetime_of(bookmark) - datetime.timedelta(minutes=5)
        assert lower_bound(requests_to(emulator, stream)[-2]) == rounded_down(expected, stream)
    third = run_tap(cfg, state=second.final_state)
    for stream in STREAMS:
        assert set(keys(third, stream)) <= set(keys(first, stream)) | set(keys(second, stream))
    assert third.final_state["bookmarks"] == second.final_state["bookmarks"]
    for request in emulator.requests("alpaca"):
        assert_bounded_and_paired(request)


def test_late_backfilled_activity_arrives_in_the_next_run(emulator, config):
    """Backfilled activities come late, at the end of the id sequence, with their original
    (old) `at`: a read bounded by time from the bookmark never sees them; the tap reads by
    id and loads them in the next run."""
    cfg = alpaca_only(config)
    first = run_tap(cfg, streams=[ACTIVITIES])
    assert first.returncode == 0, first.stderr
    bookmark = first.bookmark(ACTIVITIES)["replication_key_value"]
    api = emulator.app.apis["alpaca"]
    before = api.feed_size(STREAMS[ACTIVITIES])
    emulator.add_events("alpaca", 30 * len(STREAMS), backfill=True)
    late = [api.event(STREAMS[ACTIVITIES], position)
            for position in range(before, api.feed_size(STREAMS[ACTIVITIES]))]
    late_refs = {event["ref_id"] for event in late} - set(keys(first, ACTIVITIES))
    assert len(late_refs) >= 25
    lookback_start = ulid.datetime_of(bookmark) - datetime.timedelta(minutes=5)
    for event in late:
        assert datetime.datetime.fromisoformat(event["at"]) < lookback_start  # old `at`
        assert event["event_id"] > bookmark  # new id

    # What a time cursor would have asked for: none of them.
    ours = len(requests_to(emulator, ACTIVITIES))
    auth = (emulated.API_KEY, emulated.API_SECRET)
    now = datetime.datetime.now(datetime.UTC)
    by_time = requests.get(f"{emulator.url}/alpaca{STREAMS[ACTIVITIES].path}",
                           params={"since": lookback_start.isoformat(),
                                   "until": now.isoformat()}, auth=auth, timeout=30)
    assert by_time.status_code == 200
    assert not any(ref in by_time.text for ref in late_refs)

    second = run_tap(cfg, state=first.final_state, streams=[ACTIVITIES])
    assert second.returncode == 0, second.stderr
    assert late_refs <= set(keys(second, ACTIVITIES))
    emitted_late = {e["event_id"] for e in late} & set(ids(second, ACTIVITIES))
    assert second.bookmark(ACTIVITIES)["replication_key_value"] == max(emitted_late)
    taps = requests_to(emulator, ACTIVITIES)
    for request in taps[:ours] + taps[ours + 1:]:
        assert_bounded_and_paired(request)


def test_activities_are_keyed_on_ref_id_with_details_and_corrections_kept(emulator, config):
    run = run_tap(alpaca_only(config), streams=[ACTIVITIES])
    assert run.returncode == 0, run.stderr
    records = run.records(ACTIVITIES)
    refs = [r["ref_id"] for r in records]
    # Redeliveries (same ref_id, new event_id) were dropped: each activity once.
    assert len(refs) == len(set(refs)) == emulator.stream_counts()[ACTIVITIES] < PER_STREAM
    assert all(isinstance(r["details"], dict) and r["details"] for r in records)
    corrections = [r for r in records if r.get("previous_id")]
    assert corrections and {r["previous_id"] for r in corrections} <= set(refs)
    trades = [r for r in records if r["activity_type"] == "TRD"]
    assert {"order_id", "symbol", "execution_type"} <= set(trades[0]["details"])


def test_the_sse_id_field_is_never_the_cursor(emulator, config):
    """System events carry `id:`, `event:`, `retry:` fields and data-less `id:` blocks; the
    `id:` is the server's counter, and the bookmark still comes from the JSON."""
    stream = "alpaca_system_events"
    auth = (emulated.API_KEY, emulated.API_SECRET)
    high = ulid.encode(ulid.milliseconds(datetime.datetime.now(datetime.UTC)), 2**80 - 1)
    raw = requests.get(f"{emulator.url}/alpaca{STREAMS[stream].path}",
                       params={"since_id": "0" * 26, "until_id": high}, auth=auth, timeout=30)
    lines = raw.text.splitlines()
    assert {"id", "event", "retry"} <= {line.split(":")[0] for line in lines}
    # A data-less block: an `id:` line ended by the blank line.
    assert any(line.startswith("id:") and after == "" for line, after in pairwise(lines))

    run = run_tap(alpaca_only(config), streams=[stream])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(run, emulator, stream)
    bookmark = run.bookmark(stream)["replication_key_value"]
    assert ulid.is_ulid(bookmark) and bookmark == max(ids(run, stream))


def test_emulated_nta_events_have_the_shape_of_alpacas_samples(emulator):
    """Field names and JSON types of the emulated NTA events match Alpaca's own samples
    (the NTA section of the SSE guide, read from ../shared at test time)."""
    samples = nta_samples()
    assert len(samples) >= 20
    sample_types: dict[str, set[str]] = {}
    for sample in samples:
        for key, value in sample.items():
            sample_types.setdefault(key, set()).add(json_type(value))
    api = emulator.app.apis["alpaca"]
    events = [api.event(STREAMS["alpaca_nta_events"], n) for n in range(60)]
    emulated_keys = set().union(*events)
    assert set(sample_types) <= emulated_keys
    for event in events:
        for key, value in event.items():
            assert json_type(value) in sample_types[key], (key, value)


def nta_samples() -> list[dict]:
    text = (REALDATA / "day-trade-copilot" / "sse-events.md").read_text()
    section = text[text.index("\nNon-Trade Activities Events\n"):]
    decoder = json.JSONDecoder()
    samples, position = [], 0
    while (start := section.find("\n{", position)) >= 0:
        try:
            sample, end = decoder.raw_decode(section, start + 1)
        except ValueError:
            position = start + 2
            continue
        if isinstance(sample, dict) and "entry_type" in sample:
            samples.append(sample)
        position = end
    return samples


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_state_every_thousand_events_is_a_resume_point():
    server = start_emulator(events={"alpaca": len(STREAMS) * 2500}, seed=5)
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
    first = requests_to(emulator, ACTIVITIES)[0]
    assert first["query"]["since_id"][0] == ulid.encode(ulid.milliseconds(start), 0)


ULID = "01JNGQDKNRM9S346Q3D25VT4F5"


@pytest.mark.parametrize(("query", "message", "stream"), [
    ({"until": "2026-01-01"}, "until requires since", TRADES),
    ({"since_id": ULID, "until": "2026-01-01"}, "until requires since", TRADES),
    ({"until_id": ULID}, "until_id requires since_id", TRADES),
    ({"since": "2026-01-01", "since_id": ULID}, "mutually exclusive", TRADES),
    ({"since": "2026-01-01T00:00:00 01:00"}, "not an RFC 3339 date-time", TRADES),
    ({"since_ulid": ULID}, "unknown parameter since_ulid", TRADES),
    ({"since": "2026-01-01"}, "since requires until", ACTIVITIES),
    ({"until": "2026-01-01"}, "until requires since", ACTIVITIES),
    ({"since_id": ULID, "until": "2026-01-01"}, "until requires since", ACTIVITIES),
    ({"since_id": "1200", "until_id": "1300"}, "deprecated", "alpaca_nta_events"),
    ({"since_id": "1200"}, "deprecated", "alpaca_transfer_status_events"),
    ({"until_id": "1300"}, "deprecated", "alpaca_account_status_events"),
    ({"until_ulid": ULID}, "until_ulid requires since_ulid", "alpaca_nta_events"),
    ({"since_ulid": ULID, "since": "2026-01-01"}, "mutually exclusive",
     "alpaca_transfer_status_events"),
    ({"since_ulid": ULID}, "unknown parameter since_ulid", "alpaca_ipo_events"),
    ({"until_id": ULID}, "until_id requires since_id", "alpaca_system_events"),
])
def test_emulator_refuses_broken_parameter_rules(emulator, query, message, stream):
    response = requests.get(f"{emulator.url}/alpaca{STREAMS[stream].path}", params=query,
                            auth=(emulated.API_KEY, emulated.API_SECRET), timeout=30)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_v1_stream_pairs_since_ulid_with_until_ulid(emulator):
    url = f"{emulator.url}/alpaca/v1/events/accounts/status"
    auth = (emulated.API_KEY, emulated.API_SECRET)
    bad = requests.get(url, params={"until_ulid": "01JNGQDKNRM9S346Q3D25VT4F5"}, auth=auth,
                       timeout=30)
    assert bad.status_code == 400 and "until_ulid requires since_ulid" in bad.text
    high = ulid.encode(ulid.milliseconds(datetime.datetime.now(datetime.UTC)), 2**80 - 1)
    good = requests.get(url, params={"since_ulid": "00000000000000000000000000",
                                     "until_ulid": high}, auth=auth, timeout=30)
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
