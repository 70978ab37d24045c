"""Fixtures: an emulator per test (fresh data, faults of its own) on 127.0.0.1, and the
order tests start in."""

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


def pytest_collection_modifyitems(items):
    """The end-to-end test first: the longest test, started last, would be the whole run's
    tail when the suite runs in parallel workers (`make test`)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
