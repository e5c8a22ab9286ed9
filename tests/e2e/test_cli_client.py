"""The API client side of `legion` (app, invoke, pool, ns, token) against a
small fake of legiond's HTTP API (docs/api.md) run in this process: what the
CLI sends (methods, paths, bodies, the token), what it prints (tables, --json,
messages), and its exit statuses. A last test drives a real legiond when it is
built and we are root."""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import BUILD, runner
from oci_kit import free_port
from test_legiond import E2eNet
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADMIN = "lgn_admin_secret"
NS_TOKEN = "lgn_team_a_secret"


def err(handler, status, code, message):
    handler.reply(status, {"error": {"code": code, "message": message}})


class FakeLegiond:
    """State and request log of the fake API."""

    def __init__(self):
        self.requests = []  # (method, path, headers, body)
        self.apps = {}  # (ns, name) -> app document
        self.packages = {}  # digest -> {name: bytes}
        self.pools = {"python3": {"runtime": "python3", "ready": 2, "cpu": "1000m", "memory": "256Mi",
                                  "startupBoost": {"cpu": "2000m", "seconds": 10}}}
        self.namespaces = {"default": "2026-01-01T00:00:00Z", "team-a": "2026-01-02T00:00:00Z"}
        self.log_lines = ["line %d\n" % i for i in range(1, 6)]
        self.follow_started = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, doc=None, ctype="application/json", raw=None):
        body = raw if raw is not None else (b"" if doc is None else (json.dumps(doc) + "\n").encode())
        self.send_response(status)
        if body or status != 204:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        data = self.body()
        api.requests.append((self.command, self.path, dict(self.headers), data))
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return err(self, 401, "Unauthorized", "missing `Authorization: Bearer <token>` (see $LEGION_HOME/admin.token)")
        token = auth[7:]
        if token not in (ADMIN, NS_TOKEN):
            return err(self, 401, "Unauthorized", "invalid token")
        seg = [s for s in url.path.split("/") if s]
        if seg[:1] == ["fn"]:
            return self.function(seg, url, data)
        if token == NS_TOKEN and len(seg) >= 3 and seg[1] == "namespaces" and seg[2] != "team-a":
            return err(self, 404, "NotFound", "namespace `%s` not found" % seg[2])
        m = self.command
        if seg == ["v1", "namespaces"]:
            if m == "GET":
                items = [{"name": n, "createdAt": t} for n, t in api.namespaces.items()
                         if token == ADMIN or n == "team-a"]
                return self.reply(200, {"items": items})
            if token != ADMIN:
                return err(self, 403, "Forbidden", "creating namespaces needs an admin token")
            name = json.loads(data)["name"]
            existed = name in api.namespaces
            api.namespaces.setdefault(name, "2026-01-03T00:00:00Z")
            return self.reply(200 if existed else 201, {"name": name, "createdAt": api.namespaces[name]})
        if len(seg) == 4 and seg[3] == "tokens" and m == "POST":
            desc = json.loads(data).get("description", "") if data else ""
            return self.reply(201, {"id": "0123456789abcdef", "namespace": seg[2], "description": desc,
                                    "createdAt": "2026-01-04T00:00:00Z", "token": "lgn_new_secret"})
        if len(seg) == 4 and seg[3] == "packages" and m == "POST":
            try:
                tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)))
                files = {ti.name: tf.extractfile(ti).read() for ti in tf.getmembers() if ti.isfile()}
            except Exception as e:  # noqa: BLE001
                return err(self, 400, "BadPackage", "not an archive: %s" % e)
            digest = hashlib.sha256(data).hexdigest()
            api.packages[digest] = files
            return self.reply(201, {"digest": digest, "size": len(data), "files": len(files),
                                    "bytes": sum(map(len, files.values())), "top": sorted(files)})
        if len(seg) == 4 and seg[3] == "apps" and m == "GET":
            items = [a for (ns, _), a in sorted(api.apps.items()) if ns == seg[2]]
            return self.reply(200, {"items": items})
        if len(seg) == 5 and seg[3] == "apps":
            return self.app(m, seg[2], seg[4], data)
        if len(seg) == 6 and seg[3] == "apps" and seg[5] == "logs":
            if (seg[2], seg[4]) not in api.apps:
                return err(self, 404, "NotFound", "app `%s/%s` not found" % (seg[2], seg[4]))
            lines = api.log_lines
            if "tail" in q:
                lines = lines[-int(q["tail"]):] if int(q["tail"]) else []
            if q.get("follow") != "1":
                return self.reply(200, raw="".join(lines).encode(), ctype="text/plain")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            for ln in lines:
                self.wfile.write(ln.encode())
            self.wfile.flush()
            api.follow_started.set()
            for i in range(100):  # new lines while the client follows
                time.sleep(0.05)
                try:
                    self.wfile.write(b"more %d\n" % i)
                    self.wfile.flush()
                except OSError:
                    return
            self.close_connection = True
            return
        if seg[:2] == ["v1", "poolgroups"]:
            if len(seg) == 2:
                return self.reply(200, {"items": [self.pool(n) for n in sorted(api.pools)]})
            name = seg[2]
            if m == "GET":
                return self.reply(200, self.pool(name)) if name in api.pools else \
                    err(self, 404, "NotFound", "PoolGroup %s not found" % name)
            if token != ADMIN:
                return err(self, 403, "Forbidden", "changing pool groups needs an admin token")
            if m == "DELETE":
                if name not in api.pools:
                    return err(self, 404, "NotFound", "PoolGroup %s not found" % name)
                del api.pools[name]
                return self.reply(204)
            existed = name in api.pools
            api.pools[name] = json.loads(data)
            return self.reply(200 if existed else 201, self.pool(name))
        return err(self, 404, "NotFound", "no such endpoint `%s`" % url.path)

    def pool(self, name):
        return {"name": name, "spec": self.server.api.pools[name],
                "status": {"ready": 1, "starting": 1, "created": 3, "taken": 2, "onDemand": 0}}

    def app(self, m, ns, name, data):
        api = self.server.api
        key = (ns, name)
        if m == "GET" or m == "DELETE":
            if key not in api.apps:
                return err(self, 404, "NotFound", "app `%s/%s` not found" % key)
            if m == "DELETE":
                del api.apps[key]
                return self.reply(204)
            return self.reply(200, api.apps[key])
        spec = json.loads(data)
        unknown = set(spec) - {"runtime", "package", "entrypoint", "settings", "concurrency", "minInstances",
                               "maxInstances", "idleTimeoutSeconds", "timeoutSeconds", "cpu", "memory", "poolGroup"}
        if unknown:
            return err(self, 400, "BadRequest", "unknown fields in an app spec: %s" % ", ".join(sorted(unknown)))
        if spec.get("runtime") not in ("python3", "node", "custom"):
            return err(self, 400, "BadRequest", "app `%s`: `runtime` must be python3, node or custom" % name)
        if spec.get("package") not in api.packages:
            return err(self, 400, "BadRequest", "app `%s`: package was not uploaded" % name)
        old = api.apps.get(key)
        rev = (old["status"]["revision"] + 1) if old else 1
        api.apps[key] = {
            "kind": "App",
            "metadata": {"name": name, "namespace": ns, "uid": "u", "resourceVersion": str(rev),
                         "generation": rev, "creationTimestamp": "2026-01-05T00:00:00Z",
                         "updateTimestamp": "2026-01-05T00:00:01Z", "labels": {"team": "a"}},
            "spec": spec,
            "status": {"url": "/fn/%s/%s/" % key, "revision": rev, "instances": 2, "starting": 1, "draining": 0,
                       "activeRequests": 0, "queuedRequests": 0, "requests": 42, "errors5xx": 1,
                       "rejected429": 0, "timeouts504": 0,
                       "coldStarts": {"count": 3, "lastMs": 12.5, "minMs": 8.25, "maxMs": 30.0}},
        }
        return self.reply(200 if old else 201, api.apps[key])

    def function(self, seg, url, data):
        api = self.server.api
        key = (seg[1], seg[2])
        if key not in api.apps:
            return err(self, 404, "NotFound", "app `%s/%s` not found" % key)
        q = dict(urllib.parse.parse_qsl(url.query))
        if "fail" in q:
            return self.reply(int(q["fail"]), raw=b"it broke\n", ctype="text/plain")
        if "upstream" in q:
            return err(self, 502, "BadGateway", "the function failed: exit status 1")
        sub = "/" + "/".join(seg[3:]) + ("?" + url.query if url.query else "")
        doc = {"method": self.command, "path": sub, "body": data.decode(),
               "contentType": self.headers.get("Content-Type"), "x": self.headers.get("X-Test")}
        return self.reply(200, raw=json.dumps(doc).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


@pytest.fixture()
def fake(serve_fake):
    return serve_fake(Handler, FakeLegiond())


@pytest.fixture()
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    (h / "admin.token").write_text(ADMIN + "\n")
    return h


@pytest.fixture()
def cli(legion_client_bin, fake, home, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGION_")}
    env["LEGION_HOME"] = str(home)
    env["LEGION_API"] = fake.url
    return runner(legion_client_bin, env, timeout=30, cwd=tmp_path)


@pytest.fixture()
def src(tmp_path):
    d = tmp_path / "src"
    (d / "lib").mkdir(parents=True)
    (d / "main.py").write_text("def main(req):\n    return 'hi'\n")
    (d / "lib" / "util.py").write_text("X = 1\n")
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: x\n")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return d


def deploy(cli, src, *extra, name="hello", check=0):
    return cli("app", "deploy", name, "--runtime", "python3", "--dir", str(src), *extra, check=check)


def test_deploy_packs_uploads_and_puts_spec(cli, fake, src):
    p = deploy(cli, src, "--set", "GREETING=hi", "--set", "EMPTY=", "--set", "EQ=a=b", "--entrypoint", "main:main",
               "--concurrency", "5", "--min", "1", "--max", "3", "--idle-timeout", "60", "--timeout", "10",
               "--cpu", "500m", "--memory", "128Mi", "--pool", "python3")
    assert p.stdout == f"deployed default/hello revision 1: {fake.url}/fn/default/hello/\n"
    assert p.stderr == ""  # no progress when stderr is not a terminal
    methods = [(m, path) for m, path, _, _ in fake.requests]
    assert methods == [("POST", "/v1/namespaces/default/packages"), ("PUT", "/v1/namespaces/default/apps/hello")]
    upload, put = fake.requests
    assert upload[2]["Authorization"] == "Bearer " + ADMIN
    spec = json.loads(put[3])
    files = fake.packages[spec["package"]]
    assert sorted(files) == ["lib/util.py", "main.py"]  # .git and __pycache__ are left out
    assert files["main.py"].startswith(b"def main")
    assert spec == {"runtime": "python3", "package": spec["package"], "entrypoint": "main:main",
                    "settings": {"GREETING": "hi", "EMPTY": "", "EQ": "a=b"}, "concurrency": 5,
                    "minInstances": 1, "maxInstances": 3, "idleTimeoutSeconds": 60, "timeoutSeconds": 10,
                    "cpu": "500m", "memory": "128Mi", "poolGroup": "python3"}
    assert put[2]["Content-Type"] == "application/json"
    # Again: the whole spec comes from the flags; a new revision.
    p = deploy(cli, src)
    assert "revision 2" in p.stdout
    assert json.loads(fake.requests[-1][3]).keys() == {"runtime", "package"}


def test_deploy_json_and_errors(cli, fake, src, tmp_path):
    p = deploy(cli, src, "--json")
    doc = json.loads(p.stdout)
    assert doc["kind"] == "App" and doc["status"]["revision"] == 1
    p = cli("app", "deploy", "x", "--runtime", "ruby", "--dir", str(src), check=1)
    assert p.stderr == "legion: app `x`: `runtime` must be python3, node or custom\n"
    p = cli("app", "deploy", "x", "--runtime", "python3", "--dir", str(tmp_path / "nope"), check=1)
    assert p.stderr.startswith("legion: pack `") and "No such file or directory" in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    p = cli("app", "deploy", "x", "--runtime", "python3", "--dir", str(empty), check=1)
    assert "has no files to deploy" in p.stderr
    p = cli("app", "deploy", "x", "--dir", str(src), check=2)
    assert p.stderr.startswith("legion: --runtime is required")
    assert "usage: legion app deploy NAME" in p.stderr
    for bad in (["--min", "x"], ["--max", "-1"], ["--set", "NOEQUALS"], ["--set", "=v"], ["--bogus"]):
        cli("app", "deploy", "x", "--runtime", "python3", *bad, check=2)
    p = cli("app", "deploy", "a/b", "--runtime", "python3", check=1)
    assert p.stderr.startswith("legion: invalid app name `a/b`")
    cli("app", "deploy", "--runtime", "python3", check=2)
    # Usage errors and bad input found locally send nothing.
    assert [r[1] for r in fake.requests if r[0] == "PUT"] == ["/v1/namespaces/default/apps/hello",
                                                              "/v1/namespaces/default/apps/x"]


def test_global_options_anywhere(cli, fake, src, home):
    deploy(cli, src)
    for args in (["--json", "app", "list"], ["app", "--json", "list"], ["app", "list", "--json"],
                 ["--ns=default", "app", "list", "--json"]):
        p = cli(*args, check=0)
        assert [a["metadata"]["name"] for a in json.loads(p.stdout)["items"]] == ["hello"], args
    # --api and --token beat the environment.
    p = cli("--api", fake.url, "app", "list", "--token", "wrong", env_extra={"LEGION_API": "http://127.0.0.1:1"},
            check=1)
    assert p.stderr == "legion: invalid token\n"
    cli("app", "list", "--token", ADMIN, env_extra={"LEGION_HOME": "/nonexistent"}, check=0)
    cli("app", "list", env_extra={"LEGION_TOKEN": ADMIN, "LEGION_HOME": "/nonexistent"}, check=0)
    # Namespace from the environment and from --ns.
    cli("app", "list", env_extra={"LEGION_NAMESPACE": "team-a"}, check=0)
    assert fake.requests[-1][1] == "/v1/namespaces/team-a/apps"
    cli("app", "list", "--ns", "team-a", env_extra={"LEGION_NAMESPACE": "other"}, check=0)
    assert fake.requests[-1][1] == "/v1/namespaces/team-a/apps"


def test_no_token_and_unreachable(cli, fake):
    p = cli("app", "list", env_extra={"LEGION_HOME": "/nonexistent"}, check=1)
    assert p.stderr.startswith("legion: missing `Authorization: Bearer <token>`")
    assert "cannot read /nonexistent/admin.token" in p.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = cli("--api", "http://127.0.0.1:%d" % port, "app", "list", check=1)
    assert p.stderr.startswith("legion: cannot reach legiond at http://127.0.0.1:%d: " % port)
    assert p.stderr.endswith("(is it running? make run)\n")
    # The default home is ./var/legion, as for legiond.
    p = cli("app", "list", env_extra={"LEGION_HOME": ""}, check=1)
    assert "cannot read ./var/legion/admin.token" in p.stderr


def test_list_and_show(cli, fake, src):
    p = cli("app", "list", check=0)
    assert p.stdout == "" and "no apps" in p.stderr
    deploy(cli, src, "--set", "GREETING=hi", "--min", "1", "--cpu", "0.5")
    deploy(cli, src, name="other")
    p = cli("app", "list", check=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "RUNTIME", "PACKAGE", "REVISION", "INSTANCES", "REQUESTS", "URL"]
    row = lines[1].split()
    assert row[0] == "hello" and row[1] == "python3" and len(row[2]) == 12 and row[3:6] == ["1", "2", "42"]
    assert row[6] == fake.url + "/fn/default/hello/"
    assert lines[2].split()[0] == "other"
    p = cli("app", "list", "-l", "team=a,x in (1 2)", check=0)
    assert fake.requests[-1][1] == "/v1/namespaces/default/apps?labelSelector=team%3Da%2Cx%20in%20%281%202%29"
    p = cli("app", "show", "hello", check=0)
    out = p.stdout
    assert "name:         default/hello\n" in out
    assert "runtime:      python3\n" in out
    assert re.search(r"^package:      [0-9a-f]{12}$", out, re.M)
    assert "revision:     1\n" in out
    assert f"url:          {fake.url}/fn/default/hello/\n" in out
    assert "instances:    2 ready, 1 starting, 0 draining\n" in out
    assert "requests:     42 (0 active, 0 queued; 1 5xx, 0 429, 0 504)\n" in out
    assert "cold starts:  3 (last 12.5 ms, min 8.2 ms, max 30.0 ms)\n" in out
    assert "settings:     GREETING=hi\n" in out
    assert "concurrency 10, instances 1..10" in out and "cpu 0.5, memory (the pool group's)" in out
    assert "labels:       team=a\n" in out
    p = cli("app", "show", "hello", "--json", check=0)
    assert json.loads(p.stdout)["metadata"]["name"] == "hello"
    p = cli("app", "show", "nope", check=1)
    assert p.stderr == "legion: app `default/nope` not found\n" and p.stdout == ""
    cli("app", "show", check=2)
    cli("app", "show", "a", "b", check=2)


def test_set_keeps_the_spec(cli, fake, src):
    deploy(cli, src, "--set", "A=1", "--set", "B=2", "--max", "4", "--entrypoint", "main:main")
    p = cli("app", "set", "hello", "C=3", "A=one", "--unset", "B", check=0)
    assert p.stdout == "updated default/hello: revision 2\n"
    assert [r[0] for r in fake.requests[-2:]] == ["GET", "PUT"]
    spec = json.loads(fake.requests[-1][3])
    assert spec["settings"] == {"A": "one", "C": "3"}
    assert spec["maxInstances"] == 4 and spec["entrypoint"] == "main:main"
    p = cli("app", "set", "hello", "--unset", "A", "--unset", "C", check=0)
    assert "settings" not in json.loads(fake.requests[-1][3])
    cli("app", "set", "hello", check=2)
    cli("app", "set", "hello", "novalue", check=2)
    p = cli("app", "set", "nope", "A=1", check=1)
    assert p.stderr == "legion: app `default/nope` not found\n"


def test_delete(cli, fake, src):
    deploy(cli, src)
    deploy(cli, src, name="two")
    p = cli("app", "delete", "hello", "two", check=0)
    assert p.stdout == "deleted app default/hello\ndeleted app default/two\n"
    assert not fake.apps
    p = cli("app", "delete", "hello", check=1)
    assert p.stderr == "legion: app `default/hello` not found\n"


def test_invoke(cli, fake, src, tmp_path):
    deploy(cli, src)
    p = cli("invoke", "hello", check=0)
    doc = json.loads(p.stdout)  # exactly the body: no newline added for a pipe
    assert doc["method"] == "GET" and doc["path"] == "/" and doc["body"] == ""
    assert fake.requests[-1][2]["Authorization"] == "Bearer " + ADMIN
    p = cli("invoke", "hello", "--data", '{"name": "Ada"}', "--path", "/sub/x?a=1&b=2", "-H", "X-Test: yes",
            check=0)
    doc = json.loads(p.stdout)
    assert doc == {"method": "POST", "path": "/sub/x?a=1&b=2", "body": '{"name": "Ada"}',
                   "contentType": "application/json", "x": "yes"}
    (tmp_path / "body.bin").write_bytes(b"raw\x00data")
    p = cli("invoke", "hello", "--data", "@" + str(tmp_path / "body.bin"), "-X", "PUT", "--path", "?q=1",
            "-H", "Content-Type: text/x-custom", check=0)
    doc = json.loads(p.stdout)
    assert doc["method"] == "PUT" and doc["path"] == "/?q=1" and doc["body"] == "raw\x00data"
    assert doc["contentType"] == "text/x-custom"
    p = cli("invoke", "hello", "-d", "@-", input=b"from stdin", check=0)
    assert json.loads(p.stdout)["body"] == "from stdin"
    p = cli("invoke", "hello", "--path", "/?fail=500", check=1)
    assert p.stdout == "" and p.stderr == "legion: HTTP 500 from default/hello: it broke\n"
    p = cli("invoke", "hello", "--path", "/?upstream=1", check=1)
    assert p.stderr == "legion: HTTP 502: the function failed: exit status 1\n"
    p = cli("invoke", "nope", check=1)
    assert p.stderr == "legion: HTTP 404: app `default/nope` not found\n"
    p = cli("invoke", "hello", "--data", "@" + str(tmp_path / "missing"), check=1)
    assert p.stderr.startswith("legion: read `") and "No such file" in p.stderr
    cli("invoke", check=2)
    cli("invoke", "hello", "-H", "no-colon", check=2)
    cli("invoke", "hello", "--timeout", "soon", check=2)


def test_logs(cli, fake, src):
    deploy(cli, src)
    p = cli("app", "logs", "hello", check=0)
    assert p.stdout == "".join(fake.log_lines)
    p = cli("app", "logs", "hello", "--tail", "2", check=0)
    assert p.stdout == "line 4\nline 5\n"
    assert fake.requests[-1][1] == "/v1/namespaces/default/apps/hello/logs?tail=2"
    p = cli("app", "logs", "nope", check=1)
    assert p.stderr == "legion: app `default/nope` not found\n"
    cli("app", "logs", "hello", "--tail", "x", check=2)
    # --follow: lines show up as they arrive, until interrupted.
    proc = subprocess.Popen([cli.bin, "app", "logs", "hello", "-f", "-n", "1"], env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"line 5\n"
        assert proc.stdout.readline() == b"more 0\n"
        assert proc.stdout.readline() == b"more 1\n"
        assert proc.poll() is None
        assert fake.requests[-1][1] == "/v1/namespaces/default/apps/hello/logs?tail=1&follow=1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_pools(cli, fake):
    p = cli("pool", "list", check=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "RUNTIME", "READY", "STARTING", "CPU", "MEMORY", "BOOST", "TAKEN",
                                "ON-DEMAND"]
    assert lines[1].split() == ["python3", "python3", "1/2", "1", "1000m", "256Mi", "2000m", "for", "10s", "2", "0"]
    p = cli("pool", "create", "big", "--runtime", "python3", "--ready", "3", "--cpu", "2", "--memory", "1Gi",
            "--boost-cpu", "4000m", "--boost-seconds", "5", check=0)
    assert p.stdout == "created pool group big (runtime python3, 3 ready)\n"
    assert fake.requests[-1][:2] == ("PUT", "/v1/poolgroups/big")
    assert json.loads(fake.requests[-1][3]) == {"runtime": "python3", "ready": 3, "cpu": "2", "memory": "1Gi",
                                                "startupBoost": {"cpu": "4000m", "seconds": 5}}
    p = cli("pool", "create", "big", "--runtime", "python3", check=0)
    assert p.stdout.startswith("updated pool group big")
    assert json.loads(fake.requests[-1][3]) == {"runtime": "python3"}
    p = cli("pool", "list", "--json", check=0)
    assert [x["name"] for x in json.loads(p.stdout)["items"]] == ["big", "python3"]
    cli("pool", "create", "x", "--runtime", "python3", "--boost-cpu", "1", check=2)
    cli("pool", "create", "x", check=2)
    cli("pool", "create", "x", "--runtime", "node", "--ready", "many", check=2)
    p = cli("pool", "create", "x", "--runtime", "node", "--token", NS_TOKEN, check=1)
    assert p.stderr == "legion: changing pool groups needs an admin token\n"
    p = cli("pool", "delete", "big", check=0)
    assert p.stdout == "deleted pool group big\n"
    p = cli("pool", "delete", "big", check=1)
    assert p.stderr == "legion: PoolGroup big not found\n"


def test_namespaces_and_tokens(cli, fake):
    p = cli("ns", "create", "team-b", check=0)
    assert p.stdout == "created namespace team-b\n"
    assert json.loads(fake.requests[-1][3]) == {"name": "team-b"}
    p = cli("ns", "create", "team-b", check=0)
    assert p.stdout == "namespace team-b exists\n"
    p = cli("ns", "list", check=0)
    assert [ln.split()[0] for ln in p.stdout.splitlines()] == ["NAME", "default", "team-a", "team-b"]
    p = cli("ns", "list", "--token", NS_TOKEN, check=0)
    assert [ln.split()[0] for ln in p.stdout.splitlines()] == ["NAME", "team-a"]
    p = cli("ns", "create", "x", "--token", NS_TOKEN, check=1)
    assert p.stderr == "legion: creating namespaces needs an admin token\n"
    p = cli("token", "create", "--ns", "team-a", "--description", "ci", check=0)
    assert p.stdout == "lgn_new_secret\n"  # alone: TOKEN=$(legion token create)
    assert "0123456789abcdef" in p.stderr
    assert fake.requests[-1][:2] == ("POST", "/v1/namespaces/team-a/tokens")
    assert json.loads(fake.requests[-1][3]) == {"description": "ci"}
    p = cli("--json", "token", "create", check=0)
    assert json.loads(p.stdout)["token"] == "lgn_new_secret"
    assert fake.requests[-1][1] == "/v1/namespaces/default/tokens"
    p = cli("token", "create", "--token", NS_TOKEN, "--ns", "default", check=1)
    assert p.stderr == "legion: namespace `default` not found\n"
    cli("ns", "create", check=2)
    cli("token", "create", "extra", check=2)


def test_help_and_usage(cli):
    p = cli("--help", check=0)
    for group in ("app", "invoke", "pool", "ns", "token", "sandbox"):
        assert "  %s " % group in p.stdout
    assert "--api URL" in p.stdout
    for args in (["app", "--help"], ["app", "deploy", "--help"], ["app", "logs", "-h"], ["invoke", "--help"],
                 ["pool", "create", "--help"], ["ns", "--help"], ["token", "--help"]):
        p = cli(*args, check=0)
        assert p.stdout.startswith("usage: legion "), args
        assert p.stderr == ""
    p = cli("app", "frob", check=2)
    assert p.stderr.startswith("legion: unknown command `app frob`\nusage: legion app <command>")
    cli("app", check=2)
    cli("--api", check=2)
    p = cli("app", "list", "--api", check=2)
    assert p.stderr.startswith("legion: option `--api` needs a value")


def test_upload_progress_on_a_terminal(cli, fake, src):
    """A progress line on stderr when it is a terminal (via script(1))."""
    if not shutil.which("script"):
        pytest.skip("script(1) is not installed")
    (src / "big.bin").write_bytes(os.urandom(4 << 20))
    cmd = " ".join([cli.bin, "app", "deploy", "hello", "--runtime", "python3", "--dir", str(src)])
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, env=cli.env, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "packed 3 files" in out
    assert "uploading" in out and "(100%)" in out
    assert "deployed default/hello revision 1" in out


# ---- against a real legiond -----------------------------------------------------------

@pytest.fixture()
def real_legiond(legion_client_bin):
    daemon = os.path.abspath(os.path.join(BUILD, "legiond"))
    if not os.path.exists(daemon):
        pytest.skip("legiond is not built")
    if os.geteuid() != 0:
        pytest.skip("legiond needs root (sandboxes)")
    home = tempfile.mkdtemp(prefix="lg-cli-home-")
    port = free_port()
    log = open(os.path.join(home, "legiond.log"), "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGION_")}
    net = E2eNet()  # never the machine's own legiond's network
    proc = subprocess.Popen([daemon, "--home", home, "--listen", "127.0.0.1:%d" % port, *net.args], stdout=log,
                            stderr=log, env=env)
    url = "http://127.0.0.1:%d" % port
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(home, "admin.token")):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("legiond did not start: " + open(os.path.join(home, "legiond.log")).read())
        env = dict(env, LEGION_HOME=home, LEGION_API=url)

        run = runner(legion_client_bin, env, timeout=90)
        run.url = url
        yield run
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Its workloads outlive it: stop them too.
        subprocess.run([daemon, "--home", home, *net.args, "--stop-all"], env=env, stdout=log, stderr=log,
                       timeout=120)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_against_real_legiond(real_legiond):
    run = real_legiond
    p = run("app", "deploy", "hello", "--runtime", "python3", "--dir", os.path.join(ROOT, "examples", "python-hello"),
            "--set", "GREETING=Hi", check=0)
    assert p.stdout == f"deployed default/hello revision 1: {run.url}/fn/default/hello/\n"
    p = run("invoke", "hello", "--path", "/?name=Ada", check=0)
    assert json.loads(p.stdout) == {"message": "Hi, Ada!"}
    p = run("invoke", "hello", "--data", '{"name": "Bob"}', check=0)
    assert json.loads(p.stdout) == {"message": "Hi, Bob!"}
    p = run("app", "set", "hello", "GREETING=Howdy", check=0)
    assert p.stdout == "updated default/hello: revision 2\n"
    p = run("invoke", "hello", check=0)
    assert json.loads(p.stdout) == {"message": "Howdy, world!"}
    p = run("app", "show", "hello", check=0)
    assert "revision:     2\n" in p.stdout and "settings:     GREETING=Howdy\n" in p.stdout
    assert re.search(r"^cold starts:  [1-9]", p.stdout, re.M)
    p = run("app", "list", check=0)
    assert p.stdout.splitlines()[1].split()[:2] == ["hello", "python3"]
    p = run("app", "logs", "hello", check=0)
    assert "ready in" in p.stdout
    p = run("app", "show", "nope", check=1)
    assert "not found" in p.stderr
    run("pool", "list", check=0)
    run("ns", "create", "team-a", check=0)
    tok = run("token", "create", "--ns", "team-a", check=0).stdout.strip()
    assert tok
    p = run("app", "list", "--token", tok, check=1)  # the default namespace is not team-a's
    assert p.stderr == "legion: namespace `default` not found\n"
    run("app", "list", "--token", tok, "--ns", "team-a", check=0)
