"""Every run ends: SIGTERM/SIGINT in every state, a target that stops reading, a closed stdout,
an SSE line that never ends. The real `tap-events` process against the emulator (or a hostile
local server) over real sockets; each case is timed from the signal (or the close) to the
process's end, and its peak RSS is read from the kernel (`VmHWM`).

What a scheduler relies on: the run ends at the signal, without reading on or waiting out what
it was waiting for; when stdout can still take it, the final STATE is the last line and the
status is 0; when it cannot, the status is 128 + the signal (143 for SIGTERM) and stderr says
so in one line; a closed stdout is one line and status 1, never a traceback. Waits in these
tests are for conditions (a log line, a request, a blocked write), never for luck, and no
assertion is a stopwatch (the suite runs in parallel workers on a loaded machine): "ends at
the signal" is counted in requests sent after it, or bounded by PROMPT where the run would
otherwise wait far longer (a 120 s Retry-After, a 600 s long poll, a pipe never drained). The
time from the signal to the end is measured and printed (`[measure]`), as docs/reliability.md
reports it.
"""

from __future__ import annotations

import contextlib
import http.server
import random
import signal
import socketserver
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest

from tap_events.writer import SIGNAL_BACKSTOP_SECONDS
from tap_events_emulator import alpaca as emulated_alpaca
from tap_events_emulator import start_emulator, tap_config
from tests.support import PROMPT, Tap, summary_of

#: How long a stream blocked on a silent socket would otherwise wait (long poll, heartbeat).
SILENT_SECONDS = 600
TRADES = "alpaca_trade_events"
TRADES_PATH = next(feed.path for feed in emulated_alpaca.FEEDS if feed.stream == TRADES)


def process_tree(pid: int) -> list[int]:
    """Process `pid` and its children (one per API in parallel mode)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return [pid, *children]


def threads_taking_signals(pids: list[int]) -> list[str]:
    """The threads of processes `pids`, other than each one's main thread, that do not block
    SIGTERM and SIGINT (`SigBlk` in /proc), by process and thread name."""
    handled = (1 << signal.SIGTERM - 1) | (1 << signal.SIGINT - 1)
    found = []
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                status = dict(line.split(":", 1) for line in
                              (task / "status").read_text().splitlines() if ":" in line)
                if int(task.name) != pid and int(status["SigBlk"], 16) & handled != handled:
                    found.append(f"{pid}/{status['Name'].strip()}")
    return found


def summary_lines(stderr: str, streams: t.Iterable[str]) -> list[str]:
    """The run summary's line for each of `streams` (each must have one)."""
    lines = stderr.splitlines()
    found = [next((line.split(" | ")[-1] for line in lines
                   if f"Run summary: {stream}: " in line), None) for stream in streams]
    assert None not in found, stderr[-3000:]
    return t.cast("list[str]", found)


def bookmark_of(bookmarks: dict, stream: str) -> str | None:
    """The value the summary shows for a stream's bookmark in a STATE."""
    value = bookmarks.get(stream, {}).get("replication_key_value")
    return None if value is None else str(value)


def requests_by_api(emulator, streams: t.Iterable[str]) -> dict[str, int]:
    """Requests each API of `streams` has received so far."""
    return {api: len(emulator.requests(api)) for api in {s.split("_", 1)[0] for s in streams}}


def assert_read_no_further(emulator, at_signal: dict[str, int], in_flight: int = 1) -> None:
    """After the signal, each API got at most the request already on its way: the run did
    not read on (the whole run is 40 Box pages; a wait for the run to end is no proof)."""
    sent_after = {api: len(emulator.requests(api)) - count for api, count in at_signal.items()}
    assert all(n <= in_flight for n in sent_after.values()), sent_after


def assert_ends_on_state(tap: Tap) -> list[dict]:
    messages = tap.messages()
    assert messages, tap.stderr()[-2000:]
    assert messages[-1]["type"] == "STATE", "a line after the final STATE"
    assert "Traceback" not in tap.stderr()
    return messages


@pytest.fixture(scope="module")
def emulator():
    """Enough events that output is still flowing when the signal comes (40 Box pages)."""
    server = start_emulator(events=20_000, seed=5)
    yield server
    server.stop()


@pytest.fixture
def make_emulator():
    servers = []

    def make(**options):
        server = start_emulator(events=1200, seed=11, options=options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


SINGLE = ["box_events"]
PARALLEL = ["box_events", "socotra_events"]


# ---------------------------------------------------------------- a target that stops reading


@pytest.mark.parametrize("streams", [SINGLE, PARALLEL], ids=["single", "parallel"])
def test_sigterm_while_stdout_is_blocked_ends_with_the_final_state_once_drained(
        emulator, streams):
    """The target stops reading, SIGTERM comes, then the target reads again: the run ends
    without reading on, with the final STATE last and status 0 (before: the handler waited
    forever for the writer's lock, which the blocked write held)."""
    tap = Tap(tap_config(emulator.url), streams, drain=False)
    tap.wait_until_stdout_is_full()
    sent = tap.signal()
    at_signal = requests_by_api(emulator, streams)
    tap.wait_for(lambda: "SIGTERM received" in tap.stderr(), "the signal to be handled")
    tap.draining.set()
    status = tap.wait()
    tap.report(f"blocked stdout, drained after SIGTERM ({len(streams)} API)", sent)

    assert status == 0, tap.stderr()[-2000:]
    assert_read_no_further(emulator, at_signal)
    messages = assert_ends_on_state(tap)
    assert any(m["type"] == "RECORD" for m in messages)


@pytest.mark.parametrize("streams", [SINGLE, PARALLEL], ids=["single", "parallel"])
def test_sigterm_while_stdout_stays_blocked_ends_anyway_with_status_143(emulator, streams):
    """A target that never reads again cannot take the final STATE: the run still ends
    (within PROMPT; it would otherwise wait forever), with 128 + SIGTERM and one line saying
    the state was not written."""
    tap = Tap(tap_config(emulator.url), streams, drain=False)
    tap.wait_until_stdout_is_full()
    sent = tap.signal()
    status = tap.wait()
    tap.report(f"blocked stdout, never drained ({len(streams)} API)", sent)

    assert status == 128 + signal.SIGTERM
    stderr = tap.stderr()
    assert "stdout did not take the final state" in stderr
    assert "Traceback" not in stderr
    # The summary still comes, and does not claim a bookmark the target may not have.
    summary = summary_of(stderr)
    assert (summary["exit_code"], summary["ended_by"]) == (128 + signal.SIGTERM, "SIGTERM")
    assert [s["bookmark_after"] for s in summary["streams"]] == [None] * len(streams)
    assert all("→ unknown," in line for line in summary_lines(stderr, streams))


@pytest.mark.parametrize("seed", range(20))
def test_sigterm_at_a_random_moment_of_fast_output_leaves_the_final_state_last(emulator, seed):
    """SIGTERM after a random number of lines (seeded) while records pour out: status 0, every
    line whole JSON, the final STATE last (before: up to 360 RECORD lines after it). One try
    in four runs the APIs in parallel."""
    streams = PARALLEL if seed % 4 == 3 else SINGLE
    # Anywhere in the first 12 Box pages: many page boundaries and STATEs, without waiting
    # for most of a long run's output.
    after_lines = random.Random(seed).randrange(1, 6_000)
    tap = Tap(tap_config(emulator.url), streams)
    tap.wait_for(lambda: tap.lines_read >= after_lines, f"{after_lines} lines")
    sent = tap.signal(signal.SIGINT if seed % 5 == 4 else signal.SIGTERM)
    at_signal = requests_by_api(emulator, streams)
    status = tap.wait()
    tap.report(f"random moment (seed {seed}, after {after_lines} lines)", sent)

    assert status == 0, tap.stderr()[-2000:]
    assert_read_no_further(emulator, at_signal)
    assert_ends_on_state(tap)


#: What is made to hang, a step only the end of a signalled run takes: the final STATE write
#: (`BufferedRecordWriter.finish`), or the parallel parent's end once its API processes
#: ended (`TapEvents.end_stopped`).
STUCK_END = {
    "single": ("tap_events.writer", "BufferedRecordWriter", "finish"),
    "parallel": ("tap_events.tap", "TapEvents", "end_stopped"),
}


@pytest.mark.parametrize("mode", ["single", "parallel"])
def test_an_end_that_hangs_is_cut_off_by_the_backstop(emulator, mode):
    """Whatever the end of a signalled run gets stuck in, the process is gone
    `SIGNAL_BACKSTOP_SECONDS` after the signal: 128 + the signal, and one line saying so."""
    module, cls, method = STUCK_END[mode]
    patch = (f"import time; from {module} import {cls}; "
             f"{cls}.{method} = lambda *args, **kwargs: time.sleep(3600); "
             "from tap_events.tap import TapEvents; TapEvents.cli()")
    tap = Tap(tap_config(emulator.url), PARALLEL if mode == "parallel" else SINGLE,
              python=[sys.executable, "-c", patch])
    tap.wait_for(lambda: tap.lines_read >= 1000, "1000 lines")
    sent = tap.signal()
    status = tap.wait(timeout=SIGNAL_BACKSTOP_SECONDS + PROMPT)
    tap.report(f"an end that hangs ({mode})", sent)

    assert status == 128 + signal.SIGTERM, tap.stderr()[-2000:]
    assert tap.ended_at - sent >= SIGNAL_BACKSTOP_SECONDS - 0.5  # it was the backstop
    assert tap.stderr().rstrip().splitlines()[-1] == (
        "SIGTERM: the run did not end within 10 s of the signal; ending it now, the target "
        "keeps the last state it received")


# ---------------------------------------------------------------- a closed stdout


@pytest.mark.parametrize("streams", [SINGLE, [*PARALLEL, "discue_events"]],
                         ids=["single", "parallel"])
def test_head_closing_stdout_ends_the_run_in_one_line_with_status_1(emulator, streams):
    """`tap-events ... | head -5`: one ERROR line naming stdout, no traceback, no "the API
    sent data the tap cannot read", status 1, and no further pages requested."""
    before = {api: len(emulator.requests(api)) for api in ("box", "socotra", "discue")}
    tap = Tap(tap_config(emulator.url), streams, read=False)
    head = subprocess.Popen(["head", "-5"], stdin=tap.process.stdout, stdout=subprocess.PIPE)
    tap.process.stdout.close()  # head is the only reader
    head_out, _ = head.communicate(timeout=60)
    closed = time.monotonic()
    status = tap.wait()
    tap.report(f"| head -5 ({len(streams)} API)", closed)

    assert len(head_out.splitlines()) == 5
    assert status == 1
    stderr = tap.stderr()
    errors = [line for line in stderr.splitlines() if "| ERROR" in line]
    assert errors == [line for line in errors if "stdout was closed" in line]
    assert len(errors) == 1, errors
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert "cannot read" not in stderr
    # 40 Box pages of 500 would be read by a run that went on.
    pages = len(emulator.requests("box")) - before["box"]
    assert pages < 10


# ---------------------------------------------------------------- waiting for an API


@pytest.mark.parametrize("streams", [SINGLE, ["box_events", "discue_events"]],
                         ids=["single", "parallel"])
def test_sigterm_during_a_retry_wait_ends_at_once_with_the_final_state(make_emulator, streams):
    """Box answers 503 with Retry-After: 120; the run waits, SIGTERM ends it at once: within
    PROMPT (half the wait) and without the retry."""
    emulator = make_emulator()
    # The first page goes through, so records and a STATE come before the wait.
    emulator.inject("box", "status", status=503, headers={"Retry-After": "120"}, times=5,
                    path="/2.0/events", after=1)
    tap = Tap(tap_config(emulator.url), streams)
    tap.wait_for(lambda: "box_events: retry 1 in 12" in tap.stderr(), "the retry wait")
    sent = tap.signal()
    unserved = sum(fault.times for fault in emulator.app.faults)
    status = tap.wait()
    tap.report(f"retry wait ({len(streams)} API)", sent)

    assert status == 0, tap.stderr()[-2000:]
    # The retry was never sent: it would have been answered by the next 503.
    assert sum(fault.times for fault in emulator.app.faults) == unserved
    assert_ends_on_state(tap)


def listening(emulator, streams: list[str]) -> t.Callable[[], bool]:
    """Box in a long poll and/or Alpaca in an SSE read without an upper bound."""

    def check() -> bool:
        box = [r for r in emulator.requests("box") if r["path"] == "/realtime/subscribe"]
        alpaca = [r for r in emulator.requests("alpaca")
                  if r["path"] == TRADES_PATH and "until" not in r["query"]]
        return ("box_events" not in streams or bool(box)) and (
            TRADES not in streams or bool(alpaca))

    return check


@pytest.mark.parametrize("streams", [["box_events"], [TRADES], ["box_events", TRADES]],
                         ids=["box-long-poll", "alpaca-sse", "parallel"])
def test_sigterm_while_waiting_for_new_events_ends_at_once(make_emulator, streams):
    """Tail mode, each stream blocked on a silent socket (a Box long poll that answers in
    10 min, an Alpaca stream with a heartbeat every 10 min): SIGTERM ends it at once, within
    PROMPT."""
    emulator = make_emulator(box={"realtime_timeout": SILENT_SECONDS},
                             alpaca={"heartbeat_seconds": SILENT_SECONDS})
    config = {**tap_config(emulator.url), "tail_seconds": SILENT_SECONDS,
              "tail_state_seconds": SILENT_SECONDS}
    tap = Tap(config, streams)
    tap.wait_for(listening(emulator, streams), "the streams to listen")
    # The kernel gives a process's signal to any thread not blocking it, and Python runs the
    # handler only when the main thread next runs Python code: taken by another thread, the
    # signal would wait with the main thread (joining the tail's threads) for 10 minutes.
    processes = process_tree(tap.process.pid)
    assert len(processes) == (1 if len(streams) == 1 else 1 + len(streams)), processes
    assert threads_taking_signals(processes) == []
    sent = tap.signal()
    status = tap.wait()
    tap.report(f"tail, {'+'.join(streams)}", sent)

    assert status == 0, tap.stderr()[-2000:]
    messages = assert_ends_on_state(tap)
    assert {m["stream"] for m in messages if m["type"] == "RECORD"} == set(streams)
    # The run summary says what the run did, to the final STATE, and what ended it.
    summary = summary_of(tap.stderr())
    assert (summary["exit_code"], summary["ended_by"]) == (0, "SIGTERM")
    final = messages[-1]["value"]["bookmarks"]
    assert {s["stream"]: (s["records"], s["bookmark_after"]) for s in summary["streams"]} == {
        stream: (sum(m.get("stream") == stream for m in messages if m["type"] == "RECORD"),
                 bookmark_of(final, stream)) for stream in streams}
    assert summary_lines(tap.stderr(), streams)
    assert "exit code 0, ended by SIGTERM" in tap.stderr()


# ---------------------------------------------------------------- an SSE line without end


class EndlessLine(http.server.BaseHTTPRequestHandler):
    """Alpaca's SSE endpoint answering one `data:` line of `LINE_MB` MB that never ends."""

    LINE_MB = 200
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(self.LINE_MB * 2**20 + 6))
        self.end_headers()
        chunk = b"x" * 2**20
        with contextlib.suppress(OSError):  # the tap hangs up once it has had enough
            self.wfile.write(b"data: ")
            for _ in range(self.LINE_MB):
                self.wfile.write(chunk)

    def log_message(self, *_: t.Any) -> None:
        pass


def test_a_200_mb_sse_line_fails_the_stream_naming_max_response_mb():
    """One line of 200 MB: the stream fails past max_response_mb (100 by default) with one
    line naming the setting, in bounded memory, without reading the rest."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EndlessLine)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = {"alpaca": {"api_url": url, "api_key": "key", "api_secret": "secret"},
                  "max_retries": 1}
        tap = Tap(config, [TRADES])
        started = time.monotonic()
        status = tap.wait(timeout=2 * PROMPT)
        tap.report("200 MB SSE line", started)
    finally:
        server.shutdown()
        server.server_close()

    assert status == 1
    errors = [line for line in tap.stderr().splitlines() if "| ERROR" in line]
    assert any(f"stream '{TRADES}'" in line and "max_response_mb=100" in line
               for line in errors), errors
    assert "Traceback" not in tap.stderr()
    # 100 MB of text held at most once, plus the interpreter and the SDK (~80 MB).
    assert tap.peak_rss_mb < 400
