"""The tap's per-record cost, with and without the UTC conversion of top-level date-times.

    python -m benchmarks.record_path                 # 200k Box-like records, 5 rounds
    python -m benchmarks.record_path --records 50000 --rounds 3

Times what the base runs once per record after the API module has parsed it: `post_process`
(in-run dedupe, `start_date` filter, date-times to UTC) then `_write_record_message` (key
check, stream maps, RECORD line into the writer's block, written to /dev/null), on the same
records, alternating rounds:

- **with**: the shipped path, Box's `created_at`/`recorded_at` rewritten to UTC (half the
  records stamped `-08:00`, half `Z`, as the emulator and Box itself send them);
- **without**: the same stream with an empty date-time field list (the path before the
  conversion existed);
- **conversion alone**: `UtcTimestamps.convert` on the records, nothing else.

Prints the median CPU ns/record of each (CPU time: steadier than wall time on a shared
machine). No network, no emulator: the record path only.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import statistics
import sys
import time

from tap_events.tap import TapEvents
from tap_events.timestamps import UtcTimestamps


def box_record(index: int) -> dict:
    """A Box user event shaped like the API's (and the emulator's): nested source, users."""
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=index)
    if index % 2:
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        stamp = (moment - datetime.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S-08:00")
    user = {"type": "user", "id": str(20443187000 + index % 6), "name": "Dana Ortiz",
            "login": f"user{index % 6}@example.com"}
    return {
        "type": "event", "event_id": f"{index:040x}", "event_type": "ITEM_UPLOAD",
        "created_at": stamp, "recorded_at": stamp, "session_id": f"s{index % 97}",
        "created_by": user,
        "source": {"type": "file", "id": str(1598821000000 + index), "name": f"f{index}.pdf",
                   "sequence_id": "0", "etag": "0", "sha1": "a" * 40, "size": 2048,
                   "created_at": stamp, "modified_at": stamp, "created_by": user,
                   "modified_by": user, "owned_by": user,
                   "parent": {"type": "folder", "id": "0", "name": "All Files"}},
        "additional_details": None, "stream_position": str(10**19 + index),
    }


def stream():
    config = {"box": {"api_url": "http://127.0.0.1:9", "access_token": "benchmark"}}
    tap = TapEvents(config=config, parse_env_config=False, validate_config=True)
    return tap.streams["box_events"]


def record_path(stream):
    """One record through the base's per-record steps."""
    def run(record: dict) -> None:
        row = stream.post_process(record, None)
        if row is not None:
            stream._write_record_message(row)
    return run


def time_rounds(run, records: list[dict], rounds: int, stream=None) -> list[float]:
    """CPU ns per record of `run(record)` over fresh copies of `records`, per round."""
    results = []
    for _ in range(rounds):
        if stream is not None:
            stream._seen_ids.clear()  # the same events again: not repeats within a run
        batch = copy.deepcopy(records)
        started = time.process_time_ns()
        for record in batch:
            run(record)
        results.append((time.process_time_ns() - started) / len(batch))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    records = [box_record(index) for index in range(args.records)]
    with_utc = stream()
    without = stream()
    without.timestamps = UtcTimestamps({}, without.name, without.logger)
    assert with_utc.timestamps.fields == ("created_at", "recorded_at")
    converter = UtcTimestamps(with_utc.schema, with_utc.name, logging.getLogger("benchmark"))
    # RECORD lines go to /dev/null; the results to the real stdout.
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    timings: dict[str, list[float]] = {"with": [], "without": [], "conversion_alone": []}
    try:
        for _ in range(args.rounds):  # alternating, so load on the machine hits all alike
            timings["with"] += time_rounds(record_path(with_utc), records, 1, with_utc)
            timings["without"] += time_rounds(record_path(without), records, 1, without)
            timings["conversion_alone"] += time_rounds(converter.convert, records, 1)
    finally:
        for each in (with_utc, without):
            each._tap.message_writer.flush()
        sys.stdout.close()
        sys.stdout = out
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{args.records} Box records (half -08:00, half Z), median of {args.rounds} rounds:")
    print(f"  record path without the conversion: {medians['without']:8.0f} ns/record")
    print(f"  record path with the conversion:    {medians['with']:8.0f} ns/record "
          f"(+{medians['with'] - medians['without']:.0f} ns, "
          f"{medians['with'] / medians['without'] - 1:+.1%})")
    print(f"  conversion alone (2 fields):        {medians['conversion_alone']:8.0f} ns/record")
    print(json.dumps({"records": args.records, "rounds": args.rounds, "ns_per_record": timings,
                      "median_ns_per_record": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
