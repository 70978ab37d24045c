"""What an operator scheduling the tap relies on: a run that cannot do its job says why in one
line and exits non-zero; config comes from files or the environment; bad files are named."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tap_events import config as settings
from tap_events import parallel
from tap_events.http import DEFAULT_MAX_TRIES
from tap_events.sources import SOURCES
from tap_events.summary import RunSummary, StreamReport
from tap_events.tap import ENV_PREFIX, TapEvents
from tests.support import (
    TAP,
    RunningTap,
    TapRun,
    clean_env,
    log_lines,
    parse_messages,
    retry_waits,
    run_tap,
    summary_of,
)


def last_error(run: TapRun) -> str:
    errors = log_lines(run, "ERROR")
    assert errors, run.stderr
    return errors[-1]


def assert_refused(run: TapRun, *named: str) -> None:
    """Exit 1, no records, no traceback, and the last error line names each of `named`."""
    assert run.returncode == 1, run.stderr
    assert run.records() == []
    assert "Traceback" not in run.stderr
    line = last_error(run)
    for text in named:
        assert text in line, line


# ----------------------------------------------------------------- config complete or refused


@pytest.mark.parametrize(
    ("api_settings", "missing", "given"),
    [
        ({"box": {"client_id": "x"}}, "box.client_secret", "box.client_id"),
        ({"box": {"client_secret": "x"}}, "box.client_id", "box.client_secret"),
        ({"alpaca": {"api_key": "x"}}, "alpaca.api_secret", "alpaca.api_key"),
        ({"alpaca": {"api_secret": "x"}}, "alpaca.api_key", "alpaca.api_secret"),
    ],
)
def test_half_a_credential_set_is_refused_before_any_request(emulator, config, api_settings,
                                                             missing, given):
    api = next(iter(api_settings))
    urls = {key: value for key, value in config[api].items() if key.endswith("_url")}
    run = run_tap({"discue": config["discue"], api: {**urls, **api_settings[api]}})
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert any(missing in line and given in line for line in log_lines(run, "ERROR")), \
        run.stderr
    assert emulator.requests(api) == []
    assert emulator.requests("discue") == []
    assert run.records() == []


def test_no_config_at_all_is_a_sync_with_nothing_to_do():
    run = run_tap({})
    assert_refused(run, "Nothing to sync", "configured APIs: none", "selected streams: all")


def test_a_catalog_selecting_nothing_names_the_configured_apis(emulator, config):
    run = run_tap({"discue": config["discue"]}, streams=[])
    assert_refused(run, "Nothing to sync", "configured APIs: discue", "selected streams: none")
    assert emulator.requests("discue") == []


def test_selected_streams_of_unconfigured_apis_only_is_refused(emulator, config):
    run = run_tap({"discue": config["discue"]}, streams=["box_events"])
    assert_refused(run, "configured APIs: discue", "selected streams: box_events")


def test_unconfigured_api_is_skipped_in_one_line_and_the_run_succeeds(emulator, config):
    run = run_tap({"discue": config["discue"]},
                  streams=["discue_events", "box_events", "box_enterprise_events"])
    assert run.returncode == 0, run.stderr
    assert len(run.records("discue_events")) == emulator.stream_counts()["discue_events"]
    skipped = [line for line in log_lines(run, "INFO") if "not configured" in line]
    assert len(skipped) == 1, skipped
    assert "Box (box_events, box_enterprise_events): not configured" in skipped[0]
    assert "box.access_token, or box.client_id + box.client_secret" in skipped[0]


@pytest.mark.parametrize("args", [["--discover"], ["--about"], ["--about", "--format", "json"]])
def test_discover_and_about_work_without_any_setting(args):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "config.json")
        path.write_text("{}")
        run = run_tap_on(path, *args)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    if args == ["--discover"]:
        catalog = json.loads(run.stdout)
        assert {entry["tap_stream_id"] for entry in catalog["streams"]} == {
            stream.name for source in SOURCES for stream in source.streams}


# ----------------------------------------------------------------- --config ENV


def run_with_env(env: dict[str, str], *args: str) -> TapRun:
    process = subprocess.run([*TAP, "--config", "ENV", *args], capture_output=True, text=True,
                             timeout=120, env={**clean_env(), **env})
    return TapRun(process.returncode, process.stdout, process.stderr,
                  parse_messages(process.stdout.splitlines()))


def test_nested_settings_come_from_the_environment_without_meltano(emulator, config):
    env = {settings.env_var_name(ENV_PREFIX, "discue", key): str(value)
           for key, value in config["discue"].items()}
    assert "TAP_EVENTS_DISCUE_API_KEY" in env
    env["TAP_EVENTS_DISCUE_PAGE_SIZE"] = "7"
    run = run_with_env(env)
    assert run.returncode == 0, run.stderr
    assert len(run.records("discue_events")) == emulator.stream_counts()["discue_events"]
    limits = {request["query"]["limit"][0] for request in emulator.requests("discue")
              if "limit" in request["query"]}
    assert limits == {"7"}


def test_environment_values_are_typed_as_the_schema_says():
    environ = {
        "TAP_EVENTS_MAX_RETRIES": "3",
        "TAP_EVENTS_REQUEST_TIMEOUT_SECONDS": "2.5",
        "TAP_EVENTS_PARALLEL_APIS": "false",
        "TAP_EVENTS_BOX_EVENT_TYPES": '["ITEM_CREATE", "ITEM_UPLOAD"]',
        "TAP_EVENTS_BOX_PAGE_SIZE": "20",
        "TAP_EVENTS_BOX_ALLOW_GAP": "true",
        "TAP_EVENTS_SOCOTRA_TENANT_LOCATORS": "a, b",
        "TAP_EVENTS_ALPACA_API_KEY": "k",
    }
    config = settings.settings_from_env(TapEvents.config_jsonschema, environ, ENV_PREFIX)
    assert config == {
        "max_retries": 3,
        "request_timeout_seconds": 2.5,
        "parallel_apis": False,
        "box": {"event_types": ["ITEM_CREATE", "ITEM_UPLOAD"], "page_size": 20,
                "allow_gap": True},
        "socotra": {"tenant_locators": ["a", "b"]},
        "alpaca": {"api_key": "k"},
    }


def test_every_setting_has_meltanos_environment_variable_name():
    """Meltano names a setting's variable `<PLUGIN>_<SETTING>`, uppercase, each character
    that is not a letter or digit (the `.` of a nested setting included) made `_`."""
    names = {settings.env_var_name(ENV_PREFIX, source.name, prop.name)
             for source in SOURCES for prop in source.properties}
    assert {"TAP_EVENTS_BOX_CLIENT_ID", "TAP_EVENTS_DISCUE_API_KEY",
            "TAP_EVENTS_SOCOTRA_TENANT_LOCATORS", "TAP_EVENTS_ALPACA_API_SECRET"} <= names
    for name in names:
        assert name == name.upper() and name.replace("_", "").isalnum()


@pytest.mark.parametrize(("variable", "value"), [("TAP_EVENTS_BOX_PAGE_SIZE", "lots"),
                                                 ("TAP_EVENTS_BOX_ALLOW_GAP", "maybe")])
def test_an_environment_value_of_the_wrong_type_is_one_line(variable, value):
    run = run_with_env({variable: value, "TAP_EVENTS_BOX_ACCESS_TOKEN": "t"})
    assert_refused(run, variable, repr(value))
    assert len(log_lines(run, "ERROR")) == 1


# ----------------------------------------------------------------- files


BAD_FILES = {
    "missing": (None, "no such file"),
    "not JSON": ("{'box': ", "not valid JSON"),
    "empty": ("", "not valid JSON"),
    "a JSON array": ("[1, 2]", "holds a JSON array, not an object"),
    "a directory": (..., "is a directory"),
}


@pytest.mark.parametrize("what", ["config", "state", "catalog"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line_naming_it(what, case):
    content, problem = BAD_FILES[case]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"my-{what}.json")
        if content is ...:
            path.mkdir()
        elif content is not None:
            path.write_text(content)
        files = {"config": Path(folder, "config.json"), what: path}
        if what != "config":
            files["config"].write_text(json.dumps({"discue": {"api_key": "k"}}))
        command = [*TAP]
        for option, file in files.items():
            command += [f"--{option}", str(file)]
        process = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                 env=clean_env())
    run = TapRun(process.returncode, process.stdout, process.stderr, [])
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert f"{what} file '{path}': {problem}" in last_error(run)
    assert len(log_lines(run, "ERROR")) == 1, run.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_file_is_one_line_naming_it():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "config.json")
        path.write_text("{}")
        path.chmod(0)
        run = run_tap_on(path)
    assert_refused(run, f"config file '{path}': not readable")


def run_tap_on(config_path: Path, *args: str) -> TapRun:
    process = subprocess.run([*TAP, "--config", str(config_path), *args], capture_output=True,
                             text=True, timeout=60, env=clean_env())
    return TapRun(process.returncode, process.stdout, process.stderr, [])


def test_a_good_state_file_is_still_read(emulator, config):
    """The files are read by the tap now, not by the SDK's CLI: a real state still resumes."""
    first = run_tap({"discue": config["discue"]}, streams=["discue_events"])
    assert first.returncode == 0, first.stderr
    again = run_tap({"discue": config["discue"]}, streams=["discue_events"],
                    state=first.final_state)
    assert again.returncode == 0, again.stderr
    assert again.records("discue_events") == []
    assert again.bookmark("discue_events") == first.bookmark("discue_events")



# ----------------------------------------------------------------- sample_config.json

SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "sample_config.json"


def test_sample_config_as_shipped_discovers_and_fails_a_sync_only_for_want_of_credentials():
    discovered = run_tap_on(SAMPLE_CONFIG, "--discover")
    assert discovered.returncode == 0, discovered.stderr
    assert json.loads(discovered.stdout)["streams"]
    run = run_tap_on(SAMPLE_CONFIG)
    assert_refused(run, "Nothing to sync", "configured APIs: none")
    assert len(log_lines(run, "ERROR")) == 1, run.stderr


def test_sample_config_with_one_api_filled_in_runs_that_api(emulator, config):
    sample = json.loads(SAMPLE_CONFIG.read_text())
    sample["discue"].update(config["discue"])
    run = run_tap(sample)
    assert run.returncode == 0, run.stderr
    assert len(run.records("discue_events")) == emulator.stream_counts()["discue_events"]


# ----------------------------------------------------------------- faults that cannot heal


class NotTLS:
    """A local server that answers every connection in plain HTTP, whatever it is sent: a TLS
    client meets a protocol error on its first bytes. Counts the connections."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def not_tls():
    server = NotTLS()
    yield server
    server.close()


@pytest.mark.parametrize("setting", ["token_url", "api_url"])
def test_a_tls_error_fails_at_once_naming_the_url_setting_used(emulator, config, not_tls,
                                                                setting):
    box = {**config["box"], setting: f"https://127.0.0.1:{not_tls.port}/box/x"}
    if setting == "api_url":
        box = {"api_url": box["api_url"], "access_token": "a-token"}
    run = run_tap({"box": box}, streams=["box_events"])
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    line = next(line for line in log_lines(run, "ERROR") if "'box_events'" in line)
    assert "TLS handshake failed" in line
    assert f"check box.{setting})" in line
    assert f"https://127.0.0.1:{not_tls.port}/box/x" in line
    assert retry_waits(run) == []
    assert not_tls.connections == 1


def test_an_unknown_host_fails_at_once_naming_the_token_url(config):
    box = {**config["box"], "token_url": "https://tap-events-test.invalid/oauth2/token"}
    run = run_tap({"box": box}, streams=["box_events"])
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    line = next(line for line in log_lines(run, "ERROR") if "'box_events'" in line)
    assert "unknown host for https://tap-events-test.invalid/oauth2/token" in line
    assert "check box.token_url)" in line
    assert retry_waits(run) == []


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def test_a_refused_token_request_keeps_the_retry_budget_and_a_dead_api_is_tried_once(config):
    """Refused connections may heal (the API restarts): retried within max_retries, token
    requests too. The API's next stream does not spend another budget on it, so with the
    default budget (about 31 s of waits) a dead API fails the run within ~35 s."""
    box = {**config["box"], "token_url": f"http://127.0.0.1:{closed_port()}/oauth2/token"}
    run = run_tap({"box": box, "parallel_apis": False},
                  streams=["box_events", "box_enterprise_events"])
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert len(retry_waits(run)) == DEFAULT_MAX_TRIES - 1, run.stderr
    failed = [line for line in log_lines(run, "ERROR") if "failed after retries" in line
              and "(check box.token_url and the network)" in line]
    assert {stream for stream in ("'box_events'", "'box_enterprise_events'")
            if any(stream in line for line in failed)} == {"'box_events'",
                                                           "'box_enterprise_events'"}
    # From the first token request to the last stream's failure, by the log's own clock (a
    # loaded machine's start-up is not counted): one budget of waits, 1+2+4+8+16 s plus
    # jitter, so ~35 s. The bound, 3x that, catches a second budget (or urllib3's retries).
    first = next(line for line in log_lines(run, "INFO") if "Requesting new access token" in line)
    elapsed = (logged_at(failed[-1]) - logged_at(first)).total_seconds()
    assert elapsed < 105, elapsed


def logged_at(line: str) -> datetime.datetime:
    """When the tap logged `line` (its `2026-12-03 15:34:05,923 | ...` timestamp)."""
    return datetime.datetime.strptime(line.split(" | ", 1)[0], "%Y-%m-%d %H:%M:%S,%f")


# ----------------------------------------------------------------- logs a person reads


@pytest.mark.parametrize("parallel_apis", [True, False])
def test_the_run_ends_with_a_summary_per_stream_and_in_total(emulator, config, parallel_apis):
    state = {"bookmarks": {"box_events": {"replication_key": "stream_position",
                                          "replication_key_value": "10000000000000000100"}}}
    secret = config["discue"]["api_key"]
    run = run_tap({"box": config["box"], "discue": config["discue"],
                   "parallel_apis": parallel_apis},
                  streams=["box_events", "discue_events"], state=state)
    assert run.returncode == 0, run.stderr
    summary = summary_of(run.stderr)
    streams = {entry["stream"]: entry for entry in summary["streams"]}
    assert set(streams) == {"box_events", "discue_events"}
    for name in streams:
        assert streams[name]["records"] == len(run.records(name))
        assert streams[name]["status"] == "ok"
        assert streams[name]["bookmark_after"] == str(
            run.bookmark(name)["replication_key_value"])
    assert streams["box_events"]["bookmark_before"] == "10000000000000000100"
    assert streams["discue_events"]["bookmark_before"] is None
    assert summary["records"] == len(run.records()) > 0
    assert summary["apis"] == ["box", "discue"]
    assert summary["failed_streams"] == []
    assert summary["exit_code"] == 0
    lines = [line for line in log_lines(run, "INFO") if "Run summary:" in line]
    box_line = next(line for line in lines if "box_events:" in line)
    assert (f"box_events: {len(run.records('box_events'))} records, bookmark "
            f"10000000000000000100 → {streams['box_events']['bookmark_after']}, ") in box_line
    assert box_line.endswith(", ok")
    assert lines[-1].endswith(f"Run summary: {len(run.records())} records from 2 API(s) "
                              "(box, discue), 0 failed stream(s), exit code 0")
    assert secret not in run.stderr


@pytest.mark.parametrize("parallel_apis", [True, False])
def test_the_summary_of_a_failed_run_names_the_failed_streams(emulator, config, parallel_apis):
    box = {**config["box"], "client_secret": "wrong"}
    run = run_tap({"box": box, "discue": config["discue"], "parallel_apis": parallel_apis},
                  streams=["box_events", "discue_events"])
    assert run.returncode == 1, run.stderr
    summary = summary_of(run.stderr)
    assert summary["exit_code"] == 1
    assert summary["failed_streams"] == ["box_events"]
    statuses = {entry["stream"]: entry["status"] for entry in summary["streams"]}
    assert statuses == {"box_events": "failed", "discue_events": "ok"}
    total = [line for line in log_lines(run, "INFO") if "Run summary:" in line][-1]
    assert "1 failed stream(s) (box_events), exit code 1" in total
    assert "wrong" not in json.dumps(summary)


def test_parallel_logs_one_banner_tag_each_api_and_skip_no_stream_that_runs(emulator, config):
    run = run_tap({"box": config["box"], "discue": config["discue"]})
    assert run.returncode == 0, run.stderr
    assert sum("tap-events v" in line for line in run.stderr.splitlines()) == 1
    assert "Skipping deselected stream" not in run.stderr
    starts = [line for line in log_lines(run, "INFO") if "Beginning sync of" in line]
    assert {line.split("| ")[-1].split(" ")[0] for line in starts} == {"[box]", "[discue]"}
    for line in starts:
        api = line.split("| ")[-1].split(" ")[0].strip("[]")
        assert f"'{api}_" in line


def children_of(pid: int) -> dict[str, int]:
    """The parallel child processes of the tap `pid`, by API."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid != pid:
            continue
        for variable in environ:
            if variable.startswith(f"{parallel.API_ENV}=".encode()):
                children[variable.split(b"=", 1)[1].decode()] = int(entry.name)
    return children


def test_the_summary_names_the_streams_of_an_api_whose_process_died(emulator, config):
    # Box's answers wait at a turnstile: its process is mid-request, surely running, when
    # it is killed; Discue runs to the end meanwhile.
    turnstile = emulator.turnstile("box")
    tap = RunningTap({"box": config["box"], "discue": config["discue"]},
                     streams=["box_events", "discue_events"])
    try:
        tap.wait_for(lambda: turnstile.waiting > 0 and "box" in children_of(tap.process.pid))
        os.kill(children_of(tap.process.pid)["box"], signal.SIGKILL)
    finally:
        turnstile.open()
    run = tap.wait(timeout=240)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    summary = summary_of(run.stderr)
    assert summary["exit_code"] == 1
    assert summary["failed_streams"] == ["box_events"]
    streams = {entry["stream"]: entry for entry in summary["streams"]}
    assert streams["box_events"]["status"] == "failed"
    assert streams["box_events"]["records"] is None
    assert streams["discue_events"]["status"] == "ok"
    assert streams["discue_events"]["records"] == len(run.records("discue_events")) > 0
    lines = [line for line in log_lines(run, "INFO") if "Run summary:" in line]
    assert any("box_events: unknown records, bookmark none → none" in line
               and line.endswith(", failed") for line in lines), lines


def test_a_state_of_another_tap_is_one_warning_naming_its_streams(emulator, config):
    state = {"bookmarks": {"orders": {"replication_key_value": "2026-01-01"},
                           "customers": {"replication_key_value": 7}}}
    run = run_tap({"discue": config["discue"]}, streams=["discue_events"], state=state)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in log_lines(run, "WARNING") if "does not have" in line]
    assert len(warnings) == 1, run.stderr
    assert "2 stream(s) this tap does not have: customers, orders" in warnings[0]
    assert len(run.records("discue_events")) == emulator.stream_counts()["discue_events"]


def test_the_readme_shows_the_summary_lines_as_the_tap_writes_them():
    """The README's example is what `RunSummary` writes for the same numbers, so the two
    cannot drift apart."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = [line for line in readme.splitlines() if line.startswith("Run summary: ")]
    assert len(shown) == 2, shown
    stream_line, total_line = shown
    match = re.fullmatch(r"Run summary: (\w+): (\d+) records, bookmark (\S+) → (\S+), "
                         r"([\d.]+) s, ok", stream_line)
    assert match, stream_line
    stream, records, before, after, seconds = match.groups()
    total = re.fullmatch(r"Run summary: (\d+) records from 4 API\(s\) \(([a-z, ]+)\), "
                         r"0 failed stream\(s\), exit code 0", total_line)
    assert total, total_line
    apis = total[2].split(", ")
    reports = [StreamReport(stream=stream, api=stream.split("_")[0], records=int(records),
                            seconds=float(seconds))]
    reports += [StreamReport(stream=f"{api}_x", api=api, records=0) for api in apis]
    reports[-1].records = int(total[1]) - int(records)
    summary = RunSummary(
        reports, before={"bookmarks": {stream: {"replication_key_value": before}}},
        after={"bookmarks": {stream: {"replication_key_value": after}}}, exit_code=0,
        secrets=[])
    assert stream_line in summary.lines()
    assert summary.lines()[-1] == total_line
    # The JSON line, up to its per-stream list (elided in the README).
    assert summary.json_line().split(', "streams": ')[0] + ', "streams": [...]}' in readme
