"""Failures that must not be retried, and data the tap cannot use: one clear line, exit 1.

Generic over the emulated APIs, like tests/test_faults.py.
"""

from __future__ import annotations

import pytest

from tap_events_emulator.socotra import POLICY_LOCATORS
from tap_events_emulator.socotra import TENANTS as SOCOTRA_TENANTS
from tests.reliability import APIS, SOURCE_BY_NAME, expected_counts, one_api_config
from tests.support import log_lines, run_tap

#: Requests a stream sends before failing, when every request is refused: one per partition
#: (a Socotra tenant, or a tenant's policy), as one failing partition does not stop the
#: others.
PARTITIONS = {"socotra_events": len(SOCOTRA_TENANTS),
              "socotra_scheduled_policy_events": len(SOCOTRA_TENANTS) * len(POLICY_LOCATORS),
              "socotra_failed_scheduled_events": len(SOCOTRA_TENANTS)}
#: APIs the emulator config reaches with OAuth client credentials: a 401 there mints one new
#: token and tries once more (a token can expire early), and only then fails (no loop).
REFRESHES_ON_401 = {"box"}
#: Served far more often than a run asks, so how many were taken counts the tries.
PLENTY = 100


def one_line_error(run, api: str, *parts: str) -> str:
    """The ERROR line naming the API and every one of `parts`; fails if there is none."""
    label = SOURCE_BY_NAME[api].label
    lines = [line for line in log_lines(run, "ERROR")
             if f"{label} stream '" in line and all(part in line for part in parts)]
    assert lines, f"no one-line error with {parts}:\n{run.stderr}"
    return lines[0]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
@pytest.mark.parametrize("api", APIS)
def test_client_errors_are_not_retried_and_say_what_to_check(emulator, api, status):
    fault_path = emulator.app.apis[api].fault_path
    emulator.inject(api, "status", path=fault_path, status=status, times=PLENTY,
                    body={"message": "refused by the test", "title": "refused by the test"})

    run = run_tap(one_api_config(emulator.url, api))

    assert run.returncode == 1
    assert not run.records()
    streams = expected_counts(emulator, api)
    requests = sum(PARTITIONS.get(stream, 1) for stream in streams)
    tries = 2 if status == 401 and api in REFRESHES_ON_401 else 1
    served = PLENTY - sum(fault.times for fault in emulator.app.faults)
    assert served == requests * tries, f"{served} requests for {len(streams)} stream(s)"
    if tries == 2:
        tokens = [r for r in emulator.requests(api) if r["path"] != fault_path]
        assert len(tokens) == 1 + requests, "each 401 mints one new token before its one retry"
    line = one_line_error(run, api, f"HTTP {status}", "refused by the test", "check ")
    assert line.endswith(")") or line.endswith("]")
    retries = "\n".join(log_lines(run, "WARNING")).count(" retry ")
    assert retries == requests * (tries - 1)
    assert "Traceback" not in run.stderr and "unhandled error" not in run.stderr


@pytest.mark.parametrize("api", APIS)
def test_an_event_with_a_broken_key_stops_its_stream_naming_it(emulator, api):
    """A record that breaks the schema where it matters (the key the target upserts on)."""
    stream = first_stream(api)
    # The first key field found in the page (a key the tap adds itself is not in it).
    emulator.inject(api, "mutate", path=emulator.app.apis[api].fault_path,
                    options={"keys": stream.primary_keys, "value": {"unexpected": ["object"]}})

    run = run_tap(one_api_config(emulator.url, api))

    assert run.returncode == 1
    # The API module may say it in its own words (Alpaca: "without a ULID"); the line names
    # the stream and the field.
    line = one_line_error(run, api, f"'{stream.name}'")
    assert any(f"'{key}'" in line for key in stream.primary_keys), line
    if stream.name in PARTITIONS:
        # One failing partition (the tenant of the bad event) does not stop the others.
        emitted = len(run.records(stream.name))
        assert 0 < emitted < expected_counts(emulator, api)[stream.name], emitted
    else:
        # The bad event was the first of the stream: nothing emitted, so nothing bookmarked.
        assert not run.records(stream.name)
        assert "replication_key_value" not in run.bookmark(stream.name)
    assert "Traceback" not in run.stderr
    # The API's other streams still ran to the end.
    for other, count in expected_counts(emulator, api).items():
        if other != stream.name:
            assert len(run.records(other)) == count


def first_stream(api: str) -> type:
    """The stream of `api` the SDK syncs first (in name order): the first to meet a fault."""
    return min(SOURCE_BY_NAME[api].streams, key=lambda stream: stream.name)


JSON_APIS = [api for api in APIS if first_stream(api).expects_json]


@pytest.mark.parametrize("api", JSON_APIS)
def test_a_page_that_is_not_json_is_retried_then_one_error_naming_the_stream(emulator, api):
    stream = first_stream(api).name
    emulator.inject(api, "truncate", path=emulator.app.apis[api].fault_path, times=2,
                    options={"keep": 25})

    run = run_tap(one_api_config(emulator.url, api, max_retries=2))

    assert run.returncode == 1
    one_line_error(run, api, f"'{stream}'", "not valid JSON", "25 bytes received",
                   f"check {api}.api_url", "gave up after 2 tries")
    assert any(" retry 1 " in line for line in log_lines(run, "WARNING"))
    assert not emulator.app.faults
    assert "Traceback" not in run.stderr
