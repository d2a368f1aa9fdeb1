"""``serve``: the dashboard over HTTP with the standard library's threading HTTP server (read-only).

Routes (GET only; anything else is 405):

* ``/`` and ``/index.html``, ``/app.js``, ``/app.css``: the pages (``neurflow_graph/web/static/``);
  ``/data.js`` sets ``window.NEURFLOW_DATA = null`` (the static report puts its answers there);
* ``/api/queries/NAME?PARAM=VALUE&...``: library query NAME as JSON (:meth:`DashboardApi.query`);
* ``/api/layout?run=UID``: the circuit's layered layout;
* ``/mosaics/<sha256>.png``: an exemplar mosaic, read from its run directory.

Errors answer ``{"error": "<one line>"}`` with 400 (bad parameter) or 404 (unknown name).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from neurflow_graph.web.api import ApiError, DashboardApi

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}


def static_file(name: str) -> bytes:
    """A file of the installed package's ``web/static/`` folder."""
    return resources.files("neurflow_graph.web").joinpath("static", name).read_bytes()


def _params(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True)
    twice = sorted(k for k, v in parsed.items() if len(v) > 1)
    if twice:
        raise ApiError(400, f"parameter {twice[0]} is given twice")
    return {k: v[0] for k, v in parsed.items() if v[0] != ""}


def make_handler(api: DashboardApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "neurflow-graph"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            pass

        def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=31536000, immutable" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser left the page mid-answer
                self.close_connection = True

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            path = unquote(url.path)
            try:
                if path in STATIC:
                    name, ctype = STATIC[path]
                    self._send(200, static_file(name), ctype)
                elif path == "/data.js":
                    self._send(200, b"window.NEURFLOW_DATA = null;\n", "text/javascript; charset=utf-8")
                elif path.startswith("/api/queries/"):
                    self._json(200, api.query(path[len("/api/queries/"):], _params(url.query)))
                elif path == "/api/layout":
                    self._json(200, api.layout(_params(url.query)))
                elif path.startswith("/mosaics/") and path.endswith(".png"):
                    self._send(200, api.mosaic(path[len("/mosaics/"):-4]), "image/png", cache=True)
                else:
                    raise ApiError(404, f"no such page {path}")
            except ApiError as e:
                self._json(e.status, {"error": str(e)})

        def _refuse(self) -> None:
            self._json(405, {"error": "the dashboard is read-only: GET only"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    return Handler


class DashboardServer:
    """The HTTP server on ``host:port`` (port 0: any free port); ``url`` once started."""

    def __init__(self, *, api: DashboardApi, host: str = "127.0.0.1", port: int = 8765) -> None:
        api.warm()  # the first page load must not wait for imports
        self.httpd = ThreadingHTTPServer((host, port), make_handler(api))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "DashboardServer":
        """Serve in a background thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="neurflow-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
