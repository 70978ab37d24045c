"""The emulator's HTTP server: every API under `/<api>/`, faults, latency, a control API.

Control endpoints (JSON), used by tests, the demo and the benchmarks:
- `POST /_emulator/<api>/events` `{"count": N, ...}`: append N new events;
- `GET /_emulator/<api>/stats`: event count and the recent request log;
- `POST /_emulator/faults` `{"api", "path"?, "kind", "times", ...}`: queue a fault for the
  next matching requests. Kinds: `status` (answer `status` with `headers`/`body`, e.g. 429 with
  Retry-After), `slow` (wait `delay` seconds, then answer normally), `drop` (send half the
  body, then close the connection), `truncate` (a complete 200 whose JSON is cut short, after
  `options.keep` bytes or half), `echo` (answer `status` with an error body quoting the
  request's headers, query and body, as careless servers do: secrets included; with
  `options.escaped`, quoted as JSON text the way PHP writes it, `\\/` and `\\u00e9`), `redirect`
  (answer `status`, 302 by default, with `Location: <options.to><the request's path and
  query>`: `to` empty is a redirect to the same URL, another origin, or plain http), `mutate`
  (the normal answer with one JSON value replaced by `options.value`: the first value of a
  field named in `options.keys` if given (the last one with `options.last`), else one
  picked by `options.seed`; in an event stream, inside one `data:` payload); any other kind
  belongs to the API (e.g. Alpaca's
  `sse_internal_error`), which finds the fault in the request's WSGI environ under
  `emulator.fault` and reads its `options`;
- `DELETE /_emulator/faults`: clear them.

In-process callers (tests) can also hold an API's requests at a `Turnstile`
(`EmulatorServer.turnstile`) and let them through one at a time, to set the order in which
several clients' requests are answered without relying on timing.

`response_cache_mb` (the benchmarks' `--response-cache-mb`) keeps complete answers to repeated
identical requests, so a benchmark that reads the same pages again measures the client, not the
emulator generating events in Python. Off by default; bounded, oldest dropped first.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import threading
import time
import typing as t
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import orjson
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tap_events_emulator.base import EmulatedAPI, json_response

if t.TYPE_CHECKING:
    from collections.abc import Iterable


@dataclass
class Fault:
    api: str
    kind: str
    times: int = 1
    path: str = ""
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: t.Any = None
    delay: float = 0.0
    #: Let this many matching requests through untouched before the fault fires.
    after: int = 0
    #: Parameters of an API's own fault kinds (e.g. after how many streamed events it fires).
    options: dict[str, t.Any] = field(default_factory=dict)

    def matches(self, api: str, path: str) -> bool:
        return self.api == api and path.startswith(self.path)


#: Fault kinds the app applies itself; the API handles the others.
APP_FAULT_KINDS = frozenset({"status", "slow", "drop", "truncate", "echo", "mutate",
                             "redirect"})


class Turnstile:
    """Holds the requests to one API path until the caller lets them through: one at a time
    (`let_one_through`), or all from now on (`open`)."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.condition = threading.Condition()
        #: Requests waiting to pass.
        self.waiting = 0
        self.passes = 0
        self.is_open = False

    def matches(self, path: str) -> bool:
        return path.startswith(self.path)

    def enter(self) -> None:
        """Called by the request's thread: returns once it may be answered."""
        with self.condition:
            self.waiting += 1
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.is_open or self.passes > 0)
            if not self.is_open:
                self.passes -= 1
            self.waiting -= 1
            self.condition.notify_all()

    def let_one_through(self) -> None:
        """Let the next waiting request (or, if none waits yet, the next to come) pass."""
        with self.condition:
            self.passes += 1
            self.condition.notify_all()

    def open(self) -> None:
        with self.condition:
            self.is_open = True
            self.condition.notify_all()


class EmulatorApp:
    """A WSGI application serving a set of emulated APIs."""

    def __init__(self, apis: Iterable[EmulatedAPI], latency_ms: float = 0.0,
                 response_cache_mb: float = 0.0) -> None:
        self.apis = {api.name: api for api in apis}
        self.latency = latency_ms / 1000.0
        self.faults: list[Fault] = []
        self.turnstiles: dict[str, Turnstile] = {}
        self.lock = threading.Lock()
        self.cache = ResponseCache(int(response_cache_mb * 2**20))

    def __call__(self, environ: dict, start_response: t.Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/", 1)
        head, rest = parts[0], "/" + (parts[1] if len(parts) > 1 else "")
        if head == "_emulator":
            return self.control(request, rest)
        api = self.apis.get(head)
        if api is None:
            return json_response({"message": f"no emulated API at /{head}"}, 404)
        turnstile = self.turnstiles.get(head)
        if turnstile is not None and turnstile.matches(rest):
            turnstile.enter()
        fault = self.take_fault(head, rest)
        if fault and fault.kind == "status":
            body = fault.body if fault.body is not None else {"message": "injected fault"}
            if "content_type" in fault.options:  # a body sent as it is (HTML from a portal)
                return Response(body, fault.status, fault.headers,
                                content_type=fault.options["content_type"])
            return json_response(body, fault.status, fault.headers)
        if fault and fault.kind == "echo":
            return self.echoed(request, fault)
        if fault and fault.kind == "redirect":
            location = fault.options.get("to", "") + request.full_path.rstrip("?")
            status = fault.status if 300 <= fault.status < 400 else 302
            return json_response({"message": "moved"}, status, {"Location": location})
        if fault and fault.kind == "slow":
            time.sleep(fault.delay)
        if self.latency:
            time.sleep(self.latency)
        if fault and fault.kind not in APP_FAULT_KINDS:
            request.environ["emulator.fault"] = fault
        response = self.cache.get(request, api) if fault is None else None
        if response is not None:
            return response
        response = api.handle(request, rest)
        if fault is None:
            self.cache.put(request, api, response)
        if fault and fault.kind == "drop":
            return self.dropped(request, response)
        if fault and fault.kind == "truncate":
            data = response.get_data()
            response.set_data(data[: max(1, fault.options.get("keep", len(data) // 2))])
        if fault and fault.kind == "mutate":
            pick = Pick(random.Random(fault.options.get("seed", 0)),
                        tuple(fault.options.get("keys", ())),
                        bool(fault.options.get("last", False)))
            response.set_data(mutated(response.get_data(), pick, fault.options.get("value")))
        return response

    @staticmethod
    def echoed(request: Request, fault: Fault) -> Response:
        """An error body that quotes the request, credentials and all."""
        headers, body = dict(request.headers), request.get_data(as_text=True)[:500]
        if fault.options.get("escaped"):
            quoted = json.dumps({"headers": headers, "body": body}).replace("/", "\\/")
            quoted = f"request {request.method} failed; headers: {quoted}"
        else:
            quoted = (f"request {request.method} {request.full_path} failed; headers: "
                      f"{headers}; body: {body}")
        body = {"message": quoted, "title": quoted, "error": "server_error",
                "error_description": quoted}
        return json_response(body, fault.status, fault.headers)

    @staticmethod
    def dropped(request: Request, response: Response) -> Response:
        """Announce the whole body, send half of it, then close the socket."""
        data = response.get_data()
        sock: socket.socket | None = request.environ.get("werkzeug.socket")

        def body() -> Iterable[bytes]:
            yield data[: len(data) // 2]
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)

        dropped = Response(body(), status=response.status_code, headers=dict(response.headers))
        dropped.headers["Content-Length"] = str(len(data))
        return dropped

    def take_fault(self, api: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(api, path):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def control(self, request: Request, path: str) -> Response:
        body = orjson.loads(request.get_data() or b"{}")
        if path == "/faults":
            with self.lock:
                if request.method == "DELETE":
                    self.faults.clear()
                else:
                    self.faults.append(Fault(**body))
            return json_response({"faults": len(self.faults)})
        _, api_name, action = ([*path.split("/"), "", ""])[:3]
        api = self.apis.get(api_name)
        if api is None:
            return json_response({"message": f"unknown API {api_name!r}"}, 404)
        if action == "events" and request.method == "POST":
            return json_response(api.add_events(**body))
        if action == "stats":
            return json_response(api.stats())
        return json_response({"message": f"unknown control path {path}"}, 404)


class ResponseCache:
    """Complete 200 answers by request (path, query, credentials, event count), oldest first out.

    Streamed bodies (SSE) are not kept; a request with a fault never reads or fills it; new
    events (`add_events`) change the key, so a cached page never hides them.
    """

    #: Request headers that decide what an API answers.
    KEY_HEADERS = ("Authorization", "X-API-KEY")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[tuple, tuple[bytes, dict[str, str]]] = OrderedDict()
        self.lock = threading.Lock()

    def key(self, request: Request, api: EmulatedAPI) -> tuple:
        headers = tuple(request.headers.get(name, "") for name in self.KEY_HEADERS)
        counts = tuple(api.stream_counts().items())
        return (request.method, request.full_path, headers, api.count, counts)

    def get(self, request: Request, api: EmulatedAPI) -> Response | None:
        if not self.max_bytes or request.method != "GET":
            return None
        key = self.key(request, api)
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
        if entry is None:
            return None
        body, headers = entry
        return Response(body, status=200, headers=headers)

    def put(self, request: Request, api: EmulatedAPI, response: Response) -> None:
        if (not self.max_bytes or request.method != "GET" or response.status_code != 200
                or response.is_streamed):
            return
        body = response.get_data()
        key = self.key(request, api)
        with self.lock:
            if key in self.entries:
                return
            self.entries[key] = (body, dict(response.headers))
            self.size += len(body)
            while self.size > self.max_bytes and self.entries:
                _, (dropped, _) = self.entries.popitem(last=False)
                self.size -= len(dropped)


class EmulatorServer:
    """The emulator on 127.0.0.1 in a background thread (tests) or the foreground (CLI)."""

    def __init__(self, app: EmulatorApp, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.app = app
        #: Serving https with this context (a test certificate), else plain http.
        self.scheme = "https" if ssl_context is not None else "http"
        self.server = make_server(host, port, app, threaded=True, ssl_context=ssl_context)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_port}"

    def api_url(self, api: str, suffix: str = "") -> str:
        return f"{self.url}/{api}{suffix}"

    def start(self) -> EmulatorServer:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        for turnstile in self.app.turnstiles.values():
            turnstile.open()
        self.server.shutdown()
        self.server.server_close()

    # Conveniences for in-process callers (tests); the HTTP control API does the same.
    def add_events(self, api: str, count: int, **options: t.Any) -> dict[str, t.Any]:
        return self.app.apis[api].add_events(count, **options)

    def inject(self, api: str, kind: str, **options: t.Any) -> None:
        with self.app.lock:
            self.app.faults.append(Fault(api=api, kind=kind, **options))

    def turnstile(self, api: str, path: str = "") -> Turnstile:
        """From now on, requests to `api` under `path` wait at the returned turnstile."""
        self.app.turnstiles[api] = Turnstile(path)
        return self.app.turnstiles[api]

    def clear_faults(self) -> None:
        with self.app.lock:
            self.app.faults.clear()

    def requests(self, api: str) -> list[dict[str, t.Any]]:
        return list(self.app.apis[api].requests)

    def stream_counts(self) -> dict[str, int]:
        """Expected distinct events per tap stream, over every emulated API."""
        apis = self.app.apis.values()
        return {name: n for api in apis for name, n in api.stream_counts().items()}



@dataclass
class Pick:
    """Which value a `mutate` fault replaces: the first field named in `keys`, or a random
    one."""

    rng: random.Random
    keys: tuple[str, ...] = ()
    #: Replace the last of the shallowest fields named in `keys` (in an event stream, in the
    #: last `data:` payload) instead of the first: the event that ends a page.
    last: bool = False


def mutated(data: bytes, pick: Pick, value: t.Any) -> bytes:
    """`data` with one JSON value replaced by `value`: in the document, or in one `data:` line
    of an event stream (a payload spread over several lines is replaced whole)."""
    try:
        return dumps(replace_one(orjson.loads(data), pick, value))
    except orjson.JSONDecodeError:
        pass
    lines = data.split(b"\n")
    payloads = [n for n, line in enumerate(lines) if line.startswith(b"data:")]
    if not payloads:
        return data
    number = (payloads[-1] if pick.last else payloads[0]) if pick.keys \
        else pick.rng.choice(payloads)
    try:
        payload = replace_one(orjson.loads(lines[number][5:]), pick, value)
    except orjson.JSONDecodeError:
        payload = value
    lines[number] = b"data: " + dumps(payload)
    return b"\n".join(lines)


def dumps(document: t.Any) -> bytes:
    """JSON bytes; integers beyond 64 bits (which orjson refuses) through the stdlib."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document).encode()


def replace_one(document: t.Any, pick: Pick, value: t.Any) -> t.Any:
    """`document` with one of its first 2000 values (the whole document included) replaced,
    visited breadth first so `pick.keys` finds the shallowest field of those names."""
    places: list[tuple[t.Any, t.Any]] = [(None, None)]
    pending = deque([(document, 0)])
    found: list[tuple[int, t.Any, t.Any]] = []
    while pending and len(places) < 2000:
        node, depth = pending.popleft()
        if found and depth > found[0][0]:
            break  # only the shallowest fields of the names in `keys`
        if isinstance(node, dict):
            keys: t.Iterable[t.Any] = list(node)
        elif isinstance(node, list):
            keys = range(len(node))
        else:
            continue
        for key in keys:
            if key in pick.keys:
                found.append((depth, node, key))
                if not pick.last:
                    break
                continue
            places.append((node, key))
            pending.append((node[key], depth + 1))
        if found and not pick.last:
            break
    if pick.keys:
        if found:
            _, node, key = found[-1]
            node[key] = value
        return document
    parent, key = pick.rng.choice(places)
    if parent is None:
        return value
    parent[key] = value
    return document
