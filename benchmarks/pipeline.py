"""Pipeline mode: `meltano run tap-events target-postgres` against the bare loop into the target.

For each API, with the emulator and an embedded PostgreSQL (`scripts/pipeline.py`), into a
fresh schema each time:

- **meltano**: `meltano --environment=demo run tap-events target-postgres --full-refresh` with
  the shipped meltano.yml, its extractor selected to the API's main stream (the one the bare
  loop reads); landed events/s = rows in PostgreSQL / wall time of the command. Run once per
  loader setting in `LOADER_SETTINGS` (INSERT and COPY), alternating, and after each run every
  stored date-time is compared with the instant the tap emitted (the server's default time
  zone is Asia/Kolkata): a setting that stores a wrong time is reported as incorrect;
- **tap alone**: `tap-events` with the same config and catalog to /dev/null; its wall time over
  the meltano run's is the share of the pipeline's time spent in the tap;
- **bare → target**: the stream's SCHEMA message, then `benchmarks/bare_loops.py` piped into the
  very target-postgres executable Meltano installed, with the config Meltano hands it
  (`meltano config --unsafe print target-postgres`); landed events/s likewise.

After the repetitions, one more `meltano run` from the saved state finds nothing new: its wall
time is Meltano's fixed cost (start-up, catalog discovery, both plugins starting).

The ratio meltano / bare → target is the issue's "the tap is never what the user waits on".
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

from benchmarks.bare_loops import LOOPS
from benchmarks.run import (
    PYTHON,
    ROOT,
    benchmark_config,
    catalog_for,
    emulator,
    measured,
    stream_counts,
)
from scripts.pipeline import (
    JOB,
    MELTANO,
    default_time_zone,
    drop_schema,
    ensure_meltano,
    meltano_env,
    postgres,
    row_counts,
    settings_env,
    step,
    wrong_times,
)

TARGET = ROOT / ".meltano" / "loaders" / "target-postgres" / "venv" / "bin" / "target-postgres"
SCHEMA = "tap_events_bench"
ENVIRONMENT = "demo"
#: target-postgres's `use_copy` under each name, set through Meltano's environment variable.
LOADER_SETTINGS = {"insert": "false", "copy": "true"}


def landed(url: str, stream: str, seconds: float, expected: int) -> dict[str, float]:
    rows = row_counts(url, SCHEMA, [stream])[stream]
    if rows != expected:
        raise SystemExit(f"{stream}: {rows} rows landed, the emulator holds {expected}")
    return {"rows": rows, "seconds": seconds, "events_per_second": rows / seconds}


def run_meltano(env: dict[str, str], url: str, stream: str, expected: int,
                full_refresh: bool = True) -> dict[str, float]:
    """A full run into a fresh schema, or (`full_refresh=False`) an incremental run from the
    state the last one saved, which finds nothing new: Meltano's fixed cost."""
    if full_refresh:
        drop_schema(url, SCHEMA)
    started = time.perf_counter()
    step([str(MELTANO), f"--environment={ENVIRONMENT}", "run",
          *(["--full-refresh"] if full_refresh else []), *JOB], "meltano run", env=env)
    return landed(url, stream, time.perf_counter() - started, expected)


def emitted_records(tap: list[str], stream: str) -> list[dict]:
    """The RECORDs of one run of the tap, to compare stored date-times with."""
    with tempfile.TemporaryFile() as out:
        subprocess.run(tap, stdout=out, stderr=subprocess.DEVNULL, check=True)
        out.seek(0)
        messages = (json.loads(line) for line in out if line.startswith(b"{"))
        return [m["record"] for m in messages
                if m.get("type") == "RECORD" and m["stream"] == stream]


def run_bare_into_target(api: str, config: Path, target_config: Path, schema_line: bytes,
                         url: str, stream: str, expected: int) -> dict[str, float]:
    drop_schema(url, SCHEMA)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        # PGTZ as meltano.yml gives the target (Meltano is not in this pipeline).
        target = subprocess.Popen([str(TARGET), "--config", str(target_config)],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                  env={**os.environ, "PGTZ": "UTC"})
        assert target.stdin is not None
        target.stdin.write(schema_line)
        target.stdin.flush()
        bare = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bare_loops.py"), api,
                               str(config)], stdout=target.stdin, check=True)
        target.stdin.close()
        if target.wait() != 0 or bare.returncode != 0:
            log.seek(0)
            raise SystemExit(f"bare loop into target-postgres failed:\n"
                             f"{log.read().decode(errors='replace')[-2000:]}")
    return landed(url, stream, time.perf_counter() - started, expected)


def bench_pipeline(apis: list[str], events: int, reps: int) -> list[dict[str, t.Any]]:
    ensure_meltano(lambda message: print(message, flush=True))
    rows = []
    with emulator(events, 0) as api_url, tempfile.TemporaryDirectory() as tmp, \
            postgres(None, ROOT / ".demo" / "bench-pgdata") as db_url:
        folder = Path(tmp)
        config = benchmark_config(api_url)
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(config))
        # Box on its developer token (which wins over the demo's client credentials) so
        # the emulator serves the same cached pages to the tap and to the bare loop.
        env = meltano_env({**settings_env(config),
                           "TARGET_POSTGRES_SQLALCHEMY_URL": db_url,
                           "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": SCHEMA})
        target_config = folder / "target.json"
        target_config.write_text(step(
            [str(MELTANO), f"--environment={ENVIRONMENT}", "config", "--unsafe", "print",
             JOB[1]], "meltano config print", env=env).stdout)
        target_use_copy = str(json.loads(target_config.read_text()).get("use_copy")).lower()
        for api in apis:
            stream = LOOPS[api].stream
            print(f"pipeline: {api} ({stream}) ...", flush=True)
            catalog = catalog_for(config_path, {stream}, folder)
            entry = next(s for s in json.loads(catalog.read_text())["streams"]
                         if s["tap_stream_id"] == stream)
            schema_line = json.dumps({"type": "SCHEMA", "stream": stream,
                                      "schema": entry["schema"],
                                      "key_properties": entry["key_properties"]}).encode()
            expected = stream_counts(api_url, api)[stream]
            run_env = {**env, "TAP_EVENTS__SELECT": json.dumps([f"{stream}.*"])}
            tap = [PYTHON, "-m", "tap_events", "--config", str(config_path),
                   "--catalog", str(catalog)]
            # Warm-up (the emulator now serves these pages from memory) and the records.
            emitted = {stream: emitted_records(tap, stream)}
            runs: dict[str, list[dict[str, float]]] = {
                **{f"meltano_{name}": [] for name in LOADER_SETTINGS},
                "tap_alone": [], "bare_into_target": []}
            wrong: dict[str, list[str]] = {name: [] for name in LOADER_SETTINGS}
            for rep in range(reps):
                # Each setting goes first in every other repetition: the machine's load drifts.
                settings = list(LOADER_SETTINGS.items())
                for name, use_copy in settings[::-1] if rep % 2 else settings:
                    runs[f"meltano_{name}"].append(run_meltano(
                        {**run_env, "TARGET_POSTGRES_USE_COPY": use_copy}, db_url, stream,
                        expected))
                    checked, differ = wrong_times(db_url, SCHEMA, {stream: entry}, emitted)
                    runs[f"meltano_{name}"][-1]["times_checked"] = checked.get(stream, 0)
                    wrong[name] += differ
                seconds, cpu, rss = measured(tap)
                runs["tap_alone"].append({"seconds": seconds, "cpu_seconds": cpu,
                                          "peak_rss_mb": rss})
                runs["bare_into_target"].append(run_bare_into_target(
                    api, config_path, target_config, schema_line + b"\n", db_url, stream,
                    expected))
            idle = run_meltano(run_env, db_url, stream, expected, full_refresh=False)
            eps = {name: statistics.median(r["events_per_second"]
                                           for r in runs[f"meltano_{name}"])
                   for name in LOADER_SETTINGS}
            bare_eps = statistics.median(r["events_per_second"]
                                         for r in runs["bare_into_target"])
            shipped = next(name for name, value in LOADER_SETTINGS.items()
                           if value == target_use_copy)
            meltano_s = statistics.median(r["seconds"] for r in runs[f"meltano_{shipped}"])
            tap_s = statistics.median(r["seconds"] for r in runs["tap_alone"])
            row = {"api": api, "stream": stream, "events": expected, "runs": runs,
                   "server_time_zone": default_time_zone(db_url), "shipped": shipped,
                   **{f"meltano_{name}_events_per_second": eps[name] for name in eps},
                   **{f"meltano_{name}_times_wrong": len(wrong[name]) for name in wrong},
                   "times_wrong_examples": {name: w[:3] for name, w in wrong.items()},
                   "meltano_events_per_second": eps[shipped],
                   "bare_into_target_events_per_second": bare_eps,
                   "ratio": eps[shipped] / bare_eps, "tap_share": tap_s / meltano_s,
                   "meltano_seconds": meltano_s, "tap_alone_seconds": tap_s,
                   "meltano_nothing_new_seconds": idle["seconds"]}
            rows.append(row)
    print(f"\n{'API':<8} {'events':>8} {'INSERT ev/s':>11} {'COPY ev/s':>10} "
          f"{'COPY/INSERT':>11} {'wrong times I/C':>15} {'bare→target ev/s':>16} "
          f"{'ratio':>6} {'tap share':>9} {'nothing-new run':>15}")
    for row in rows:
        insert, copy = row["meltano_insert_events_per_second"], row[
            "meltano_copy_events_per_second"]
        print(f"{row['api']:<8} {row['events']:>8} {insert:>11,.0f} {copy:>10,.0f} "
              f"{copy / insert:>11.2f} "
              f"{row['meltano_insert_times_wrong']:>7}/{row['meltano_copy_times_wrong']:<7} "
              f"{row['bare_into_target_events_per_second']:>16,.0f} {row['ratio']:>6.2f} "
              f"{row['tap_share']:>9.0%} {row['meltano_nothing_new_seconds']:>14.1f}s")
    print(f"(server time zone {rows[0]['server_time_zone'] if rows else '?'}; ratio and tap "
          f"share for the shipped setting, {rows[0]['shipped'] if rows else '?'})")
    return rows
