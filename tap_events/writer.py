"""How Singer messages reach stdout, and how a run ends whatever stdout does.

One thread, `Output`, owns stdout: every byte the tap writes is handed to it in blocks. The
threads that extract never block in a write themselves, so a signal always finds them
somewhere it can act on (a request, a wait, a hand-over), and `Output` always knows exactly
which bytes reached stdout; that is what lets the end of a run be bounded:

- SIGTERM/SIGINT (`BufferedRecordWriter.finish`): nothing more is accepted from any thread,
  what is held is handed over with the final STATE after it, and the process ends once stdout
  took it, or after `FINISH_SECONDS` if the target does not read (then without the STATE);
- a closed stdout (the target exited, `| head`): one line on stderr and the process ends at
  once, as nothing it could still do would reach anyone.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import logging
import os
import signal
import sys
import threading
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder
from singer_sdk.singerlib import Message, RecordMessage

from tap_events import threads

#: Status of a run whose stdout was closed by its reader.
STDOUT_CLOSED_STATUS = 1

logger = logging.getLogger("tap-events")


def stdout_error_text(error: OSError) -> str:
    """One line for a failed write to stdout."""
    if error.errno == errno.EPIPE:
        return "stdout was closed (the target stopped reading): the run ends here"
    return f"writing to stdout failed ({error.strerror or error}): the run ends here"


#: However the end of a signalled run goes, the process is gone this long after the signal:
#: twice the 5 s it is documented to take, so a normal end on a loaded machine is never cut.
SIGNAL_BACKSTOP_SECONDS = 10.0


def end_after_signal_anyway(signum: int, seconds: float = SIGNAL_BACKSTOP_SECONDS) -> None:
    """Started when a signal asks the run to end: should the end not come within `seconds`
    (a wait nobody foresaw), one line on stderr and the process ends with 128 + the signal.
    The line is written to the file descriptor itself: a logging lock may be what is stuck."""
    name = signal.Signals(signum).name

    def backstop() -> None:
        time.sleep(seconds)
        with contextlib.suppress(OSError):
            os.write(2, f"{name}: the run did not end within {seconds:g} s of the signal; "
                        "ending it now, the target keeps the last state it received\n".encode())
        os._exit(128 + signum)

    threads.start(threading.Thread(target=backstop, name="signal-backstop", daemon=True))


def end_process(status: int) -> t.NoReturn:
    """End now, without Python's shutdown (which would wait for threads in requests and
    flush a stdout that may be closed or blocked). stderr is flushed first."""
    for handler in [*logging.getLogger().handlers, *logger.handlers]:
        with contextlib.suppress(Exception):  # ending anyway
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(status)


class Output:
    """stdout, written by a thread of its own, one block at a time.

    `deliver` hands over a block (waiting while the previous one is still being written, which
    bounds memory to two blocks); `wait_written` waits until stdout took everything sent.
    Both take a deadline, and call `poll` about every `POLL_SECONDS` while they wait (a
    signal handler that had to defer its work gets its turn there). When stdout fails
    (closed by its reader), `on_error` is called in the writing thread; nothing is written
    after that.
    """

    POLL_SECONDS = 0.1

    def __init__(self, stream: t.BinaryIO, on_error: t.Callable[[OSError], None] = lambda _: None,
                 changed: threading.Condition | None = None,
                 poll: t.Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.on_error = on_error
        self.poll = poll
        # Shared with the owner when it guards its own data with the same lock.
        self.changed = changed or threading.Condition(threading.RLock())
        #: The block handed over and not written yet.
        self._outgoing: bytearray | None = None
        #: A written block, emptied, for the next hand-over (no allocation per block).
        self.spare = bytearray()
        self._sent = 0
        self._written = 0
        self.failed: OSError | None = None
        self._thread: threading.Thread | None = None

    def deliver(self, block: bytearray, deadline: float | None = None) -> bool:
        """Hand `block` over once the previous one is written; False if the deadline passed
        first or stdout failed. The caller must not touch `block` afterwards."""
        with self.changed:
            if not self.wait_free(deadline):
                return False
            self.put(block)
            return True

    def wait_free(self, deadline: float | None = None) -> bool:
        """Wait until a block can be handed over without waiting."""
        with self.changed:
            return self._wait(lambda: self._outgoing is None, deadline)

    def put(self, block: bytearray) -> None:
        """Hand `block` over; only right after `wait_free` said the slot is free."""
        with self.changed:
            if self._thread is None:
                self._thread = threads.start(threading.Thread(
                    target=self._write_blocks, name="stdout", daemon=True))
            self._outgoing = block
            self._sent += 1
            self.changed.notify_all()

    def wait_written(self, deadline: float | None = None) -> bool:
        """Wait until every block sent so far is on stdout; False if not by the deadline."""
        with self.changed:
            sent = self._sent
            return self._wait(lambda: self._written >= sent, deadline)

    def _wait(self, done: t.Callable[[], bool], deadline: float | None) -> bool:
        while not done():
            if self.failed is not None:
                return False
            wait = self.POLL_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait = min(wait, remaining)
            self.changed.wait(wait)
            self.poll()
        return self.failed is None

    def _write_blocks(self) -> None:
        while True:
            with self.changed:
                while self._outgoing is None:
                    self.changed.wait()
                block = self._outgoing
            try:
                write_all(self.stream, block)
            except OSError as error:
                with self.changed:
                    self.failed = error
                    self.changed.notify_all()
                self.on_error(error)
                return
            block.clear()
            with self.changed:
                self.spare = block
                self._outgoing = None
                self._written += 1
                self.changed.notify_all()


class BufferedRecordWriter(MsgSpecWriter):
    """msgspec encoding; RECORD lines written to stdout in blocks, every other message at once.

    The SDK's writers write and flush stdout for each message: one system call per record,
    and with `PYTHONUNBUFFERED=1` (set in many container images, and by some schedulers)
    `sys.stdout.buffer` is not even buffered. Here RECORD lines collect in a block that is
    handed to `Output` once it reaches `BLOCK_BYTES`; a STATE (or SCHEMA, ...) goes out
    together with every record before it, and the call returns once stdout took it. A target
    therefore never sees a bookmark ahead of its rows, and a killed process loses only
    records no STATE had covered yet.
    """

    #: RECORD bytes held before they are handed over.
    BLOCK_BYTES = 256 * 1024
    #: How long the final STATE may wait for a target that does not read, after a signal.
    FINISH_SECONDS = 2.5

    def __init__(self) -> None:
        super().__init__()
        self._block = bytearray()
        # Streams writing from several threads take turns (the SDK's msgspec encoder reuses
        # one module-level buffer, and a block is shared). Re-entrant: a signal handler runs
        # on the main thread, possibly while it holds the lock (see `finish`).
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._output: Output | None = None
        #: Set by `finish`: nothing more is written, by any thread.
        self._closed = False
        #: What a signal asked while this thread was inside the lock: `(what to call)`.
        self._deferred: t.Callable[[], None] | None = None
        atexit.register(self.flush)

    # ----------------------------------------------------------------- writing

    def write_message(self, message: Message) -> None:
        with self._lock:
            self._park_if_closed()
            self._block += self.format_message(message)
            if not isinstance(message, RecordMessage):
                self._hand_over(wait=True)
            elif len(self._block) >= self.BLOCK_BYTES:
                self._hand_over(wait=False)
        self._run_deferred()

    def write_record(
        self, stream: str, record: dict, version: int | None, time_extracted: datetime.datetime
    ) -> None:
        """A RECORD line, encoded straight into the block: the same JSON the SDK's
        `RecordMessage.to_dict()` gives, without building a message object per record."""
        line: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": record}
        if version is not None:
            line["version"] = version
        line["time_extracted"] = time_extracted
        with self._lock:
            self._park_if_closed()
            encoder.encode_into(line, self._block, -1)
            self._block += b"\n"
            if len(self._block) >= self.BLOCK_BYTES:
                self._hand_over(wait=False)
        if self._deferred is not None:
            self._run_deferred()

    def flush(self) -> None:
        """Write out what is held and wait until stdout took it (at exit: records after the
        last STATE; while tailing: each event as it comes)."""
        with self._lock:
            if self._closed:
                return
            self._hand_over(wait=True)
        self._run_deferred()

    @property
    def output(self) -> Output:
        if self._output is None:
            # Anything printed before the first message goes first.
            sys.stdout.flush()
            # The file itself, unbuffered, so `Output` knows exactly what was written; a
            # stdout without a file (tests capturing it) is written as it is.
            stream = sys.stdout.buffer
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115
            self._output = Output(stream, self._stdout_failed, self._changed, self._run_deferred)
        return self._output

    def _hand_over(self, *, wait: bool) -> None:
        """Hand the block to `Output` (held lock); with `wait`, until stdout took it."""
        if self._block:
            output = self.output
            # The block stays ours until it is handed over: a signal in the wait finds it.
            output.wait_free()
            self._park_if_closed()
            block, self._block = self._block, output.spare
            output.spare = bytearray()
            output.put(block)
            if wait:
                output.wait_written()
        if self._output is not None and self._output.failed is not None:
            self._park()

    def _park_if_closed(self) -> None:
        if self._closed:
            self._park()

    def _park(self) -> t.NoReturn:
        """Stop this thread for good (the process is ending): returning would let it count
        records into the bookmark that will never be written. The lock is let go."""
        while True:
            self._changed.wait()

    @staticmethod
    def _stdout_failed(error: OSError) -> None:
        logger.error("%s", stdout_error_text(error))
        end_process(STDOUT_CLOSED_STATUS)

    # ----------------------------------------------------------------- the end of a run

    def finish(self, final_state: t.Callable[[], Message], seconds: float | None = None) -> bool:
        """Write what is held, then `final_state()`, and nothing after; True once stdout took
        them, False if it did not within `seconds` (default `FINISH_SECONDS`).

        Called by a signal handler, which runs on the main thread wherever it was; when that
        thread was inside the lock (half-way through a line) the handler must `defer` this
        instead (see `inside`). Other threads that try to write from here on are stopped
        before they write.
        """
        deadline = time.monotonic() + (self.FINISH_SECONDS if seconds is None else seconds)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            self._closed = True
            # Threads parked by `_closed` let go of the lock; one that was waiting for
            # stdout is woken to park.
            self._changed.notify_all()
            state = encoder.encode(final_state().to_dict()) + b"\n"
            self._block += state
            output = self.output
            block, self._block = self._block, bytearray()
            return output.deliver(block, deadline) and output.wait_written(deadline)
        finally:
            self._lock.release()

    def inside(self) -> bool:
        """Whether the calling thread is half-way through a write (holds the lock)."""
        return self._lock._is_owned()  # type: ignore[attr-defined]  # RLock, as Condition uses

    def defer(self, action: t.Callable[[], None]) -> None:
        """Run `action` as soon as the calling thread is at a point where the block is
        whole: when it leaves the lock, or while it waits for stdout."""
        self._deferred = action

    def _run_deferred(self) -> None:
        action = self._deferred
        if action is not None:
            self._deferred = None
            action()


def write_all(out: t.BinaryIO, data: bytearray) -> None:
    """Write every byte: a raw file may take a block in parts."""
    with memoryview(data) as view:
        while view:
            view = view[out.write(view) or 0 :]
