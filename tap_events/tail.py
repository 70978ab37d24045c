"""Tail mode: after every stream has caught up, keep listening for new events, within a budget.

A tail run is still a bounded run (`meltano run` expects the tap to end by itself): once the
normal sync of every stream is done, each selected stream listens for new events in its own
thread until one deadline shared by the whole run (`tail_seconds` after the tail phase
starts), then the run ends with its final STATE as usual. How a stream listens is its API
module's business (`EventStream.tail_records`): Box long-polls, Alpaca keeps its SSE stream
open, the others sync again (their normal incremental request) every `tail_poll_seconds`.

Threads without a thread-safe SDK: every listening stream runs the SDK's own `sync()` again
(records, bookmarks and STATE go through the SDK exactly as in a batch run), but only one
stream at a time may run SDK code. A stream holds the run's lock all the time except while it
waits for its API (`TailRun.waiting`: a request, a long poll, the next chunk of a stream, the
pause between polls), so streams overlap only in waiting, which touches nothing shared.
Before letting go, a stream flushes stdout, so what it wrote reaches the target at once.

The main thread only watches the clock: every `tail_state_seconds` it takes the lock and
writes STATE (so a target commits, and a killed process loses nothing), and on SIGTERM it
takes the lock, stops the listeners and lets the SDK write the final STATE and exit 0.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import typing as t

from singer_sdk import typing as th

from tap_events import threads
from tap_events.config import number
from tap_events.sdk_internals import restart_from_bookmark

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    import requests
    from singer_sdk.helpers.types import Context


class ListeningStream(t.Protocol):
    """What the tail asks of a stream (`client.EventStream`), named here so this module and
    the stream base need not import each other."""

    name: str
    tail: TailRun | None

    def sync(self, context: Context | None = None) -> None: ...

    def finalize_state_progress_markers(self, state: dict | None = None) -> None: ...

    def checkpoint(self) -> None: ...

    def request_records(self, context: Context | None) -> t.Iterable[dict]: ...

    @property
    def http(self) -> t.Any: ...


class Listener(t.Protocol):
    """What the tail asks of the tap (`tap.TapEvents`)."""

    tail_run: TailRun | None
    message_writer: t.Any

    @property
    def config(self) -> Mapping[str, t.Any]: ...

    @property
    def logger(self) -> t.Any: ...

    @property
    def failures(self) -> dict[str, str]: ...

    def listening_streams(self) -> t.Sequence[ListeningStream]: ...

SETTINGS = (
    th.Property(
        "tail_seconds", th.NumberType(minimum=0), default=0,
        description="Tail mode: after every stream has caught up, keep listening for new "
        "events for this many seconds, then end normally with the final state (0 = off). "
        "Box user events long-poll, Alpaca streams stay connected, other streams poll.",
    ),
    th.Property(
        "tail_poll_seconds", number(minimum=0.1, maximum=86400), default=30,
        description="Tail mode: how often streams without a push channel repeat their "
        "incremental request.",
    ),
    th.Property(
        "tail_state_seconds", number(minimum=0.1, maximum=3600), default=10,
        description="Tail mode: longest time between two STATE messages while listening.",
    ),
)

#: How long SIGTERM waits for a stream to finish what it is computing before the final STATE
#: (a stream that tries to write after the signal is stopped by the writer, lock in hand).
STOP_WAIT_SECONDS = 0.5
#: Shortest read timeout handed to a request near the deadline (0 would mean "no timeout").
MIN_TIMEOUT_SECONDS = 0.05


class TailRun:
    """The tail phase of one run: its deadline, its lock and its pacing settings."""

    def __init__(self, seconds: float, poll_seconds: float, state_seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.poll_seconds = poll_seconds
        self.state_seconds = state_seconds
        self.lock = threading.Lock()
        #: The thread holding `lock`: only that thread lets go of it in `waiting`.
        self.holder: int | None = None
        self.stopping = threading.Event()
        #: Sends what the streams wrote so far to stdout (the tap's writer keeps RECORD lines
        #: in a block until a STATE; in the tail each event must go out as it arrives).
        self.flush: t.Callable[[], None] = sys.stdout.flush

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> TailRun | None:
        seconds = float(config.get("tail_seconds") or 0)
        if seconds <= 0:
            return None
        return cls(seconds, float(config.get("tail_poll_seconds", 30)),
                   float(config.get("tail_state_seconds", 10)))

    # ----------------------------------------------------------------- time

    @property
    def over(self) -> bool:
        return self.stopping.is_set() or time.monotonic() >= self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def read_timeout(self, seconds: float) -> float:
        """A read timeout that never outlasts the budget: a silent socket ends on time."""
        return max(MIN_TIMEOUT_SECONDS, min(seconds, self.remaining()))

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` (less if the budget ends first); False once it has ended."""
        with self.waiting():
            self.stopping.wait(min(seconds, self.remaining()))
        return not self.over

    # ----------------------------------------------------------------- the lock

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Run SDK code (records, bookmarks, STATE) with no other stream doing the same."""
        self.lock.acquire()
        self.holder = threading.get_ident()
        try:
            yield
        finally:
            self.holder = None
            self.lock.release()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Let other streams write while this one waits for its API.

        A no-op in threads that do not hold the lock (a stream's prefetch worker).
        """
        if self.holder != threading.get_ident():
            yield
            return
        # What this stream wrote goes out before it waits: that is the tail's latency.
        self.flush()
        self.holder = None
        self.lock.release()
        try:
            yield
        finally:
            self.lock.acquire()
            self.holder = threading.get_ident()

    def unlocked(self, func: Callable[..., t.Any]) -> Callable[..., t.Any]:
        """`func` (a request, with its retries and back-off) run while waiting."""

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            with self.waiting():
                return func(*args, **kwargs)

        return call

    def body_chunks(self, response: requests.Response, chunks: Iterator[bytes],
                    idle_seconds: float) -> Iterator[bytes]:
        """The chunks of a streamed response, each read while waiting, none past the deadline.

        Before each read the socket's timeout is cut to the time left: a read timeout alone
        is reset by every byte (a heartbeat), so it would not end the stream on time.
        """
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        while not self.over:
            if sock is not None:
                sock.settimeout(self.read_timeout(idle_seconds))
            with self.waiting():
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    # ----------------------------------------------------------------- streams

    @staticmethod
    def read_new(stream: ListeningStream, context: Context | None) -> Iterator[dict]:
        """The stream's normal incremental request, from what it has emitted so far (for
        streams that read more than once within one sync, like Box on each `new_change`)."""
        restart_from_bookmark(stream, context)  # type: ignore[arg-type]
        yield from stream.request_records(context)

    def follow(self, stream: ListeningStream, failures: Mapping[str, str]) -> None:
        """One listening stream's thread: the SDK's sync, its records from `tail_records`.

        A stream with a push channel listens within one sync until the deadline. The others
        read once per sync (every partition, from its bookmark, as in a batch run), so they
        sync again every `tail_poll_seconds` until the deadline. A stream that fails stops
        listening: `EventStream.sync` has reported it, and the run will end non-zero.
        """
        with self.holding():
            stream.tail = self
            try:
                while stream.name not in failures:
                    stream.sync()
                    stream.finalize_state_progress_markers()
                    if not self.sleep(self.poll_seconds):
                        return
            finally:
                stream.tail = None

    def checkpoint(self, streams: Iterable[ListeningStream]) -> None:
        """STATE now, for whatever the streams emitted since the last one."""
        with self.holding():
            for stream in streams:
                stream.checkpoint()

    def stop(self) -> None:
        """SIGTERM: no stream writes again; the caller then writes the final STATE.

        The lock is taken and kept, so a stream that was updating its bookmark finishes first
        and none starts again. Streams only hold it while they compute, so it comes quickly;
        should it not (a stream stopped by the closed writer keeps it), the final STATE is
        written anyway: such a stream is not touching the state.
        """
        self.stopping.set()
        if self.holder != threading.get_ident():
            self.lock.acquire(timeout=STOP_WAIT_SECONDS)


def listen(tap: Listener) -> None:
    """The tail phase of a run: every stream that synced listens until the deadline.

    Does nothing unless `tail_seconds` is set. Streams that failed, were deselected or
    belong to an API without credentials do not listen.
    """
    run = TailRun.from_config(tap.config)
    if run is None:
        return
    streams = [stream for stream in tap.listening_streams()
               if stream.name not in tap.failures]
    if not streams:
        return
    tap.logger.info(
        "Tail mode: %d stream(s) listening for new events for %g s",
        len(streams), run.remaining(),
    )
    tap.tail_run = run
    for stream in streams:
        # No request outlives the tail, whatever it is doing (a slow poll, a trickle).
        stream.http.ends_at = run.deadline
    run.flush = getattr(tap.message_writer, "flush", sys.stdout.flush)
    followers = [
        threading.Thread(target=run.follow, args=(stream, tap.failures),
                         name=f"tail-{stream.name}",
                         daemon=True)  # daemon: SIGTERM must not wait for a blocked read
        for stream in streams
    ]
    for thread in followers:
        threads.start(thread)
    next_state = time.monotonic() + run.state_seconds
    for thread in followers:
        while thread.is_alive():
            thread.join(timeout=max(0.0, next_state - time.monotonic()))
            if time.monotonic() >= next_state:
                run.checkpoint(streams)
                next_state = time.monotonic() + run.state_seconds
    tap.tail_run = None
    run.checkpoint(streams)
