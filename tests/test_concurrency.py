"""Streams of different APIs extracted in parallel (one process per API), one valid output."""

from __future__ import annotations

import itertools
import typing as t

import orjson

from tap_events import parallel
from tests.support import RunningTap, log_lines, run_tap

if t.TYPE_CHECKING:
    from tap_events_emulator.app import Turnstile

#: One stream per API, each with its own cursor field (the bookmark).
CURSORS = {
    "box_events": "stream_position",
    "discue_events": "cursor",
    "alpaca_trade_events": "max_event_ulid",
}
IDS = {"box_events": "event_id", "discue_events": "id", "alpaca_trade_events": "event_id"}


#: The API of each stream.
APIS = {stream: stream.split("_", 1)[0] for stream in CURSORS}
#: Seconds to wait for what the tap must do next (a request, a record): only stops a hung test
#: (start-up alone can take a minute on a loaded machine).
WAIT_LIMIT = 240


def test_apis_in_parallel_give_a_valid_stream_with_resume_points_everywhere(emulator, config):
    # Every API's answers wait at a turnstile, let through in turns (box, discue, alpaca,
    # box, ...): an API's turn ends once its next records reached the merged output. So the
    # outputs interleave by construction, however the machine schedules the processes.
    turnstiles = {api: emulator.turnstile(api, emulator.app.apis[api].fault_path)
                  for api in APIS.values()}
    expected = emulator.stream_counts()
    tap = RunningTap(config, streams=CURSORS)
    try:
        turns = 0
        while any(records_out(tap, stream) < expected[stream] for stream in CURSORS):
            for stream, api in APIS.items():
                turns += take_turn(tap, turnstiles[api], stream, expected[stream])
            assert turns < 1000, "the records stopped coming"
    finally:
        for turnstile in turnstiles.values():
            turnstile.open()
    run = tap.wait(timeout=WAIT_LIMIT)

    assert run.returncode == 0, run.stderr
    assert any("in parallel" in line for line in log_lines(run, "INFO"))
    for stream, key in IDS.items():
        ids = run.ids(stream, key)
        assert len(set(ids)) == expected[stream], stream
        assert len(ids) == len(set(ids)), f"{stream}: repeats"
    # The outputs really interleave (otherwise this test proves nothing about merging).
    assert stream_switches(run) > len(CURSORS)

    # Each stream's records in the order a run of that API alone writes them (one after the
    # other, as `parallel_apis: false` runs them).
    alone = run_tap({**config, "parallel_apis": False}, streams=CURSORS)
    for stream, key in IDS.items():
        assert run.ids(stream, key) == alone.ids(stream, key), stream

    # Every STATE holds, for every stream that wrote records before it, the cursor of one of
    # those records (a child's records may run ahead of its next STATE, never behind it), and
    # never goes back: the whole state (Singer STATE replaces it) is a resume point there.
    cursors: dict[str, list[str]] = {stream: [] for stream in CURSORS}
    reached = dict.fromkeys(CURSORS, -1)
    seen_schema: set[str] = set()
    states = 0
    for message in run.messages:
        if message["type"] == "SCHEMA":
            seen_schema.add(message["stream"])
        elif message["type"] == "RECORD":
            assert message["stream"] in seen_schema
            cursors[message["stream"]].append(message["record"][CURSORS[message["stream"]]])
        elif message["type"] == "STATE":
            states += 1
            for stream, bookmark in message["value"]["bookmarks"].items():
                value = bookmark.get("replication_key_value")
                assert value in cursors[stream], stream
                position = len(cursors[stream]) - 1 - cursors[stream][::-1].index(value)
                assert position >= reached[stream], stream
                reached[stream] = position
    assert states >= len(CURSORS)
    # The last STATE covers every record.
    final = run.final_state["bookmarks"]
    assert {s: final[s]["replication_key_value"] for s in CURSORS} == {
        s: values[-1] for s, values in cursors.items()}


def test_resuming_from_a_state_in_the_middle_loses_nothing(emulator, config):
    first = run_tap(config, streams=CURSORS)
    middle = len(first.messages) // 2
    cut = next(i for i in range(middle, len(first.messages))
               if first.messages[i]["type"] == "STATE")
    before = first.messages[:cut]

    resumed = run_tap(config, streams=CURSORS, state=first.messages[cut]["value"])

    assert resumed.returncode == 0, resumed.stderr
    for stream, key in IDS.items():
        loaded = {m["record"][key] for m in before
                  if m["type"] == "RECORD" and m["stream"] == stream}
        loaded |= set(resumed.ids(stream, key))
        assert len(loaded) == emulator.stream_counts()[stream], stream


def test_a_failing_api_does_not_stop_the_others(emulator, config):
    # discue never retries a refused key: its process fails at once.
    emulator.inject("discue", "status", status=401, times=100,
                    body={"title": "Unauthorized", "status": 401})

    run = run_tap(config, streams=CURSORS)

    assert run.returncode == 1
    assert not run.records("discue_events")
    expected = emulator.stream_counts()
    for stream in ("box_events", "alpaca_trade_events"):
        assert len(set(run.ids(stream, IDS[stream]))) == expected[stream], stream
        assert run.bookmark(stream)["replication_key_value"] == \
            run.records(stream)[-1][CURSORS[stream]]
    errors = log_lines(run, "ERROR")
    assert any("HTTP 401" in line and "check discue.api_key" in line for line in errors)
    assert any("discue.io: its process ended with status 1" in line for line in errors)
    assert "Traceback" not in run.stderr


def test_parallel_apis_off_runs_the_apis_one_after_the_other(emulator, config):
    run = run_tap({**config, "parallel_apis": False}, streams=CURSORS)

    assert run.returncode == 0, run.stderr
    assert not any("in parallel" in line for line in log_lines(run, "INFO"))
    assert stream_switches(run) == len(CURSORS) - 1


def records_out(tap: RunningTap, stream: str) -> int:
    """RECORD lines of `stream` the tap has written so far."""
    prefix = f'{{"type":"RECORD","stream":"{stream}"'
    return sum(1 for _, line in list(tap.lines) if line.startswith(prefix))


def take_turn(tap: RunningTap, turnstile: Turnstile, stream: str, expected: int) -> int:
    """Let `stream`'s API answer until more of its records reach the output; 1 if they did,
    0 if the stream was already complete."""
    before = records_out(tap, stream)
    while True:
        tap.wait_for(lambda: turnstile.waiting or records_out(tap, stream) > before
                     or records_out(tap, stream) == expected, timeout=WAIT_LIMIT)
        out = records_out(tap, stream)
        if out > before:
            return 1
        if out == expected:
            return 0
        # Its next request waits: the records of the last answer may still be in the
        # process's output buffer, or it wants the next page.
        turnstile.let_one_through()
        tap.wait_for(lambda: not turnstile.passes, timeout=WAIT_LIMIT)


def stream_switches(run) -> int:
    """How often consecutive RECORD lines belong to different streams."""
    order = [m["stream"] for m in run.messages if m["type"] == "RECORD"]
    return sum(1 for a, b in itertools.pairwise(order) if a != b)


def test_only_a_state_line_is_merged_never_a_record_quoting_one():
    merger = parallel.StateMerger({"bookmarks": {"discue_events": {"v": 1}}},
                                  {"box": {"box_events"}, "discue": {"discue_events"}})
    quoting = orjson.dumps({"type": "RECORD", "stream": "box_events",
                            "record": {"note": '{"type":"STATE","value":{}}'}}) + b"\n"
    state = b'{"type":"STATE","value":{"bookmarks":{"box_events":{"v":2},' \
            b'"discue_events":{"v":0}}}}\n'
    out = bytearray()

    assert parallel.write_lines(quoting + state + quoting, "box", merger, out)

    lines = out.splitlines()
    assert lines[0] == quoting.strip() and lines[2] == quoting.strip()
    # box's own bookmark from its STATE; discue's stays what discue's last STATE said.
    assert orjson.loads(lines[1])["value"]["bookmarks"] == {
        "box_events": {"v": 2}, "discue_events": {"v": 1}}
