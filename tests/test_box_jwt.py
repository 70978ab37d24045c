"""Box JWT: reading the app's config.json, the signed assertion, and the emulator's checks.

Key pairs are generated in the test (the emulator's `new_jwt_app` plays the Developer
Console: a fresh RSA key, encrypted with the passphrase, its public half registered); the
emulator is reached over a real socket.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import typing as t

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tap_events import box_jwt
from tap_events.box_jwt import BoxAppConfigError, app_config_secrets, read_app_config
from tap_events_emulator import start_emulator, tap_config
from tap_events_emulator.box import CLIENT_ID, CLIENT_SECRET, ENTERPRISE_ID, JWT_GRANT, BoxAPI
from tests.support import log_lines, run_tap

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer

PASSPHRASE = "correct horse 7 battery"
AUDIENCE = "https://api.box.com/oauth2/token"


@pytest.fixture(scope="module")
def console():
    """An emulated Box whose Developer Console issued one key pair (key generation is slow
    enough to share it across this module's offline tests)."""
    api = BoxAPI(events=0, seed=1)
    return api, api.new_jwt_app(PASSPHRASE)


def key_id(app_config: dict) -> str:
    return app_config["boxAppSettings"]["appAuth"]["publicKeyID"]


def with_auth(app_config: dict, **auth: str | None) -> str:
    """The config's text with `appAuth` fields replaced (None removes one)."""
    document = json.loads(json.dumps(app_config))
    fields = document["boxAppSettings"]["appAuth"]
    for name, value in auth.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return json.dumps(document)


def test_assertion_carries_the_claims_box_documents(console):
    api, app_config = console
    app = read_app_config(json.dumps(app_config), "box.jwt_config")
    issued = datetime.datetime.now(datetime.UTC)

    token = app.assertion(audience=AUDIENCE, subject_type="enterprise",
                          subject_id=ENTERPRISE_ID, now=issued)

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == key_id(app_config)
    claims = jwt.decode(token, api.jwt_keys[key_id(app_config)], algorithms=["RS256"],
                        audience=AUDIENCE, options={"verify_exp": False})
    assert claims["iss"] == CLIENT_ID
    assert claims["sub"] == ENTERPRISE_ID and claims["box_sub_type"] == "enterprise"
    assert claims["aud"] == AUDIENCE
    assert 16 <= len(claims["jti"]) <= 128
    assert 0 < claims["exp"] - int(issued.timestamp()) <= 60
    assert app.enterprise_id == ENTERPRISE_ID and app.client_secret == CLIENT_SECRET
    again = jwt.decode(app.assertion(audience=AUDIENCE, subject_type="user", subject_id="77",
                                     now=issued),
                       options={"verify_signature": False})
    assert again["jti"] != claims["jti"], "every assertion needs a jti of its own"
    assert (again["sub"], again["box_sub_type"]) == ("77", "user")


def test_app_repr_shows_no_secret(console):
    _, app_config = console
    app = read_app_config(json.dumps(app_config), "box.jwt_config")
    assert CLIENT_SECRET not in repr(app) and "PRIVATE" not in repr(app)


def test_wrong_passphrase_is_one_line_naming_the_setting(console):
    _, app_config = console
    with pytest.raises(BoxAppConfigError) as caught:
        read_app_config(with_auth(app_config, passphrase="not the passphrase"),
                        "box.jwt_config_file '/etc/box/config.json'")
    message = str(caught.value)
    assert message.startswith("box.jwt_config_file '/etc/box/config.json': ")
    assert "cannot be decrypted with boxAppSettings.appAuth.passphrase" in message
    assert "not the passphrase" not in message and "\n" not in message


def test_encrypted_key_without_passphrase_is_refused(console):
    _, app_config = console
    with pytest.raises(BoxAppConfigError) as caught:
        read_app_config(with_auth(app_config, passphrase=None), "box.jwt_config")
    assert str(caught.value) == ("box.jwt_config: boxAppSettings.appAuth.privateKey is "
                                 "encrypted and boxAppSettings.appAuth.passphrase is empty")


def test_plain_key_needs_no_passphrase():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    text = json.dumps({"boxAppSettings": {"clientID": "c", "clientSecret": "s", "appAuth": {
        "publicKeyID": "k1", "privateKey": pem, "passphrase": ""}}, "enterpriseID": "0"})
    app = read_app_config(text, "box.jwt_config")
    token = app.assertion(audience=AUDIENCE, subject_type="user", subject_id="5")
    assert jwt.decode(token, key.public_key(), algorithms=["RS256"], audience=AUDIENCE)
    assert app.enterprise_id is None, "enterpriseID 0 is the Console's 'no enterprise'"


@pytest.mark.parametrize(("text", "expected"), [
    ("", "box.jwt_config is not a Box app config.json: not JSON (Expecting value"),
    ("client_id=abc", "box.jwt_config is not a Box app config.json: not JSON"),
    ('["not", "an", "object"]', "boxAppSettings.clientID, boxAppSettings.clientSecret, "
     "boxAppSettings.appAuth.publicKeyID, boxAppSettings.appAuth.privateKey missing"),
    # A Google service-account key: a JSON key file, but not Box's.
    (json.dumps({"type": "service_account", "private_key_id": "abc",
                 "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
                 "client_email": "x@y.iam.gserviceaccount.com"}),
     "is not a Box app config.json with a key pair: boxAppSettings.clientID"),
    # The Console's download for an app without a key pair yet: empty appAuth fields.
    (json.dumps({"boxAppSettings": {"clientID": "c", "clientSecret": "s", "appAuth": {
        "publicKeyID": "", "privateKey": "", "passphrase": ""}}, "enterpriseID": "1"}),
     "boxAppSettings.appAuth.publicKeyID, boxAppSettings.appAuth.privateKey missing; "
     "download it from the app's Configuration tab"),
    (json.dumps({"boxAppSettings": {"clientID": "c", "clientSecret": "s", "appAuth": {
        "publicKeyID": "k", "privateKey": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "passphrase": "p"
    }}}), "box.jwt_config: boxAppSettings.appAuth.privateKey is not a PEM private key"),
])
def test_a_file_that_is_not_a_box_app_config_is_named(text, expected):
    with pytest.raises(BoxAppConfigError) as caught:
        read_app_config(text, "box.jwt_config")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_key_that_is_not_rsa_is_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"pass")).decode()
    text = json.dumps({"boxAppSettings": {"clientID": "c", "clientSecret": "s", "appAuth": {
        "publicKeyID": "k", "privateKey": pem, "passphrase": "pass"}}})
    with pytest.raises(BoxAppConfigError, match="is not an RSA private key"):
        read_app_config(text, "box.jwt_config")


def test_an_unreadable_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "config.json"
    with pytest.raises(BoxAppConfigError) as caught:
        box_jwt.read_app_config_file(str(missing), "box.jwt_config_file")
    assert str(caught.value) == (
        f"box.jwt_config_file {str(missing)!r} cannot be read: No such file or directory")
    with pytest.raises(BoxAppConfigError, match="cannot be read: Is a directory"):
        box_jwt.read_app_config_file(str(tmp_path), "box.jwt_config_file")
    with pytest.raises(BoxAppConfigError, match=r"config\.json: larger than 64 KiB"):
        box_jwt.read_app_config_file("/dev/zero", "box.jwt_config_file")
    binary = tmp_path / "key.der"
    binary.write_bytes(bytes([0x30, 0x82, 0xff, 0xfe]))
    with pytest.raises(BoxAppConfigError, match=r"is not a Box app config\.json: not UTF-8 text"):
        box_jwt.read_app_config_file(str(binary), "box.jwt_config_file")


def test_secrets_of_a_config_cover_every_form_of_the_key(console):
    _, app_config = console
    text = json.dumps(app_config)
    found = app_config_secrets(text)
    auth = app_config["boxAppSettings"]["appAuth"]
    assert {CLIENT_SECRET, PASSPHRASE, auth["privateKey"],
            json.dumps(auth["privateKey"])[1:-1]} <= set(found)
    body = [line for line in auth["privateKey"].splitlines() if not line.startswith("-----")]
    assert len(body) > 20 and {line for line in body if len(line) >= 16} <= set(found)
    assert all(len(value) >= 16 for value in found if value not in (CLIENT_SECRET, PASSPHRASE))
    assert app_config_secrets("{not json") == []


# ------------------------------------------------------------------ the emulator's checks


def token_request(emulator, assertion: str, **form: str) -> requests.Response:
    return requests.post(emulator.api_url("box", "/oauth2/token"), timeout=30, data={
        "grant_type": JWT_GRANT, "assertion": assertion, "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, **form})


def signed(key, kid: str, **claims) -> str:
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    payload = {"iss": CLIENT_ID, "sub": ENTERPRISE_ID, "box_sub_type": "enterprise",
               "jti": secrets.token_urlsafe(24),
               "exp": now + 30, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key,
                      algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwt_app(emulator):
    """A key pair registered with the test's emulator: (config.json, private key, key id)."""
    app_config = emulator.app.apis["box"].new_jwt_app(PASSPHRASE)
    app = read_app_config(json.dumps(app_config), "box.jwt_config")
    return app_config, app.private_key, key_id(app_config)


def test_emulator_accepts_a_valid_assertion_and_its_token_reads_events(emulator, jwt_app):
    _, key, kid = jwt_app
    token_url = emulator.api_url("box", "/oauth2/token")

    answer = token_request(emulator, signed(key, kid, aud=token_url))

    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    events = requests.get(emulator.api_url("box", "/2.0/events"), timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    assert events.status_code == 200 and len(events.json()["entries"]) == 100


def tampered(token: str) -> str:
    """The assertion with its payload rewritten (another subject), the signature kept."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "99999"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


@pytest.mark.parametrize(("case", "refusal"), [
    ("tampered", "Signature verification error"),
    ("other key", "Signature verification error"),
    ("unknown kid", "Please check the 'kid' header"),
    ("expired", "Current date/time MUST be before the expiration date/time"),
    ("exp too far", "Please check the 'exp' claim"),
    ("wrong aud", "Please check the 'aud' claim"),
    ("no jti", "Please check the 'jti' claim: it is missing"),
    ("short jti", "Please check the 'jti' claim: 16 to 128"),
    ("wrong iss", "Please check the 'iss' claim"),
    ("other enterprise", "Please check the 'sub' claim"),
    ("bad sub type", "Please check the 'box_sub_type' claim"),
    ("not a jwt", "Invalid JWT"),
])
def test_emulator_refuses_a_bad_assertion_as_box_does(emulator, jwt_app, case, refusal):
    _, key, kid = jwt_app
    token_url = emulator.api_url("box", "/oauth2/token")
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    assertion = {
        "tampered": lambda: tampered(signed(key, kid, aud=token_url)),
        "other key": lambda: signed(rsa.generate_private_key(public_exponent=65537,
                                                             key_size=2048),
                                    kid, aud=token_url),
        "unknown kid": lambda: signed(key, "no-such-key", aud=token_url),
        "expired": lambda: signed(key, kid, aud=token_url, exp=now - 5),
        "exp too far": lambda: signed(key, kid, aud=token_url, exp=now + 120),
        "wrong aud": lambda: signed(key, kid, aud="https://api.box.com/oauth2/token"),
        "no jti": lambda: signed(key, kid, aud=token_url, jti=None),
        "short jti": lambda: signed(key, kid, aud=token_url, jti="abc"),
        "wrong iss": lambda: signed(key, kid, aud=token_url, iss="another-app"),
        "other enterprise": lambda: signed(key, kid, aud=token_url, sub="999"),
        "bad sub type": lambda: signed(key, kid, aud=token_url, box_sub_type="app"),
        "not a jwt": lambda: "not-a-jwt",
    }[case]()

    answer = token_request(emulator, assertion)

    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_grant" and refusal in body["error_description"], body
    assert not emulator.app.apis["box"].tokens, "a refused assertion minted a token"


def test_emulator_refuses_a_replayed_assertion(emulator, jwt_app):
    _, key, kid = jwt_app
    assertion = signed(key, kid, aud=emulator.api_url("box", "/oauth2/token"))
    assert token_request(emulator, assertion).status_code == 200
    replay = token_request(emulator, assertion)
    assert replay.status_code == 400
    assert replay.json() == {"error": "invalid_grant",
                             "error_description": "A unique 'jti' value is required."}


def test_emulator_needs_the_client_secret_with_an_assertion(emulator, jwt_app):
    _, key, kid = jwt_app
    answer = token_request(emulator, signed(key, kid, aud=emulator.api_url(
        "box", "/oauth2/token")), client_secret="wrong")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"


# ------------------------------------------------------------------ the tap, end to end


@contextlib.contextmanager
def box_emulator(events: int = 1200, **options: t.Any) -> t.Iterator[EmulatorServer]:
    """An emulator whose Box takes `options` (token lifetime, clock, audience)."""
    server = start_emulator(events=events, seed=11, options={"box": options})
    try:
        yield server
    finally:
        server.stop()


def jwt_settings(server, app_config: dict, how: str, tmp_path) -> dict:
    """Box settings authenticating with the app's config.json, as text or as a file."""
    urls = {key: tap_config(server.url)["box"][key] for key in ("api_url", "token_url")}
    if how == "jwt_config_file":
        path = tmp_path / "box_config.json"
        path.write_text(json.dumps(app_config, indent=2))
        return {**urls, "jwt_config_file": str(path), "page_size": 100}
    return {**urls, "jwt_config": json.dumps(app_config), "page_size": 100}


def secrets_in(app_config: dict, api: BoxAPI) -> set[str]:
    """What must never be printed: the client secret, the passphrase, every line of the
    private key, every assertion the emulator received and every token it minted, as they
    are and in base64."""
    auth = app_config["boxAppSettings"]["appAuth"]
    # Every full line of the key (the short tail of the last is no secret on its own).
    lines = {line for line in auth["privateKey"].splitlines()
             if len(line) >= 16 and not line.startswith("-----")}
    values = {CLIENT_SECRET, auth["passphrase"], *lines, *api.assertions, *api.tokens}
    return values | {base64.b64encode(value.encode()).decode() for value in values}


def assert_no_secret(run, secrets_: set[str]) -> None:
    output = run.stdout + run.stderr
    leaked = sorted(secret[:20] for secret in secrets_ if secret in output)
    assert not leaked, f"secrets in the output: {leaked}"


def token_requests(server) -> list[dict]:
    return [r for r in server.requests("box") if r["path"] == "/oauth2/token"]


def event_requests(server) -> list[dict]:
    return [r for r in server.requests("box") if r["path"] == "/2.0/events"]


@pytest.mark.parametrize("how", ["jwt_config", "jwt_config_file"])
def test_a_run_authenticated_by_config_json_syncs_both_streams_and_remints(tmp_path, how):
    """Each token the emulator mints dies after 4 requests: every 401 mints one new token
    (a fresh assertion, its own jti) and retries once."""
    with box_emulator(token_uses=4) as server:
        api = server.app.apis["box"]
        app_config = api.new_jwt_app(PASSPHRASE)

        run = run_tap({"box": jwt_settings(server, app_config, how, tmp_path)})

    assert run.returncode == 0, run.stderr
    for stream, count in api.stream_counts().items():
        ids = run.ids(stream)
        assert len(ids) == count == 1200 and len(set(ids)) == count, stream
    pages = len(event_requests(server))
    # 4 answered per token, plus the 401 that ends each one: one token per 5 requests.
    assert len(token_requests(server)) == len(api.assertions) >= pages // 5 >= 5
    assert len(api.tokens) == len(api.assertions), "an assertion was refused"
    retries = [line for line in log_lines(run, "WARNING") if "HTTP 401" in line]
    assert len(retries) == len(api.tokens) - 1
    assert_no_secret(run, secrets_in(app_config, api))


def test_a_token_close_to_expiry_is_reminted_before_it_is_used(tmp_path):
    """Tokens living 30 s are inside the tap's 60 s early-refresh margin: it mints a new one
    for every request rather than send one that may expire on the way."""
    with box_emulator(token_ttl=30) as server:
        api = server.app.apis["box"]
        app_config = api.new_jwt_app(PASSPHRASE)

        run = run_tap({"box": jwt_settings(server, app_config, "jwt_config", tmp_path)},
                      streams=["box_events"])

    assert run.returncode == 0, run.stderr
    assert len(set(run.ids("box_events"))) == 1200
    assert len(token_requests(server)) >= len(event_requests(server)) > 12
    assert not [line for line in log_lines(run, "WARNING") if "HTTP 401" in line]


def swap_registered_key(api: BoxAPI, app_config: dict) -> None:
    """The Console's public key for this kid no longer matches the file's private key (a
    re-generated key pair): every signature fails, as a tampered assertion's does."""
    api.jwt_keys[key_id(app_config)] = rsa.generate_private_key(
        public_exponent=65537, key_size=2048).public_key()


@pytest.mark.parametrize(("case", "options", "refusal"), [
    ("signature", {}, "Signature verification error"),
    ("expired", {"clock_offset_seconds": 120},
     "Current date/time MUST be before the expiration date/time listed in the 'exp' claim"),
    ("wrongly addressed", {"jwt_audience": "https://api.box.com/oauth2/token"},
     "Please check the 'aud' claim"),
])
def test_a_refused_assertion_is_one_line_naming_the_settings(tmp_path, case, options, refusal):
    with box_emulator(events=50, **options) as server:
        api = server.app.apis["box"]
        app_config = api.new_jwt_app(PASSPHRASE)
        if case == "signature":
            swap_registered_key(api, app_config)

        run = run_tap({"box": jwt_settings(server, app_config, "jwt_config", tmp_path)})

        assert run.returncode == 1
        assert not run.records() and not event_requests(server)
        assert api.assertions and not api.tokens
        errors = [line for line in log_lines(run, "ERROR")
                  if "Box token request failed: HTTP 400: invalid_grant: " in line]
        assert errors and all(refusal in line and "box.jwt_config" in line
                              and "box.token_url" in line for line in errors), run.stderr
        assert "Traceback" not in run.stderr
        assert_no_secret(run, secrets_in(app_config, api))


def config_errors(run) -> list[str]:
    return [line.split("| ", 3)[-1] for line in log_lines(run, "ERROR")
            if "Config validation failed" not in line]


@pytest.mark.parametrize("case", ["wrong passphrase", "not a box config", "missing file",
                                  "two auth methods", "text and file", "user without id"])
def test_an_unusable_jwt_config_stops_the_run_before_any_request(emulator, tmp_path, case):
    api = emulator.app.apis["box"]
    app_config = api.new_jwt_app(PASSPHRASE)
    settings = jwt_settings(emulator, app_config, "jwt_config_file", tmp_path)
    path = settings["jwt_config_file"]
    text = json.dumps(app_config)
    settings, expected = {
        "wrong passphrase": (
            {**settings, "jwt_config_file": None,
             "jwt_config": with_auth(app_config, passphrase="Tr0ub4dor&3")},
            "box.jwt_config: boxAppSettings.appAuth.privateKey cannot be decrypted with "
            "boxAppSettings.appAuth.passphrase (a wrong passphrase, or a damaged key)"),
        "not a box config": (
            {**settings, "jwt_config_file": None,
             "jwt_config": json.dumps({"type": "service_account", "private_key": "x"})},
            "box.jwt_config is not a Box app config.json with a key pair: "
            "boxAppSettings.clientID, boxAppSettings.clientSecret, "
            "boxAppSettings.appAuth.publicKeyID, boxAppSettings.appAuth.privateKey missing; "
            "download it from the app's Configuration tab in the Box Developer Console: "
            "Add and Manage Public Keys > Generate a Public/Private Keypair"),
        "missing file": (
            {**settings, "jwt_config_file": path + ".missing"},
            f"box.jwt_config_file {path + '.missing'!r} cannot be read: "
            "No such file or directory"),
        "two auth methods": (
            {**settings, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "box.client_id, box.client_secret, box.jwt_config_file are set: set only one way "
            "to authenticate to Box (box.access_token, or box.client_id + box.client_secret, "
            "or box.jwt_config, or box.jwt_config_file)"),
        "text and file": (
            {**settings, "jwt_config": text},
            "box.jwt_config, box.jwt_config_file are set: set only one way to authenticate "
            "to Box"),
        "user without id": (
            {**settings, "subject_type": "user"},
            "box.subject_type is 'user' but box.subject_id is not set"),
    }[case]

    run = run_tap({"box": settings})

    assert run.returncode == 1
    errors = config_errors(run)
    assert len(errors) == 1 and errors[0].startswith(expected), run.stderr
    assert not emulator.requests("box"), "the tap sent a request with an unusable config"
    assert "Traceback" not in run.stderr
    assert_no_secret(run, secrets_in(app_config, api) | {"Tr0ub4dor&3"})


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_token_endpoint_echoing_the_request_leaks_no_part_of_the_app_config(
        emulator, tmp_path, level):
    """The token endpoint quotes the request body (assertion, client secret) in its error,
    cut short in the middle of the assertion: the part quoted is masked all the same."""
    api = emulator.app.apis["box"]
    app_config = api.new_jwt_app(PASSPHRASE)
    emulator.inject("box", "echo", path="/oauth2/token", status=400, times=100)

    run = run_tap({"box": jwt_settings(emulator, app_config, "jwt_config", tmp_path)},
                  env={"TAP_EVENTS_LOGLEVEL": level})

    assert run.returncode == 1
    errors = [line for line in log_lines(run, "ERROR") if "Box token request failed" in line]
    assert errors and all("request POST /box/oauth2/token" in line and
                          "&assertion=*** (check box.jwt_config" in line
                          for line in errors), run.stderr
    assert_no_secret(run, secrets_in(app_config, api))
