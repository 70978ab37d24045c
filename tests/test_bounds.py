"""Every run ends, in bounded memory, whatever the server sends: trickling headers or bodies,
a replay that never closes, a slow poll in tail mode, pagination cycles, huge, endless and
compressed answers. The real `tap-events` process against a hostile server on 127.0.0.1.

Each hostile server is deterministic (it answers by request number, never by timing luck) and
each bound is derived from small configured timeouts with a wide margin: the assertions are on
outcomes (the one error line, the exit status, how many requests were sent, the records and
the bookmark, the peak RSS read from the kernel), and a case's time to end is reported.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import socketserver
import threading
import time
import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest

from tap_events_emulator import tap_config
from tests.support import Tap

#: Peak RSS (MB) of a run whose answers are capped at `max_response_mb: 10`: the
#: interpreter and the SDK take about 60-80 MB, a capped body a few times its cap at most.
PEAK_RSS_MB = 200
#: Seconds any case here may take: far above each case's own bound (given per case).
CASE_LIMIT_SECONDS = 60

Behaviour = t.Callable[[int, str, socket.socket], None]


class Hostile(socketserver.ThreadingTCPServer):
    """A raw HTTP server answering each request with `behaviour(number, target, socket)`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = t.cast("Hostile", self.server)
        reader = self.request.makefile("rb")
        with contextlib.suppress(OSError):
            while True:  # keep-alive: one request after another on this connection
                line = reader.readline()
                if not line:
                    return
                target = line.split()[1].decode()
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                with server.lock:
                    server.requests.append(target)
                    number = len(server.requests)
                server.behaviour(number, target, self.request)


@contextlib.contextmanager
def hostile(behaviour: Behaviour) -> t.Iterator[Hostile]:
    server = Hostile(behaviour)
    try:
        yield server
    finally:
        server.close()


def send_json(sock: socket.socket, body: t.Any) -> None:
    data = json.dumps(body).encode()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))


#: Seconds between the bytes of a trickle or the heartbeats of a stream that never ends: far
#: below the 2 s read timeouts here (40x), so a loaded machine does not trip them by starving
#: the server's thread.
EVERY = 0.05


def trickle(sock: socket.socket, head: bytes, every: float = EVERY) -> None:
    """`head`, then one byte every `every` seconds until the client goes away."""
    sock.sendall(head)
    while True:
        sock.sendall(b" ")
        time.sleep(every)


def flood(sock: socket.socket, head: bytes, piece: bytes, chunked: bool = False) -> None:
    """`head`, then `piece` again and again until the client goes away."""
    sock.sendall(head)
    framed = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    while True:
        sock.sendall(framed)


def run(config: dict, streams: list[str], case: str) -> Tap:
    tap = Tap(config, streams)
    started = time.monotonic()
    tap.wait(timeout=CASE_LIMIT_SECONDS)
    tap.report(case, started)
    return tap


def one_error(tap: Tap, stream: str) -> str:
    """The stream's one ERROR line (the run's summary may repeat it), and no traceback."""
    stderr = tap.ended_stderr or ""
    lines = [line for line in stderr.splitlines()
             if "| ERROR" in line and f"| tap-events.{stream} " in line]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def box(url: str, **settings: t.Any) -> dict:
    return {"box": {"api_url": url, "access_token": "hostile-box-token", "page_size": 2},
            **settings}


# ---------------------------------------------------------------- deadlines


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_trickling_under_the_read_timeout_is_cut_at_the_request_deadline(where):
    """One byte every 0.05 s never trips a 2 s read timeout; the total deadline (3 x 2 s) ends
    each try, and after `max_retries: 2` tries the run fails in one line naming it."""
    head = (b"HTTP/1.1 200 OK\r\nX-Slow: " if where == "headers" else
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n{\"entries\": []")
    with hostile(lambda _n, _target, sock: trickle(sock, head)) as server:
        tap = run(box(server.url, request_timeout_seconds=2, max_retries=2), ["box_events"],
                  f"slowloris in the {where}")
        requests = len(server.requests)
    assert tap.status == 1, tap.ended_stderr
    line = one_error(tap, "box_events")
    assert "box_events" in line and "request deadline" in line and "box.api_url" in line
    assert requests == 2  # each try was cut, then no more
    assert tap.peak_rss_mb < PEAK_RSS_MB


def test_an_sse_replay_sending_heartbeats_past_its_bound_ends():
    """Alpaca replays up to the run's start; a server still sending heartbeats then is cut
    (bound + 3 read timeouts), reconnected, and after `max_retries` cuts without a new event
    the stream fails in one line."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\n\r\n")

    def heartbeats(_n: int, _target: str, sock: socket.socket) -> None:
        sock.sendall(head)
        while True:
            sock.sendall(b": heartbeat\n\n")
            time.sleep(EVERY)

    with hostile(heartbeats) as server:
        config = {"alpaca": {**tap_config(server.url)["alpaca"], "api_url": server.url,
                             "idle_timeout_seconds": 2},
                  "request_timeout_seconds": 2, "max_retries": 2}
        tap = run(config, ["alpaca_trade_events"], "SSE heartbeats past until")
        requests = len(server.requests)
    assert tap.status == 1, tap.ended_stderr
    line = one_error(tap, "alpaca_trade_events")
    assert "alpaca_trade_events" in line and "cut short" in line, line
    assert "past the replay's bound" in line
    assert requests == 2
    assert tap.peak_rss_mb < PEAK_RSS_MB


def test_tail_mode_ends_at_its_deadline_while_a_poll_trickles():
    """`tail_seconds: 3`; the first tail poll of discue never completes (a byte every 0.05 s,
    under a 20 s read timeout whose request deadline is 60 s): the run still ends at the
    tail's deadline, with status 0 and the final STATE last."""
    def poll(number: int, _target: str, sock: socket.socket) -> None:
        if number == 1:
            send_json(sock, {"events": []})
        else:
            trickle(sock, b"HTTP/1.1 200 OK\r\nX-Slow: ")

    with hostile(poll) as server:
        config = {"discue": {"api_url": server.url, "api_key": "hostile-discue-key"},
                  "tail_seconds": 3, "tail_poll_seconds": 0.2, "request_timeout_seconds": 20}
        tap = Tap(config, ["discue_events"])
        tap.wait_for(lambda: "Tail mode:" in tap.stderr(), "the tail phase")
        tailing = time.monotonic()
        tap.wait(timeout=CASE_LIMIT_SECONDS)
        tap.report("tail with a slow poll", tailing)
        requests = len(server.requests)
    assert tap.status == 0, tap.ended_stderr
    assert any(message["type"] == "STATE" for message in tap.messages())
    assert requests == 2  # the catch-up read, then the poll cut by the tail's end
    # The tail's deadline (3 s) ended it, not the request deadline (60 s).
    assert tap.ended_at - tailing < 40
    assert tap.peak_rss_mb < PEAK_RSS_MB


# ---------------------------------------------------------------- cycles


def box_event(number: int) -> dict:
    return {"type": "event", "event_id": f"e{number}", "event_type": "ITEM_UPLOAD",
            "created_at": f"2026-01-01T00:00:{number:02d}-08:00"}


def socotra_event(number: int) -> dict:
    return {"locator": f"l{number}", "type": "policy.issue",
            "timestamp": f"2026-01-01T00:00:{number:02d}Z"}


def discue_event(number: int) -> dict:
    return {"id": f"d{number}", "stored_at": 1767225600000 + number, "type": "api.call"}


def query(target: str, name: str) -> str | None:
    return parse_qs(urlsplit(target).query).get(name, [None])[0]


# Box positions are strings of digits (the tap refuses to bookmark anything else).
def box_a_b_a(_n: int, target: str, sock: socket.socket) -> None:
    pages = {"1001": ([3], "1002"), "1002": ([4], "1001")}
    numbers, following = pages.get(query(target, "stream_position") or "", ([1, 2], "1001"))
    send_json(sock, {"entries": [box_event(n) for n in numbers], "chunk_size": len(numbers),
                     "next_stream_position": following})


def box_ever_new(number: int, _target: str, sock: socket.socket) -> None:
    send_json(sock, {"entries": [box_event(1), box_event(2)], "chunk_size": 2,
                     "next_stream_position": f"{5000 + number}"})


def socotra_a_b_a(_n: int, target: str, sock: socket.socket) -> None:
    pages = {"A": ([3], "B"), "B": ([4], "A")}
    numbers, following = pages.get(query(target, "pagingToken") or "", ([1, 2], "A"))
    send_json(sock, {"events": [socotra_event(n) for n in numbers], "pagingToken": following})


def discue_same_page(_n: int, _target: str, sock: socket.socket) -> None:
    send_json(sock, {"events": [discue_event(n) for n in (1, 2, 3)]})


def socotra(url: str) -> dict:
    settings = tap_config(url)["socotra"]
    return {"socotra": {**settings, "api_url": url,
                        "tenant_locators": settings["tenant_locators"][:1]}}


CYCLES = {
    "box positions A-B-A": (box_a_b_a, box, "box_events", "event_id",
                            ["e1", "e2", "e3", "e4"], "'1001'", 3),
    "box ever-new positions": (box_ever_new, box, "box_events", "event_id",
                               ["e1", "e2"], "'5003'", 4),
    "socotra tokens A-B-A": (socotra_a_b_a, socotra, "socotra_events", "locator",
                             ["l1", "l2", "l3", "l4"], "'A'", 3),
    "discue ignoring the keyset": (
        discue_same_page, lambda url: {"discue": {"api_url": url, "api_key": "k"}},
        "discue_events", "id", ["d1", "d2", "d3"], "(1767225600003, 'd3')", 2),
}


@pytest.mark.parametrize("shape", CYCLES)
def test_a_pagination_cycle_stops_the_stream_in_one_line(shape):
    """Each shape stops after a few requests: one line naming the stream and the cursor,
    status 1, no event emitted twice beyond the one page an at-least-once API may resend,
    and a bookmark no further than the last event emitted."""
    behaviour, settings, stream, key, ids, cursor, expected_requests = CYCLES[shape]
    with hostile(behaviour) as server:
        tap = run(settings(server.url), [stream], shape)
        requests = len(server.requests)
    assert tap.status == 1, tap.ended_stderr
    line = one_error(tap, stream)
    assert stream in line and "pagination cycle" in line and cursor in line, line
    assert requests == expected_requests
    records = [m["record"] for m in tap.messages() if m["type"] == "RECORD"]
    assert [record[key] for record in records] == ids
    states = [m["value"] for m in tap.messages() if m["type"] == "STATE"]
    assert states and json.dumps(states[-1]).count(stream) >= 1
    assert tap.peak_rss_mb < PEAK_RSS_MB


# ---------------------------------------------------------------- size caps


def gzip_bomb() -> bytes:
    """~2 MB of gzip inflating to 2 GB: one 16 MB member of zeros, 128 times."""
    member = gzip.compress(bytes(16 * 2**20), compresslevel=9)
    return member * 128


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
SIZES = {
    "500 MB body": lambda sock: flood(
        sock, JSON_HEAD + b"Content-Length: %d\r\n\r\n[" % (500 * 2**20), b" " * 2**16),
    "endless chunked body": lambda sock: flood(
        sock, JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b" " * 2**16, chunked=True),
}


@pytest.mark.parametrize("shape", [*SIZES, "gzip bomb"])
def test_an_answer_larger_than_max_response_mb_fails_in_one_line(shape):
    """Past `max_response_mb` (decoded) the request fails at once, not retried, naming the
    setting; the process never holds much more than the cap."""
    if shape == "gzip bomb":
        bomb = gzip_bomb()
        assert len(bomb) < 3 * 2**20

        def send(sock: socket.socket) -> None:
            sock.sendall(JSON_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                         % len(bomb))
            sock.sendall(bomb)
    else:
        send = SIZES[shape]
    with hostile(lambda _n, _target, sock: send(sock)) as server:
        tap = run(box(server.url, max_response_mb=10), ["box_events"], shape)
        requests = len(server.requests)
    assert tap.status == 1, tap.ended_stderr
    line = one_error(tap, "box_events")
    assert "box_events" in line and "max_response_mb=10" in line, line
    assert requests == 1
    assert tap.peak_rss_mb < PEAK_RSS_MB
