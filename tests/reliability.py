"""What the reliability tests share: a config for one emulated API, and exactly-once checks.

Every helper is generic over `EMULATED_APIS`, so an API added there (and to `tap_config`) is
covered by the fault matrix, the kill test, the fuzz test and the secret test without edits.
"""

from __future__ import annotations

import typing as t

from tap_events.sources import SOURCES
from tap_events_emulator import EMULATED_APIS, tap_config

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer
    from tests.support import TapRun

#: Every emulated API, by name (the name of its tap settings too).
APIS = sorted(EMULATED_APIS)
SOURCE_BY_NAME = {source.name: source for source in SOURCES}

#: APIs whose read timeout is a setting of their own: Alpaca's answers are event streams that
#: pause between heartbeats, so its read timeout is `alpaca.idle_timeout_seconds`.
OWN_READ_TIMEOUT = {"alpaca": "idle_timeout_seconds"}


def one_api_config(server_url: str, api: str, *, settings: t.Mapping[str, t.Any] = (),
                   **top: t.Any) -> dict[str, t.Any]:
    """A tap config with only `api` configured (the others are skipped), plus `settings`
    under the API's key and `top` at the top level."""
    config = tap_config(server_url)
    return {api: {**config[api], **dict(settings)}, **top}


def small_pages(api: str) -> dict[str, int]:
    """`page_size` small enough for many pages, for the APIs that have the setting."""
    return {"page_size": 50} if "page_size" in SOURCE_BY_NAME[api].defaults else {}


def read_timeout(api: str, seconds: float) -> tuple[dict, dict]:
    """(API settings, top-level settings) making this API's reads time out after `seconds`."""
    own = OWN_READ_TIMEOUT.get(api)
    return ({own: seconds} if own else {}), {"request_timeout_seconds": seconds}


def event_keys(run: TapRun, stream: str) -> list[tuple]:
    """The primary key of every record of `stream`, as its SCHEMA message names it."""
    keys = next((m["key_properties"] for m in run.messages
                 if m["type"] == "SCHEMA" and m["stream"] == stream), None)
    if keys is None:  # the stream had not started
        return []
    return [tuple(record[key] for key in keys) for record in run.records(stream)]


def expected_counts(emulator: EmulatorServer, api: str) -> dict[str, int]:
    return emulator.app.apis[api].stream_counts()


def assert_every_event_once(run: TapRun, emulator: EmulatorServer, api: str) -> None:
    for stream, count in expected_counts(emulator, api).items():
        keys = event_keys(run, stream)
        assert len(keys) == len(set(keys)), f"{stream} emitted an event twice"
        assert len(keys) == count, f"{stream}: {len(keys)} events emitted, {count} exist"
