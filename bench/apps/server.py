"""The container app of bench/apps: an HTTP/1.1 keep-alive server on
Python's http.server (ThreadingHTTPServer, one thread per connection),
answering every GET with a short text naming the image's version
(VERSION in its environment). Baked into the benchmark's image by
bench/apps/bench.py; runs the same under legiond and under runc.

    python3 server.py [PORT]      (default 8080)

GET /modules lists the files of the modules it has loaded (the benchmark
asks a copy on the host, to compile those into the image's
__pycache__)."""
import http.server
import os
import sys

BODY = f"hello from a container app, version {os.environ.get('VERSION', '?')}\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a proxy's upstream expects
    # Headers and body go out in two writes: with Nagle on, the body waits
    # for the client's delayed ACK of the headers (40 ms) on every request.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = BODY
        if self.path == "/modules":
            body = "\n".join(sorted({m.__file__ for m in list(sys.modules.values())
                                     if getattr(m, "__file__", None)})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer.daemon_threads = True
# socketserver's listen backlog is 5: 32 connections opened at once overflow
# it, and the dropped SYNs come back after a 1 s retransmit.
http.server.ThreadingHTTPServer.request_queue_size = 1024
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1]) if len(sys.argv) > 1 else 8080),
                                Handler).serve_forever()
