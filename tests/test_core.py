"""The SDK's standard tap tests (discovery, sync, schema, keys, final state), run in-process
against an emulator that lives as long as this module."""

from __future__ import annotations

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_events.tap import TapEvents
from tap_events_emulator import start_emulator, tap_config

# Built at import: the SDK instantiates the tap while collecting the class.
EMULATOR = start_emulator(events=600, seed=3)

TestTapEvents = get_tap_test_class(
    tap_class=TapEvents,
    config=tap_config(EMULATOR.url),
    suite_config=SuiteConfig(max_records_limit=None, ignore_no_records=False),
)
