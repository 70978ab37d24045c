"""Fixtures: an emulator per test (fresh data, faults of its own) on 127.0.0.1."""

from __future__ import annotations

import pytest

from tap_events_emulator import start_emulator, tap_config


@pytest.fixture
def emulator():
    """A fresh emulator with 1200 events per API (several pages of 500)."""
    server = start_emulator(events=1200, seed=11)
    yield server
    server.stop()


@pytest.fixture
def config(emulator):
    return tap_config(emulator.url)
