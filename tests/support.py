"""Helpers for tests: run the real `tap-events` CLI against an emulator and read its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

TAP = [sys.executable, "-m", "tap_events"]


@dataclass
class TapRun:
    """What one run of the tap wrote: Singer messages from stdout, the log from stderr."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict] = field(default_factory=list)

    def records(self, stream: str | None = None) -> list[dict]:
        return [m["record"] for m in self.messages
                if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)]

    def ids(self, stream: str, key: str = "event_id") -> list[t.Any]:
        return [r[key] for r in self.records(stream)]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict:
        return self.states[-1] if self.states else {}

    def bookmark(self, stream: str) -> dict:
        return self.final_state.get("bookmarks", {}).get(stream, {})


def run_tap(
    config: dict,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    streams: t.Iterable[str] | None = None,
    args: t.Iterable[str] = (),
    timeout: float = 120,
    env: dict | None = None,
) -> TapRun:
    """Run `tap-events` as a real process. `streams` selects only those streams."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(config))
        command = [*TAP, "--config", str(folder / "config.json"), *args]
        if state is not None:
            (folder / "state.json").write_text(json.dumps(state))
            command += ["--state", str(folder / "state.json")]
        if streams is not None:
            catalog = select_streams(discover(config), set(streams))
        if catalog is not None:
            (folder / "catalog.json").write_text(json.dumps(catalog))
            command += ["--catalog", str(folder / "catalog.json")]
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            env={**clean_env(), **(env or {})},
        )
    messages = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    return TapRun(process.returncode, process.stdout, process.stderr, messages)


def clean_env() -> dict[str, str]:
    """The environment without TAP_EVENTS_* settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TAP_EVENTS_")}


def discover(config: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        out = subprocess.run([*TAP, "--config", str(path), "--discover"], capture_output=True,
                             text=True, check=True, env=clean_env())
    return json.loads(out.stdout)


def select_streams(catalog: dict, names: set[str]) -> dict:
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in names
    return catalog


def log_lines(run: TapRun, level: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if f"| {level}" in line]
