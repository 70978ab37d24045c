"""The one HTTP layer (tap_events/http.py): what a user sees of it in a run's log."""

from __future__ import annotations

import json
import socket

from tests.reliability import one_api_config
from tests.support import run_tap


def metric_points(stderr: str, metric: str) -> list[dict]:
    """The METRIC points of one metric the SDK logged (`METRIC: {...}`)."""
    points = []
    for line in stderr.splitlines():
        if "METRIC: " not in line:
            continue
        point = json.loads(line.split("METRIC: ", 1)[1])
        if point.get("metric") == metric:
            points.append(point)
    return points


def test_request_count_metric_counts_every_page(emulator):
    """The SDK's `http_request_count` METRIC line is written, counting each page request.

    1200 events at 100 per page: 12 pages with events and the empty page that ends the run.
    """
    run = run_tap(one_api_config(emulator.url, "discue", settings={"page_size": 100}),
                  streams=["discue_events"])
    assert run.returncode == 0, run.stderr
    assert len(run.records("discue_events")) == 1200
    points = metric_points(run.stderr, "http_request_count")
    assert points, run.stderr[-2000:]
    assert sum(point["value"] for point in points) == 13
    assert {point["tags"]["stream"] for point in points} == {"discue_events"}
    assert metric_points(run.stderr, "http_request_duration")


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/oauth2/token"


def test_unreachable_token_endpoint_names_the_token_url_setting(emulator):
    """A token request goes through the same layer as pages: a network failure is retried,
    then reported in one line naming the setting whose URL failed (box.token_url)."""
    config = one_api_config(emulator.url, "box", max_retries=2, max_retry_wait_seconds=1)
    config["box"].pop("access_token", None)
    config["box"].update({"client_id": "id", "client_secret": "secret-9f3k",
                          "token_url": closed_port_url()})
    run = run_tap(config, streams=["box_events"])
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert any("Box stream 'box_events': Box token request failed after retries: "
               "ConnectionError" in line
               and "(check box.token_url and the network)" in line for line in errors), errors
    assert "Traceback" not in run.stderr
    assert "secret-9f3k" not in run.stderr
