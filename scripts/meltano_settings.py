"""Keep meltano.yml's `tap-events` settings in step with the tap's own config schema.

`python -m scripts.meltano_settings --write` rewrites the generated blocks of meltano.yml
(between `# >>> generated: NAME` and `# <<< generated: NAME`) from `tap-events --about
--format=json`, the tap's source list and the emulator's `tap_config`:

- `settings`: one entry per setting; each API's closed settings object (`box`, ...) becomes
  dotted names (`box.client_id`), which Meltano nests back into the config it hands the tap,
  and which users set as `TAP_EVENTS_BOX_CLIENT_ID`; secrets get `sensitive: true`;
- `settings_group_validation`: one group per credential set of each API;
- `demo-config`: the `demo` environment's tap config, every API pointed at the emulator.

Without `--write` it prints what differs and exits 1 (tests/test_meltano_settings.py runs the
same comparison, so a new API or setting fails the tests until this script is rerun).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import yaml

from tap_events.sources import SOURCES
from tap_events_emulator import tap_config

ROOT = Path(__file__).resolve().parent.parent
MELTANO_YML = ROOT / "meltano.yml"
#: Where the `demo` environment expects the emulator (`tap-events-emulator`'s default port).
DEMO_EMULATOR_URL = "http://127.0.0.1:8765"

KINDS = {"string": "string", "integer": "integer", "number": "decimal", "boolean": "boolean",
         "array": "array", "object": "object"}


def about() -> dict[str, t.Any]:
    """The tap's `--about` document, from the real CLI."""
    out = subprocess.run([sys.executable, "-m", "tap_events", "--about", "--format=json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def json_type(prop: dict[str, t.Any]) -> str:
    types = prop.get("type", "object")
    types = [types] if isinstance(types, str) else [x for x in types if x != "null"]
    return types[0] if types else "object"


def setting(name: str, prop: dict[str, t.Any]) -> dict[str, t.Any]:
    """One Meltano setting for one JSON-schema property."""
    entry: dict[str, t.Any] = {"name": name}
    if "enum" in prop:
        entry["kind"] = "options"
        entry["options"] = [{"label": value, "value": value} for value in prop["enum"]]
    elif prop.get("format") == "date-time":
        entry["kind"] = "date_iso8601"
    else:
        entry["kind"] = KINDS.get(json_type(prop), "string")
    if prop.get("description"):
        entry["description"] = prop["description"]
    if prop.get("secret"):
        entry["sensitive"] = True
    return entry


def settings(schema: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """Meltano settings for a config schema.

    A closed object (`additionalProperties: false`: one API's settings) is spelled out as
    dotted settings so each can be set on its own; open objects (`stream_maps`,
    `batch_config`, ...) stay one `object` setting.
    """
    entries = []
    for name, prop in schema["properties"].items():
        if json_type(prop) == "object" and prop.get("additionalProperties") is False:
            entries += [setting(f"{name}.{key}", sub) for key, sub in prop["properties"].items()]
        else:
            entries.append(setting(name, prop))
    return entries


def credential_groups() -> list[list[str]]:
    """Any one API's credentials make a valid config."""
    return [[f"{source.name}.{key}" for key in keys]
            for source in SOURCES for keys in source.credential_sets]


def generated_blocks() -> dict[str, dict[str, t.Any]]:
    return {
        "settings": {
            "settings_group_validation": credential_groups(),
            "settings": settings(about()["settings"]),
        },
        "demo-config": {"config": tap_config(DEMO_EMULATOR_URL)},
    }


def render(text: str, blocks: dict[str, dict[str, t.Any]]) -> str:
    """`text` with each generated block replaced, at the indentation of its markers."""
    for name, content in blocks.items():
        pattern = re.compile(
            rf"^(?P<indent>[ ]*)# >>> generated: {re.escape(name)}\b.*?\n"
            rf"(?P<body>.*?)^[ ]*# <<< generated: {re.escape(name)}\n",
            re.MULTILINE | re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"meltano.yml: no '# >>> generated: {name}' block")
        indent = match["indent"]
        dumped = yaml.safe_dump(content, sort_keys=False, width=80, allow_unicode=True)
        body = "".join(f"{indent}{line}\n" if line else "\n" for line in dumped.splitlines())
        head = text[match.start():match.start("body")]
        tail = f"{indent}# <<< generated: {name}\n"
        text = text[:match.start()] + head + body + tail + text[match.end():]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.meltano_settings",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite meltano.yml in place")
    args = parser.parse_args(argv)
    current = MELTANO_YML.read_text()
    wanted = render(current, generated_blocks())
    if args.write:
        MELTANO_YML.write_text(wanted)
        print(f"wrote {MELTANO_YML}")
        return 0
    if wanted == current:
        print("meltano.yml is up to date")
        return 0
    sys.stdout.writelines(difflib.unified_diff(
        current.splitlines(keepends=True), wanted.splitlines(keepends=True),
        "meltano.yml", "meltano.yml (generated)"))
    print("meltano.yml is out of date: run `python -m scripts.meltano_settings --write`",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
