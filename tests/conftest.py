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


#: Test modules whose tests all run on one worker when the suite runs in parallel (`make test`):
#: the end-to-end tests share this checkout's Meltano project (.meltano/, which `meltano
#: install` rewrites) and one embedded PostgreSQL.
ONE_WORKER_MODULES = ("tests/test_meltano_e2e.py",)


def pytest_xdist_make_scheduler(config, log):
    """xdist's load scheduling, a test at a time, except that the tests of each of
    ONE_WORKER_MODULES go to one worker as a unit. (What `--dist loadgroup` with an
    `xdist_group` mark would do, but pytest 9.2 silently breaks that: pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


def pytest_collection_modifyitems(items):
    """The end-to-end test first: the longest test, started last, would be the whole run's
    tail when the suite runs in parallel workers (`make test`)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
