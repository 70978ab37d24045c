"""Socotra EC: the tenant event stream and the scheduled/failed listings, over real sockets
against the emulator (two tenants: 1200 and 600 events)."""

from __future__ import annotations

import collections
import copy
import datetime

import pytest
import requests

from tap_events.sources.socotra import socotra_time
from tap_events_emulator import socotra as emulated
from tap_events_emulator import start_emulator, tap_config
from tests.support import TapRun, discover, log_lines, run_tap, select_streams

EVENTS = "socotra_events"
SCHEDULED = "socotra_scheduled_policy_events"
FAILED = "socotra_failed_scheduled_events"
TENANT_A, TENANT_B = emulated.TENANTS
LOOKBACK = datetime.timedelta(minutes=10)  # the default socotra.lookback_minutes


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def catalog() -> dict:
    return discover({})


def only(catalog: dict, *names: str) -> dict:
    return select_streams(copy.deepcopy(catalog), set(names))


def socotra_config(emulator, **settings) -> dict:
    """Only Socotra configured (Box is skipped), with `settings` overriding the defaults."""
    return {"socotra": {**tap_config(emulator.url)["socotra"], **settings}}


def keys(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["tenant_locator"], r["locator"]) for r in records]


def per_tenant(records: list[dict]) -> collections.Counter:
    return collections.Counter(r["tenant_locator"] for r in records)


def bookmarks(state: dict) -> dict[str, str]:
    """Tenant -> bookmark of socotra_events in a STATE value."""
    partitions = state.get("bookmarks", {}).get(EVENTS, {}).get("partitions", [])
    return {p["context"]["tenant_locator"]: p["replication_key_value"]
            for p in partitions if "replication_key_value" in p}


def when(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def list_requests(emulator, tenant: str | None = None) -> list[dict]:
    return [r for r in emulator.requests("socotra") if r["path"].endswith("/events/list")
            and (tenant is None or f"/{tenant}/" in r["path"])]


def last_opening_request(emulator, tenant: str) -> dict:
    """The filters of the latest run's first request for `tenant`."""
    return [r["query"] for r in list_requests(emulator, tenant)
            if "pagingToken" not in r["query"]][-1]


def api(emulator) -> emulated.SocotraAPI:
    return emulator.app.apis["socotra"]


@pytest.fixture(scope="module")
def shared_emulator():
    """One emulator for the read-only tests of this module."""
    server = start_emulator(events=1200, seed=11)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def full_sync(shared_emulator, catalog) -> TapRun:
    run = run_tap(socotra_config(shared_emulator), catalog=only(catalog, EVENTS))
    assert run.returncode == 0, run.stderr[-2000:]
    return run


# ------------------------------------------------------------------------------ discovery


def test_discover_lists_the_three_streams(catalog):
    streams = {entry["tap_stream_id"]: entry for entry in catalog["streams"]}
    assert streams[EVENTS]["key_properties"] == ["tenant_locator", "locator"]
    assert streams[EVENTS]["replication_key"] == "timestamp"
    assert streams[SCHEDULED]["key_properties"] == [
        "tenant_locator", "policyLocator", "transactionLocator", "customEventId"]
    assert streams[FAILED]["key_properties"] == ["tenant_locator", "triggerGroup", "triggerName"]
    assert "object" in streams[EVENTS]["schema"]["properties"]["data"]["type"]


# ------------------------------------------------------------------------------ events


def test_full_sync_emits_every_event_once_per_tenant(full_sync, shared_emulator):
    records = full_sync.records(EVENTS)
    assert per_tenant(records) == {TENANT_A: 1200, TENANT_B: 600}
    assert len(set(keys(records))) == len(records)
    assert len(records) == shared_emulator.stream_counts()[EVENTS]
    # `data` stays the API's JSON object, nested lists and all.
    invoices = [r for r in records if r["type"] == "billing.invoice.generate"]
    assert invoices and all(isinstance(r["data"]["policyLocators"]["items"], list)
                            for r in invoices)


def test_each_tenant_bookmarks_its_own_newest_event(full_sync):
    records = full_sync.records(EVENTS)
    newest = {tenant: max(r["timestamp"] for r in records if r["tenant_locator"] == tenant)
              for tenant in (TENANT_A, TENANT_B)}
    assert bookmarks(full_sync.final_state) == newest
    assert newest[TENANT_A] != newest[TENANT_B]


def test_paging_token_is_never_combined_with_filters(full_sync, shared_emulator):
    calls = list_requests(shared_emulator)
    followers = [call["query"] for call in calls if "pagingToken" in call["query"]]
    firsts = [call["query"] for call in calls if "pagingToken" not in call["query"]]
    assert followers and all(list(query) == ["pagingToken"] for query in followers)
    # One filtered request per tenant opens each run; a first run without start_date sends
    # only the end of the window.
    assert len(firsts) == 2
    assert all(set(query) == {"endTimestamp", "pageSize"} for query in firsts)
    # 1200 + 600 events in pages of 100, each tenant ending on one empty page.
    assert len(calls) == 12 + 1 + 6 + 1
    assert "HTTP 400" not in full_sync.stderr


def test_emulator_rejects_paging_token_with_filters(shared_emulator):
    """The rule the tap must respect is enforced, so the log assertion above means something."""
    url = f"{shared_emulator.url}/socotra/event/{TENANT_A}/events/list"
    auth = {"Authorization": f"Bearer {emulated.TOKEN}"}
    first = requests.get(url, params={"endTimestamp": "2100-01-01T00:00:00.000Z",
                                      "pageSize": 5}, headers=auth, timeout=30)
    token = first.json()["pagingToken"]
    assert requests.get(url, params={"pagingToken": token}, headers=auth,
                        timeout=30).status_code == 200
    mixed = requests.get(url, params={"pagingToken": token, "pageSize": 5}, headers=auth,
                         timeout=30)
    assert mixed.status_code == 400
    assert "pagingToken cannot be combined" in mixed.json()["message"]


def test_event_type_filter_is_sent_once_and_honoured(shared_emulator, full_sync, catalog):
    wanted = "policy.quote.issue"
    run = run_tap(socotra_config(shared_emulator, event_type=wanted),
                  catalog=only(catalog, EVENTS))
    assert run.returncode == 0, run.stderr[-2000:]
    expected = [k for k, r in zip(keys(full_sync.records(EVENTS)), full_sync.records(EVENTS),
                                  strict=True) if r["type"] == wanted]
    assert expected and keys(run.records(EVENTS)) == expected
    typed = [r["query"] for r in list_requests(shared_emulator) if "type" in r["query"]]
    assert len(typed) == 2 and all(query["type"] == [wanted] for query in typed)


def test_start_date_bounds_the_first_run_without_lookback(shared_emulator, full_sync, catalog):
    records = full_sync.records(EVENTS)
    start = when(records[700]["timestamp"])
    start_date = start.isoformat().replace("+00:00", "Z")
    run = run_tap({**socotra_config(shared_emulator), "start_date": start_date},
                  catalog=only(catalog, EVENTS))
    assert run.returncode == 0, run.stderr[-2000:]
    assert set(keys(run.records(EVENTS))) == {
        k for k, r in zip(keys(records), records, strict=True) if when(r["timestamp"]) >= start}
    sent = [r["query"]["startTimestamp"][0] for r in list_requests(shared_emulator)[-40:]
            if "startTimestamp" in r["query"]]
    assert sent[-2:] == [socotra_time(start)] * 2


def test_two_tenants_keep_separate_bookmarks(emulator, catalog):
    config, selection = socotra_config(emulator), only(catalog, EVENTS)
    first = run_tap(config, catalog=selection)
    before = bookmarks(first.final_state)
    emulator.add_events("socotra", 30, tenant=TENANT_B)

    second = run_tap(config, state=first.final_state, catalog=selection)
    assert second.returncode == 0, second.stderr[-2000:]
    after = bookmarks(second.final_state)
    assert after[TENANT_A] == before[TENANT_A]
    assert when(after[TENANT_B]) == when(before[TENANT_B]) + datetime.timedelta(seconds=30)
    # Each tenant asked from its own bookmark minus the lookback, and got nothing older.
    for tenant in (TENANT_A, TENANT_B):
        start = when(last_opening_request(emulator, tenant)["startTimestamp"][0])
        assert start == when(before[tenant]) - LOOKBACK
        assert all(when(r["timestamp"]) >= start
                   for r in second.records(EVENTS) if r["tenant_locator"] == tenant)
    new = set(keys(second.records(EVENTS))) - set(keys(first.records(EVENTS)))
    assert per_tenant([{"tenant_locator": t} for t, _ in new]) == {TENANT_B: 30}


def test_resume_from_mid_run_state(emulator, catalog):
    """The API fails on tenant A's 10th page: every STATE written stays behind what was
    emitted, tenant B still loads, and the resumed run loads the rest from the bookmark minus
    the lookback."""
    config = {**socotra_config(emulator), "max_retries": 1}
    selection = only(catalog, EVENTS)
    emulator.inject("socotra", "status", path=f"/event/{TENANT_A}/events/list", status=503,
                    after=9, times=1)
    broken = run_tap(config, catalog=selection)
    assert broken.returncode == 1
    assert any("HTTP 503" in line for line in log_lines(broken, "ERROR"))

    emitted: dict[str, str] = {}
    for message in broken.messages:
        if message["type"] == "RECORD" and message["stream"] == EVENTS:
            record = message["record"]
            emitted[record["tenant_locator"]] = record["timestamp"]
        if message["type"] == "STATE":
            for tenant, value in bookmarks(message["value"]).items():
                assert when(value) <= when(emitted[tenant])
    # Tenant A's failure does not stop tenant B, which completes with its bookmark.
    assert per_tenant(broken.records(EVENTS)) == {TENANT_A: 900, TENANT_B: 600}
    assert bookmarks(broken.final_state) == {TENANT_A: emitted[TENANT_A],
                                             TENANT_B: emitted[TENANT_B]}

    resumed = run_tap(config, state=broken.final_state, catalog=selection)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    start = when(emitted[TENANT_A]) - LOOKBACK
    assert last_opening_request(emulator, TENANT_A)["startTimestamp"] == [socotra_time(start)]
    everything = broken.records(EVENTS) + resumed.records(EVENTS)
    assert len(set(keys(everything))) == emulator.stream_counts()[EVENTS]
    # Resumed, not restarted: tenant A re-read its lookback window (600 events) and no more.
    again = {k for k, r in zip(keys(everything), everything, strict=True)
             if k[0] == TENANT_A and when(r["timestamp"]) >= start}
    assert {k for k in keys(resumed.records(EVENTS)) if k[0] == TENANT_A} == again
    assert len(again) == 1200 - 900 + 601


def test_late_event_inside_the_lookback_arrives_once(emulator, catalog):
    config, selection = socotra_config(emulator), only(catalog, EVENTS)
    first = run_tap(config, catalog=selection)
    emulator.add_events("socotra", 4)
    emulator.add_events("socotra", 1, tenant=TENANT_A, late_seconds=120)
    _, late_locator, _ = api(emulator).late[TENANT_A][0]

    second = run_tap(config, state=first.final_state, catalog=selection)
    assert second.returncode == 0, second.stderr[-2000:]
    # A timestamp watermark alone would skip it: it is older than tenant A's bookmark.
    late = [r for r in second.records(EVENTS) if r["locator"] == late_locator]
    assert len(late) == 1 and late[0]["tenant_locator"] == TENANT_A
    assert when(late[0]["timestamp"]) < when(bookmarks(first.final_state)[TENANT_A])
    # Nothing twice within the run, and the two runs together hold every event.
    assert len(set(keys(second.records(EVENTS)))) == len(second.records(EVENTS))
    everything = set(keys(first.records(EVENTS))) | set(keys(second.records(EVENTS)))
    assert len(everything) == emulator.stream_counts()[EVENTS] == 1200 + 600 + 5


def test_repeated_events_are_emitted_once(catalog):
    """Should Socotra's token repeat the last event of a page, the run still emits it once."""
    server = start_emulator(events=1200, seed=11, options={"socotra": {"repeat_last": True}})
    try:
        url = f"{server.url}/socotra/event/{TENANT_A}/events/list"
        auth = {"Authorization": f"Bearer {emulated.TOKEN}"}
        first = requests.get(url, params={"endTimestamp": "2100-01-01T00:00:00.000Z",
                                          "pageSize": 5}, headers=auth, timeout=30).json()
        second = requests.get(url, params={"pagingToken": first["pagingToken"]},
                              headers=auth, timeout=30).json()
        assert second["events"][0] == first["events"][-1]

        run = run_tap(socotra_config(server), catalog=only(catalog, EVENTS))
        assert run.returncode == 0, run.stderr[-2000:]
        assert per_tenant(run.records(EVENTS)) == {TENANT_A: 1200, TENANT_B: 600}
        assert len(set(keys(run.records(EVENTS)))) == 1800
    finally:
        server.stop()


def test_recovers_from_throttled_dropped_and_truncated_pages(emulator, catalog):
    path = f"/event/{TENANT_B}/events/list"
    emulator.inject("socotra", "status", path=path, status=429,
                    headers={"Retry-After": "0"}, after=1)
    emulator.inject("socotra", "drop", path=path, after=3)
    emulator.inject("socotra", "truncate", path=path, after=4)
    run = run_tap(socotra_config(emulator), catalog=only(catalog, EVENTS))
    assert run.returncode == 0, run.stderr[-2000:]
    assert per_tenant(run.records(EVENTS)) == {TENANT_A: 1200, TENANT_B: 600}
    assert len(set(keys(run.records(EVENTS)))) == 1800


# ------------------------------------------------------------------------------ listings


def test_scheduled_and_failed_listings_complete_over_pages(emulator, catalog):
    # 21 per page: tenant A's 137 failed jobs end on a short page, tenant B's 42 on an
    # exact multiple, which takes one more (empty) page.
    run = run_tap(socotra_config(emulator, page_size=21), catalog=only(catalog, SCHEDULED, FAILED))
    assert run.returncode == 0, run.stderr[-2000:]
    counts = emulator.stream_counts()

    failed = run.records(FAILED)
    assert len(failed) == counts[FAILED]
    assert per_tenant(failed) == dict(zip(emulated.TENANTS, emulated.FAILED_JOBS, strict=True))
    assert len({(r["tenant_locator"], r["triggerGroup"], r["triggerName"])
                for r in failed}) == len(failed)
    offsets = collections.defaultdict(list)
    for call in emulator.requests("socotra"):
        if call["path"].endswith("/failed/list"):
            offsets[call["path"].split("/")[2]].append(int(call["query"]["offset"][0]))
            assert call["query"]["count"] == ["21"]
    assert offsets == {TENANT_A: list(range(0, 137, 21)), TENANT_B: [0, 21, 42]}

    scheduled = run.records(SCHEDULED)
    assert len(scheduled) == counts[SCHEDULED] > len(emulated.POLICY_LOCATORS) * 2
    assert {(r["tenant_locator"], r["policyLocator"]) for r in scheduled} == {
        (t, p) for t in emulated.TENANTS for p in emulated.POLICY_LOCATORS}
    assert len({(r["tenant_locator"], r["policyLocator"], r["transactionLocator"],
                 r["customEventId"]) for r in scheduled}) == len(scheduled)


def test_scheduled_events_skipped_without_policies(emulator, catalog):
    run = run_tap(socotra_config(emulator, policy_locators=[]), catalog=only(catalog, SCHEDULED))
    assert run.returncode == 0
    assert run.records(SCHEDULED) == []
    assert any("socotra.policy_locators is empty" in line for line in log_lines(run, "INFO"))


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(("settings", "expected"), [
    ({"token": "SOCP_not-a-real-token-42"}, "HTTP 401 UNAUTHORIZED: Invalid or expired token"),
    ({"token": emulated.TOKEN_WITHOUT_EVENTS}, "HTTP 403"),
    ({"tenant_locators": [TENANT_A, "00000000-0000-4000-8000-000000000000"]},
     "No access to tenant 00000000-0000-4000-8000-000000000000"),
    ({"api_url": None}, "socotra.api_url is not set"),
    ({"tenant_locators": ["acme-insurance"]}, "'acme-insurance' is not a tenant UUID"),
    ({"tenant_locators": []}, "socotra.tenant_locators lists no tenant"),
])
def test_bad_settings_fail_in_one_line(emulator, catalog, settings, expected):
    config = socotra_config(emulator, **settings)
    run = run_tap(config, catalog=only(catalog, EVENTS))
    assert run.returncode == 1
    errors = [line for line in log_lines(run, "ERROR") if f"stream '{EVENTS}':" in line]
    assert errors and expected.lower() in errors[0].lower(), run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    token = config["socotra"]["token"]
    assert token not in run.stderr and token not in run.stdout


def test_error_names_the_tenant_and_the_setting_to_check(emulator, catalog):
    stranger = "00000000-0000-4000-8000-000000000000"
    run = run_tap(socotra_config(emulator, tenant_locators=[stranger]),
                  catalog=only(catalog, EVENTS))
    line = next(line for line in log_lines(run, "ERROR") if f"stream '{EVENTS}':" in line)
    assert f"[tenant {stranger}]" in line and "socotra.token" in line

