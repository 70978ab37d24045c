"""The demo: `meltano run tap-events target-postgres` twice, on emulated APIs, into PostgreSQL.

`make demo` runs this. It installs Meltano and the plugins, starts the API emulator and an
embedded PostgreSQL (or uses `TARGET_POSTGRES_SQLALCHEMY_URL` when set), runs the job, adds
events, runs it again from the saved state, prints rows per table, and stops what it started.
It exits 1 when a table does not hold exactly the emulator's events, or when a stored
date-time is not the instant the tap emitted, in UTC (the embedded server's default time zone
is Asia/Kolkata, so a loader session not pinned to UTC would show).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from scripts.pipeline import (
    JOB,
    MELTANO,
    ROOT,
    PipelineError,
    catalog,
    default_time_zone,
    drop_schema,
    duplicate_keys,
    ensure_meltano,
    job_env,
    meltano_run,
    postgres,
    row_counts,
    step,
    tap_records,
    wrong_times,
)
from tap_events_emulator import start_emulator, tap_config

ENVIRONMENT = "demo"
#: The demo environment's schema in meltano.yml.
SCHEMA = "tap_events_demo"
STATE_ID = f"{ENVIRONMENT}:{JOB[0]}-to-{JOB[1]}"
#: The one variable that points the demo at your own PostgreSQL.
PG_URL_VARIABLE = "TARGET_POSTGRES_SQLALCHEMY_URL"


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per API at first")
    parser.add_argument("--new-events", type=int, default=500,
                        help="events per API added before the second run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        install_seconds = ensure_meltano(say)
        return demo(args.events, args.new_events, install_seconds, started)
    except PipelineError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


def demo(events: int, new_events: int, install_seconds: float, started: float) -> int:
    entries = catalog()
    streams = {name: entry.get("key_properties") or [] for name, entry in entries.items()}
    emulator = start_emulator(events=events)
    external = os.environ.get(PG_URL_VARIABLE)
    try:
        with postgres(external, ROOT / ".demo" / "pgdata") as url:
            say(f"emulator: {', '.join(emulator.app.apis)} on {emulator.url}, "
                f"{events} events per API")
            say(f"PostgreSQL: {'from ' + PG_URL_VARIABLE if external else 'embedded, .demo/pgdata'}"
                f", schema {SCHEMA} (dropped first), server time zone {default_time_zone(url)}")
            env = job_env(emulator.url, url)
            drop_schema(url, SCHEMA)
            step([str(MELTANO), f"--environment={ENVIRONMENT}", "state", "clear", "--force",
                  STATE_ID], "meltano state clear", env=env)

            say(f"run 1: meltano --environment={ENVIRONMENT} run {' '.join(JOB)} ...")
            first = meltano_run(env, environment=ENVIRONMENT)
            expected_first = emulator.stream_counts()
            after_first = row_counts(url, SCHEMA, streams)

            for api in emulator.app.apis:
                emulator.add_events(api, new_events)
            say(f"added {new_events} events per API; run 2 (continues from the saved state) ...")
            second = meltano_run(env, environment=ENVIRONMENT)
            expected = emulator.stream_counts()
            after_second = row_counts(url, SCHEMA, streams)
            duplicates = {name: duplicate_keys(url, SCHEMA, name, keys) if after_second[name]
                          else 0 for name, keys in streams.items()}
            say("reading every event once more with the tap alone, to compare stored times ...")
            times_checked, times_wrong = wrong_times(url, SCHEMA, entries,
                                                     tap_records(tap_config(emulator.url)))
    finally:
        emulator.stop()

    rows = [(name, after_first[name], after_second[name],
             after_second[name] - after_first[name], expected.get(name, 0),
             second.records_loaded().get(name, 0), duplicates[name]) for name in streams]
    print_table(rows)
    total_first = sum(after_first.values())
    say(f"\nrun 1: {total_first} rows in {first.seconds:.1f} s "
        f"({total_first / first.seconds:,.0f} rows/s, Meltano start-up included)")
    say(f"run 2: {sum(r[3] for r in rows)} rows added for {new_events} new events per API, "
        f"{sum(r[5] for r in rows)} records loaded, in {second.seconds:.1f} s")
    say(f"the tap's own summary: run 1: {first.tap_summary()}; run 2: {second.tap_summary()}")
    say(f"meltano install: {install_seconds:.1f} s; whole demo: "
        f"{time.monotonic() - started:.1f} s")

    say(f"date-times compared with the instant the tap emitted, in UTC: "
        f"{sum(times_checked.values())} in {len(times_checked)} tables, "
        f"{len(times_wrong)} differ")

    wrong = [name for name, first_rows, *_ in rows
             if first_rows != expected_first.get(name)
             or after_second[name] != expected.get(name) or duplicates[name]]
    if wrong:
        say(f"\nFAILED: {', '.join(wrong)} do not hold exactly the emulator's events")
        return 1
    if times_wrong:
        say(f"\nFAILED: stored date-times differ from the emitted ones, e.g. {times_wrong[:3]}")
        return 1
    say("\nOK: every event is in PostgreSQL exactly once; run 2 added only the new events;\n"
        "every stored date-time is the instant the tap emitted, in UTC.")
    return 0


def print_table(rows: list[tuple]) -> None:
    header = ("table", "run 1", "run 2", "added", "emulator", "loaded 2", "dup keys")
    width = max(len(header[0]), *(len(f"{SCHEMA}.{row[0]}") for row in rows))
    say("")
    say(f"{header[0]:<{width}}" + "".join(f"{h:>10}" for h in header[1:]))
    for name, *numbers in rows:
        say(f"{SCHEMA + '.' + name:<{width}}" + "".join(f"{n:>10}" for n in numbers))


if __name__ == "__main__":
    sys.exit(main())
