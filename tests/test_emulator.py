"""The emulator as a distribution of its own: its config follows the tap's sources and its
console script serves (tests/test_structure.py: the tap never imports it)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import tap_events_emulator
from tap_events.sources import SOURCES
from tap_events_emulator import tap_config

ROOT = Path(__file__).resolve().parent.parent
SERVER = "http://127.0.0.1:9"


def test_tap_config_is_laid_out_by_the_tap_sources():
    config = tap_config(SERVER)

    assert list(config) == [source.name for source in SOURCES]
    for source in SOURCES:
        settings = config[source.name]
        names = {prop.name for prop in source.properties}
        assert set(settings) <= names, source.name
        assert source.is_configured(config), source.name
        urls = {name for name in names if name.endswith("_url")}
        assert urls and urls <= set(settings), source.name
        assert all(settings[name].startswith(f"{SERVER}/{source.name}") for name in urls)


def test_tap_config_names_a_source_the_emulator_lacks(monkeypatch):
    monkeypatch.delitem(tap_events_emulator.EMULATED_APIS, "discue")

    with pytest.raises(LookupError, match=r"discue.*EMULATED_APIS"):
        tap_config(SERVER)


def test_tap_config_refuses_emulated_settings_the_tap_does_not_have(monkeypatch):
    box = tap_events_emulator.EMULATED_APIS["box"]
    monkeypatch.setattr(box, "tap_settings", {**box.tap_settings, "clientid": "x"})

    with pytest.raises(LookupError, match=r"BoxAPI.tap_settings: clientid not among"):
        tap_config(SERVER)


def test_the_console_script_serves_every_api_and_prints_its_config():
    script = Path(sys.executable).with_name("tap-events-emulator")
    process = subprocess.Popen([str(script), "--port", "0", "--events", "5", "--print-config"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        config = json.loads(process.stdout.readline())
        assert list(config) == [source.name for source in SOURCES]
        server = config["discue"]["api_url"].removesuffix("/discue/v1")
        with urllib.request.urlopen(f"{server}/_emulator/discue/stats", timeout=30) as answer:
            assert json.load(answer)["events"] == 5
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
