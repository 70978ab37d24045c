"""docs/adding-an-api.md, enforced: every registered API has every file the checklist names."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from benchmarks.bare_loops import LOOPS
from tap_events.sources import SOURCES
from tap_events_emulator import EMULATED_APIS

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SOURCE_BY_NAME = {source.name: source for source in SOURCES}
#: Every API registered on either side: one registered on one side only fails below.
APIS = sorted(set(SOURCE_BY_NAME) | set(EMULATED_APIS))


def read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def missing_pieces(name: str) -> list[str]:
    """What docs/adding-an-api.md asks for that API `name` lacks, one line each."""
    source = SOURCE_BY_NAME.get(name)
    if source is None:
        return ["3: no Source of that name in tap_events/sources/__init__.py SOURCES"]
    missing = []
    streams = [stream.name for stream in source.streams]
    note = f"../shared/apis/{name}.md"
    if not (SHARED / "apis" / f"{name}.md").is_file():
        missing.append(f"1: the API note {note}")
    module_path = ROOT / "tap_events" / "sources" / f"{name}.py"
    module = importlib.import_module(f"tap_events.sources.{name}") if module_path.is_file() \
        else None
    if module is None or getattr(module, "SOURCE", None) is not source:
        missing.append(f"2: tap_events/sources/{name}.py defining the registered SOURCE")
    elif note not in (module.__doc__ or ""):
        missing.append(f"2: tap_events/sources/{name}.py's docstring citing {note}")
    if not streams:
        missing.append("2: the source declares no stream")

    emulated = EMULATED_APIS.get(name)
    if emulated is None:
        missing.append("5: an entry in EMULATED_APIS")
    else:
        if emulated.__module__ != f"tap_events_emulator.{name}" or emulated.name != name:
            missing.append(f"4: emulator/tap_events_emulator/{name}.py defining the API "
                           f"(found {emulated.__module__}.{emulated.__name__})")
        counted = set(emulated(events=3, seed=1).stream_counts())
        if counted != set(streams):
            missing.append(f"4: stream_counts() for exactly the source's streams "
                           f"(has {sorted(counted)}, streams {sorted(streams)})")

    tests = read(ROOT / "tests" / f"test_{name}.py")
    if not any(stream in tests for stream in streams):
        missing.append(f"6: tests/test_{name}.py, testing its streams")
    if f"`[{name}]`" not in read(ROOT / "docs" / "reliability.md"):
        missing.append(f"7: its `[{name}]` cells in docs/reliability.md")
    if name not in LOOPS or LOOPS[name].stream not in streams:
        missing.append("8: a bare loop over one of its streams in benchmarks/bare_loops.py")

    meltano = yaml.safe_load(read(ROOT / "meltano.yml"))
    tap = next(p for p in meltano["plugins"]["extractors"] if p["name"] == "tap-events")
    declared = {setting["name"] for setting in tap["settings"]}
    keys = [prop.name for prop in source.properties]
    if not {f"{name}.{key}" for key in keys} <= declared:
        missing.append("9: its settings in meltano.yml (make meltano-settings)")
    readme = read(ROOT / "README.md")
    sample = json.loads(read(ROOT / "sample_config.json") or "{}")
    if set(sample.get(name) or {}) != set(keys) or f"| {name}.{keys[0]} |" not in readme:
        missing.append("10: README.md's settings table and sample_config.json "
                       "(make docs-settings)")
    table_rows = [line for line in readme.splitlines()[:20] if line.startswith("| ")]
    if not all(any(f"`{stream}`" in row for row in table_rows) for stream in streams):
        missing.append("11: a row of README.md's streams table naming every stream")
    if not re.search(rf"^### {re.escape(source.label)}", readme, re.M):
        missing.append(f"11: a `### {source.label}` section in README.md")
    security = read(ROOT / "SECURITY.md")
    unnamed = [key for key in source.secret_settings if f"`{name}.{key}`" not in security]
    if unnamed:
        missing.append(f"12: {', '.join(unnamed)} in SECURITY.md's list of secrets")
    return missing


@pytest.mark.parametrize("name", APIS)
def test_every_registered_api_has_every_piece_of_the_checklist(name):
    missing = missing_pieces(name)
    assert not missing, f"{name} lacks (docs/adding-an-api.md): " + "; ".join(missing)


def test_the_checklist_notices_an_api_with_nothing_but_a_source(monkeypatch):
    """An API registered in SOURCES alone is reported for every piece it lacks."""
    newcomer = dataclasses.replace(SOURCE_BY_NAME["discue"], name="newapi", label="New API",
                                   streams=())
    monkeypatch.setitem(SOURCE_BY_NAME, "newapi", newcomer)

    missing = missing_pieces("newapi")

    numbers = {line.split(":")[0] for line in missing}
    assert numbers == {"1", "2", "5", "6", "7", "8", "9", "10", "11", "12"}, missing
