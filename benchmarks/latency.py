"""Tail-mode latency: from an event appearing in the emulator to its RECORD line on stdout.

    python -m benchmarks.latency                      # 200 events each, Box and Alpaca
    python -m benchmarks.latency --events 500 --interval 0.05 --latency-ms 20

For each API it starts the emulator in this process, runs `tap-events` in tail mode on that
API's push streams (Box `box_events` by long polling, the five Alpaca SSE streams), waits
until the tap listens, then adds events one step at a time and stamps each with the time it
was added; a reader thread stamps each RECORD line when it arrives on the tap's stdout. Both
stamps come from this process's monotonic clock. Alpaca steps add two events to each of the
five streams (the emulator delivers some pairs of a stream swapped, as Alpaca may, and holds
back the first of such a pair until its partner exists: whole pairs keep that wait out of
the figures). Reports median, p99 and max per API, and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

from benchmarks.run import catalog_for
from tap_events_emulator import alpaca as emulated_alpaca
from tap_events_emulator import start_emulator, tap_config

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKLOG = 300  # events already in the emulator, read while catching up


class Scenario(t.NamedTuple):
    api: str
    streams: list[str]
    #: Events added per step, and the ids they get (from the emulator's own generator).
    per_step: int
    ids: t.Callable[[EmulatorServer, int, int], list[str]]
    #: True once the tap listens (seen from the emulator's request log).
    listening: t.Callable[[EmulatorServer], bool]


def box_ids(server: EmulatorServer, start: int, stop: int) -> list[str]:
    api = server.app.apis["box"]
    return [api.user_event(index)["event_id"] for index in range(start, stop)]


def alpaca_ids(server: EmulatorServer, start: int, stop: int) -> list[str]:
    api = server.app.apis["alpaca"]
    feeds = emulated_alpaca.FEEDS
    return [api.event(feeds[i % len(feeds)], i // len(feeds))[feeds[i % len(feeds)].key]
            for i in range(start, stop)]


def box_listening(server: EmulatorServer) -> bool:
    return any(r["path"] == "/realtime/subscribe" for r in server.requests("box"))


def alpaca_listening(server: EmulatorServer) -> bool:
    open_streams = {r["path"] for r in server.requests("alpaca")
                    if not {"until", "until_id", "until_ulid"} & r["query"].keys()}
    return len(open_streams) == len(emulated_alpaca.FEEDS)


SCENARIOS = {
    "box": Scenario("box", ["box_events"], 1, box_ids, box_listening),
    "alpaca": Scenario("alpaca", [feed.stream for feed in emulated_alpaca.FEEDS],
                       2 * len(emulated_alpaca.FEEDS), alpaca_ids, alpaca_listening),
}


def record_id(line: str) -> str | None:
    if not line.startswith('{"type":"RECORD"'):
        return None
    record = json.loads(line)["record"]
    # The key each scenario lists: an activity's `ref_id`, else the event's ULID.
    return record.get("ref_id") or record.get("event_ulid") or record["event_id"]


def measure(scenario: Scenario, events: int, interval: float, latency_ms: float
            ) -> list[float]:
    """Seconds from each added event to its RECORD line."""
    server = start_emulator(events={scenario.api: BACKLOG}, seed=5, latency_ms=latency_ms)
    arrived: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = {scenario.api: tap_config(server.url)[scenario.api],
                      "tail_seconds": 3600}
            (folder / "config.json").write_text(json.dumps(config))
            catalog = catalog_for(folder / "config.json", set(scenario.streams), folder)
            with (folder / "stderr.log").open("w") as log:
                tap = subprocess.Popen(
                    [sys.executable, "-m", "tap_events", "--config",
                     str(folder / "config.json"), "--catalog", str(catalog)],
                    stdout=subprocess.PIPE, stderr=log, text=True)

                def read() -> None:
                    assert tap.stdout is not None
                    for line in tap.stdout:
                        event_id = record_id(line)
                        if event_id:
                            arrived[event_id] = time.monotonic()

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                try:
                    added = run_steps(server, scenario, events, interval, tap, arrived)
                finally:
                    tap.send_signal(signal.SIGTERM)
                    tap.wait(timeout=30)
                    reader.join(timeout=10)
    finally:
        server.stop()
    missing = [event_id for event_id in added if event_id not in arrived]
    if missing:
        raise SystemExit(f"{scenario.api}: {len(missing)} event(s) never arrived")
    return [arrived[event_id] - stamp for event_id, stamp in added.items()]


def run_steps(server: EmulatorServer, scenario: Scenario, events: int, interval: float,
              tap: subprocess.Popen, arrived: dict[str, float]) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while not scenario.listening(server):
        if tap.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{scenario.api}: the tap never started listening")
        time.sleep(0.05)
    added: dict[str, float] = {}
    count = BACKLOG
    while len(added) < events:
        ids = scenario.ids(server, count, count + scenario.per_step)
        stamp = time.monotonic()
        server.add_events(scenario.api, scenario.per_step)
        added.update(dict.fromkeys(ids, stamp))
        count += scenario.per_step
        time.sleep(interval)
    deadline = time.monotonic() + 30
    while any(event_id not in arrived for event_id in added) and time.monotonic() < deadline:
        time.sleep(0.05)
    return added


def summary(delays: list[float]) -> dict[str, float]:
    return {"events": len(delays), "median_ms": statistics.median(delays) * 1000,
            "p99_ms": statistics.quantiles(delays, n=100)[98] * 1000,
            "max_ms": max(delays) * 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200, help="events measured per API")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between steps")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added to every emulator response, to model a remote server")
    parser.add_argument("--apis", default=",".join(SCENARIOS), help="APIs to measure")
    args = parser.parse_args(argv)
    rows = {}
    print(f"{'API':<8} {'events':>7} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for api in (a for a in args.apis.split(",") if a):
        rows[api] = summary(measure(SCENARIOS[api], args.events, args.interval,
                                    args.latency_ms))
        row = rows[api]
        print(f"{api:<8} {row['events']:>7} {row['median_ms']:>10.1f} {row['p99_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"latency-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
