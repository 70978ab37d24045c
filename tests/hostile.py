"""A purpose-built local HTTP server for tests: each answer is exactly what the test says.

The emulator speaks through werkzeug, which adds headers of its own (`Date`, `Server`); a
test about a header the server sends (a `Date` an hour ahead) needs every byte under its
control. `HostileServer(answer)` serves `answer(request) -> Answer` on 127.0.0.1.
"""

from __future__ import annotations

import threading
import typing as t
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: t.Any = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, body: t.Any, status: int = 200, **headers: str) -> Answer:
        return cls(status, orjson.dumps(body), {"Content-Type": "application/json", **headers})


class HostileServer:
    """Serves `answer(seen)` for every request, in a daemon thread, until `stop()`."""

    def __init__(self, answer: t.Callable[[Seen], Answer]) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parse_qs(parts.query),
                            dict(self.headers), self.rfile.read(length) if length else b"")
                server.seen.append(seen)
                reply = answer(seen)
                body = reply.body if isinstance(reply.body, bytes) else str(reply.body).encode()
                # No automatic Server or Date header: the test decides every header.
                self.send_response_only(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_OPTIONS = handle_one

            def log_message(self, *args: t.Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
