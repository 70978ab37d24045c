"""Keep README.md's settings table and sample_config.json in step with the tap's settings.

`python -m scripts.docs_settings --write` rewrites
- the README between `<!-- settings:start -->` and `<!-- settings:end -->` with the settings
  table of `tap-events --about --format=markdown`;
- sample_config.json: every tap setting, with its default or left empty (an API left empty is
  skipped, so the file validates as shipped).
Without `--write` it says what is stale and exits 1 (tests/test_docs_settings.py does the same).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import typing as t
from pathlib import Path

from tap_events.tap import TapEvents

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLE_CONFIG = ROOT / "sample_config.json"
MARKERS = re.compile(r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)", re.S)


def settings_table() -> str:
    """The `## Settings` table of the tap's own --about page."""
    out = subprocess.run([sys.executable, "-m", "tap_events", "--about", "--format=markdown"],
                         capture_output=True, text=True, check=True).stdout
    table = out[out.index("| Setting"):]
    return "\n".join(line for line in table.splitlines() if line.startswith("|")) + "\n"


def placeholder(prop: dict[str, t.Any]) -> t.Any:
    if "default" in prop:
        return prop["default"]
    types = prop.get("type", "string")
    kind = next(x for x in ([types] if isinstance(types, str) else types) if x != "null")
    if prop.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    # Empty, not `<box.client_id>`: an API left as shipped is "not configured" and skipped,
    # so a user fills in the one API they use without deleting the others.
    return {"array": [], "boolean": False, "integer": 0}.get(kind, "")


def sample_config() -> str:
    """Every setting the tap declares (not the SDK's own), with a default or a placeholder."""
    own = TapEvents.config_jsonschema["properties"]
    sample: dict[str, t.Any] = {}
    for key, prop in own.items():
        if key in SDK_SETTINGS or key.startswith("flattening"):
            continue
        sample[key] = (
            {sub: placeholder(p) for sub, p in prop["properties"].items()}
            if "properties" in prop else placeholder(prop)
        )
    return json.dumps(sample, indent=2) + "\n"


#: Settings the SDK adds to every tap; documented by the SDK, not in sample_config.json.
SDK_SETTINGS = {"stream_maps", "stream_map_config", "faker_config", "batch_config"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    readme = README.read_text()
    fresh_readme = MARKERS.sub(lambda m: m.group(1) + settings_table() + m.group(2), readme)
    fresh_sample = sample_config()
    stale = [path.name for path, old, new in
             ((README, readme, fresh_readme), (SAMPLE_CONFIG, SAMPLE_CONFIG.read_text(),
                                                fresh_sample)) if old != new]
    if args.write:
        README.write_text(fresh_readme)
        SAMPLE_CONFIG.write_text(fresh_sample)
        return 0
    if stale:
        print(f"stale: {', '.join(stale)} (run python -m scripts.docs_settings --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
