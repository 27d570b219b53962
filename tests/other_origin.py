"""A page on another origin, for the browser tests: one HTML page served by http.server on a loopback
port of its own, so a real browser that loads it is on `http://127.0.0.1:<port>`, an origin the
daemon's is not (another port: the same site, so a SameSite=Strict cookie still goes with its
requests). What a browser does for a page of another origin (CORS, a cross-origin form post) is
what these tests check: tests/test_cors_browser.py (an allowed and a refused origin calling
fetch()), tests/test_console.py (a form posting to the admin API)."""

from __future__ import annotations

import http.server
import threading


class OtherOrigin:
    """Serves `page` (HTML) at every path until `close()`; `origin` is its scheme, host and port,
    `url` its root page."""

    def __init__(self, page: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.origin + "/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
