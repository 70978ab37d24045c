"""Every real vendor payload (../shared/realdata/payloads, read at test time) through the tap.

Each file's events are served by a local server speaking the API's protocol over real
sockets (a page, then an empty page; for Alpaca an event stream), and the real `tap-events`
CLI reads them: each event comes out once, valid against its stream's schema, exit 0.
"""

from __future__ import annotations

import json
import typing as t

import jsonschema
import pytest

from tests.hostile import Answer, HostileServer, Seen
from tests.realdata import payload_cases
from tests.support import run_tap

CASES = payload_cases()
TENANT = "6f2c1a0e-3b1d-4c52-9f1e-2d7b8a4c9e01"


def box_server(events: list[dict]) -> t.Callable[[Seen], Answer]:
    def answer(seen: Seen) -> Answer:
        first = "stream_position" not in seen.query or seen.query["stream_position"] == ["0"]
        return Answer.json({"chunk_size": len(events) if first else 0,
                            "entries": events if first else [],
                            "next_stream_position": "1152922976252290886"})
    return answer


def socotra_server(events: list[dict]) -> t.Callable[[Seen], Answer]:
    def answer(seen: Seen) -> Answer:
        if seen.path.endswith("/events/list"):
            first = "pagingToken" not in seen.query
            return Answer.json({"events": events if first else [], "pagingToken": "next"})
        first = seen.query.get("offset", ["0"]) == ["0"]
        return Answer.json(events if first else [])
    return answer


def discue_server(events: list[dict]) -> t.Callable[[Seen], Answer]:
    def answer(seen: Seen) -> Answer:
        return Answer.json({"events": [] if "startAfter" in seen.query else events})
    return answer


def alpaca_server(events: list[dict]) -> t.Callable[[Seen], Answer]:
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    return lambda seen: Answer(200, body.encode(), {"Content-Type": "text/event-stream"})


SERVERS = {"box": box_server, "socotra": socotra_server, "discue": discue_server,
           "alpaca": alpaca_server}


def config_for(api: str, url: str) -> dict:
    return {
        "box": {"box": {"api_url": url, "access_token": "real-payload-token"}},
        "socotra": {"socotra": {"api_url": url, "token": "t", "tenant_locators": [TENANT],
                                "policy_locators": ["01JWQYT2D8H5P3N6Q9R1S4V7WX"]}},
        "discue": {"discue": {"api_url": url, "api_key": "k"}},
        "alpaca": {"alpaca": {"api_url": url, "api_key": "k", "api_secret": "s"}},
    }[api]


def test_the_payloads_are_there():
    """CI has ../shared: a missing folder must fail, not skip every case."""
    assert {case[0] for case in CASES} == {"box", "socotra", "discue", "alpaca"}


@pytest.mark.parametrize(("api", "file", "stream", "events"), CASES,
                         ids=[f"{case[2]}:{case[1]}" for case in CASES])
def test_every_real_payload_comes_out_once_and_valid(api, file, stream, events):
    server = HostileServer(SERVERS[api](events))
    try:
        run = run_tap(config_for(api, server.url), streams=[stream])
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    schema_message = next(m for m in run.messages
                          if m["type"] == "SCHEMA" and m["stream"] == stream)
    keys = schema_message["key_properties"]
    records = run.records(stream)
    emitted = [tuple(record[key] for key in keys) for record in records]
    assert len(emitted) == len(set(emitted)), "an event came out twice"
    sent = {tuple({**event, "tenant_locator": TENANT}.get(key) for key in keys)
            for event in events}
    assert set(emitted) == sent
    validator = jsonschema.Draft7Validator(schema_message["schema"],
                                           format_checker=jsonschema.FormatChecker())
    for record in records:
        errors = [error.message for error in validator.iter_errors(record)]
        assert not errors, (record, errors)
