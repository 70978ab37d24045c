"""The reference: the least code that reads an API and prints Singer RECORD lines.

`python benchmarks/bare_loops.py API CONFIG.json` reads every event of API's main stream with
`requests` + `orjson` and writes one RECORD line per event to stdout, as a tap would. The
harness runs it beside `tap-events` against the same emulator to get a speed ratio.
"""

from __future__ import annotations

import datetime
import json
import sys
import typing as t
from dataclasses import dataclass

import orjson
import requests

RECORD_PREFIX = b'{"type":"RECORD","stream":"%s","record":'


def box(config: dict, out: t.BinaryIO) -> int:
    settings = config["box"]
    session = requests.Session()
    token = settings.get("access_token") or requests.post(settings["token_url"], timeout=60, data={
        "grant_type": "client_credentials", "client_id": settings["client_id"],
        "client_secret": settings["client_secret"], "box_subject_type": "enterprise",
    }).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    prefix = RECORD_PREFIX % b"box_events"
    position, count = "0", 0
    while True:
        response = session.get(f"{settings['api_url']}/events", timeout=60, params={
            "stream_type": "all", "limit": 500, "stream_position": position})
        response.raise_for_status()
        page = orjson.loads(response.content)
        entries = page["entries"]
        if not entries:
            return count
        following = str(page["next_stream_position"])
        for event in entries:
            event["stream_position"] = following
            out.write(prefix + orjson.dumps(event) + b"}\n")
        count += len(entries)
        position = following


def alpaca(config: dict, out: t.BinaryIO) -> int:
    """One SSE replay of the trade events, `since` the epoch `until` now."""
    settings = config["alpaca"]
    prefix = RECORD_PREFIX % b"alpaca_trade_events"
    until = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = requests.get(
        f"{settings['api_url']}/v2/events/trades", stream=True, timeout=60,
        auth=(settings["api_key"], settings["api_secret"]),
        params={"since": "1970-01-01T00:00:00Z", "until": until})
    response.raise_for_status()
    newest, count, pending = "", 0, b""
    for chunk in response.iter_content(chunk_size=16 * 1024):
        *frames, pending = (pending + chunk).split(b"\n\n")
        for frame in frames:
            if not frame.startswith(b"data:"):
                continue  # a comment (heartbeat)
            event = orjson.loads(frame[5:])
            newest = max(newest, event["event_id"])
            event["max_event_ulid"] = newest
            out.write(prefix + orjson.dumps(event) + b"}\n")
            count += 1
    return count


def discue(config: dict, out: t.BinaryIO) -> int:
    """Keyset pages: `startAfter` + `startAfterId` of the last event read."""
    settings = config["discue"]
    session = requests.Session()
    session.headers["X-API-KEY"] = settings["api_key"]
    prefix = RECORD_PREFIX % b"discue_events"
    params: dict[str, t.Any] = {"events": "all", "limit": settings.get("page_size", 100)}
    count = 0
    while True:
        response = session.get(f"{settings['api_url']}/events", params=params, timeout=60)
        response.raise_for_status()
        events = orjson.loads(response.content)["events"]
        if not events:
            return count
        for event in events:
            stored_at = event["stored_at"]
            event["cursor"] = f"{stored_at:013d}:{event['id']}"
            event["stored_at_datetime"] = datetime.datetime.fromtimestamp(
                stored_at / 1000, datetime.UTC).isoformat(timespec="milliseconds")
            out.write(prefix + orjson.dumps(event) + b"}\n")
        count += len(events)
        params["startAfter"], params["startAfterId"] = events[-1]["stored_at"], events[-1]["id"]


def socotra(config: dict, out: t.BinaryIO) -> int:
    """Each tenant's event list: filters on the first page, then `pagingToken` alone."""
    settings = config["socotra"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {settings['token']}"
    prefix = RECORD_PREFIX % b"socotra_events"
    end = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=60)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    count = 0
    for tenant in settings["tenant_locators"]:
        params: dict[str, t.Any] = {"endTimestamp": end, "pageSize": settings.get("page_size", 100)}
        while True:
            response = session.get(f"{settings['api_url']}/event/{tenant}/events/list",
                                   params=params, timeout=60)
            response.raise_for_status()
            page = orjson.loads(response.content)
            if not page["events"]:
                break
            for event in page["events"]:
                event["tenant_locator"] = tenant
                out.write(prefix + orjson.dumps(event) + b"}\n")
            count += len(page["events"])
            params = {"pagingToken": page["pagingToken"]}
    return count


@dataclass(frozen=True)
class BareLoop:
    #: The tap stream the loop reads the same events as.
    stream: str
    read: t.Callable[[dict, t.BinaryIO], int]


LOOPS: dict[str, BareLoop] = {
    "box": BareLoop("box_events", box),
    "alpaca": BareLoop("alpaca_trade_events", alpaca),
    "discue": BareLoop("discue_events", discue),
    "socotra": BareLoop("socotra_events", socotra),
}

if __name__ == "__main__":
    api, config_path = sys.argv[1], sys.argv[2]
    # Buffered whatever PYTHONUNBUFFERED says, as the tap's writer is.
    with open(config_path) as handle, open(sys.stdout.fileno(), "wb", closefd=False) as out:
        emitted = LOOPS[api].read(json.load(handle), out)
    print(emitted, file=sys.stderr)
