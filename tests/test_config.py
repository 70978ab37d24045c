"""The settings contract: sample_config.json documents every setting, bad values are refused
with the setting named, before any request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tap_events.tap import TapEvents
from tests.support import log_lines, run_tap

ROOT = Path(__file__).resolve().parent.parent
SDK_SETTINGS = {"stream_maps", "stream_map_config", "faker_config", "flattening_enabled",
                "flattening_max_depth", "batch_config"}


def settings_of(schema: dict, prefix: str = "") -> set[str]:
    names = set()
    for key, prop in schema["properties"].items():
        if "properties" in prop:
            names |= settings_of(prop, f"{prefix}{key}.")
        else:
            names.add(f"{prefix}{key}")
    return names


def test_sample_config_lists_every_tap_setting():
    sample = json.loads((ROOT / "sample_config.json").read_text())
    sample_names = {
        f"{key}.{sub}" if isinstance(value, dict) else key
        for key, value in sample.items()
        for sub in (value if isinstance(value, dict) else [None])
    }
    # The SDK adds its own settings (stream maps, flattening, ...) to the schema in place.
    ours = {name for name in settings_of(TapEvents.config_jsonschema)
            if name.split(".")[0] not in SDK_SETTINGS and not name.startswith("flattening")}
    assert sample_names == ours


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"start_date": "yesterday"}, "start_date 'yesterday'"),
        ({"box": {"page_size": 900, "access_token": "x"}}, "config['box']['page_size']"),
        ({"box": {"user_stream_type": "everything", "access_token": "x"}},
         "config['box']['user_stream_type']"),
        ({"box": {"api_url": "http://box.example.com/2.0", "access_token": "x"}},
         "box.api_url 'http://box.example.com/2.0'"),
        ({"max_retries": "many"}, "config['max_retries']"),
    ],
)
def test_bad_setting_stops_before_any_request_naming_it(config, named):
    run = run_tap(config)
    assert run.returncode == 1
    assert any(named in line for line in log_lines(run, "ERROR")), run.stderr
    assert run.records() == []
    assert "Traceback" not in run.stderr
