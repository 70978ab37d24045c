"""Credentials stay where they belong (SECURITY.md): only to their API's origin, never through
a redirect elsewhere or to plain http, never in any output in any form, never in a file left
behind, and over TLS trusting the CA the environment names.

Servers are real sockets on 127.0.0.1: the emulator (over https with a certificate made here,
or plain http), and a `Recorder` on another port, which is another origin: it records whatever
reaches it, so "the other origin receives no credential" is checked on what it received.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tap_events.errors import TapEventsError
from tap_events.http import HttpClient
from tap_events.redact import RedactingFilter, redact
from tap_events_emulator import start_emulator
from tests.reliability import APIS, SOURCE_BY_NAME, assert_every_event_once, one_api_config
from tests.support import RunningTap, log_lines, run_tap
from tests.tls import make_ca

if t.TYPE_CHECKING:
    from tap_events_emulator.app import EmulatorServer
    from tests.support import TapRun
    from tests.tls import CertificateAuthority


class Recorder:
    """Another origin: records each request (method, path, headers, body); answers 200 {}."""

    def __init__(self) -> None:
        self.received: list[dict[str, t.Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append({"method": self.command, "path": self.path,
                                 "headers": dict(self.headers),
                                 "body": self.rfile.read(length).decode("latin-1")})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_OPTIONS = handle_one

            def log_message(self, *args: t.Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_emulator(ca):
    server = start_emulator(events=300, seed=11, ssl_context=ca.server_context())
    yield server
    server.stop()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.stop()


def trusting(ca: CertificateAuthority, variable: str = "REQUESTS_CA_BUNDLE") -> dict[str, str]:
    """An environment trusting the test CA through `variable` alone (no other CA setting
    of the machine's environment taking precedence), and no proxy in the way of 127.0.0.1."""
    unset = dict.fromkeys(("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"), "")
    return {**unset, variable: str(ca.ca_file), "NO_PROXY": "127.0.0.1,localhost"}


def secret_forms(values: t.Iterable[str]) -> set[str]:
    """Every form a secret could be printed in, computed here (not by the code under test)."""
    forms = set()
    for value in values:
        for text in {value, value.strip()}:
            escaped = json.dumps(text)[1:-1]
            forms |= {text, quote(text, safe=""), quote_plus(text),
                      base64.b64encode(text.encode()).decode(), escaped,
                      escaped.replace("/", "\\/"), repr(text.encode())[2:-1]}
    return {form for form in forms if len(form) >= 4}


def secrets_of(api: str, settings: t.Mapping[str, t.Any], emulator: EmulatorServer) -> set[str]:
    source = SOURCE_BY_NAME[api]
    values = {str(settings[key]) for key in source.secret_settings if settings.get(key)}
    if source.derived_secrets:
        values |= set(source.derived_secrets(source.settings({api: settings})))
    values |= set(getattr(emulator.app.apis[api], "tokens", {}))
    return secret_forms(values)


def assert_no_secret(run: TapRun, forms: set[str]) -> None:
    output = run.stdout + run.stderr
    leaked = sorted(form for form in forms if form in output)
    assert not leaked, f"secrets in the output: {leaked}"


def error_line(run: TapRun, *parts: str, debug: bool = False) -> str:
    """The one ERROR line holding every part (the stream's failure); no traceback unless
    the run logged at DEBUG level."""
    lines = [line for line in log_lines(run, "ERROR") if all(part in line for part in parts)]
    assert lines, f"no ERROR line with {parts}:\n{run.stderr[-3000:]}"
    assert debug or "Traceback" not in run.stderr
    return lines[0]


# ----------------------------------------------------------------- redirects


@pytest.mark.parametrize("where", ["another origin", "another origin from https",
                                   "plain http on the same port"])
@pytest.mark.parametrize("api", APIS)
def test_a_redirect_off_the_api_origin_is_refused(request, recorder, ca, api, where):
    """discue's 302 to another host (or from https to http) used to carry X-API-KEY there."""
    https = where != "another origin"
    emulator = request.getfixturevalue("https_emulator" if https else "emulator")
    port = emulator.server.server_port
    target = f"http://127.0.0.1:{port}" if where.startswith("plain") else recorder.url
    emulator.inject(api, "redirect", path=emulator.app.apis[api].fault_path, times=100,
                    options={"to": target})
    config = one_api_config(emulator.url, api, max_retries=2)

    run = run_tap(config, env=trusting(ca))

    assert run.returncode == 1
    line = error_line(run, f"{api}.api_url: HTTP 302 redirect to {target}/", "refused")
    why = ("from https to plain http" if https
           else f"to another origin than http://127.0.0.1:{port}")
    assert f"credentials are not sent {why} (set {api}.api_url" in line
    assert recorder.received == [], "the other origin was sent a request"
    assert run.records() == []
    assert_no_secret(run, secrets_of(api, config[api], emulator))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("api", APIS)
def test_a_redirect_within_the_api_origin_is_followed(emulator, api, status):
    emulator.inject(api, "redirect", path=emulator.app.apis[api].fault_path, status=status,
                    options={"to": ""})

    run = run_tap(one_api_config(emulator.url, api))

    assert run.returncode == 0, run.stderr[-3000:]
    assert not emulator.app.faults, "the redirect was never answered"
    assert_every_event_once(run, emulator, api)


@pytest.mark.parametrize("status", [307, 308])
def test_the_box_token_endpoint_cannot_redirect_the_client_secret(https_emulator, recorder,
                                                                  ca, status):
    emulator = https_emulator
    emulator.inject("box", "redirect", path="/oauth2/token", status=status, times=100,
                    options={"to": recorder.url})
    config = one_api_config(emulator.url, "box")

    run = run_tap(config, env=trusting(ca))

    assert run.returncode == 1
    error_line(run, f"box.token_url: HTTP {status} redirect to {recorder.url}/", "refused")
    assert recorder.received == [], "the client secret was re-POSTed to another origin"
    assert_no_secret(run, secrets_of("box", config["box"], emulator))


def test_credentials_never_leave_the_origin_of_their_setting(recorder):
    """The layer itself: a request carrying a credential to another origin is not sent;
    one without credentials (a long poll to Box's realtime server) is."""
    secrets = ["key-8c1f5e0b"]
    http = HttpClient(api="discue", config={}, secrets=secrets,
                      settings={"api_url": "https://api.discue.io/v1"})
    with_key = http.prepare("GET", f"{recorder.url}/x", headers={"X-API-KEY": secrets[0]})
    bearer = http.prepare("GET", f"{recorder.url}/x", headers={"Authorization": "Bearer t0k3n"})
    for request in (with_key, bearer):
        with pytest.raises(TapEventsError, match="refused to send the credentials of "
                           r"discue.api_url to http://127.0.0.1:\d+/x: they only go to "
                           "https://api.discue.io:443"):
            http.request(request, setting="discue.api_url")
    assert recorder.received == []

    plain = http.prepare("GET", f"{recorder.url}/realtime", headers={"User-Agent": "tap"})
    assert http.request(plain, setting="discue.api_url").status_code == 200
    assert [r["path"] for r in recorder.received] == ["/realtime"]


def test_the_box_realtime_server_on_another_origin_gets_no_token(emulator, recorder):
    """Box names its realtime server in OPTIONS /events: another origin, which must never
    see the token (it is reached without credentials, and answers `reconnect` here)."""
    api = emulator.app.apis["box"]
    original = api.realtime_servers

    def elsewhere(request, stream_type):
        response = original(request, stream_type)
        body = json.loads(response.get_data())
        body["entries"][0]["url"] = f"{recorder.url}/subscribe?channel=c1"
        response.set_data(json.dumps(body))
        return response

    api.realtime_servers = elsewhere
    config = {**one_api_config(emulator.url, "box"), "tail_seconds": 1.5,
              "tail_poll_seconds": 0.5}

    run = run_tap(config, streams=["box_events"])

    assert recorder.received, "the realtime server was never polled"
    for request in recorder.received:
        assert "Authorization" not in request["headers"]
    assert_no_secret(run, secrets_of("box", config["box"], emulator))


# ----------------------------------------------------------------- secrets in every form


#: Secrets as a mounted secret file and a careless vault give them: a trailing newline, a
#: slash (JSON-escaped `\/` by PHP), a plus (URL-encoded), a non-ASCII letter (`\u00e9`).
AWKWARD = "wrong/clé+Zé-4f9Qz7"


@pytest.mark.parametrize("api", APIS)
def test_a_secret_with_a_trailing_newline_is_used_stripped(emulator, api):
    """A discue key with a trailing newline was printed in `Invalid header value b'…\\n'`."""
    config = one_api_config(emulator.url, api)
    padded = {key: f"  {config[api][key]}\n" for key in SOURCE_BY_NAME[api].secret_settings
              if key in config[api]}
    config[api].update(padded)

    run = run_tap(config, env={"TAP_EVENTS_LOGLEVEL": "DEBUG"})

    assert run.returncode == 0, run.stderr[-3000:]
    assert_every_event_once(run, emulator, api)
    for key in padded:
        assert f"{api}.{key}: surrounding whitespace removed" in run.stderr
    assert_no_secret(run, secrets_of(api, config[api], emulator))


@pytest.mark.parametrize("api", APIS)
def test_a_secret_echoed_json_escaped_is_masked(emulator, api):
    """The server quotes the request as JSON text (`\\/`, `\\u00e9`) in its error body."""
    config = one_api_config(emulator.url, api, max_retries=1)
    for key in SOURCE_BY_NAME[api].secret_settings:
        if key in config[api]:
            config[api][key] = f"{AWKWARD}-{key}\n"
    emulator.inject(api, "echo", status=400, times=100, options={"escaped": True})

    run = run_tap(config, env={"TAP_EVENTS_LOGLEVEL": "DEBUG"})

    assert run.returncode == 1
    error_line(run, "failed; headers:", "***", debug=True)
    assert "\\/" in run.stderr, "the echo is not JSON-escaped (a User-Agent's /)"
    assert_no_secret(run, secrets_of(api, config[api], emulator))


@pytest.mark.parametrize("value", [123456789012, 3.25e9, {"key": "nested-9d2c7a1e"},
                                   ["listed-5b8e0f3a"], True])
@pytest.mark.parametrize("api", APIS)
def test_a_secret_of_the_wrong_json_type_is_masked(emulator, api, value):
    config = one_api_config(emulator.url, api)
    key = SOURCE_BY_NAME[api].secret_settings[0]
    config[api][key] = value

    run = run_tap(config)

    assert run.returncode == 1
    errors = "\n".join(log_lines(run, "ERROR"))
    assert "Config validation failed" in errors and f"config['{api}']" in errors
    assert "Traceback" not in run.stderr
    leaves = [str(value)] if not isinstance(value, dict | list) else [
        *map(str, value.values() if isinstance(value, dict) else value)]
    if value is not True:  # `True` is the word in the schema's own message
        assert_no_secret(run, secret_forms(leaves))


def test_the_log_filter_masks_values_of_any_type():
    """A token answer whose access_token is a number used to crash the redaction filter."""
    secrets: list[t.Any] = [12345678901, {"k": "nested-9d2c7a1e"}, None, 3.5, "plain-6e1d"]
    record = __import__("logging").LogRecord("x", 40, "f", 1, "%s %s %s %s", (
        12345678901, "nested-9d2c7a1e", "plain-6e1d", json.dumps("plain-6e1d")), None)
    assert RedactingFilter(secrets).filter(record)
    assert record.getMessage() == "*** *** *** \"***\""
    assert redact("x 12345678901 y", secrets) == "x *** y"


# ----------------------------------------------------------------- hostile token answers


@pytest.mark.parametrize(("body", "options", "what"), [
    ("<html><body>Sign in to the portal</body></html>", {"content_type": "text/html"},
     "HTTP 200 with a body that is not JSON (text/html"),
    ({"access_token": 12345678901, "expires_in": 3600}, {},
     "HTTP 200 with an access_token that is a number, not a string"),
    ({"access_token": {"value": "nested-tok-77"}}, {},
     "HTTP 200 with an access_token that is a object, not a string"),
    ({"token_type": "bearer"}, {}, "HTTP 200 with no access_token"),
    ({"access_token": "tok-5a6b7c8d9e", "expires_in": 0}, {},
     "expires_in 0 s: a token must live at least 1 s"),
    (["tok-5a6b7c8d9e"], {}, "HTTP 200 with a JSON list, not an object"),
])
def test_a_hostile_token_answer_is_one_line_naming_the_token_url(emulator, body, options,
                                                                  what):
    emulator.inject("box", "status", path="/oauth2/token", status=200, body=body, times=100,
                    options=options)
    config = one_api_config(emulator.url, "box")

    run = run_tap(config)

    assert run.returncode == 1
    error_line(run, "Box token request failed: " + what, "(check box.token_url)")
    assert_no_secret(run, secrets_of("box", config["box"], emulator)
                     | secret_forms(["12345678901", "nested-tok-77", "tok-5a6b7c8d9e"]))


# ----------------------------------------------------------------- log hygiene


@pytest.mark.parametrize("api", APIS)
def test_control_characters_from_the_api_stay_on_one_escaped_line(emulator, api):
    hostile = "bad\r2026-12-03 | ERROR | forged\x1b[2J\u2028next\x85end\u202eevil"
    emulator.inject(api, "status", path=emulator.app.apis[api].fault_path, status=400,
                    times=100, body={"message": hostile, "title": hostile,
                                     "error_description": hostile, "detail": hostile})

    run = run_tap(one_api_config(emulator.url, api))

    assert run.returncode == 1
    for char in ("\r", "\x1b", "\u2028", "\x85", "\u202e"):
        assert char not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "forged" in line]
    assert lines, run.stderr[-3000:]
    # A forged line would start at "2026-12-03 | ERROR | forged"; each is one escaped line.
    assert all("bad\\r2026-12-03 | ERROR | forged\\x1b[2J\\u2028next\\u0085end\\u202eevil"
               in line for line in lines)


# ----------------------------------------------------------------- TLS from the environment


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
@pytest.mark.parametrize("api", APIS)
def test_the_ca_bundle_in_the_environment_is_trusted_by_every_request(https_emulator, ca, api,
                                                                      variable):
    """Pages, Box's token request and Alpaca's event streams all trust the named CA."""
    run = run_tap(one_api_config(https_emulator.url, api), env=trusting(ca, variable))

    assert run.returncode == 0, run.stderr[-3000:]
    assert_every_event_once(run, https_emulator, api)


@pytest.mark.parametrize("api", APIS)
def test_an_untrusted_certificate_fails_in_one_line(https_emulator, api):
    run = run_tap(one_api_config(https_emulator.url, api, max_retries=1),
                  env={"REQUESTS_CA_BUNDLE": "", "SSL_CERT_FILE": ""})

    assert run.returncode == 1
    error_line(run, "CERTIFICATE_VERIFY_FAILED")


@pytest.mark.parametrize("api", APIS)
def test_the_proxy_in_the_environment_carries_every_request(emulator, recorder, api):
    """HTTP_PROXY (here the recorder, as a proxy sees requests: the whole URL) is used."""
    tap = RunningTap(one_api_config(emulator.url, api, max_retries=1),
                     env={"HTTP_PROXY": recorder.url, "http_proxy": recorder.url,
                          "NO_PROXY": "", "no_proxy": ""})
    try:
        tap.wait_for(lambda: bool(recorder.received))
    finally:
        tap.process.kill()
        tap.wait()
    first = recorder.received[0]["path"]
    assert first.startswith(f"{emulator.url}/{api}/"), first
    assert emulator.requests(api) == [], "a request bypassed the proxy"


# ----------------------------------------------------------------- no secret at rest


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_parallel_parent_leaves_no_secret_on_disk_and_no_orphan(emulator, tmp_path):
    """After an OOM kill of the parent, its children's config file stayed in $TMPDIR."""
    config = {**one_api_config(emulator.url, "discue"),
              "socotra": one_api_config(emulator.url, "socotra")["socotra"],
              "tail_seconds": 120, "tail_poll_seconds": 0.5}
    tap = RunningTap(config, env={"TMPDIR": str(tmp_path)})
    try:
        tap.wait_for(lambda: len(children_of(tap.process.pid)) == 2)
        children = children_of(tap.process.pid)
        # Both children have read their config: each has emitted records.
        tap.wait_for(lambda: {m["stream"] for _, m in tap.messages() if m["type"] == "RECORD"}
                     >= {"discue_events", "socotra_events"}, timeout=60)
        os.kill(tap.process.pid, signal.SIGKILL)
        tap.process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(map(is_running, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if is_running(pid)], "orphaned children"
    finally:
        for pid in children_of(tap.process.pid):
            os.kill(pid, signal.SIGKILL)
        if tap.process.poll() is None:
            tap.process.kill()
    forms = secrets_of("discue", config["discue"], emulator) | secrets_of(
        "socotra", config["socotra"], emulator)
    left = [path for path in tmp_path.rglob("*") if path.is_file()
            and any(form in path.read_text(errors="replace") for form in forms)]
    assert left == []
    assert not list(tmp_path.glob("tap-events-*"))

