"""Real vendor payloads from ../shared/realdata/payloads, read at test time (never copied).

Each API folder's `index.json` says how each file is read and which stream its events
belong to (../shared/realdata/README.md). `payload_cases()` lists (api, file, stream, events)
for every file present whose stream the tap reads; formats follow the index's `about`.
"""

from __future__ import annotations

import json
import re
import typing as t
from pathlib import Path

#: Where CI has the spec: beside the project root.
PAYLOADS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "payloads"
#: Index statuses whose events are shown but not counted (a format Alpaca superseded).
NOT_COUNTED = {"legacy"}


def as_events(value: t.Any) -> list[dict]:
    """A page (`entries` or `events`), a list of events, or one event."""
    if isinstance(value, dict):
        for key in ("entries", "events"):
            if isinstance(value.get(key), list):
                return [event for event in value[key] if isinstance(event, dict)]
        return [value]
    if isinstance(value, list):
        return [event for item in value for event in as_events(item)]
    return []


def json_blocks(text: str) -> list[t.Any]:
    """The ```json blocks of a markdown page that are valid JSON (others are fragments)."""
    blocks = []
    for block in re.findall(r"```json\s*\n(.*?)\n\s*```", text, flags=re.DOTALL):
        try:
            blocks.append(json.loads(block))
        except ValueError:
            continue
    return blocks


def openapi_examples(text: str) -> list[t.Any]:
    """Every `examples` / `x-examples` value under a text/event-stream response."""
    found: list[t.Any] = []

    def walk(node: t.Any, in_sse: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if in_sse and key in ("examples", "x-examples") and isinstance(value, dict):
                    found.extend(item.get("value", item) if isinstance(item, dict) else item
                                 for item in value.values())
                elif in_sse and key == "example":
                    found.append(value)
                else:
                    walk(value, in_sse or key == "text/event-stream")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_sse)

    for block in json_blocks(text):
        walk(block, False)
    return found


def text_scan(text: str, start: str, end: str | None, where: dict | None) -> list[t.Any]:
    """JSON objects/arrays that start a line within [start, end)."""
    begin = text.index(start)
    stop = text.index(end, begin) if end else len(text)
    section = text[begin:stop]
    decoder = json.JSONDecoder()
    values = []
    for match in re.finditer(r"^[ \t]*([\[{])", section, flags=re.MULTILINE):
        try:
            value, _ = decoder.raw_decode(section, match.start(1))
        except ValueError:
            continue
        values.append(value)
    events = as_events(values)
    if where:
        kinds = {"string": str, "integer": int}
        events = [e for e in events if isinstance(e.get(where["key"]), kinds[where["type"]])]
    return events


def postman_examples(document: dict, names: dict[str, str]) -> dict[str, list[dict]]:
    """The saved example responses of the named requests, by stream."""
    by_stream: dict[str, list[dict]] = {}

    def walk(items: list) -> None:
        for item in items:
            if "item" in item:
                walk(item["item"])
            stream = names.get(item.get("name", ""))
            if not stream:
                continue
            for response in item.get("response", []):
                try:
                    body = json.loads(response.get("body") or "null")
                except ValueError:
                    continue
                by_stream.setdefault(stream, []).extend(as_events(body))

    walk(document.get("item", []))
    return by_stream


def payload_cases() -> list[tuple[str, str, str, list[dict]]]:
    """(api, file, stream, events) for every indexed file present, per stream it feeds."""
    cases = []
    for index_file in sorted(PAYLOADS.glob("*/index.json")):
        index = json.loads(index_file.read_text())
        api = index["api"]
        for entry in index["entries"]:
            path = index_file.parent / entry["file"]
            if not path.exists() or entry.get("status") in NOT_COUNTED:
                continue
            for stream, events in read_entry(path, entry).items():
                if stream and events:
                    cases.append((api, entry["file"], stream, events))
    return cases


def read_entry(path: Path, entry: dict) -> dict[str, list[dict]]:
    text = path.read_text(encoding="utf-8")
    kind = entry["format"]
    if kind == "jsonl":
        return {entry["stream"]: as_events([json.loads(line) for line in text.splitlines()
                                            if line.strip()])}
    if kind == "json":
        return {entry["stream"]: as_events(json.loads(text))}
    if kind == "json_streams":
        return {stream: as_events(value) for stream, value in json.loads(text).items()
                if not stream.startswith("_")}
    if kind == "md_json_blocks":
        blocks = json_blocks(text)
        chosen = [blocks[n] for n in entry["blocks"]] if "blocks" in entry else blocks
        return {entry["stream"]: as_events(chosen)}
    if kind == "openapi_md":
        return {entry["stream"]: as_events(openapi_examples(text))}
    if kind == "text_scan":
        streams: dict[str, list[dict]] = {}
        for section in entry["sections"]:
            if section.get("stream") and section.get("status") not in NOT_COUNTED:
                streams.setdefault(section["stream"], []).extend(
                    text_scan(text, section["start"], section.get("end"), section.get("where")))
        return streams
    if kind == "postman":
        return postman_examples(json.loads(text),
                                {r["name"]: r["stream"] for r in entry["requests"]})
    return {}  # sse_md: only legacy or unread streams in the index
