"""The HTTP side of `aelab explore`: a localhost server for one page and a few JSON endpoints.

The standard library's ThreadingHTTPServer: a page that asks for one decode at a time needs no framework, and
nothing is installed for it. What it serves is a fixed table of routes; a request path is never joined to a
folder, so no request can read a file outside that table, and nothing here writes at all. Every bad request is a
4xx with `{"error": "<one line>"}`; an unexpected failure is a 500 with one line on stderr.

    GET  /  /explore.js  /explore.css      the page
    GET  /api/info                         the run: family, code size, dimensions (by KL), classes, columns
    GET  /api/plane?proj=pca|I,J            the codes (and prior draws) on a plane, with its bounds
    POST /api/decode       {code | index, plane?, proj?, y?}          the decoded point
    POST /api/interpolate  {from, to, method?, steps?, y?, proj?}     the decoded path between two examples
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from aelab.errors import UserError

MAX_BODY = 64 * 1024  # a 4,096-D code is ~80 KB of JSON at most digits: codes that big have no business here
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
# The page: URL path -> (file in static/, content type). The only files the server ever reads.
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/explore.css": ("explore.css", "text/css; charset=utf-8"),
}


class BadRequest(Exception):
    """A request the page (or a hand-written client) got wrong: a 4xx with this one-line message."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = int(status)


class App(Protocol):
    """What the server asks of the model side (aelab.viz.live.explorer.Explorer)."""

    def info(self) -> dict[str, Any]: ...

    def plane(self, proj: str) -> dict[str, Any]: ...

    def decode(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def interpolate(self, body: dict[str, Any]) -> dict[str, Any]: ...


def load_assets() -> dict[str, bytes]:
    """The page's files, read once from the package (they ship as package data of aelab.viz.live)."""
    folder = resources.files("aelab.viz.live") / "static"
    return {name: (folder / name).read_bytes() for name in {file for file, _ in ASSETS.values()}}


class ExploreServer(ThreadingHTTPServer):
    """Binds at once (so a busy port is an error before the run is loaded); `app` is attached when ready."""

    daemon_threads = True  # Ctrl-C never waits for a browser's keep-alive connection

    def __init__(self, port: int, app: App | None = None, host: str = "127.0.0.1") -> None:
        self.app = app
        self.assets = load_assets()
        try:
            super().__init__((host, int(port)), Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError("port", f"{port} is in use on {host}", "another port, or port=0 for a free one") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise UserError("port", f"not allowed to listen on {host}:{port}",
                                "a port above 1023, or port=0 for a free one") from None
            raise UserError("port", f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                            "another port, or port=0 for a free one") from None

    def server_bind(self) -> None:
        """As HTTPServer's, without its reverse DNS lookup of the address (seconds on a machine offline)."""
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    protocol_version = "HTTP/1.1"  # keep-alive: the page's decodes reuse one connection
    timeout = 60  # seconds a connection may sit idle (or a body arrive short) before its thread lets go
    server_version = "aelab-explore"

    # ---- routing ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (the standard library's names)
        self._answer("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("GET", head=True)

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def _answer(self, method: str, head: bool = False) -> None:
        started = time.perf_counter()
        try:
            self._check_host()
            url = urlsplit(self.path)
            if url.path in ASSETS:
                self._allow(method, "GET")
                name, kind = ASSETS[url.path]
                self._send(HTTPStatus.OK, self.server.assets[name], kind, head=head)
                return
            api = {"/api/info": "GET", "/api/plane": "GET", "/api/decode": "POST", "/api/interpolate": "POST"}
            if url.path not in api:
                raise BadRequest(f"no such page: {url.path[:200]}", HTTPStatus.NOT_FOUND)
            self._allow(method, api[url.path])
            app = self.server.app
            if app is None:
                raise BadRequest("the run is still loading", HTTPStatus.SERVICE_UNAVAILABLE)
            if url.path == "/api/info":
                reply = app.info()
            elif url.path == "/api/plane":
                query = parse_qs(url.query, keep_blank_values=True)
                unknown = sorted(set(query) - {"proj"})
                if unknown:
                    raise BadRequest(f"unknown parameter {unknown[0]!r} (proj)")
                reply = app.plane(query.get("proj", [""])[-1])
            elif url.path == "/api/decode":
                reply = app.decode(self._json_body())
            else:
                reply = app.interpolate(self._json_body())
            reply["ms"] = round(1000 * (time.perf_counter() - started), 3)  # the server's own time, for the page
            self._send_json(HTTPStatus.OK, reply, head=head)
        except BadRequest as error:
            self._send_json(error.status, {"error": str(error)}, head=head)
        except Exception as exc:  # a bug, not the client's fault: one line here, one line to the page
            print(f"explore: internal error on {method} {self.path[:200]}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            if os.environ.get("AELAB_DEBUG", "") not in ("", "0"):
                import traceback

                traceback.print_exc()
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(exc).__name__}: {exc}"},
                            head=head)

    def _check_host(self) -> None:
        """Only pages opened as localhost may talk to the server: a foreign host name (DNS rebinding) is refused.
        Any port is fine, so an ssh tunnel (ssh -L 9000:localhost:<port>) works."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOCAL_HOSTS:
            raise BadRequest(f"host {host[:100]!r} is not this machine (open the page as http://127.0.0.1:<port>/)",
                             HTTPStatus.FORBIDDEN)

    def _allow(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise BadRequest(f"{method} is not allowed here ({allowed})", HTTPStatus.METHOD_NOT_ALLOWED)

    def _json_body(self) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise BadRequest(f"body: content type {kind or 'none'!r} (application/json)", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("body: no Content-Length", HTTPStatus.LENGTH_REQUIRED)
        if int(length) > MAX_BODY:
            self.close_connection = True  # what is left unread must not be taken for the next request
            left = min(int(length), 16 * MAX_BODY)  # read (and drop) a modest body, so the client gets the answer
            while left > 0:  # instead of a reset connection; a huge one is cut off
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            raise BadRequest(f"body: {length} bytes (at most {MAX_BODY})", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"body: not JSON ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(body, dict):
            raise BadRequest(f"body: a JSON object expected, got {type(body).__name__}")
        return body

    # ---- replies ------------------------------------------------------------------------------
    def _send_json(self, status: int, value: dict[str, Any], head: bool = False) -> None:
        data = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, data, "application/json", head=head)

    def _send(self, status: int, data: bytes, kind: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if kind.startswith("text/html"):  # the page may load only its own scripts and styles
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                             "style-src 'self'; script-src 'self'; connect-src 'self'")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header) as JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_json(code, {"error": message or phrase}, head=getattr(self, "command", None) == "HEAD")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: a live page sends a decode per pointer move; errors reach the page and stderr another way."""
