#!/usr/bin/env python3
"""Hello world for the Legion custom-handler runtime (entrypoint `./server.py`).

Any executable works the same way: serve HTTP on 127.0.0.1:$PORT."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):
        q = parse_qs(urlsplit(self.path).query)
        body = json.dumps({"message": "%s, %s!" % (os.environ.get("GREETING", "Hello"),
                                                     q.get("name", ["world"])[0])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # no access log
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
