"""The Meltano Hub definition is what the tap is, in the shape the Hub accepts.

The Hub's own JSON schemas are read from `../shared/hub-schema/` (copied unchanged from the
Hub repository; see its README) and applied the way the Hub's CI applies them: a Draft 7
validator with every schema in a `referencing` registry under its `$id`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from scripts import hub_definition
from scripts.meltano_settings import MELTANO_YML, about
from tap_events.sources import SOURCES

HUB_SCHEMA = hub_definition.ROOT.parent / "shared" / "hub-schema"


def hub_validator() -> jsonschema.Draft7Validator:
    resources = []
    for path in sorted((HUB_SCHEMA / "common").glob("*.json")) + sorted(
            (HUB_SCHEMA / "plugin_definitions").glob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema,
                                                                default_specification=DRAFT7)))
    top = json.loads((HUB_SCHEMA / "plugin_definitions" / "extractors.schema.json").read_text())
    return jsonschema.Draft7Validator(top, registry=Registry().with_resources(resources))


@pytest.fixture(scope="module")
def validator():
    return hub_validator()


@pytest.fixture(scope="module")
def definition():
    return yaml.safe_load(hub_definition.definition_path().read_text())


def messages(validator, document) -> list[str]:
    return sorted(f"{list(error.absolute_path)}: {error.message}"
                  for error in validator.iter_errors(document))


def test_hub_definition_file_is_the_generators_output():
    path = hub_definition.definition_path()
    assert path.exists(), f"{path} missing: run `python -m scripts.hub_definition --write`"
    assert path.read_text() == hub_definition.render(hub_definition.definition()), (
        "the Hub definition drifted from the tap: run `python -m scripts.hub_definition --write`"
    )
    # The Hub's layout: _data/meltano/extractors/<name>/<variant>.yml.
    assert path.relative_to(hub_definition.ROOT).parts[-5:-2] == ("_data", "meltano",
                                                                  "extractors")


def test_hub_definition_passes_the_hubs_extractor_schema(validator, definition):
    assert messages(validator, definition) == []


def test_the_hub_schema_is_applied_down_to_each_setting(validator, definition):
    # The real Hub definition the schemas were copied with validates...
    example = yaml.safe_load((HUB_SCHEMA / "examples" / "tap-github.meltanolabs.yml")
                             .read_text())
    assert messages(validator, example) == []
    # ...and a setting of a kind the Hub does not know is refused, so the `$ref`s into
    # common/base_setting.schema.json are followed, not silently skipped.
    broken = copy.deepcopy(definition)
    broken["settings"][0]["kind"] = "datetime"
    broken["settings"][1]["secret"] = True
    errors = messages(validator, broken)
    assert any("'datetime' is not one of" in e for e in errors), errors
    assert any("'secret' was unexpected" in e for e in errors), errors
    del broken["quality"]
    assert any("'quality' is a required property" in e for e in messages(validator, broken))


def test_hub_definition_declares_every_setting_with_its_default_and_secrecy(definition):
    settings = {s["name"]: s for s in definition["settings"]}
    meltano = yaml.safe_load(MELTANO_YML.read_text())
    tap = next(p for p in meltano["plugins"]["extractors"] if p["name"] == "tap-events")
    # The same settings as meltano.yml, from the same generator.
    assert list(settings) == [s["name"] for s in tap["settings"]]
    for source in SOURCES:
        schema = source.config_property.to_dict()[source.name]
        for key, prop in schema["properties"].items():
            entry = settings[f"{source.name}.{key}"]
            assert entry.get("sensitive", False) == bool(prop.get("secret")), entry["name"]
            assert entry.get("value") == prop.get("default"), entry["name"]
            assert entry["label"] and entry["description"], entry["name"]
    assert settings["box.client_id"]["label"] == "Box Client ID"
    assert settings["max_retries"]["value"] == 6
    # Any one API's credentials make a valid config, as the tap itself decides.
    assert definition["settings_group_validation"] == [
        [f"{source.name}.{key}" for key in keys]
        for source in SOURCES for keys in source.credential_sets]


def test_hub_definition_names_the_package_and_what_the_tap_can_do(definition):
    tap_about = about()
    assert definition["name"] == "tap-events" == tap_about["name"]
    assert definition["namespace"] == "tap_events"
    assert definition["pip_url"] == "tap-events"
    assert definition["executable"] == "tap-events"
    assert definition["repo"].rsplit("/", 2)[-2] == definition["variant"]
    assert set(definition["capabilities"]) <= set(tap_about["capabilities"])
    assert {"catalog", "discover", "state", "about", "stream-maps",
            "schema-flattening", "batch"} <= set(definition["capabilities"])
    assert definition["supported_python_versions"] == tap_about["supported_python_versions"]
    assert Path(hub_definition.definition_path()).stem == definition["variant"]


def test_batch_and_activate_version_capabilities_work(emulator, config, tmp_path):
    """Two capabilities the SDK declares for every tap, honoured by this one: BATCH files
    hold every record, and a full-table stream is wrapped in ACTIVATE_VERSION."""
    import gzip

    from tests.support import run_tap

    batch = run_tap({"discue": config["discue"], "batch_config": {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": f"file://{tmp_path}", "prefix": "batch-"}}},
        streams=["discue_events"])
    assert batch.returncode == 0, batch.stderr[-2000:]
    assert batch.records() == []
    files = [Path(url.removeprefix("file://")) for m in batch.messages if m["type"] == "BATCH"
             for url in m["manifest"]]
    ids = [json.loads(line)["id"] for path in files
           for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert len(ids) == len(set(ids)) == emulator.stream_counts()["discue_events"]

    full_table = run_tap({"socotra": config["socotra"], "emit_activate_version_messages": True},
                         streams=["socotra_failed_scheduled_events"])
    assert full_table.returncode == 0, full_table.stderr[-2000:]
    types = [m["type"] for m in full_table.messages
             if m.get("stream") == "socotra_failed_scheduled_events"]
    assert types.count("ACTIVATE_VERSION") >= 1
    assert types.index("ACTIVATE_VERSION") < types.index("RECORD")
