"""What the benchmarks that drive their own legiond share (bench/pods,
bench/sessions, bench/functions): its API over a keep-alive connection, a
raw HTTP/1.1 connection for timed paths, the admin token, percentiles and
JSON results. Each bench.py puts bench/lib on sys.path and imports this."""
import http.client
import json
import os
import re
import socket
import statistics
import sys
import time


def logger(prefix):
    """A log(*a) that writes `prefix: ...` lines to stderr."""
    def log(*a):
        print(prefix + ":", *a, file=sys.stderr, flush=True)
    return log


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_token(home):
    """legiond's admin token, from its LEGION_HOME."""
    with open(os.path.join(home, "admin.token")) as f:
        return f.read().strip()


def load_json(d, name):
    """d/name parsed, or None when it is missing or not JSON (a part that did
    not run): for the report.py scripts."""
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms(v):
    """Milliseconds for a report: 3 decimals below 1, 2 below 100."""
    if v is None:
        return "n/a"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def write_json(out, name, doc):
    with open(os.path.join(out, name), "w") as f:
        json.dump(doc, f, indent=1)


class Api:
    """legiond's API over one keep-alive connection (re-opened if dropped),
    and the calls on apps and pool groups (namespace default) the
    benchmarks share."""

    timeout = 120           # seconds per request
    ok = (200, 201, 204)    # statuses call() accepts unless told otherwise
    json_headers = False    # Accept: application/json, and Content-Type with a body

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.c = None

    def headers(self, body, ctype):
        h = {"Authorization": "Bearer " + self.token}
        if self.json_headers:
            h["Accept"] = "application/json"
            if body is not None:
                h["Content-Type"] = ctype
        return h

    def call(self, method, path, body=None, ok=None, raw=False, ctype="application/json"):
        """(status, body): the body parsed when it is a JSON object or array
        (unless raw). A status not in ok (default self.ok) raises; ok=() takes any."""
        if ok is None:
            ok = self.ok
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.c.request(method, path, body=body, headers=self.headers(body, ctype))
                r = self.c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        if ok and r.status not in ok:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:400]!r}")
        if raw:
            return r.status, data
        return r.status, (json.loads(data) if data[:1] in (b"{", b"[") else data)

    def pool(self, name):
        return self.call("GET", f"/v1/poolgroups/{name}")[1]

    def app(self, name):
        return self.call("GET", f"/v1/namespaces/default/apps/{name}")[1]

    def put_app(self, name, spec):
        return self.call("PUT", f"/v1/namespaces/default/apps/{name}", spec)[1]

    def delete_app(self, name):
        self.call("DELETE", f"/v1/namespaces/default/apps/{name}")

    def wait_pool(self, name, pred, timeout=60, what="pool", every=0.002):
        """The pool group's status once pred(status) holds; polled every
        `every` seconds, RuntimeError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.pool(name)["status"]
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {st}")
            time.sleep(every)


class RawConn:
    """One keep-alive HTTP/1.1 connection with as little client code on the
    timed path as possible: a prebuilt request, sendall, recv until the
    Content-Length is in. To 127.0.0.1:port, or to the Unix socket unix;
    timeout (seconds) turns an answer that never comes into socket.timeout."""

    def __init__(self, port=None, unix=None, timeout=None):
        self.port, self.unix, self.timeout = port, unix, timeout
        self.s = None
        self.connect()

    def connect(self):
        if self.s:
            self.s.close()
        if self.unix:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.connect(self.unix)
        else:
            self.s = socket.create_connection(("127.0.0.1", self.port))
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.settimeout(self.timeout)

    def request(self, raw):
        """Send raw, read one response: (ns from send to last byte, status, body)."""
        s = self.s
        buf = b""
        t0 = time.perf_counter_ns()
        s.sendall(raw)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
            h = buf.find(b"\r\n\r\n")
            if h < 0:
                continue
            m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:h])
            n = int(m.group(1)) if m else 0
            if len(buf) >= h + 4 + n:
                break
        t1 = time.perf_counter_ns()
        status = int(buf[9:12])
        if re.search(rb"(?im)^connection:\s*close", buf[:h]):
            self.connect()
        return t1 - t0, status, buf[h + 4:h + 4 + n]


def summary(values):
    """n, min, p50, p90, p99 (nearest rank), max, mean and stdev of values."""
    v = sorted(values)
    n = len(v)
    if not n:
        return {"n": 0}

    def q(p):  # nearest rank
        k = max(1, min(n, int(-(-p * n // 100))))
        return v[k - 1]

    return {"n": n, "min": v[0], "p50": q(50), "p90": q(90), "p99": q(99), "max": v[-1],
            "mean": statistics.fmean(v), "stdev": statistics.pstdev(v)}
