"""Helpers for tests: run the real `tap-events` CLI against an emulator and read its output."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

TAP = [sys.executable, "-m", "tap_events"]


@dataclass
class TapRun:
    """What one run of the tap wrote: Singer messages from stdout, the log from stderr."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict] = field(default_factory=list)

    def records(self, stream: str | None = None) -> list[dict]:
        return [m["record"] for m in self.messages
                if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)]

    def ids(self, stream: str, key: str = "event_id") -> list[t.Any]:
        return [r[key] for r in self.records(stream)]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict:
        return self.states[-1] if self.states else {}

    def bookmark(self, stream: str) -> dict:
        return self.final_state.get("bookmarks", {}).get(stream, {})


def run_tap(
    config: dict,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    streams: t.Iterable[str] | None = None,
    args: t.Iterable[str] = (),
    timeout: float = 120,
    env: dict | None = None,
) -> TapRun:
    """Run `tap-events` as a real process. `streams` selects only those streams."""
    with tempfile.TemporaryDirectory() as tmp:
        command = tap_command(Path(tmp), config, state=state, catalog=catalog,
                              streams=streams, args=args)
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            env={**clean_env(), **(env or {})},
        )
    return TapRun(process.returncode, process.stdout, process.stderr,
                  parse_messages(process.stdout.splitlines()))


def tap_command(
    folder: Path,
    config: dict,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    streams: t.Iterable[str] | None = None,
    args: t.Iterable[str] = (),
) -> list[str]:
    """The command line running `tap-events` on files written to `folder`."""
    (folder / "config.json").write_text(json.dumps(config))
    command = [*TAP, "--config", str(folder / "config.json"), *args]
    if state is not None:
        (folder / "state.json").write_text(json.dumps(state))
        command += ["--state", str(folder / "state.json")]
    if streams is not None:
        catalog = select_streams(discover(config), set(streams))
    if catalog is not None:
        (folder / "catalog.json").write_text(json.dumps(catalog))
        command += ["--catalog", str(folder / "catalog.json")]
    return command


def parse_messages(lines: t.Iterable[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


class RunningTap:
    """`tap-events` running in the background (tail mode): its stdout is read as it comes,
    each line stamped with the time it arrived."""

    def __init__(self, config: dict, *, state: dict | None = None,
                 streams: t.Iterable[str] | None = None, env: dict | None = None) -> None:
        self.folder = tempfile.TemporaryDirectory()
        command = tap_command(Path(self.folder.name), config, state=state, streams=streams)
        self.stderr_file = (Path(self.folder.name) / "stderr.log").open("w+")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=self.stderr_file, text=True,
                                        env={**clean_env(), **SHOWS_STACKS, **(env or {})})
        #: (time.monotonic() when read, line) for every stdout line so far.
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def messages(self) -> list[tuple[float, dict]]:
        return [(at, json.loads(line)) for at, line in list(self.lines)
                if line.startswith("{")]

    def wait_for(self, condition: t.Callable[[], bool], timeout: float = 240) -> None:
        """Wait until `condition` holds; fails if the tap ends first. The timeout only stops a
        hung test: on a loaded machine start-up alone can take a minute."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"gave up waiting; stderr:\n{self.stderr()[-3000:]}")
            time.sleep(0.02)

    def stderr(self) -> str:
        self.stderr_file.flush()
        return (Path(self.folder.name) / "stderr.log").read_text()

    def wait(self, timeout: float = 60) -> TapRun:
        """Wait for the process to end; what it wrote, as `run_tap` returns it. A run that
        does not end in time fails the test with its stderr and a traceback of every thread."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            show_stacks(self.process)
            raise AssertionError(f"the tap did not end within {timeout:g} s; stderr:\n"
                                 f"{self.stderr()[-6000:]}") from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=120)
        stdout = "".join(line for _, line in self.lines)
        run = TapRun(self.process.returncode, stdout, self.stderr(),
                     parse_messages(stdout.splitlines()))
        self.stderr_file.close()
        self.folder.cleanup()
        return run


#: The environment of a tap that `show_stacks` can ask where it is stuck.
SHOWS_STACKS = {"PYTHONFAULTHANDLER": "1"}


def show_stacks(process: subprocess.Popen) -> None:
    """A run that did not end in time (started with `SHOWS_STACKS`): its stderr gets every
    thread's stack (faulthandler, on SIGABRT), which the failing test then shows."""
    process.send_signal(signal.SIGABRT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def summary_of(stderr: str) -> dict:
    """The run's machine-readable summary: the last line of its stderr, one JSON object."""
    last = stderr.rstrip("\n").splitlines()[-1]
    summary = json.loads(last)
    assert summary["type"] == "RUN_SUMMARY"
    return summary


def clean_env() -> dict[str, str]:
    """The environment without TAP_EVENTS_* settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TAP_EVENTS_")}


def discover(config: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        out = subprocess.run([*TAP, "--config", str(path), "--discover"], capture_output=True,
                             text=True, check=True, env=clean_env())
    return json.loads(out.stdout)


def select_streams(catalog: dict, names: set[str]) -> dict:
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in names
    return catalog


def retry_waits(run: TapRun, after: str = "") -> list[float]:
    """The wait of each logged retry (`... retry 2 in 3.4 s after <what>`), for retries after
    an error matching the regular expression `after`. A wait is what the API asked for (or
    the back-off) plus up to 1 s of jitter, so a test compares it with a range."""
    return [float(wait) for wait in re.findall(rf" retry \d+ in ([\d.]+) s after .*{after}",
                                               "\n".join(log_lines(run, "WARNING")))]


def log_lines(run: TapRun, level: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if f"| {level}" in line]


# ------------------------------------------------------------ a process a test signals


#: How long a test waits for the run to end once it must: far more than it takes (a few
#: seconds, on a loaded machine too), far less than what the run would otherwise wait for.
PROMPT = 60
F_GETPIPE_SZ = 1032


class Tap:
    """`tap-events` as a process whose stdout the test reads, or does not read, at will."""

    def __init__(self, config: dict, streams: t.Iterable[str], *, drain: bool = True,
                 read: bool = True, python: t.Sequence[str] = TAP) -> None:
        """`python`: how the tap is run (a test may run it with a patch applied first)."""
        self.folder = tempfile.TemporaryDirectory()
        folder = Path(self.folder.name)
        command = [*python, *tap_command(folder, config, streams=streams)[len(TAP):]]
        self.stderr_path = folder / "stderr.log"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                            env={**clean_env(), **SHOWS_STACKS})
        self.out = bytearray()
        #: Reading stdout goes on only while this is set.
        self.draining = threading.Event()
        if drain:
            self.draining.set()
        self.lines_read = 0
        self.reader = None
        if read:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        self.status: int | None = None
        self.peak_rss_mb = 0.0
        self.ended_at = 0.0
        self.ended_stderr: str | None = None

    def _read(self) -> None:
        fd = self.process.stdout.fileno()
        while True:
            self.draining.wait()
            data = os.read(fd, 1 << 16)
            if not data:
                return
            self.out += data
            self.lines_read += data.count(b"\n")

    def stderr(self) -> str:
        if self.ended_stderr is not None:
            return self.ended_stderr
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, condition: t.Callable[[], t.Any], what: str,
                 timeout: float = 4 * PROMPT) -> None:
        """Wait until `condition` holds; fails if the tap ends first. The timeout only stops a
        hung test: on a loaded machine the tap may take minutes to get there."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"gave up waiting for {what}; stderr:\n"
                                     f"{self.stderr()[-3000:]}")
            time.sleep(0.02)

    def wait_until_stdout_is_full(self) -> None:
        """The target stopped reading and the tap wrote until the pipe filled up: the pipe
        holds more than half its capacity and the writing thread sleeps in the kernel's pipe
        write (its `wchan`), not merely between two writes."""
        fd = self.process.stdout.fileno()
        capacity = fcntl.fcntl(fd, F_GETPIPE_SZ)

        def full() -> bool:
            held = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4), "little")
            return held > capacity // 2 and blocked_in_pipe_write(self.process.pid)

        self.wait_for(full, "a full stdout pipe")

    def signal(self, signum: int = signal.SIGTERM) -> float:
        sent = time.monotonic()
        self.process.send_signal(signum)
        return sent

    def wait(self, timeout: float = PROMPT) -> int:
        """The exit status, with the time it ended and its peak RSS.

        The peak is the kernel's high-water mark of the process (`VmHWM`), read until it
        ends: `wait4`'s `ru_maxrss` would count the test process too (a child spawned by
        vfork inherits the parent's mark at exec).
        """
        deadline = time.monotonic() + timeout
        status_file = Path(f"/proc/{self.process.pid}/status")
        while True:
            with contextlib.suppress(OSError, ValueError):
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
            if self.process.poll() is not None:
                self.ended_at = time.monotonic()
                break
            if time.monotonic() > deadline:
                show_stacks(self.process)
                self.process.kill()
                raise AssertionError(f"the tap did not end within {timeout} s; stderr:\n"
                                     f"{self.stderr()[-6000:]}")
            time.sleep(0.01)
        self.status = self.process.returncode
        self.draining.set()
        if self.reader is not None:
            self.reader.join(timeout=120)
        self.ended_stderr = self.stderr()
        self.folder.cleanup()
        return self.status

    def messages(self) -> list[dict]:
        """Every stdout line, each of which must be a whole JSON message."""
        return [json.loads(line) for line in bytes(self.out).splitlines()]

    def report(self, case: str, since: float) -> None:
        print(f"\n[measure] {case}: ended {self.ended_at - since:.2f} s after, "
              f"peak RSS {self.peak_rss_mb:.0f} MB, status {self.status}")


def blocked_in_pipe_write(pid: int) -> bool:
    """Whether a thread of process `pid` sleeps in a pipe write (`pipe_write`, or
    `anon_pipe_write` on newer kernels)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if "pipe_write" in (task / "wchan").read_text():
                return True
    return False
