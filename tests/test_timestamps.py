"""Top-level date-times leave the tap in UTC (`…Z`), the same instant the API sent.

Values come from the real vendor payloads in ../shared/realdata/payloads (Box stamps events
with its enterprise's offset, `-08:00`, `-07:00`; Alpaca sends micro- and nanoseconds in `Z`),
each also re-expressed at other offsets, and from the emulator through the real tap.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from pathlib import Path

import pytest
import requests

from tap_events.sources import alpaca, box, discue, socotra
from tap_events.timestamps import UtcTimestamps, date_time_fields, utc_text
from tests.support import run_tap

PAYLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata" / "payloads"
#: Any ISO 8601 date-time in a payload's text, with its offset when it has one.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
OFFSETS = ("-08:00", "+02:00", "+05:30", "-00:00", "+00:00", "Z")


def real_timestamps() -> list[str]:
    """Every distinct date-time with an offset in the stored vendor payloads."""
    found = set()
    for path in PAYLOADS.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".log"):
            found.update(TIMESTAMP.findall(path.read_text(errors="replace")))
    return sorted(found)


def fraction(value: str) -> str:
    match = re.search(r":\d\d(\.\d+)?(?:Z|[+-]\d\d:\d\d)$", value)
    assert match, value
    return match.group(1) or ""


def at_offset(value: str, offset: str) -> str:
    """`value` re-expressed at `offset` (`+02:00`, `Z`): the same instant, the same fraction
    text (nanoseconds included, which a Python datetime would truncate)."""
    seconds = datetime.datetime.fromisoformat(re.sub(r"\.\d+", "", value))
    zone = datetime.UTC if offset in ("Z", "-00:00") else \
        datetime.datetime.fromisoformat(f"2000-01-01T00:00:00{offset}").tzinfo
    local = seconds.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")
    return f"{local}{fraction(value)}{offset}"


def assert_same_instant_in_utc(original: str, converted: str | None) -> None:
    assert converted is not None, original
    assert RFC3339_UTC.fullmatch(converted), (original, converted)
    assert fraction(converted) == fraction(original), (original, converted)
    assert datetime.datetime.fromisoformat(converted) == \
        datetime.datetime.fromisoformat(original), (original, converted)


REAL = real_timestamps()


def test_the_real_payloads_hold_several_offsets_and_fractions():
    offsets = {value[-6:] if value[-1] != "Z" else "Z" for value in REAL}
    assert {"Z", "-08:00", "-07:00"} <= offsets
    assert {len(fraction(value)) - 1 for value in REAL if fraction(value)} >= {3, 6, 9}


@pytest.mark.parametrize("offset", OFFSETS)
def test_every_real_timestamp_at_any_offset_becomes_the_same_instant_in_z_form(offset):
    for value in REAL:
        shifted = at_offset(value, offset)
        assert datetime.datetime.fromisoformat(shifted) == datetime.datetime.fromisoformat(value)
        assert_same_instant_in_utc(shifted, utc_text(shifted))


def test_known_conversions():
    assert utc_text("2012-12-12T10:53:43-08:00") == "2012-12-12T18:53:43Z"
    assert utc_text("2018-03-16T15:12:52-07:00") == "2018-03-16T22:12:52Z"
    assert utc_text("2025-01-14T16:05:51.867813051+02:00") == "2025-01-14T14:05:51.867813051Z"
    assert utc_text("2025-01-01T03:00:00.5+05:30") == "2024-12-31T21:30:00.5Z"
    assert utc_text("2024-02-29T23:30:00-01:00") == "2024-03-01T00:30:00Z"
    assert utc_text("2025-01-14T16:05:51+00:00") == "2025-01-14T16:05:51Z"
    # Already canonical: the very same string comes back (no copy per record).
    value = "2024-05-17T08:01:06.529338Z"
    assert utc_text(value) is value
    # ISO 8601 forms RFC 3339 leaves out, and RFC 3339's lower case, are still read.
    assert utc_text("2025-01-14 16:05:51-08:00") == "2025-01-15T00:05:51Z"
    assert utc_text("2025-01-14t16:05:51z") == "2025-01-14T16:05:51Z"
    assert utc_text("20250114T160551+0200") == "2025-01-14T14:05:51Z"


@pytest.mark.parametrize("value", [
    "2025-01-14T16:05:51",  # no offset: which instant is unknown
    "2025-01-14",
    "2025-13-01T00:00:00Z",  # month 13, though shaped right
    "2025-01-14T25:00:00Z",
    "yesterday",
    "",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
])
def test_values_that_are_not_date_times_with_an_offset_are_not_converted(value):
    assert utc_text(value) is None


def box_events() -> list[dict]:
    """The events of the real Box pages whose index says `json` or `jsonl`."""
    index = json.loads((PAYLOADS / "box" / "index.json").read_text())
    events = []
    for entry in index["entries"]:
        path = PAYLOADS / "box" / entry["file"]
        if entry["format"] not in ("json", "jsonl") or not path.exists():
            continue
        text = path.read_text()
        values = [json.loads(line) for line in text.splitlines() if line.strip()] \
            if entry["format"] == "jsonl" else [json.loads(text)]
        for value in values:
            page = value.get("entries", [value]) if isinstance(value, dict) else value
            events += [event for event in page if isinstance(event, dict)]
    return events


def test_real_box_events_top_level_times_in_utc_nested_ones_as_sent(caplog):
    events = box_events()
    assert len(events) >= 5
    converter = UtcTimestamps(box.EVENT_SCHEMA, "Box stream 'box_events'",
                              logging.getLogger("test"))
    assert set(converter.fields) == {"created_at", "recorded_at"}
    converted = 0
    for event in events:
        record = json.loads(json.dumps(event))
        converter.convert(record)
        for field in converter.fields:
            if event.get(field) is not None:
                assert_same_instant_in_utc(event[field], record[field])
                converted += 1
        # Nested objects (JSON columns in the warehouse) keep the API's text.
        assert record.get("source") == event.get("source")
    assert converted >= len(events)
    assert any(event["created_at"].endswith("-08:00") for event in events)
    assert not caplog.records


def test_every_streams_top_level_date_times_are_converted():
    """The fields the issue names, and every other top-level date-time, are found from the
    schemas: a field added to a schema later is converted without a list to update."""
    assert date_time_fields(box.EVENT_SCHEMA) == ("created_at", "recorded_at")
    assert date_time_fields(socotra.EVENT_SCHEMA) == ("timestamp",)
    assert date_time_fields(socotra.SCHEDULED_POLICY_EVENT_SCHEMA) == ("nextEventTime",)
    assert date_time_fields(socotra.FAILED_JOB_SCHEMA) == ("createdAt", "updatedAt")
    assert date_time_fields(alpaca.ADMIN_ACTION_SCHEMA) == ("at",)
    assert date_time_fields(alpaca.TRADE_SCHEMA) == ("at", "timestamp")
    assert date_time_fields(discue.EVENT_SCHEMA) == ("stored_at_datetime",)
    # Nested date-times (Box `source.created_at`) are not top-level fields.
    assert "modified_at" not in date_time_fields(box.EVENT_SCHEMA)


def test_a_value_that_is_not_a_date_time_is_loaded_as_sent_and_logged_once(caplog):
    converter = UtcTimestamps(box.EVENT_SCHEMA, "Box stream 'box_events'",
                              logging.getLogger("tap-events-test"))
    records = [
        {"event_id": "1", "created_at": "2025-01-14T16:05:51", "recorded_at": None},
        {"event_id": "2", "created_at": "not a time", "recorded_at": 1736870751},
        {"event_id": "3", "created_at": "2025-01-14T16:05:51-08:00"},
    ]
    with caplog.at_level(logging.WARNING):
        for record in records:
            converter.convert(record)
    # Nothing dropped, nothing invented: what cannot be read stays as the API sent it.
    assert [r["created_at"] for r in records] == [
        "2025-01-14T16:05:51", "not a time", "2025-01-15T00:05:51Z"]
    assert records[0]["recorded_at"] is None
    assert records[1]["recorded_at"] == 1736870751
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # once per field, not once per value
    assert "Box stream 'box_events': field 'created_at' holds '2025-01-14T16:05:51'" in lines[0]
    assert "field 'recorded_at' holds 1736870751" in lines[1]
    assert all("loaded as sent" in line for line in lines)


def test_the_tap_emits_box_times_in_utc_as_the_instants_the_api_sent(emulator, config):
    """Through the real tap: every Box event's `created_at`/`recorded_at` is the API's
    instant in `Z` form (the emulator stamps half its events `-08:00`), nested `source`
    is untouched, and the admin_logs bookmark is a UTC time."""
    run = run_tap(config, streams=["box_events", "box_enterprise_events"])
    assert run.returncode == 0, run.stderr
    sent = {}
    position = "0"
    settings = config["box"]
    token = requests.post(settings["token_url"], timeout=30, data={
        "grant_type": "client_credentials", "client_id": settings["client_id"],
        "client_secret": settings["client_secret"], "box_subject_type": "enterprise",
        "box_subject_id": settings["subject_id"],
    }).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    while True:  # the same feed, read straight from the API
        page = requests.get(f"{settings['api_url']}/events", headers=headers, timeout=30,
                            params={"stream_position": position, "limit": 500}).json()
        if not page["entries"]:
            break
        sent.update((event["event_id"], event) for event in page["entries"])
        position = page["next_stream_position"]
    records = run.records("box_events")
    assert {r["event_id"] for r in records} == set(sent)
    offsets = set()
    for record in records:
        api = sent[record["event_id"]]
        for field in ("created_at", "recorded_at"):
            assert_same_instant_in_utc(api[field], record[field])
            offsets.add(api[field][-6:])
        assert record.get("source") == api.get("source")
    assert "-08:00" in offsets
    for record in run.records("box_enterprise_events"):
        assert RFC3339_UTC.fullmatch(record["created_at"]), record["created_at"]
    bookmark = run.bookmark("box_enterprise_events")
    assert bookmark["replication_key"] == "created_at"
    assert bookmark["replication_key_value"] == max(
        r["created_at"] for r in run.records("box_enterprise_events"))
    assert bookmark["replication_key_value"].endswith("Z")
    assert "not a date-time" not in run.stderr
