"""The reference: the least code that reads an API and prints Singer RECORD lines.

`python benchmarks/bare_loops.py API CONFIG.json` reads every event of API's main stream with
`requests` + `orjson` and writes one RECORD line per event to stdout, as a tap would. The
harness runs it beside `tap-events` against the same emulator to get a speed ratio.
"""

from __future__ import annotations

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
    token = requests.post(settings["token_url"], timeout=60, data={
        "grant_type": "client_credentials", "client_id": settings["client_id"],
        "client_secret": settings["client_secret"], "box_subject_type": "enterprise"})
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
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


@dataclass(frozen=True)
class BareLoop:
    #: The tap stream the loop reads the same events as.
    stream: str
    read: t.Callable[[dict, t.BinaryIO], int]


LOOPS: dict[str, BareLoop] = {"box": BareLoop("box_events", box)}

if __name__ == "__main__":
    api, config_path = sys.argv[1], sys.argv[2]
    with open(config_path) as handle:
        emitted = LOOPS[api].read(json.load(handle), sys.stdout.buffer)
    print(emitted, file=sys.stderr)
