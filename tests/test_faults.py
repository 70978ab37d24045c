"""The fault matrix (every emulated API by every transient fault) and runs killed with SIGKILL.

Each cell is a real `tap-events` process reading over real sockets from the emulator, which
injects the fault into that API's event requests (`EmulatedAPI.fault_path`). A cell passes when
the run ends with status 0 and every event of every stream of the API exactly once, after the
fault was really served and retried. docs/reliability.md lists the cells.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest

from tap_events_emulator import start_emulator
from tests.reliability import (
    APIS,
    assert_every_event_once,
    event_keys,
    expected_counts,
    one_api_config,
    read_timeout,
    small_pages,
)
from tests.support import TAP, TapRun, clean_env, log_lines, retry_waits, run_tap

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer

#: Seconds a throttled request is asked to wait (Retry-After).
RETRY_AFTER = "1"
#: The read timeout of the timeout cell, and how long the emulator keeps the answer back.
READ_TIMEOUT_SECONDS = 1.0
HELD_BACK_SECONDS = 2.5


def inject_429s(emulator: EmulatorServer, api: str, path: str) -> None:
    """Three 429s in a row, on the second request onwards: a throttled page, mid-stream."""
    emulator.inject(api, "status", path=path, status=429, times=3, after=1,
                    headers={"Retry-After": RETRY_AFTER},
                    body={"message": "Too many requests", "title": "Too Many Requests"})


def inject_5xx_burst(emulator: EmulatorServer, api: str, path: str) -> None:
    """500, 502 and 503 in a row (the 503 with Retry-After, as load balancers send it)."""
    emulator.inject(api, "status", path=path, status=500, after=1)
    emulator.inject(api, "status", path=path, status=502,
                    body={"message": "<html>Bad Gateway</html>"})
    emulator.inject(api, "status", path=path, status=503, headers={"Retry-After": RETRY_AFTER})


def inject_drop(emulator: EmulatorServer, api: str, path: str) -> None:
    """Half the body of a page, then the socket closes."""
    emulator.inject(api, "drop", path=path, after=1)


def inject_read_timeout(emulator: EmulatorServer, api: str, path: str) -> None:
    """No answer for longer than the read timeout."""
    emulator.inject(api, "slow", path=path, delay=HELD_BACK_SECONDS, after=1)


FAULTS: dict[str, t.Callable[[EmulatorServer, str, str], None]] = {
    "429x3": inject_429s,
    "5xx_burst": inject_5xx_burst,
    "dropped_mid_body": inject_drop,
    "read_timeout": inject_read_timeout,
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("api", APIS)
def test_fault_is_survived_with_every_event_once(emulator, api, fault):
    settings, top = read_timeout(api, READ_TIMEOUT_SECONDS) if fault == "read_timeout" else ({}, {})
    config = one_api_config(emulator.url, api, settings=settings, **top)
    FAULTS[fault](emulator, api, emulator.app.apis[api].fault_path)

    run = run_tap(config, timeout=90)

    assert run.returncode == 0, run.stderr
    assert not emulator.app.faults, "the fault was never served"
    assert_every_event_once(run, emulator, api)
    warnings = "\n".join(log_lines(run, "WARNING"))
    retries = warnings.count(" retry ") + warnings.count("reconnecting")
    assert retries >= (3 if fault in ("429x3", "5xx_burst") else 1), warnings
    if fault == "429x3":
        # Waited as asked, plus the jitter (up to 1 s) that keeps clients from retrying at once.
        waits = retry_waits(run, after="HTTP 429")
        asked = float(RETRY_AFTER)
        assert len(waits) == 3 and all(asked <= w <= asked + 1 for w in waits), warnings
    assert not log_lines(run, "ERROR")
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------------------ SIGKILL

KILL_EVENTS = 400
#: Where the three kills land, as shares of all the run's records: early, middle, late.
KILL_SHARES = ((0.1, 0.35), (0.35, 0.6), (0.6, 0.85))
#: The capacity of the pipe the killed run writes to, and of the test's read buffer. The run
#: can be at most this far ahead of what the test has read, so it cannot end before the kill
#: point: the records after the latest one (15 % of the run, over 50 records of over 300
#: bytes) are far more. No latency or timing is needed to catch it half way through.
PIPE_BYTES = 4096


def run_and_kill(config: dict, after_records: int) -> TapRun:
    """Run the tap and SIGKILL it once `after_records` RECORD lines reached stdout.

    Returns what stdout carried until the process died: what a target would have received.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        with open(read_end, "rb", buffering=PIPE_BYTES) as stdout:
            try:
                process = subprocess.Popen([*TAP, "--config", str(path)], stdout=write_end,
                                           stderr=subprocess.DEVNULL, env=clean_env())
            finally:
                os.close(write_end)
            lines, records = [], 0
            for line in stdout:
                lines.append(line)
                records += line.startswith(b'{"type":"RECORD"')
                if records >= after_records:
                    process.send_signal(signal.SIGKILL)
                    break
            lines += stdout.read().splitlines(keepends=True)
        process.wait(timeout=60)
    messages = []
    for line in lines:
        try:
            messages.append(json.loads(line))
        except ValueError:
            break  # a line cut by the kill: a target would stop reading here too
    return TapRun(process.returncode, b"".join(lines).decode(errors="replace"), "", messages)


def committed(run: TapRun) -> tuple[dict | None, TapRun]:
    """The last STATE the killed run wrote, and the records written before it."""
    last_state = max((n for n, m in enumerate(run.messages) if m["type"] == "STATE"),
                     default=-1)
    kept = [m for m in run.messages[:last_state] if m["type"] != "STATE"]
    state = run.messages[last_state]["value"] if last_state >= 0 else None
    return state, TapRun(0, "", "", kept)


@pytest.mark.parametrize("api", APIS)
def test_killed_runs_resume_from_their_last_state_without_loss(api):
    server = start_emulator(events=KILL_EVENTS, seed=5)
    try:
        config = one_api_config(server.url, api, settings=small_pages(api))
        counts = expected_counts(server, api)
        total = sum(counts.values())
        rng = random.Random(f"kill:{api}")
        resumed_from_state = 0
        for low, high in KILL_SHARES:
            kill_at = rng.randint(int(total * low) + 1, int(total * high))
            killed = run_and_kill(config, kill_at)
            assert killed.returncode == -signal.SIGKILL, f"the run ended before record {kill_at}"
            state, before_state = committed(killed)
            resumed_from_state += bool(before_state.records())

            resumed = run_tap(config, state=state)

            assert resumed.returncode == 0, resumed.stderr
            for stream, count in counts.items():
                loaded = set(event_keys(before_state, stream))
                loaded |= set(event_keys(resumed, stream))
                assert len(loaded) == count, (
                    f"{stream}: killed after record {kill_at}, {count - len(loaded)} lost")
        assert resumed_from_state >= 2, "the kills came before any STATE: nothing was tested"
    finally:
        server.stop()


def test_the_fault_matrix_in_the_docs_is_complete():
    """docs/reliability.md names a cell for every API and fault these tests run."""
    text = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    missing = [f"[{api}-{fault}]" for api in APIS for fault in FAULTS
               if f"`[{api}-{fault}]`" not in text]
    missing += [f"[{api}]" for api in APIS if f"`[{api}]`" not in text]
    assert not missing, f"docs/reliability.md lacks the cells {missing}"
