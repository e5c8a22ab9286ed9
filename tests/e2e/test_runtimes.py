"""Language workers (runtimes/) in real sandboxes: placeholder mode,
specialize over the legion-init worker channel, HTTP serving on the host's
listening socket, error reporting, and the custom-handler proxy.

A small C driver (worker_driver.c, compiled here against the built
libraries) creates each sandbox with a worker control channel and relays the
control protocol to the test over a socketpair, stamping every frame with
CLOCK_MONOTONIC so startup and specialize times can be measured."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from sandbox_kit import (RUNTIMES, ROOT, DriverSandbox, UnixHTTPConnection, cgroup_parent,  # noqa: F401
                         driver, env)

EXAMPLES = os.path.join(ROOT, "examples")

WORKER_ARGV = {
    "python": ["python3", "-I", "/opt/legion/runtime/python", "python"],
    "node": ["node", "/opt/legion/runtime/node/worker.js"],
    "custom": ["python3", "-I", "/opt/legion/runtime/python", "custom"],
}


class Sandbox(DriverSandbox):
    def __init__(self, driver, env, runtime, app_dir, listen_mode="specialize", extra_env=(), memory=0):
        path = driver
        self.dir = tempfile.mkdtemp(prefix="lgw-")
        os.chmod(self.dir, 0o755)
        self.sock_path = os.path.join(self.dir, "http.sock")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        args = [path, "--bind", f"{RUNTIMES}:/opt/legion/runtime:ro",
                "--listen", self.sock_path, "--listen-mode", listen_mode,
                "--stdout", self.stdout_path, "--stderr", self.stderr_path]
        if memory:
            args += ["--memory", str(memory)]
        if app_dir is not None:
            # Delayed mount, as the node agent does it: the code appears at
            # /code only when specialize is sent.
            args += ["--mount-at-specialize", f"{app_dir}:/code"]
        for e in extra_env:
            args += ["--env", e]
        args += ["--", *WORKER_ARGV[runtime]]
        self.start(args, env)

    def specialize(self, entrypoint=None, env=(), app="demo", revision="1", workdir=None, id="s1", nofd=False):
        fields = [("id", id), ("app", app), ("revision", revision)]
        if entrypoint is not None:
            fields.append(("entrypoint", entrypoint))
        if workdir is not None:
            fields.append(("workdir", workdir))
        fields += [("env", e) for e in env]
        if nofd:
            fields.append(("nofd", "1"))
        self.send("specialize", *fields)
        return self.wait(lambda f: f.get("op") in ("ready", "error", "exit") and f.get("id", id) == id)

    def exit_event(self, timeout=15):
        return self.wait(lambda f: f.get("op") == "driver" and f.get("event") == "exit", timeout)

    # -- HTTP --

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect(self.sock_path)
        return s

    def http(self):
        c = UnixHTTPConnection(self.sock_path)
        return c

    def request(self, method, target, body=None, headers=None):
        c = self.http()
        try:
            c.request(method, target, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read(), r
        finally:
            c.close()

    def close(self):
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)


def read_response(f):
    """(status, headers, body) of one Content-Length response from a
    buffered reader, leaving what follows (pipelined answers) unread."""
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    return status, headers, f.read(n)


@pytest.fixture()
def sandboxes(driver, env):
    made = []

    def make(runtime, app_dir, **kw):
        sb = Sandbox(driver, env, runtime, app_dir, **kw)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.close()


def make_app(tmp_path, files, name="app"):
    """A code package directory the sandbox can read (0755 / 0644)."""
    d = tmp_path / name
    d.mkdir()
    os.chmod(d, 0o755)
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(p.parent, 0o755)
        mode = 0o644
        if isinstance(text, tuple):
            text, mode = text
        p.write_text(text)
        os.chmod(p, mode)
    return str(d)


# ---- apps ------------------------------------------------------------------

PY_APP = r'''
import json, os, sys, time

def main(req):
    p = req.path
    if p == "/echo":
        return {"method": req.method, "path": req.path, "url": req.url, "query": req.query,
                "query_all": req.query_all, "headers": dict(req.headers),
                "ua": req.headers["USER-AGENT"] if "User-Agent" in req.headers else None,
                "body_len": len(req.body),
                "json": req.json() if req.headers.get("content-type", "").startswith("application/json") else None,
                "greeting": os.environ.get("GREETING"), "other": os.environ.get("OTHER"), "cwd": os.getcwd()}
    if p == "/binary":
        return {"status": 201, "headers": {"X-Len": str(len(req.body))}, "body": bytes(reversed(req.body))}
    if p == "/text":
        return "plain text \u00fc"
    if p == "/bytes":
        return b"\x00\xff"
    if p == "/none":
        return None
    if p == "/list":
        return [1, 2, 3]
    if p == "/cookies":
        return {"status": 202, "headers": {"Set-Cookie": ["a=1", "b=2"], "X-Custom": "yes"}, "body": "ok"}
    if p == "/sleep":
        time.sleep(float(req.query.get("s", "0.3")))
        return {"slept": True}
    if p == "/boom":
        raise ValueError("kaboom-" + req.query.get("tag", ""))
    if p == "/badstatus":
        return {"status": "nope", "body": "x"}
    if p == "/print":
        print("hello from the function")
        return "printed"
    if p == "/pid":
        return {"pid": os.getpid()}
    if p == "/exit":
        sys.exit(3)
    return {"status": 404, "body": {"error": "no route " + p}}
'''

NODE_APP = r'''
'use strict';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
module.exports.handler = async (req) => {
  const p = req.path;
  if (p === '/echo') {
    return { method: req.method, path: req.path, url: req.url, query: req.query, query_all: req.queryAll,
      headers: req.headers, ua: req.headers['user-agent'] || null, body_len: req.body.length,
      json: (req.headers['content-type'] || '').startsWith('application/json') ? req.json() : null,
      greeting: process.env.GREETING ?? null, other: process.env.OTHER ?? null, cwd: process.cwd() };
  }
  if (p === '/binary') return { status: 201, headers: { 'X-Len': String(req.body.length) }, body: Buffer.from(req.body).reverse() };
  if (p === '/text') return 'plain text \u00fc';
  if (p === '/bytes') return Buffer.from([0, 255]);
  if (p === '/none') return null;
  if (p === '/list') return [1, 2, 3];
  if (p === '/cookies') return { status: 202, headers: { 'Set-Cookie': ['a=1', 'b=2'], 'X-Custom': 'yes' }, body: 'ok' };
  if (p === '/sleep') { await sleep(Number(req.query.s || '0.3') * 1000); return { slept: true }; }
  if (p === '/boom') throw new RangeError('kaboom-' + (req.query.tag || ''));
  if (p === '/badstatus') return { status: 'nope', body: 'x' };
  if (p === '/print') { console.log('hello from the function'); return 'printed'; }
  if (p === '/pid') return { pid: process.pid };
  return { status: 404, body: { error: 'no route ' + p } };
};
'''

APPS = {  # both use the default entrypoint (main:main, index.js:handler)
    "python": {"main.py": PY_APP},
    "node": {"index.js": NODE_APP},
}


def started(sandboxes, tmp_path, runtime, files=None, entrypoint=None, env=(), **kw):
    files = files if files is not None else APPS[runtime]
    app = make_app(tmp_path, files)
    sb = sandboxes(runtime, app, **kw)
    sb.wait_placeholder()
    ready = sb.specialize(entrypoint=entrypoint, env=env)
    return sb, ready


def assert_ready(sb, f, app="demo", revision="1"):
    assert f.get("op") == "ready", (f, sb.stderr())
    assert f.get("phase") == "specialized" and f.get("app") == app and f.get("revision") == revision
    assert f.get("via") == "worker"


RUNTIMES_HTTP = ["python", "node"]


# ---- placeholder and specialize --------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES_HTTP + ["custom"])
def test_placeholder_ready_without_code(sandboxes, runtime):
    sb = sandboxes(runtime, None)
    f = sb.wait_placeholder()
    assert f.get("runtime") == runtime
    # Nothing serves yet: the socket exists (the host made it) but nobody accepts.
    s = sb.connect()
    s.settimeout(0.3)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_specialize_applies_env_and_serves(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime, env=["GREETING=hi there=yes", "OTHER="])
    assert_ready(sb, ready)
    assert float(ready["ms"]) >= 0
    assert "legion: specialized app=demo revision=1 in " in sb.stderr()

    status, headers, body, _ = sb.request("GET", "/echo?name=ada&x=1&x=2&empty=&sp=a+b%21",
                                          headers={"User-Agent": "tester/1", "X-Mixed-Case": "Val"})
    assert status == 200 and headers["content-type"] == "application/json"
    d = json.loads(body)
    assert d["method"] == "GET" and d["path"] == "/echo"
    assert d["url"] == "/echo?name=ada&x=1&x=2&empty=&sp=a+b%21"
    assert d["query"] == {"name": "ada", "x": "1", "empty": "", "sp": "a b!"}
    assert d["query_all"] == {"name": ["ada"], "x": ["1", "2"], "empty": [""], "sp": ["a b!"]}
    assert d["headers"]["x-mixed-case"] == "Val"
    assert d["ua"] == "tester/1"
    assert d["greeting"] == "hi there=yes" and d["other"] == ""
    assert d["cwd"] == "/code"


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_request_and_response_shapes(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)

    # POST JSON
    status, _, body, _ = sb.request("POST", "/echo", body=json.dumps({"a": [1, "ü"]}).encode(),
                                    headers={"Content-Type": "application/json"})
    d = json.loads(body)
    assert status == 200 and d["json"] == {"a": [1, "ü"]} and d["method"] == "POST"

    # binary body, every byte value, both ways
    blob = bytes(range(256)) * 64
    status, headers, body, _ = sb.request("PUT", "/binary", body=blob,
                                          headers={"Content-Type": "application/octet-stream"})
    assert status == 201 and headers["x-len"] == str(len(blob))
    assert headers["content-type"] == "application/octet-stream"
    assert body == blob[::-1]

    # chunked request body
    c = sb.http()
    c.request("POST", "/binary", body=iter([b"abc", b"defg"]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 201 and r.read() == b"gfedcba"
    c.close()

    status, headers, body, _ = sb.request("GET", "/text")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.decode() == "plain text ü"
    status, headers, body, _ = sb.request("GET", "/bytes")
    assert body == b"\x00\xff" and headers["content-type"] == "application/octet-stream"
    status, headers, body, _ = sb.request("GET", "/none")
    assert status == 204 and body == b""
    status, headers, body, _ = sb.request("GET", "/list")
    assert status == 200 and json.loads(body) == [1, 2, 3]
    status, headers, body, r = sb.request("GET", "/cookies")
    assert status == 202 and body == b"ok" and headers["x-custom"] == "yes"
    assert r.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    status, _, body, _ = sb.request("GET", "/nowhere")
    assert status == 404 and json.loads(body) == {"error": "no route /nowhere"}
    status, headers, body, _ = sb.request("HEAD", "/text")
    assert status == 200 and body == b"" and headers["content-length"] == str(len("plain text ü".encode()))

    # an invalid response is a 500 with a reason, and the instance goes on
    status, _, body, _ = sb.request("GET", "/badstatus")
    assert status == 500 and json.loads(body)["error"]["code"] == "InvalidResponse"
    status, _, _, _ = sb.request("GET", "/text")
    assert status == 200


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_keep_alive_and_pipelining(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)
    # Many sequential requests on one connection (http.client reuses it).
    c = sb.http()
    for i in range(50):
        c.request("GET", f"/echo?i={i}")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["query"] == {"i": str(i)}
        assert r.getheader("Connection", "keep-alive").lower() != "close"
    first_sock = c.sock
    c.request("GET", "/text")
    c.getresponse().read()
    assert c.sock is first_sock  # never reconnected
    c.close()

    # Pipelined on a raw socket: three requests in one write, three answers.
    s = sb.connect()
    s.sendall(b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
    f = s.makefile("rb")
    for i in range(3):
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["query"] == {"n": str(i)}
    # Connection: close is honoured.
    s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rest = f.read()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith("plain text ü".encode())
    s.close()


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_concurrent_connections(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)
    # Slow requests on parallel connections overlap: no connection waits
    # for another.
    n, delay = 8, 0.5
    results = []

    def slow():
        results.append(sb.request("GET", f"/sleep?s={delay}")[0])

    t0 = time.monotonic()
    threads = [threading.Thread(target=slow) for _ in range(n)]
    for t in threads:
        t.start()
    # While they sleep, a fast request on yet another connection answers.
    time.sleep(0.1)
    t1 = time.monotonic()
    assert sb.request("GET", "/text")[0] == 200
    assert time.monotonic() - t1 < delay
    for t in threads:
        t.join()
    assert results == [200] * n
    assert time.monotonic() - t0 < delay * 3

    # Many connections each doing keep-alive requests at once.
    errors = []

    def worker(k):
        try:
            c = sb.http()
            for i in range(20):
                c.request("POST", "/binary", body=b"%d-%d" % (k, i))
                r = c.getresponse()
                assert r.read() == (b"%d-%d" % (k, i))[::-1]
            c.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_function_error_is_500_with_traceback_in_log(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)
    status, headers, body, _ = sb.request("GET", "/boom?tag=t1")
    assert status == 500 and headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == "FunctionError"
    exc = "ValueError" if runtime == "python" else "RangeError"
    assert exc in err["message"]
    assert "kaboom" not in body.decode()  # details stay in the logs
    # the instance still serves
    assert sb.request("GET", "/text")[0] == 200
    if runtime == "python":  # sys.exit() fails the request, not the instance
        assert sb.request("GET", "/exit")[0] == 500
        assert sb.request("GET", "/text")[0] == 200
    log = sb.stderr()
    assert "legion: function error in GET /boom" in log
    assert "kaboom-t1" in log
    if runtime == "python":
        assert "Traceback (most recent call last)" in log and 'File "/code/main.py"' in log
        assert "legion_runtime" not in log  # the worker's own frames are trimmed
    else:
        assert "/code/index.js" in log
    # stdout of the function goes to the instance's stdout log
    assert sb.request("GET", "/print")[2] == b"printed"
    deadline = time.monotonic() + 5
    while "hello from the function" not in open(sb.stdout_path).read():
        assert time.monotonic() < deadline, "function stdout not in the log"
        time.sleep(0.05)


# ---- specialize failures ---------------------------------------------------

IMPORT_FAILURES = {
    "python": [
        ({"main.py": "import json\nraise RuntimeError('no config at import')\n"}, "RuntimeError", "no config at import"),
        ({"main.py": "def main(req:\n    return 1\n"}, "SyntaxError", "main.py"),
        ({"main.py": "import not_a_module_xyz\n"}, "ModuleNotFoundError", "not_a_module_xyz"),
    ],
    "node": [
        ({"index.js": "throw new Error('no config at import');\n"}, "Error", "no config at import"),
        ({"index.js": "module.exports.handler = async (req => 1;\n"}, "SyntaxError", "index.js"),
        ({"index.js": "require('not-a-module-xyz');\n"}, "Error", "not-a-module-xyz"),
    ],
}


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
@pytest.mark.parametrize("case", [0, 1, 2])
def test_import_error_at_specialize(sandboxes, tmp_path, runtime, case):
    files, exc, text = IMPORT_FAILURES[runtime][case]
    sb, f = started(sandboxes, tmp_path, runtime, files=files)
    assert f.get("op") == "error", f
    assert f.get("phase") == "specialize" and f.get("type") == "ImportError" and f.get("id") == "s1"
    assert f.get("via") == "worker"
    assert f.get("exception") == exc, f
    assert text in f.get("message") + f.get("traceback", ""), f
    assert f.get("traceback")
    # the worker exits non-zero and the sandbox ends
    ev = sb.exit_event()
    assert ev["code"] != "0"
    assert "legion: specialize failed: ImportError" in sb.stderr()


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_missing_entrypoint_file(sandboxes, tmp_path, runtime):
    sb, f = started(sandboxes, tmp_path, runtime, files={"other.txt": "x"})
    assert f.get("op") == "error" and f.get("type") == "EntrypointNotFound", f
    wanted = "main.py" if runtime == "python" else "index.js"
    assert wanted in f["message"] and "/code" in f["message"]
    assert sb.exit_event()["code"] != "0"


@pytest.mark.parametrize("runtime,entry", [("python", "main:nothere"), ("node", "index.js:nothere")])
def test_missing_handler_function(sandboxes, tmp_path, runtime, entry):
    sb, f = started(sandboxes, tmp_path, runtime, entrypoint=entry)
    assert f.get("op") == "error" and f.get("type") == "HandlerNotFound", f
    assert "nothere" in f["message"]


@pytest.mark.parametrize("runtime,entry", [("python", "bad entry:x-y"), ("node", "index.js:not-valid")])
def test_invalid_entrypoint(sandboxes, tmp_path, runtime, entry):
    sb, f = started(sandboxes, tmp_path, runtime, entrypoint=entry)
    assert f.get("op") == "error" and f.get("type") == "InvalidEntrypoint", f


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_second_specialize_is_refused(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime, env=["GREETING=first"])
    assert_ready(sb, ready)
    f = sb.specialize(id="s2", app="other", revision="9", env=["GREETING=second"])
    assert f.get("op") == "error" and f.get("type") == "AlreadySpecialized" and f.get("id") == "s2", f
    d = json.loads(sb.request("GET", "/echo")[2])
    assert d["greeting"] == "first"


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_specialize_without_listening_socket(sandboxes, tmp_path, runtime):
    app = make_app(tmp_path, APPS[runtime])
    sb = sandboxes(runtime, app)
    sb.wait_placeholder()
    f = sb.specialize(nofd=True)
    assert f.get("op") == "error" and f.get("type") == "ListenError", f


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_listening_socket_inherited_as_fd_4(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime, listen_mode="inherit")
    assert_ready(sb, ready)
    assert sb.request("GET", "/text")[2] == "plain text ü".encode()


def test_python_async_handler_and_package_imports(sandboxes, tmp_path):
    files = {
        "handlers/__init__.py": "",
        "handlers/api.py": "import asyncio\nfrom handlers.util import shout\n"
                           "async def handle(req):\n    await asyncio.sleep(float(req.query.get('s', '0')))\n"
                           "    return {'msg': shout(req.query.get('m', 'hi'))}\n",
        "handlers/util.py": "def shout(s):\n    return s.upper()\n",
    }
    sb, ready = started(sandboxes, tmp_path, "python", files=files, entrypoint="handlers.api:handle")
    assert_ready(sb, ready)
    assert json.loads(sb.request("GET", "/?m=yo")[2]) == {"msg": "YO"}
    # async handlers share one event loop and still overlap
    t0 = time.monotonic()
    threads = [threading.Thread(target=sb.request, args=("GET", "/?s=0.4")) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 1.5


def test_python_app_module_named_like_stdlib(sandboxes, tmp_path):
    # The worker imported `json` itself; an app file json.py still loads.
    files = {"json.py": "def main(req):\n    return 'mine'\n"}
    sb, ready = started(sandboxes, tmp_path, "python", files=files, entrypoint="json:main")
    assert_ready(sb, ready)
    assert sb.request("GET", "/")[2] == b"mine"


def test_node_esm_entrypoint(sandboxes, tmp_path):
    files = {"app.mjs": "export async function handler(req) { return { esm: true, m: req.method }; }\n"}
    sb, ready = started(sandboxes, tmp_path, "node", files=files, entrypoint="app.mjs:handler")
    assert_ready(sb, ready)
    assert json.loads(sb.request("GET", "/")[2]) == {"esm": True, "m": "GET"}


def test_node_esm_package_type_module(sandboxes, tmp_path):
    files = {"package.json": '{"type": "module"}\n',
             "index.js": "export const handler = async (req) => 'esm ' + req.path;\n"}
    sb, ready = started(sandboxes, tmp_path, "node", files=files)
    assert_ready(sb, ready)
    assert sb.request("GET", "/x")[2] == b"esm /x"


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_body_limit_and_http10(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)
    s = sb.connect()
    s.sendall(b"POST /binary HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (65 << 20))
    status, headers, body = read_response(s.makefile("rb"))
    assert status == 413 and headers.get("connection") == "close"
    s.close()
    # HTTP/1.0: closed after the response unless it asks for keep-alive
    s = sb.connect()
    s.sendall(b"GET /text HTTP/1.0\r\n\r\n")
    data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith("plain text ü".encode())
    s = sb.connect()
    f = s.makefile("rb")
    for _ in range(2):
        s.sendall(b"GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 200 and headers.get("connection", "").lower() == "keep-alive"
    s.close()


def test_python_bad_request_gets_400(sandboxes, tmp_path):
    sb, ready = started(sandboxes, tmp_path, "python")
    assert_ready(sb, ready)
    s = sb.connect()
    s.sendall(b"NONSENSE\r\n\r\n")
    data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in data
    s = sb.connect()
    s.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert s.makefile("rb").read().startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("runtime", RUNTIMES_HTTP)
def test_shutdown_finishes_requests_in_flight(sandboxes, tmp_path, runtime):
    sb, ready = started(sandboxes, tmp_path, runtime)
    assert_ready(sb, ready)
    result = []
    t = threading.Thread(target=lambda: result.append(sb.request("GET", "/sleep?s=0.5")[0]))
    t.start()
    time.sleep(0.2)
    sb.send("shutdown", ("id", "z"), ("grace", "5"))
    t.join()
    assert result == [200]
    f = sb.wait(lambda f: f.get("op") == "exit")
    assert f.get("code") == "0", f


# ---- custom handlers -------------------------------------------------------

CUSTOM_SERVER = r'''#!/usr/bin/env python3
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
STARTUP_FDS = sorted(int(x) for x in os.listdir("/proc/self/fd"))

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/exit":
            os._exit(7)
        self.reply(json.dumps({"path": self.path, "port": os.environ["PORT"], "argv": sys.argv[1:],
                               "greeting": os.environ.get("GREETING"), "cwd": os.getcwd(),
                               "control": os.environ.get("LEGION_CONTROL_FD"),
                               "fds": STARTUP_FDS}).encode())
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.reply(self.rfile.read(n)[::-1])
    def log_message(self, *a):
        pass

print("custom server starting", file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def custom_app(tmp_path, extra=None):
    files = {"server.py": (CUSTOM_SERVER, 0o755)}
    files.update(extra or {})
    return make_app(tmp_path, files)


def test_custom_handler_is_proxied(sandboxes, tmp_path):
    sb = sandboxes("custom", custom_app(tmp_path))
    sb.wait_placeholder()
    f = sb.specialize(entrypoint="./server.py --flag 'two words'", env=["GREETING=howdy"])
    assert_ready(sb, f)
    d = json.loads(sb.request("GET", "/some/path?q=1")[2])
    assert d["path"] == "/some/path?q=1" and d["port"] == "8080"
    assert d["argv"] == ["--flag", "two words"] and d["greeting"] == "howdy" and d["cwd"] == "/code"
    assert d["control"] is None and max(d["fds"]) <= 3  # no control channel or socket leaks in
    blob = bytes(range(256)) * 100
    assert sb.request("POST", "/", body=blob)[2] == blob[::-1]
    # keep-alive through the proxy, and parallel connections
    c = sb.http()
    for i in range(20):
        c.request("GET", f"/k{i}")
        assert json.loads(c.getresponse().read())["path"] == f"/k{i}"
    c.close()
    errors = []

    def many(k):
        try:
            for i in range(10):
                assert sb.request("POST", "/", body=b"%d:%d" % (k, i))[2] == (b"%d:%d" % (k, i))[::-1]
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=many, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert "custom server starting" in sb.stderr()
    assert "legion: specialized app=demo revision=1" in sb.stderr()
    f = sb.specialize(id="s2")
    assert f.get("type") == "AlreadySpecialized"


def test_custom_handler_port_from_app_settings(sandboxes, tmp_path):
    sb = sandboxes("custom", custom_app(tmp_path))
    sb.wait_placeholder()
    f = sb.specialize(entrypoint="python3 server.py", env=["PORT=9123"])
    assert_ready(sb, f)
    assert json.loads(sb.request("GET", "/")[2])["port"] == "9123"


def test_custom_handler_exit_ends_the_instance(sandboxes, tmp_path):
    sb = sandboxes("custom", custom_app(tmp_path))
    sb.wait_placeholder()
    assert_ready(sb, sb.specialize(entrypoint="./server.py"))
    with pytest.raises((http.client.HTTPException, OSError)):
        sb.request("GET", "/exit")
    f = sb.wait(lambda f: f.get("op") == "exit")
    assert f.get("code") == "7", f
    assert "exited with status 7" in sb.stderr()


@pytest.mark.parametrize("entry,app_env,kind,text", [
    ("./missing.sh", [], "EntrypointNotFound", "missing.sh"),
    ("server.py", [], "EntrypointNotFound", "use ./server.py"),
    ("./plain.txt", [], "EntrypointNotFound", "not executable"),
    ("", [], "InvalidEntrypoint", "entrypoint command"),
    ("python3 -c 'import sys; sys.exit(4)'", [], "StartError", "status 4"),
    ("python3 -c 'import time; time.sleep(30)'", ["LEGION_START_TIMEOUT=0.5"], "StartError", "within 0.5 s"),
])
def test_custom_handler_start_failures(sandboxes, tmp_path, entry, app_env, kind, text):
    sb = sandboxes("custom", custom_app(tmp_path, {"plain.txt": "x"}))
    sb.wait_placeholder()
    f = sb.specialize(entrypoint=entry, env=app_env)
    assert f.get("op") == "error" and f.get("type") == kind, f
    assert text in f["message"], f
    assert sb.exit_event()["code"] != "0"


# ---- examples ----------------------------------------------------------------

@pytest.mark.parametrize("runtime,example,entry", [
    ("python", "python-hello", None), ("node", "node-hello", None), ("custom", "custom-hello", "./server.py"),
])
def test_examples(sandboxes, runtime, example, entry):
    sb = sandboxes(runtime, os.path.join(EXAMPLES, example))
    sb.wait_placeholder()
    assert_ready(sb, sb.specialize(entrypoint=entry, env=["GREETING=Hi"]))
    assert json.loads(sb.request("GET", "/?name=Ada")[2])["message"] == "Hi, Ada!"
    if runtime != "custom":
        body = json.dumps({"name": "Bob"}).encode()
        assert json.loads(sb.request("POST", "/", body=body, headers={"Content-Type": "application/json"})[2]) \
            == {"message": "Hi, Bob!"}


# ---- how fast --------------------------------------------------------------

def _rps(sb, seconds=1.0):
    s = sb.connect()
    req = b"GET /?name=x HTTP/1.1\r\nHost: x\r\n\r\n"
    f = s.makefile("rb")
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s.sendall(req)
        assert read_response(f)[0] == 200
        n += 1
    dt = time.monotonic() - t0
    s.close()
    return n / dt


@pytest.mark.parametrize("runtime,example,entry", [
    ("python", "python-hello", None), ("node", "node-hello", None), ("custom", "custom-hello", "./server.py"),
])
def test_startup_and_request_timings(sandboxes, runtime, example, entry, capsys):
    """Placeholder start (sandbox start -> op=ready phase=placeholder),
    specialize (sent -> op=ready phase=specialized) and sequential keep-alive
    requests/s of the hello-world app, reported with -s; the bounds are loose
    sanity limits, not targets."""
    rows = []
    for _ in range(3):
        sb = sandboxes(runtime, os.path.join(EXAMPLES, example))
        started_f = sb.wait(lambda f: f.get("event") == "started")
        begin = next(f for f in sb.frames if f.get("event") == "begin")
        ph = sb.wait_placeholder()
        mem = int(sb.stats()["memory"])
        ready = sb.specialize(entrypoint=entry)
        assert_ready(sb, ready)
        sent = next(f for f in sb.frames if f.get("event") == "sent")
        t_ph = (int(ph["t_ns"]) - int(started_f["t_ns"])) / 1e6
        t_create = (int(started_f["t_ns"]) - int(begin["t_ns"])) / 1e6
        t_spec = (int(ready["t_ns"]) - int(sent["sent_ns"])) / 1e6
        t0 = time.monotonic()
        sb.request("GET", "/")
        t_first = (time.monotonic() - t0) * 1e3
        rows.append((t_create, t_ph, t_spec, t_first, mem))
        rps = _rps(sb, 1.0)
        sb.close()
    best = [min(r[i] for r in rows) for i in range(4)]
    with capsys.disabled():
        print(f"\n[{runtime}] create+start {best[0]:.1f} ms, placeholder ready {best[1]:.1f} ms, "
              f"specialize {best[2]:.1f} ms, first request {best[3]:.1f} ms, "
              f"placeholder memory {rows[-1][4] / 2**20:.1f} MiB, {rps:.0f} req/s (1 connection)")
    assert best[1] < 2000 and best[2] < 1000 and rps > 200
