"""Bookmarks never lie: late, odd or hostile data, state and tokens (issue 15).

Every test runs the real `tap-events` CLI over real sockets against the emulator (faults of
its own) and checks what a user relies on: which events came out, the bookmark, the exit
status and the one line that explains a failure.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from tests.hostile import Answer, HostileServer, Seen
from tests.reliability import one_api_config
from tests.support import log_lines, run_tap

# ------------------------------------------------------------------------------ Retry-After


def without_signpost(bookmark: dict) -> dict:
    """A bookmark minus the SDK's `replication_key_signpost` (the run's start, not a cursor)."""
    return {key: value for key, value in bookmark.items() if key != "replication_key_signpost"}


def discue_page(events: list[dict]) -> Answer:
    return Answer.json({"events": events})


def test_retry_after_date_is_read_against_the_servers_date_header():
    """A server whose clock runs an hour ahead asks for 1 s as an HTTP date: 1 s it is.

    Read against this machine's clock it would be 3,601 s, past max_retry_wait_seconds.
    """
    events = [{"id": f"ev{n}", "type": "queue_created", "stored_at": 1764000000000 + n}
              for n in range(3)]

    def answer(seen: Seen) -> Answer:
        if len(server.seen) == 1:
            ahead = time.time() + 3600
            return Answer.json({"title": "Service Unavailable", "status": 503}, 503,
                               Date=email.utils.formatdate(ahead, usegmt=True),
                               **{"Retry-After": email.utils.formatdate(ahead + 1, usegmt=True)})
        after = seen.query.get("startAfter")
        return discue_page([] if after else events)

    server = HostileServer(answer)
    try:
        run = run_tap({"discue": {"api_url": server.url, "api_key": "k"},
                       "max_retry_wait_seconds": 30})
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert run.ids("discue_events", "id") == ["ev0", "ev1", "ev2"]
    assert any("retry 1 in 1." in line or "retry 1 in 0." in line
               for line in log_lines(run, "WARNING")), run.stderr


# ------------------------------------------------------------------------------ malformed 200s

#: One incremental stream per API, and a 200 answer a gateway might send instead of a page.
ENVELOPE_CASES = [
    ("box", "box_events"),
    ("socotra", "socotra_events"),
    ("discue", "discue_events"),
    ("alpaca", "alpaca_trade_events"),
]


@pytest.mark.parametrize(("api", "stream"), ENVELOPE_CASES)
def test_a_200_without_the_envelope_is_never_caught_up(emulator, api, stream):
    """A JSON error with status 200: retried, then one line; the bookmark does not move
    (for Box, neither does its time: the retention guard stays armed)."""
    config = one_api_config(emulator.url, api, max_retries=2)
    first = run_tap(config, streams=[stream])
    assert first.returncode == 0, first.stderr
    emulator.add_events(api, 5)
    emulator.inject(api, "status", path=emulator.app.apis[api].fault_path, status=200,
                    times=1000, body={"message": "Service temporarily unavailable"})
    second = run_tap(config, state=first.final_state, streams=[stream])
    assert second.returncode == 1, second.stderr
    assert second.records(stream) == []
    errors = log_lines(second, "ERROR")
    assert any(f"stream '{stream}'" in line and "not a page of events" in line
               for line in errors), second.stderr
    assert without_signpost(second.bookmark(stream)) == without_signpost(first.bookmark(stream))


def test_one_malformed_200_is_retried_and_the_run_completes(emulator):
    config = one_api_config(emulator.url, "box")
    first = run_tap(config, streams=["box_events"])
    emulator.add_events("box", 5, feed="user")
    emulator.inject("box", "status", path="/2.0/events", status=200, times=1,
                    body="<html><body>Gateway</body></html>")
    second = run_tap(config, state=first.final_state, streams=["box_events"])
    assert second.returncode == 0, second.stderr
    assert len(set(second.ids("box_events")) - set(first.ids("box_events"))) == 5
    assert any("not a page of events" in line for line in log_lines(second, "WARNING"))
