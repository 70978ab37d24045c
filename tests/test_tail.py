"""Tail mode: the emulator adds events while the real `tap-events` process listens.

Every test runs the CLI in the background (`RunningTap`), waits until its streams listen,
adds events, and checks what came out: every event exactly once, within the budget, STATE as
promised, and a clean end (by the budget or by SIGTERM) that the next run resumes from.
"""

from __future__ import annotations

import signal
import time

import pytest

from tap_events.sources.alpaca import CURSOR_FIELD
from tap_events.tap import TapEvents
from tap_events_emulator import alpaca as emulated_alpaca
from tap_events_emulator import start_emulator, tap_config
from tap_events_emulator.box import USER_BASE
from tests.support import RunningTap, log_lines, run_tap

EVENTS = 300
TRADES = "alpaca_trade_events"
FEEDS = {feed.stream: feed for feed in emulated_alpaca.FEEDS}
#: No bound here is a stopwatch (the suite runs in parallel workers on a loaded machine).
#: "Fast" means: out while the tap still listens, long before anything else could push it
#: out. LISTEN is a tail budget (and STATE interval) no test waits out: those tests end the
#: run with SIGTERM. PROMPT is how long a test waits for what the tap must do now; a tap that
#: instead waited for LISTEN (the end of the run, the next STATE, a blocked read) misses it.
LISTEN = 300
PROMPT = 60
#: How long a run with a short budget (a few seconds) may take, start-up on a loaded machine
#: included.
ENDS_WITHIN = 120


@pytest.fixture
def make_emulator():
    servers = []

    def make(**options):
        server = start_emulator(events=EVENTS, seed=11, options=options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def tail_config(emulator, **settings) -> dict:
    return {**tap_config(emulator.url), "tail_state_seconds": 1, **settings}


def box_ids(emulator, start: int, stop: int) -> list[str]:
    api = emulator.app.apis["box"]
    return [api.user_event(index)["event_id"] for index in range(start, stop)]


def alpaca_id(emulator, index: int) -> tuple[str, str]:
    """The stream and key of the alpaca event with global number `index` (an activity's
    `ref_id`, which a redelivery repeats; the ULID elsewhere)."""
    api = emulator.app.apis["alpaca"]
    feed = emulated_alpaca.FEEDS[index % len(emulated_alpaca.FEEDS)]
    return feed.stream, api.event(feed, index // len(emulated_alpaca.FEEDS))[feed.key]


def options_calls(emulator) -> list[dict]:
    return [r for r in emulator.requests("box") if r["method"] == "OPTIONS"]


def realtime_polls(emulator) -> list[dict]:
    return [r for r in emulator.requests("box") if r["path"] == "/realtime/subscribe"]


def unbounded(emulator, stream: str) -> list[dict]:
    return [r for r in emulator.requests("alpaca")
            if r["path"] == FEEDS[stream].path
            and not {"until", "until_id", "until_ulid"} & r["query"].keys()]


def record_id(message: dict) -> str:
    feed = FEEDS.get(message["stream"])
    return message["record"][feed.key if feed else "event_id"]


def arrival_times(tap: RunningTap) -> dict[str, float]:
    """When each record arrived, by id."""
    return {record_id(m): at for at, m in tap.messages() if m["type"] == "RECORD"}


def assert_once(ids: list[str], expected: list[str]) -> None:
    assert len(ids) == len(set(ids)), "an event was emitted twice"
    assert set(ids) == set(expected), f"{len(set(expected) - set(ids))} event(s) missing"


# ---------------------------------------------------------------------------- Box long polling


def test_box_long_poll_emits_each_new_event_once_and_fast(make_emulator):
    # The realtime server answers `reconnect` after 1 s without events: several rounds.
    emulator = make_emulator(box={"realtime_timeout": 1.0})
    # Neither the periodic STATE nor the end of the run falls due while events arrive: the
    # records must come out while the tap listens, each batch before the next is added.
    tap = RunningTap(tail_config(emulator, tail_seconds=LISTEN, tail_state_seconds=LISTEN),
                     streams=["box_events"])
    tap.wait_for(lambda: realtime_polls(emulator))
    for batch in range(4):
        count = EVENTS + 5 * batch
        rounds = len(options_calls(emulator))
        emulator.add_events("box", 5, feed="user")
        batch_ids = set(box_ids(emulator, count, count + 5))
        tap.wait_for(lambda ids=batch_ids: ids <= set(arrival_times(tap)), timeout=PROMPT)
        # The next batch comes after a `reconnect` round (a new OPTIONS call, as Box asks).
        tap.wait_for(lambda rounds=rounds: len(options_calls(emulator)) > rounds,
                     timeout=PROMPT)
    tap.process.send_signal(signal.SIGTERM)
    run = tap.wait(timeout=PROMPT)

    assert run.returncode == 0, run.stderr
    assert_once(run.ids("box_events"), box_ids(emulator, 0, EVENTS + 20))
    assert len(options_calls(emulator)) >= 5
    assert run.bookmark("box_events")["replication_key_value"] == str(USER_BASE + EVENTS + 20)
    assert not log_lines(run, "ERROR") and not log_lines(run, "WARNING")


def test_box_long_poll_retries_a_silent_server_then_asks_for_a_new_one(make_emulator):
    # The server never answers within the advertised retry_timeout: after max_retries polls
    # on one channel the tap must ask OPTIONS for a new one.
    emulator = make_emulator(box={"realtime_timeout": 30.0, "retry_timeout": 0.4,
                                  "max_retries": 2})
    tap = RunningTap(tail_config(emulator, tail_seconds=3), streams=["box_events"])
    tap.wait_for(lambda: realtime_polls(emulator))
    time.sleep(1.0)
    emulator.add_events("box", 7, feed="user")
    run = tap.wait(timeout=ENDS_WITHIN)

    assert run.returncode == 0, run.stderr
    assert_once(run.ids("box_events"), box_ids(emulator, 0, EVENTS + 7))
    polls = realtime_polls(emulator)
    per_channel: dict[str, int] = {}
    for poll in polls:
        channel = poll["query"]["channel"][0]
        per_channel[channel] = per_channel.get(channel, 0) + 1
    assert len(per_channel) >= 2, "never asked for a new realtime server"
    assert max(per_channel.values()) <= 2, "polled a channel past its max_retries"
    assert len(options_calls(emulator)) == len(per_channel)


def test_box_max_retries_answers_and_errors_restart_from_options(make_emulator):
    emulator = make_emulator(box={"realtime_timeout": 1.0})
    # The first poll hears `max_retries`, the second a Box-style 400 error.
    emulator.inject("box", "status", path="/realtime", status=200,
                    body={"message": "max_retries"})
    emulator.inject("box", "status", path="/realtime", status=400,
                    body={"type": "error", "status": 400, "code": "max_retries",
                          "message": "Too many retries on this channel"})
    tap = RunningTap(tail_config(emulator, tail_seconds=3), streams=["box_events"])
    tap.wait_for(lambda: realtime_polls(emulator))
    emulator.add_events("box", 4, feed="user")
    run = tap.wait(timeout=ENDS_WITHIN)

    assert run.returncode == 0, run.stderr
    assert_once(run.ids("box_events"), box_ids(emulator, 0, EVENTS + 4))
    methods = [r["method"] for r in emulator.requests("box")
               if r["method"] == "OPTIONS" or r["path"] == "/realtime/subscribe"]
    # Polls answered by an injected fault are not in the API's log: OPTIONS, (max_retries),
    # OPTIONS, (400), OPTIONS, then the first poll the realtime server saw.
    assert methods[:4] == ["OPTIONS", "OPTIONS", "OPTIONS", "GET"]
    assert not log_lines(run, "ERROR")


def test_box_falls_back_to_polling_when_the_realtime_server_refuses(make_emulator):
    """The token never goes to a plain-http realtime URL (Box's are): should the server
    want one, the stream says so once and polls instead."""
    emulator = make_emulator()
    emulator.inject("box", "status", path="/realtime", status=401,
                    body={"type": "error", "status": 401, "code": "unauthorized"})
    tap = RunningTap(tail_config(emulator, tail_seconds=3, tail_poll_seconds=0.5),
                     streams=["box_events"])
    tap.wait_for(lambda: "polling every 0.5 s instead" in tap.stderr())
    emulator.add_events("box", 6, feed="user")
    run = tap.wait(timeout=ENDS_WITHIN)

    assert run.returncode == 0, run.stderr
    assert_once(run.ids("box_events"), box_ids(emulator, 0, EVENTS + 6))
    assert len(options_calls(emulator)) == 1
    assert not realtime_polls(emulator)  # the one refused poll was the injected fault


# ---------------------------------------------------------------------------- Alpaca live SSE


def test_alpaca_streams_stay_connected_and_emit_each_event_once_and_fast(make_emulator):
    emulator = make_emulator(alpaca={"heartbeat_seconds": 0.3})
    streams = list(FEEDS)
    # No STATE falls due and the run does not end while events arrive: an SSE connection is
    # one long page, so only the per-event flush can get the records out while it is open.
    tap = RunningTap(tail_config(emulator, tail_seconds=LISTEN, tail_state_seconds=LISTEN),
                     streams=streams)
    tap.wait_for(lambda: all(unbounded(emulator, stream) for stream in streams))
    added: list[str] = []
    for batch in range(3):
        emulator.add_events("alpaca", 10)
        batch_ids = {alpaca_id(emulator, index)[1]
                     for index in range(EVENTS + 10 * batch, EVENTS + 10 * (batch + 1))}
        tap.wait_for(lambda ids=batch_ids: ids <= set(arrival_times(tap)),
                     timeout=PROMPT)
        added += batch_ids
    tap.process.send_signal(signal.SIGTERM)
    run = tap.wait(timeout=PROMPT)

    assert run.returncode == 0, run.stderr
    for stream in streams:
        feed = FEEDS[stream]
        expected = [alpaca_id(emulator, index)[1] for index in range(EVENTS + 30)
                    if alpaca_id(emulator, index)[0] == stream]
        assert_once(run.ids(stream, feed.key), expected)
        newest = max(run.ids(stream, feed.id_field))
        assert run.bookmark(stream)["replication_key_value"] == newest
        if feed.key == feed.id_field:
            assert newest == max(expected)
        # One open connection per stream did it all: no reconnect was needed.
        assert len(unbounded(emulator, stream)) == 1
    # No STATE (whose write flushes stdout) came between the new records.
    new = [i for i, m in enumerate(run.messages)
           if m["type"] == "RECORD" and record_id(m) in set(added)]
    assert len(new) == len(added)
    assert all(m["type"] != "STATE" for m in run.messages[min(new):max(new)])
    assert not log_lines(run, "WARNING")


def test_alpaca_tail_reconnects_after_silence_and_internal_error(make_emulator):
    emulator = make_emulator(alpaca={"heartbeat_seconds": 0.2})
    # The two catch-up connections pass (the second finds nothing new); the first tail
    # connection falls silent for 2 s (past the 1 s idle timeout), the next ends with
    # Alpaca's internal-error comment.
    emulator.inject("alpaca", "sse_stall", path=FEEDS[TRADES].path, after=2,
                    options={"at": 5, "seconds": 2})
    emulator.inject("alpaca", "sse_internal_error", path=FEEDS[TRADES].path,
                    options={"at": 20})
    config = tail_config(emulator, tail_seconds=5, max_retry_wait_seconds=1)
    config["alpaca"]["idle_timeout_seconds"] = 1
    tap = RunningTap(config, streams=[TRADES])
    tap.wait_for(lambda: len(unbounded(emulator, TRADES)) >= 3)
    emulator.add_events("alpaca", 25)
    run = tap.wait(timeout=ENDS_WITHIN)

    assert run.returncode == 0, run.stderr
    expected = [alpaca_id(emulator, index)[1] for index in range(EVENTS + 25)
                if alpaca_id(emulator, index)[0] == TRADES]
    assert_once(run.ids(TRADES), expected)
    warnings = "\n".join(log_lines(run, "WARNING"))
    assert "no event or heartbeat for 1 s" in warnings
    assert "internal server error" in warnings


# ---------------------------------------------------------------------------- polled streams


def test_streams_without_a_push_channel_poll_at_tail_poll_seconds(make_emulator):
    """discue, Box enterprise events (a new admin_logs window per poll) and Socotra (one
    partition per tenant, each polled from its own bookmark)."""
    emulator = make_emulator()
    keys = {"discue_events": ("id",), "box_enterprise_events": ("event_id",),
            "socotra_events": ("tenant_locator", "locator")}
    tap = RunningTap(tail_config(emulator, tail_seconds=3, tail_poll_seconds=0.5),
                     streams=list(keys))
    tap.wait_for(lambda: "Tail mode" in tap.stderr())
    emulator.add_events("discue", 6)
    emulator.add_events("box", 6, feed="enterprise")
    emulator.add_events("socotra", 6)
    run = tap.wait(timeout=ENDS_WITHIN)

    assert run.returncode == 0, run.stderr
    counts = emulator.stream_counts()
    for stream, key in keys.items():
        ids = [tuple(record[field] for field in key) for record in run.records(stream)]
        assert len(ids) == len(set(ids)) == counts[stream], stream
    assert counts["socotra_events"] > EVENTS and counts["discue_events"] == EVENTS + 6
    # About one poll every 0.5 s for 3 s (each poll reads until a page comes back empty).
    polls = [r for r in emulator.requests("discue") if r["path"] == "/v1/events"]
    assert len(polls) >= 5


# ---------------------------------------------------------------------------- state and SIGTERM


def test_state_is_written_at_least_every_tail_state_seconds(make_emulator):
    """An SSE connection is one long page: without the tail's clock no STATE would come
    until 1000 records or the end of the run."""
    emulator = make_emulator(alpaca={"heartbeat_seconds": 0.2})
    tap = RunningTap(tail_config(emulator, tail_seconds=LISTEN, tail_state_seconds=0.5),
                     streams=[TRADES])
    tap.wait_for(lambda: unbounded(emulator, TRADES))

    def covered(cursor: str) -> bool:
        return any(m["type"] == "STATE"
                   and m["value"]["bookmarks"][TRADES]["replication_key_value"] >= cursor
                   for _, m in tap.messages())

    # A few events at a time, each batch covered by a STATE before the next comes: a STATE
    # every tail_state_seconds, never one only at 1000 records or the end of the run.
    for batch in range(6):
        emulator.add_events("alpaca", len(FEEDS))  # one per stream
        batch_ids = {alpaca_id(emulator, index)[1] for index in
                     range(EVENTS + len(FEEDS) * batch, EVENTS + len(FEEDS) * (batch + 1))
                     if alpaca_id(emulator, index)[0] == TRADES}
        tap.wait_for(lambda ids=batch_ids: ids <= set(arrival_times(tap)), timeout=PROMPT)
        cursor = max(m["record"][CURSOR_FIELD] for _, m in tap.messages()
                     if m["type"] == "RECORD" and m["record"]["event_id"] in batch_ids)
        tap.wait_for(lambda cursor=cursor: covered(cursor), timeout=PROMPT)
    tap.process.send_signal(signal.SIGTERM)
    run = tap.wait(timeout=PROMPT)
    assert run.returncode == 0, run.stderr
    assert len([m for m in run.messages if m["type"] == "STATE"]) >= 6


def test_sigterm_mid_tail_ends_cleanly_and_the_next_run_loses_nothing(make_emulator):
    # Box's long poll and Alpaca's heartbeats both outlast PROMPT, and so does the budget.
    emulator = make_emulator(box={"realtime_timeout": LISTEN},
                             alpaca={"heartbeat_seconds": LISTEN})
    streams = ["box_events", TRADES]
    # Both streams end up blocked: Box in a long poll, Alpaca in a silent SSE read.
    tap = RunningTap(tail_config(emulator, tail_seconds=LISTEN), streams=streams)
    tap.wait_for(lambda: realtime_polls(emulator) and unbounded(emulator, TRADES))
    emulator.add_events("box", 5, feed="user")
    emulator.add_events("alpaca", 10)
    new_ids = box_ids(emulator, EVENTS, EVENTS + 5) + [
        alpaca_id(emulator, index)[1] for index in range(EVENTS, EVENTS + 10)
        if alpaca_id(emulator, index)[0] == TRADES]
    tap.wait_for(lambda: set(new_ids) <= set(arrival_times(tap)))
    # Both blocked again: Box in its next long poll, Alpaca waiting for the next event.
    tap.wait_for(lambda: len(realtime_polls(emulator)) >= 2)
    tap.process.send_signal(signal.SIGTERM)
    # Ended by the signal, not by a read that returned (that takes LISTEN seconds).
    first = tap.wait(timeout=PROMPT)
    assert first.returncode == 0, first.stderr
    assert first.messages[-1]["type"] == "STATE"

    emulator.add_events("box", 3, feed="user")
    emulator.add_events("alpaca", 10)
    second = run_tap(tap_config(emulator.url), state=first.final_state, streams=streams)
    assert second.returncode == 0, second.stderr
    box = first.ids("box_events") + second.ids("box_events")
    assert set(box) == set(box_ids(emulator, 0, EVENTS + 8))
    assert len(second.ids("box_events")) < 10, "the state did not cover the first run"
    trades = set(first.ids(TRADES) + second.ids(TRADES))
    expected = {alpaca_id(emulator, index)[1] for index in range(EVENTS + 20)
                if alpaca_id(emulator, index)[0] == TRADES}
    assert trades == expected


# ---------------------------------------------------------------------------- settings, SDK


def test_tail_settings_and_their_defaults():
    properties = TapEvents.config_jsonschema["properties"]
    assert properties["tail_seconds"]["default"] == 0
    assert properties["tail_poll_seconds"]["default"] == 30
    assert properties["tail_state_seconds"]["default"] == 10


def test_sdk_internals_the_tail_relies_on():
    """tail.resume_from_bookmark writes the SDK's starting marker."""
    from singer_sdk.helpers import _state

    assert _state.STARTING_MARKER == "starting_replication_value"
    assert _state.get_starting_replication_value({_state.STARTING_MARKER: "7"}) == "7"
