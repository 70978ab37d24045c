"""One process per API, one Singer stream out.

APIs are independent, and a tap spends its time in Python (decoding, encoding) or waiting on
the network, so running each API in its own process lets a run over several APIs take about as
long as the slowest one, on as many cores as there are. The parent is the one writer:

- each child is the same tap with a catalog selecting only its API's streams; its stdout is
  read in blocks and copied through line by line, so each stream's messages keep their order;
- Singer STATE replaces the whole state, so every STATE a child writes is replaced by the
  merged state: that child's bookmarks from this STATE, every other API's bookmarks from its
  latest STATE already passed on (or from the input state). It is written right after the
  child's records it covers, so every STATE is a resume point for every stream;
- a child that fails does not stop the others; the run then ends with status 1;
- each child sends what its streams did (records, time, status) on a pipe of its own
  (`REPORT_ENV`) for the parent's run summary (tap_events/summary.py), and tags its log lines
  with its API (`API_ENV`);
- no secret at rest: a child reads its config (and catalog and state) from a pipe
  (`/dev/fd/N`), so no file holds the config, even after the parent is killed; and a child
  exits as soon as its parent is gone (it watches a pipe only the parent holds open), so an
  OOM-killed parent leaves no orphan still talking to an API.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import typing as t
from dataclasses import dataclass

import orjson

from tap_events import threads
from tap_events.writer import (
    BufferedRecordWriter,
    Output,
    end_after_signal_anyway,
    stdout_error_text,
)

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Set in a child's environment: the child runs its streams itself. Its value is the file
#: descriptor of the pipe whose end of file means the parent is gone.
CHILD_ENV = "TAP_EVENTS_PARALLEL_CHILD"
#: Set in a child's environment: the API whose streams it runs (`box`).
API_ENV = "TAP_EVENTS_PARALLEL_API"
#: Set in a child's environment: the file descriptor of the pipe its stream reports go to.
REPORT_ENV = "TAP_EVENTS_PARALLEL_REPORT"
#: A STATE line as the tap's writer (msgspec, `type` first) writes it.
STATE_PREFIX = b'{"type":"STATE"'
READ_BYTES = 1 << 20
#: How long the parent goes on after a signal: each child has `BufferedRecordWriter.
#: FINISH_SECONDS` to write its final STATE, the parent a second more to pass it on.
FINISH_SECONDS = BufferedRecordWriter.FINISH_SECONDS + 1.0


def is_child() -> bool:
    return bool(os.environ.get(CHILD_ENV))


def child_api() -> str | None:
    """The API this process runs the streams of, when it is a parallel child."""
    return os.environ.get(API_ENV) or None if is_child() else None


def report_fd() -> int | None:
    """Where this parallel child sends its stream reports (None: not a child)."""
    value = os.environ.get(REPORT_ENV) if is_child() else None
    return int(value) if value else None


def catalog_for(catalog: dict, streams: set[str]) -> dict:
    """`catalog` with only `streams` selected."""
    chosen = copy.deepcopy(catalog)
    for entry in chosen["streams"]:
        if entry["tap_stream_id"] in streams:
            continue
        for item in entry.get("metadata", []):
            if item.get("breadcrumb") == []:
                item["metadata"]["selected"] = False
    return chosen


class StateMerger:
    """The whole state as of the messages already written, fed one child STATE at a time."""

    def __init__(self, state: Mapping[str, t.Any], streams_of: Mapping[str, set[str]]) -> None:
        self.state = copy.deepcopy(dict(state)) if state else {}
        self.state.setdefault("bookmarks", {})
        self.streams_of = streams_of

    def merge(self, api: str, line: bytes) -> bytes:
        """The STATE line to write in place of `line`, a STATE of `api`'s child."""
        value = orjson.loads(line)["value"]
        own = self.streams_of[api]
        for stream, bookmark in (value.get("bookmarks") or {}).items():
            if stream in own:
                self.state["bookmarks"][stream] = bookmark
        return self.line()

    def line(self) -> bytes:
        """The merged state as a STATE line."""
        return orjson.dumps({"type": "STATE", "value": self.state}) + b"\n"


class Child:
    """One API's tap process, the bytes of its output not yet written, and the pipe its
    stream reports come on."""

    def __init__(self, api: str, process: subprocess.Popen, reports: int) -> None:
        self.api = api
        self.process = process
        self.pending = b""
        self.reports = reports

    def sent_reports(self) -> bytes:
        """What the child sent on its report pipe (read once it has ended: then the pipe
        ends too, as the parent closed its own writing end at the start)."""
        with open(self.reports, "rb") as pipe:
            return pipe.read()


@dataclass
class Finished:
    """How a parallel run ended: each API's exit status and the reports its process sent
    (`tap_events.summary`), and the state of the last STATE written."""

    statuses: dict[str, int]
    reports: dict[str, bytes]
    state: dict[str, t.Any]


class StdoutClosed(Exception):
    """The parent's stdout failed (its reader is gone): the children were stopped."""

    def __init__(self, error: OSError) -> None:
        super().__init__(stdout_error_text(error))


class Stopped(Exception):
    """A signal ended the run; `complete` when the last STATE reached stdout in time."""

    def __init__(self, signum: int, *, complete: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.complete = complete
        #: How each API's process ended: set once every child has ended.
        self.finished = Finished({}, {}, {})


class Termination:
    """The signal that asked the run to end, and the deadline it set."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deadline = math.inf

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


def run(
    config: Mapping[str, t.Any],
    catalog: dict,
    state: Mapping[str, t.Any],
    streams_of: Mapping[str, set[str]],
    out: t.BinaryIO,
    python: Sequence[str] = (sys.executable, "-m", "tap_events"),
) -> Finished:
    """Run one tap process per API of `streams_of`, merging their output into `out`.

    Returns each API's exit status and reports (`Finished`). Raises `Stopped` after
    SIGTERM/SIGINT (forwarded to every child), `StdoutClosed` when `out` fails; either way
    every child has ended.
    """
    merger = StateMerger(state, streams_of)
    # The parent holds the only writing end of `alive` until every child is done: a child
    # reading end of file knows the parent died (`watch_parent`).
    alive_read, alive_write = os.pipe()
    children = []
    stop: Stopped | None = None
    try:
        try:
            for api, streams in streams_of.items():
                reports_read, reports_write = os.pipe()
                try:
                    process = spawn(python, alive_read, {
                        "--config": json.dumps(dict(config), default=json_number),
                        "--catalog": json.dumps(catalog_for(catalog, streams)),
                        "--state": json.dumps(state or {}, default=json_number),
                    }, api=api, reports=reports_write)
                except BaseException:
                    os.close(reports_read)
                    raise
                finally:
                    os.close(reports_write)  # the child holds it now
                children.append(Child(api, process, reports_read))
        finally:
            os.close(alive_read)  # the children hold it now
        termination = Termination()
        with forwarded_termination(children, termination):
            Copier(children, merger, Output(out), termination).run()
    except Stopped as stopped:
        stop = stopped
    finally:
        # Past the deadline, on a closed stdout or an error: what a child could still
        # write would reach no one.
        for child in children:
            if child.process.poll() is None:
                child.process.kill()
        statuses = {child.api: child.process.wait() for child in children}
        reports = {child.api: child.sent_reports() for child in children}
        os.close(alive_write)
    finished = Finished(statuses, reports, merger.state)
    if stop is not None:
        stop.finished = finished
        raise stop
    return finished


def spawn(python: Sequence[str], alive: int, inputs: Mapping[str, str], *, api: str,
          reports: int) -> subprocess.Popen:
    """A child tap running `api`'s streams, reading each of `inputs` (`--config`: its JSON)
    from a pipe, never a file, watching `alive` for its parent's death and sending its stream
    reports to `reports`."""
    pipes = {option: os.pipe() for option in inputs}
    command = [*python]
    for option, (read_end, _) in pipes.items():
        command += [option, f"/dev/fd/{read_end}"]
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE,
            pass_fds=(alive, reports, *(read_end for read_end, _ in pipes.values())),
            env={**os.environ, CHILD_ENV: str(alive), API_ENV: api, REPORT_ENV: str(reports)})
    except BaseException:
        for _, write_end in pipes.values():
            os.close(write_end)
        raise
    finally:
        for read_end, _ in pipes.values():
            os.close(read_end)
    for option, (_, write_end) in pipes.items():
        feed(write_end, inputs[option].encode())
    return process


def feed(fd: int, data: bytes) -> None:
    """Write `data` to the pipe `fd` and close it, in a thread: a pipe holds only 64 KiB
    until the child reads, and a child that dies first just ends the writing."""

    def write() -> None:
        with open(fd, "wb") as pipe, contextlib.suppress(BrokenPipeError):
            pipe.write(data)

    threads.start(threading.Thread(target=write, name="feed-child", daemon=True))


def watch_parent() -> None:
    """In a child: exit at once when the parent is gone (end of file on its pipe)."""
    fd = int(os.environ.get(CHILD_ENV) or -1)

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os._exit(1)  # the parent died: nobody reads the output any more

    if fd >= 0:
        threads.start(threading.Thread(target=watch, name="watch-parent", daemon=True))


def json_number(value: t.Any) -> float:
    """The SDK reads JSON numbers in config and state as Decimal: written back as numbers."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Copier:
    """Copies whole lines from every child to stdout as they come, STATE lines merged.

    Writing goes through `Output` (its own thread), so this loop never blocks on a target
    that stops reading: it waits in short steps, watching for a signal's deadline and for
    a failed stdout. Reading stops while a block waits to be written, so a slow target
    slows the children (their pipes fill) instead of filling memory.
    """

    #: Longest single wait, so a signal's deadline is noticed in time.
    STEP_SECONDS = 0.1
    #: Bytes collected before a hand-over waits for the previous one to be written.
    BLOCK_BYTES = 256 * 1024

    def __init__(self, children: list[Child], merger: StateMerger, output: Output,
                 termination: Termination) -> None:
        self.children = children
        self.merger = merger
        self.output = output
        self.termination = termination
        self.block = bytearray()
        #: Whether lines were copied since the last STATE.
        self.after_state = False

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        for child in self.children:
            selector.register(child.process.stdout, selectors.EVENT_READ, child)  # type: ignore[arg-type]
        while selector.get_map() and not self.check():
            for key, _ in selector.select(self.STEP_SECONDS):
                child = key.data
                data = os.read(key.fd, READ_BYTES)
                if not data:
                    # A line cut off by a dying child is not valid JSON: it is dropped.
                    selector.unregister(key.fileobj)
                    continue
                data = child.pending + data
                end = data.rfind(b"\n") + 1
                child.pending = data[end:]
                if write_lines(data[:end], child.api, self.merger, self.block):
                    self.after_state = True
                elif end:
                    self.after_state = False
            self.hand_over(wait=len(self.block) >= self.BLOCK_BYTES)
        if self.after_state:
            # A child stopped by the deadline (or failing) ended between two STATEs: the run
            # still ends on a resume point, the state of everything passed on.
            self.block += self.merger.line()
        self.hand_over(wait=True)
        self.finish(self.output.wait_written)
        if self.termination.signum is not None:
            raise Stopped(self.termination.signum, complete=not self.termination.expired())

    def check(self) -> bool:
        """Raise on a failed stdout; True once a signal's deadline passed."""
        if self.output.failed is not None:
            raise StdoutClosed(self.output.failed)
        return self.termination.expired()

    def hand_over(self, *, wait: bool) -> None:
        """Hand the block to `Output`: now if it is free, else (`wait`) once it is."""
        if not self.block:
            return
        if not self.output.wait_free(time.monotonic()) and not (
            wait and self.finish(self.output.wait_free)
        ):
            return
        block, self.block = self.block, self.output.spare
        self.output.spare = bytearray()
        self.output.put(block)

    def finish(self, wait: t.Callable[[float], bool]) -> bool:
        """`wait` in steps until it is done (True) or a signal's deadline passed (False)."""
        while not wait(min(time.monotonic() + self.STEP_SECONDS, self.termination.deadline)):
            if self.check():
                return False
        return True


def write_lines(data: bytes, api: str, merger: StateMerger, out: bytearray) -> bool:
    """Whole lines of one child appended to `out`: copied as they are, each STATE replaced by
    the merged one (right after the lines it covers). True if lines follow the last STATE."""
    position = 0
    while True:
        found = data.find(STATE_PREFIX, position)
        # Only at the start of a line (inside a JSON string the quotes would be escaped).
        while found > 0 and data[found - 1] != ord("\n"):
            found = data.find(STATE_PREFIX, found + 1)
        if found < 0:
            out += data[position:]
            return position < len(data)
        out += data[position:found]
        end = data.index(b"\n", found) + 1
        out += merger.merge(api, data[found:end])
        position = end


@contextlib.contextmanager
def forwarded_termination(children: list[Child], termination: Termination) -> t.Iterator[None]:
    """SIGTERM/SIGINT to the parent reach every child, which writes its final state and
    exits; the parent copies their output until they are done or `FINISH_SECONDS` passed."""

    def forward(signum: int, _frame: t.Any) -> None:
        if termination.signum is not None:
            return
        termination.signum = signum
        termination.deadline = time.monotonic() + FINISH_SECONDS
        end_after_signal_anyway(signum)
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
