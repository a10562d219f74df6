"""A tiny JSON service using only the standard library.

``app.py`` serves on :8000; ``app.py --check`` prints one response body and
exits, for a health check or a smoke test.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def body(path: str) -> bytes:
    return json.dumps({"status": "ok", "path": path}, sort_keys=True).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        data = body(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    if "--check" in sys.argv:
        print(body("/health").decode())
    else:
        HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
