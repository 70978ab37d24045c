"""meltano.yml declares exactly the settings the tap accepts, as Meltano needs them."""

from __future__ import annotations

import yaml

from scripts.meltano_settings import MELTANO_YML, about, generated_blocks, render, settings
from scripts.pipeline import MELTANO_REQUIREMENT
from tap_events.sources import SOURCES


def meltano_project() -> dict:
    return yaml.safe_load(MELTANO_YML.read_text())


def plugin(kind: str, name: str) -> dict:
    return next(p for p in meltano_project()["plugins"][kind] if p["name"] == name)


def test_meltano_yml_generated_blocks_match_the_tap():
    current = MELTANO_YML.read_text()
    assert render(current, generated_blocks()) == current, (
        "meltano.yml drifted from the tap's settings: "
        "run `python -m scripts.meltano_settings --write`"
    )


def test_every_api_setting_is_declared_and_every_secret_is_sensitive():
    declared = {s["name"]: s for s in plugin("extractors", "tap-events")["settings"]}
    for source in SOURCES:
        schema = source.config_property.to_dict()[source.name]
        for key, prop in schema["properties"].items():
            entry = declared[f"{source.name}.{key}"]
            assert entry.get("sensitive", False) == bool(prop.get("secret")), entry["name"]


def test_settings_map_schema_types_to_meltano_kinds():
    schema = {"properties": {
        "start_date": {"type": ["string", "null"], "format": "date-time"},
        "api": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "token": {"type": ["string", "null"], "secret": True, "description": "A token."},
            "mode": {"type": ["string", "null"], "enum": ["a", "b"]},
            "size": {"type": ["integer", "null"]},
        }},
        "stream_maps": {"type": ["object", "null"], "properties": {}},
    }}
    assert settings(schema) == [
        {"name": "start_date", "kind": "date_iso8601"},
        {"name": "api.token", "kind": "string", "description": "A token.", "sensitive": True},
        {"name": "api.mode", "kind": "options",
         "options": [{"label": "a", "value": "a"}, {"label": "b", "value": "b"}]},
        {"name": "api.size", "kind": "integer"},
        {"name": "stream_maps", "kind": "object"},
    ]


def test_declared_capabilities_are_ones_the_tap_has():
    tap = plugin("extractors", "tap-events")
    assert tap["namespace"] == "tap_events"
    assert tap["pip_url"].split()[:2] == ["-e", "."]
    assert set(tap["capabilities"]) <= set(about()["capabilities"])
    assert {"catalog", "discover", "state", "about"} <= set(tap["capabilities"])


def test_loader_merges_on_primary_keys_into_one_schema():
    target = plugin("loaders", "target-postgres")
    assert target["variant"] == "meltanolabs"
    assert target["pip_url"].startswith("meltanolabs-target-postgres")
    assert target["config"]["load_method"] == "upsert"
    assert target["config"]["default_target_schema"] == "tap_events"
    sensitive = {s["name"] for s in target["settings"] if s.get("sensitive")}
    assert {"password", "sqlalchemy_url"} <= sensitive


def test_the_meltano_installed_is_the_one_the_project_requires():
    assert f"meltano{meltano_project()['requires_meltano']}" == MELTANO_REQUIREMENT


def test_the_loader_session_runs_in_utc_in_every_environment():
    """PGTZ=UTC on the loader itself, and no environment sets it otherwise: target-postgres
    INSERTs convert the tap's UTC times to the session's zone (the e2e test shows a server in
    Asia/Kolkata then stores the right instants)."""
    assert plugin("loaders", "target-postgres")["env"] == {"PGTZ": "UTC"}
    for environment in meltano_project()["environments"]:
        assert "PGTZ" not in (environment.get("env") or {}), environment["name"]
        for loader in (environment.get("config") or {}).get("plugins", {}).get("loaders", []):
            assert "PGTZ" not in (loader.get("env") or {}), environment["name"]
            assert "options" not in str(loader.get("config", {}).get("sqlalchemy_url", ""))
