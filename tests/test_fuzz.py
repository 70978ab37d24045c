"""Fuzzing (hypothesis): malformed pages and malformed config values never crash the tap.

Every example runs the tap in-process (a subprocess per example would take a second each)
against the emulator over real sockets. The page fuzz has the emulator answer one page of an
API with random JSON, a body cut at a random byte, or a real page with one value swapped for a
random one (wrong types, huge integers, nested junk); the config fuzz puts a random value in a
random setting. Either way a run must end as a user expects: status 0 with good records, or a
refused config naming the setting, or status 1 with one ERROR line naming the stream; never a
traceback, never a multi-line message. Failing requests are not retried (max_retries 1), so an
example takes a fraction of a second.

`make test` (and CI) tries the same examples every run, so a red run can be re-run and is
never luck (hypothesis's `derandomize`). To explore new ones, run with
`TAP_EVENTS_FUZZ_EXPLORE=1` (random examples, 10 times as many), and turn whatever it finds
into a fixed example here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import typing as t
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk.exceptions import ConfigValidationError

from tap_events.redact import RedactingFilter
from tap_events.tap import TapEvents
from tap_events_emulator import start_emulator
from tests.reliability import APIS, SOURCE_BY_NAME, one_api_config

EXPLORE = bool(os.environ.get("TAP_EVENTS_FUZZ_EXPLORE"))
EXAMPLES = 600 if EXPLORE else 60
FUZZ_EVENTS = 40
#: Several pages per stream, so a fault can land mid-stream.
FUZZ_PAGE_SIZE = 10

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
#: Values a page may carry that no API sends: beyond 64 bits too (the emulator writes those
#: with the stdlib).
ODD_VALUES = JSON_VALUES | st.integers(-(2**80), 2**80) | st.sampled_from(
    ["", "0", "not-a-date", "2026-02-30T00:00:00Z", "\u0000", "9" * 40])


@pytest.fixture(scope="module")
def server():
    emulator = start_emulator(events=FUZZ_EVENTS, seed=13)
    yield emulator
    emulator.stop()


@dataclass
class Outcome:
    exit_code: int | None = 0
    config_errors: list[str] = field(default_factory=list)
    lines: list[logging.LogRecord] = field(default_factory=list)
    stdout: str = ""


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_in_process(config: dict) -> Outcome:
    """The tap as the CLI runs it: config validation, then a sync; what it logged and wrote."""
    root = logging.getLogger()
    collect = Collect()
    root.addHandler(collect)
    level, root.level = root.level, logging.INFO
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    outcome = Outcome(lines=collect.records)
    try:
        with contextlib.redirect_stdout(out):
            try:
                tap = TapEvents(config=config)
            except ConfigValidationError as error:
                outcome.config_errors = error.errors
                return outcome
            try:
                tap.sync_all()
            except SystemExit as exit_:
                outcome.exit_code = exit_.code
        out.flush()
        outcome.stdout = out.buffer.getvalue().decode()  # type: ignore[attr-defined]
    finally:
        root.removeHandler(collect)
        root.level = level
        for handler in root.handlers:  # the filters each tap adds to the root handlers
            for redacting in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(redacting)
    return outcome


def assert_clean(outcome: Outcome) -> None:
    """Whatever happened was said in single lines, without a traceback."""
    for record in outcome.lines:
        message = record.getMessage()
        assert "Traceback" not in message and "\n" not in message, message
        assert record.exc_info is None, f"traceback logged with: {message}"
        assert "unhandled error" not in message, message
    assert outcome.exit_code in (0, 1, None), outcome.exit_code
    if outcome.exit_code == 1:
        errors = [r.getMessage() for r in outcome.lines if r.levelno >= logging.ERROR]
        # A failed stream names itself; a config that leaves no API configured says so.
        assert any(" stream '" in line or line.startswith("Nothing to sync: ")
                   for line in errors), errors


def fuzz_config(server, api: str, **top: t.Any) -> dict:
    page = {"page_size": FUZZ_PAGE_SIZE} if "page_size" in SOURCE_BY_NAME[api].defaults else {}
    return one_api_config(server.url, api, settings=page, max_retries=1, **top)


@st.composite
def page_faults(draw: st.DrawFn) -> dict[str, t.Any]:
    kind = draw(st.sampled_from(["status", "truncate", "mutate"]))
    fault: dict[str, t.Any] = {"kind": kind, "after": draw(st.integers(0, 2))}
    if kind == "status":
        fault.update(status=200, body=draw(JSON_VALUES))
    elif kind == "truncate":
        fault["options"] = {"keep": draw(st.integers(0, 400))}
    else:
        fault["options"] = {"seed": draw(st.integers(0, 2**32)), "value": draw(ODD_VALUES)}
    return fault


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE,
          suppress_health_check=[HealthCheck.too_slow])
@given(api=st.sampled_from(APIS), fault=page_faults())
def test_malformed_pages_end_cleanly(server, api, fault):
    server.clear_faults()
    server.inject(api, path=server.app.apis[api].fault_path, **fault)

    outcome = run_in_process(fuzz_config(server, api))

    assert not outcome.config_errors
    assert_clean(outcome)
    cut_json = fault["kind"] == "truncate" and SOURCE_BY_NAME[api].streams[0].expects_json
    if cut_json and not server.app.faults:  # a JSON page cut short was served
        assert outcome.exit_code == 1


TOP_LEVEL = ("start_date", "max_retries", "max_retry_wait_seconds", "request_timeout_seconds")


@st.composite
def bad_settings(draw: st.DrawFn) -> tuple[str, str | None, t.Any]:
    """(API, setting, value): `setting` under the API's key, or at the top level."""
    api = draw(st.sampled_from(APIS))
    names = sorted(SOURCE_BY_NAME[api].defaults) + list(SOURCE_BY_NAME[api].secret_settings)
    where = draw(st.sampled_from([api, None]))
    name = draw(st.sampled_from(sorted(set(names)) if where else TOP_LEVEL))
    return api, where, name, draw(ODD_VALUES)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE,
          suppress_health_check=[HealthCheck.too_slow])
@given(setting=bad_settings())
def test_malformed_config_values_are_refused_or_run_cleanly(server, setting):
    api, where, name, value = setting
    server.clear_faults()
    config = fuzz_config(server, api)
    (config[where] if where else config)[name] = value

    outcome = run_in_process(config)

    if outcome.config_errors:
        assert all("\n" not in error for error in outcome.config_errors)
        assert any(name in error for error in outcome.config_errors), outcome.config_errors
        return
    assert_clean(outcome)
