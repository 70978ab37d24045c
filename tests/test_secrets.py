"""No secret in any output of a failing run: stdout (records, state), stderr (log), any level.

For every emulated API and every way a run can fail with credentials in play: refused
credentials, a server that echoes the request (headers, form body) in its error body, at INFO
and DEBUG level, and a config that is refused. The grep looks for each secret value and every
form derived from it (the HTTP Basic token, base64, URL encoding) and for tokens the emulator
minted during the run.
"""

from __future__ import annotations

import base64
import typing as t
from urllib.parse import quote, quote_plus

import pytest

from tests.reliability import APIS, SOURCE_BY_NAME, one_api_config
from tests.support import log_lines, run_tap

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer
    from tests.support import TapRun


def secrets_of(api: str, settings: t.Mapping[str, t.Any], emulator: EmulatorServer) -> set[str]:
    source = SOURCE_BY_NAME[api]
    values = {str(settings[key]) for key in source.secret_settings if settings.get(key)}
    if source.derived_secrets:
        values |= set(source.derived_secrets(settings))
    # Tokens the API minted for this run (OAuth): never settings, secrets all the same.
    values |= set(getattr(emulator.app.apis[api], "tokens", {}))
    assert values, f"{api} has no secret to look for"
    forms = set()
    for value in values:
        forms |= {value, quote(value, safe=""), quote_plus(value),
                  base64.b64encode(value.encode()).decode()}
    return forms


def assert_no_secret(run: TapRun, secrets: set[str]) -> None:
    output = run.stdout + run.stderr
    leaked = sorted(secret for secret in secrets if secret in output)
    assert not leaked, f"secrets in the output: {leaked}"


def wrong_credentials(api: str, settings: t.Mapping[str, t.Any]) -> dict[str, str]:
    """A wrong value for each secret setting the config uses (setting another way to
    authenticate besides would be refused as a config error before any request)."""
    return {key: f"wrong-{api}-{key}-4f9Qz7" for key in SOURCE_BY_NAME[api].secret_settings
            if key in settings}


@pytest.mark.parametrize("api", APIS)
def test_refused_credentials_leak_nothing(emulator, api):
    config = one_api_config(emulator.url, api)
    config[api].update(wrong_credentials(api, config[api]))

    run = run_tap(config)

    assert run.returncode == 1
    assert log_lines(run, "ERROR")
    assert_no_secret(run, secrets_of(api, config[api], emulator))


@pytest.mark.parametrize(("where", "level"), [("events", "DEBUG"), ("every request", "INFO")])
@pytest.mark.parametrize("api", APIS)
def test_an_error_body_echoing_the_request_leaks_nothing(emulator, api, where, level):
    """The server quotes the request's headers and body (Authorization, API key, a token
    request's client secret) in every error body, which the tap logs as the API's words."""
    path = emulator.app.apis[api].fault_path if where == "events" else ""
    emulator.inject(api, "echo", path=path, status=500, times=100, headers={"Retry-After": "0"})
    config = one_api_config(emulator.url, api, max_retries=2)

    run = run_tap(config, env={"TAP_EVENTS_LOGLEVEL": level})

    assert run.returncode == 1
    assert any("failed; headers:" in line for line in log_lines(run, "ERROR")), (
        "the echoed body should be in the error, with the secrets masked")
    assert_no_secret(run, secrets_of(api, config[api], emulator))
    if level == "DEBUG":
        assert "Traceback" in run.stderr, "debug output should carry the traceback"
    else:
        assert "Traceback" not in run.stderr


@pytest.mark.parametrize("api", APIS)
def test_a_refused_config_leaks_nothing(emulator, api):
    """A secret in a setting of the wrong type, and an API URL over plain http."""
    source = SOURCE_BY_NAME[api]
    config = one_api_config(emulator.url, api)
    secrets = secrets_of(api, config[api], emulator)
    for key in set(source.secret_settings) & set(config[api]):
        config[api][key] = [config[api][key]]  # a list where a string belongs
    config[api]["api_url"] = "http://api.example.com/v1"

    run = run_tap(config)

    assert run.returncode == 1
    errors = "\n".join(log_lines(run, "ERROR"))
    assert "Config validation failed" in errors
    assert "is not of type 'string'" in errors and f"config['{api}']" in errors
    assert_no_secret(run, secrets)
