"""The settings contract: sample_config.json documents every setting, bad values are refused
with the setting named, before any request."""

from __future__ import annotations

import pytest

from scripts import docs_settings
from tests.support import log_lines, run_tap


def test_readme_settings_table_and_sample_config_are_current():
    """Both are generated from the tap (`make docs-settings`); this fails when they drift."""
    assert docs_settings.main([]) == 0, "run: make docs-settings"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"start_date": "yesterday"}, "start_date 'yesterday'"),
        ({"box": {"page_size": 900, "access_token": "x"}}, "config['box']['page_size']"),
        ({"box": {"user_stream_type": "everything", "access_token": "x"}},
         "config['box']['user_stream_type']"),
        ({"box": {"api_url": "http://box.example.com/2.0", "access_token": "x"}},
         "box.api_url 'http://box.example.com/2.0'"),
        ({"max_retries": "many"}, "config['max_retries']"),
        # Durations past what a timer or a sleep can hold: a request deadline would never fire.
        ({"alpaca": {"idle_timeout_seconds": 2**80, "api_key": "k", "api_secret": "s"}},
         "config['alpaca']['idle_timeout_seconds']"),
        ({"max_retry_wait_seconds": 10**12}, "config['max_retry_wait_seconds']"),
        ({"tail_state_seconds": 1e300}, "config['tail_state_seconds']"),
        ({"socotra": {"lookback_minutes": 2**64}}, "config['socotra']['lookback_minutes']"),
    ],
)
def test_bad_setting_stops_before_any_request_naming_it(config, named):
    run = run_tap(config)
    assert run.returncode == 1
    assert any(named in line for line in log_lines(run, "ERROR")), run.stderr
    assert run.records() == []
    assert "Traceback" not in run.stderr
