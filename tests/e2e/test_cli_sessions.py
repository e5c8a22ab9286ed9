"""`legion sessionpool` and `legion session` against a small fake of legiond's
sessions API (docs/api.md, "Sessions") run in this process: what the CLI sends
(methods, paths, query, bodies), what it prints (exec's streams and result,
tables, --json, the API's messages) and its exit statuses. The fake runs the
test's own snippets with exec() to answer executions like the real one."""
import ast
import contextlib
import io
import json
import os
import re
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import runner

ADMIN = "lgn_admin_secret"
NS_TOKEN = "lgn_team_a_secret"
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{4,128}$")
SIZES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def size(v, default):
    if v is None:
        return default
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", v)
    return int(m.group(1)) * SIZES.get(m.group(2), 1)


class Fake:
    def __init__(self):
        self.requests = []  # (method, raw path, query dict, body)
        self.pools = {}  # (ns, name) -> spec
        self.sessions = {}  # (ns, pool, id) -> {"env", "files", "executions"}
        self.lock = threading.Lock()


def run_code(env, code):
    """Like the session worker: stdout, stderr, the last expression's repr."""
    out, errs = io.StringIO(), io.StringIO()
    ans = {"status": "Succeeded", "result": None, "error": None, "executionTimeMs": 1,
           "truncated": {"stdout": False, "stderr": False}, "interpreterRestarted": False, "message": None}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
        try:
            tree = ast.parse(code, "<cell>")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<cell>", "exec"), env)
            if last is not None:
                v = eval(compile(ast.Expression(last.value), "<cell>", "eval"), env)
                ans["result"] = None if v is None else repr(v)
        except Exception as e:  # noqa: BLE001
            ans["status"] = "Failed"
            ans["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    ans["stdout"], ans["stderr"] = out.getvalue(), errs.getvalue()
    return ans


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, doc=None, raw=None, ctype="application/json"):
        body = raw if raw is not None else (b"" if doc is None else (json.dumps(doc) + "\n").encode())
        self.send_response(status)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def err(self, status, code, message):
        self.reply(status, {"error": {"code": code, "message": message}})

    def handle_any(self):
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        api.requests.append((self.command, self.path, q, data))
        token = self.headers.get("Authorization", "")[7:]
        if token not in (ADMIN, NS_TOKEN):
            return self.err(401, "Unauthorized", "invalid token")
        ns = q.get("namespace") or ("default" if token == ADMIN else "team-a")
        if token == NS_TOKEN and ns != "team-a":
            return self.err(404, "NotFound", "namespace `%s` not found" % ns)
        raw = [s for s in url.path.split("/") if s]
        seg = [urllib.parse.unquote(s) for s in raw]
        if seg[:2] != ["v1", "sessionpools"]:
            return self.err(404, "NotFound", "no such endpoint `%s`" % url.path)
        with api.lock:
            return self.sessionpools(api, ns, seg[2:], q, data)

    def pool_doc(self, api, ns, name):
        n = sum(1 for k in api.sessions if k[:2] == (ns, name))
        return {"kind": "SessionPool", "metadata": {"name": name, "namespace": ns,
                                                    "creationTimestamp": "2026-01-05T00:00:00Z"},
                "spec": api.pools[(ns, name)], "status": {"ready": 2, "starting": 1, "sessions": n}}

    def sessionpools(self, api, ns, seg, q, data):
        m = self.command
        if not seg:
            items = [self.pool_doc(api, ns, name) for (n2, name) in sorted(api.pools) if n2 == ns]
            for it in items:
                it["status"] = {"sessions": it["status"]["sessions"]}  # the list has only this
            return self.reply(200, {"items": items})
        name, sub, rest = seg[0], seg[1] if len(seg) > 1 else None, seg[2:]
        if sub is None and m == "PUT":
            spec = json.loads(data)
            if spec.get("runtime", "python3") != "python3":
                return self.err(400, "BadRequest", "session pool `%s`: `runtime` must be python3" % name)
            spec.setdefault("runtime", "python3")
            existed = (ns, name) in api.pools
            api.pools[(ns, name)] = spec
            return self.reply(200 if existed else 201, self.pool_doc(api, ns, name))
        if (ns, name) not in api.pools:
            return self.err(404, "NotFound", "SessionPool %s/%s not found" % (ns, name))
        spec = api.pools[(ns, name)]
        if sub is None:
            if m == "DELETE":
                del api.pools[(ns, name)]
                for k in [k for k in api.sessions if k[:2] == (ns, name)]:
                    del api.sessions[k]
                return self.reply(204)
            return self.reply(200, self.pool_doc(api, ns, name))
        if sub == "sessions":
            if not rest:
                items = [self.session_doc(k[2], s) for k, s in sorted(api.sessions.items()) if k[:2] == (ns, name)]
                return self.reply(200, {"items": items})
            s = api.sessions.get((ns, name, rest[0]))
            if not s:
                return self.err(404, "NotFound", "no session `%s` in pool `%s`" % (rest[0], name))
            if m == "DELETE":
                del api.sessions[(ns, name, rest[0])]
                return self.reply(204)
            return self.reply(200, self.session_doc(rest[0], s))
        ident = q.get("identifier", "")
        if not ID_RE.match(ident):
            return self.err(400, "BadRequest", "`identifier` must be 4 to 128 of [A-Za-z0-9._:-], given `%s`" % ident)
        key = (ns, name, ident)
        create = sub == "executions" or m in ("PUT", "POST")
        if key not in api.sessions:
            if not create:
                return self.err(404, "NotFound", "no session `%s` in pool `%s`" % (ident, name))
            count, most = sum(1 for k in api.sessions if k[:2] == (ns, name)), spec.get("maxSessions", 100)
            if count >= most:
                return self.err(429, "TooManySessions", "session pool `%s` has reached maxSessions (%d of %d in use)"
                                % (name, count, most))
            api.sessions[key] = {"env": {}, "files": {}, "executions": 0}
        s = api.sessions[key]
        if sub == "executions":
            return self.execute(api, key, s, json.loads(data))
        path = "/".join(rest)
        if not rest:
            return self.reply(200, [{"name": n, "size": len(b), "modified": "2026-01-06T00:00:00Z"}
                                    for n, b in sorted(s["files"].items())])
        if m == "PUT":
            if len(data) > size(spec.get("maxFileBytes"), 100 << 20):
                return self.err(413, "TooLarge", "`%s` is larger than maxFileBytes (%s)" % (path,
                                                                                        spec.get("maxFileBytes")))
            s["files"][path] = data
            return self.reply(201, {"name": path, "size": len(data)})
        if path not in s["files"]:
            return self.err(404, "NotFound", "no file `%s`" % path)
        if m == "DELETE":
            del s["files"][path]
            return self.reply(204)
        return self.reply(200, raw=s["files"][path], ctype="application/octet-stream")

    def session_doc(self, ident, s):
        return {"identifier": ident, "createdAt": "2026-01-06T00:00:00Z", "lastActivity": "2026-01-06T00:01:00Z",
                "expiresAt": "2026-01-06T00:06:00Z", "executions": s["executions"], "cooldownSeconds": 300}

    def execute(self, api, key, s, body):
        code = body["code"]
        s["executions"] += 1
        if code == "__lost__":
            del api.sessions[key]
            return self.err(410, "SessionLost", "session `%s` lost its sandbox; its variables and files are gone"
                            % key[2])
        if code == "__timeout__":
            ans = {"status": "TimedOut", "stdout": "started\n", "stderr": "", "result": None, "error": None,
                   "interpreterRestarted": False,
                   "message": "the execution took longer than %d s" % body.get("timeoutSeconds", 30)}
        elif code == "__restart__":
            s["env"] = {}
            ans = {"status": "Failed", "stdout": "", "stderr": "", "result": None,
                   "error": {"type": "InterpreterDied", "message": "the interpreter exited (status 3)"},
                   "interpreterRestarted": True,
                   "message": "the interpreter was restarted; its variables are lost, its files are not"}
        elif code == "__big__":
            ans = {"status": "Succeeded", "stdout": "x" * 10, "stderr": "", "result": None,
                   "truncated": {"stdout": True, "stderr": False}}
        else:
            ans = run_code(s["env"], code)
        ans.update(id="exec-%d" % s["executions"], identifier=key[2])
        return self.reply(200, ans)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


@pytest.fixture()
def fake(serve_fake):
    return serve_fake(Handler, Fake())


@pytest.fixture()
def cli(legion_client_bin, fake, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "admin.token").write_text(ADMIN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGION_")}
    env.update(LEGION_HOME=str(home), LEGION_API=fake.url)
    return runner(legion_client_bin, env, timeout=30, cwd=tmp_path)


@pytest.fixture()
def pool(cli, fake):
    cli("sessionpool", "create", "interp", "--ready", "2", "--max-sessions", "2", "--max-file-bytes", "1Ki",
        check=0)
    fake.requests.clear()
    return "interp"


# ---- sessionpool ----------------------------------------------------------------------

def test_sessionpool_create_list_show_delete(cli, fake):
    p = cli("sessionpool", "create", "interp", "--runtime", "python3", "--ready", "5", "--max-sessions", "100",
            "--cooldown", "300", "--egress", "on", "--cpu", "500m", "--memory", "256Mi", "--max-file-bytes", "100Mi",
            "--max-session-bytes", "1Gi", check=0)
    assert p.stdout == ("created session pool default/interp (python3, 5 ready, at most 100 sessions, "
                        "cooldown 300 s, egress on)\n")
    method, path, q, body = fake.requests[-1]
    assert (method, path) == ("PUT", "/v1/sessionpools/interp")
    assert json.loads(body) == {"runtime": "python3", "ready": 5, "maxSessions": 100, "cooldownSeconds": 300,
                                "egress": True, "cpu": "500m", "memory": "256Mi", "maxFileBytes": "100Mi",
                                "maxSessionBytes": "1Gi"}
    # Again: the whole spec from the flags; updated.
    p = cli("sessionpool", "create", "interp", "--egress", "off", check=0)
    assert p.stdout.startswith("updated session pool default/interp (python3, 1 ready, at most 100 sessions")
    assert p.stdout.endswith("egress off)\n")
    assert json.loads(fake.requests[-1][3]) == {"egress": False}
    cli("sessionpool", "create", "other", "--ready", "0", "--json", check=0)
    p = cli("sessionpool", "list", check=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "RUNTIME", "READY", "SESSIONS", "COOLDOWN", "EGRESS", "CPU", "MEMORY", "FILES"]
    assert lines[1].split() == ["interp", "python3", "1", "0/100", "300s", "off", "-", "256Mi", "100Mi/1Gi"]
    assert lines[2].split()[:3] == ["other", "python3", "0"]
    p = cli("sessionpool", "list", "--json", check=0)
    assert [x["metadata"]["name"] for x in json.loads(p.stdout)["items"]] == ["interp", "other"]
    p = cli("sessionpool", "show", "interp", check=0)
    assert "name:          default/interp\n" in p.stdout
    assert "ready:         2 of 1 (1 starting)\n" in p.stdout
    assert "sessions:      0 of at most 100\n" in p.stdout
    assert "files:         100Mi per file, 1Gi per session\n" in p.stdout
    assert json.loads(cli("sessionpool", "show", "interp", "--json", check=0).stdout)["spec"] == {
        "egress": False, "runtime": "python3"}
    p = cli("sessionpool", "delete", "interp", "other", check=0)
    assert p.stdout == "deleted session pool interp\ndeleted session pool other\n"
    p = cli("sessionpool", "show", "interp", check=1)
    assert p.stderr == "legion: SessionPool default/interp not found\n"
    p = cli("sessionpool", "list", check=0)
    assert p.stdout == "" and p.stderr == "no session pools\n"
    # The API's 400 message.
    p = cli("sessionpool", "create", "x", "--runtime", "node", check=1)
    assert p.stderr == "legion: session pool `x`: `runtime` must be python3\n"


def test_sessionpool_usage_errors(cli, fake):
    for bad in (["--ready", "many"], ["--egress", "maybe"], ["--cooldown", "-1"], ["--bogus"], ["--cpu"]):
        p = cli("sessionpool", "create", "x", *bad, check=2)
        assert "usage: legion sessionpool create NAME" in p.stderr, bad
    cli("sessionpool", "create", check=2)
    cli("sessionpool", "create", "a", "b", check=2)
    cli("sessionpool", "show", check=2)
    cli("sessionpool", "list", "extra", check=2)
    cli("sessionpool", "delete", check=2)
    p = cli("sessionpool", "create", "a/b", check=1)
    assert p.stderr.startswith("legion: invalid session pool name `a/b`")
    assert fake.requests == []  # nothing was sent


# ---- session exec ---------------------------------------------------------------------

def test_exec_result_streams_and_state(cli, fake, pool):
    p = cli("session", "exec", pool, "user-42", "-c", "1+1", check=0)
    assert p.stdout == "=> 2\n" and p.stderr == ""
    method, path, q, body = fake.requests[-1]
    assert method == "POST" and path == "/v1/sessionpools/interp/executions?identifier=user-42"
    assert json.loads(body) == {"code": "1+1"}
    # Variables persist; stdout and stderr go to their streams; no result line after a statement.
    cli("session", "exec", pool, "user-42", "-c", "import sys\nx = 20", check=0)
    p = cli("session", "exec", pool, "user-42", "-c", "print('out', x)\nprint('err', file=sys.stderr)", check=0)
    assert p.stdout == "out 20\n" and p.stderr == "err\n"
    p = cli("session", "exec", pool, "user-42", "-c", "print('no newline', end='')\nx * 2 + 2", check=0)
    assert p.stdout == "no newline\n=> 42\n"
    p = cli("session", "exec", pool, "user-42", "-c", "'a\\nb'", check=0)
    assert p.stdout == "=> 'a\\nb'\n"
    p = cli("session", "exec", pool, "user-42", "-c", "None", check=0)
    assert p.stdout == ""
    # --json: the API's answer as it came.
    p = cli("session", "exec", pool, "user-42", "-c", "x", "--json", check=0)
    doc = json.loads(p.stdout)
    assert doc["status"] == "Succeeded" and doc["result"] == "20" and doc["identifier"] == "user-42"
    assert p.stderr == ""


def test_exec_code_sources(cli, fake, pool, tmp_path):
    (tmp_path / "cell.py").write_text("y = 6 * 7\ny\n")
    p = cli("session", "exec", pool, "sess-1", "--file", str(tmp_path / "cell.py"), "--timeout", "5", check=0)
    assert p.stdout == "=> 42\n"
    assert json.loads(fake.requests[-1][3]) == {"code": "y = 6 * 7\ny\n", "timeoutSeconds": 5}
    p = cli("session", "exec", pool, "sess-1", "-", input=b"y + 1\n", check=0)
    assert p.stdout == "=> 43\n"
    p = cli("session", "exec", pool, "sess-1", "-f", "-", input=b"y + 2", check=0)
    assert p.stdout == "=> 44\n"
    # Options may come anywhere, with the global ones.
    p = cli("--json", "session", "exec", "-c", "y", pool, "sess-1", check=0)
    assert json.loads(p.stdout)["result"] == "42"
    n = len(fake.requests)
    for bad in ([], ["-c", "1", "-"], ["-c", "1", "--file", "x.py"], ["extra"], ["-c", "1", "--timeout", "0"],
                ["-c", "1", "--timeout", "soon"], ["-c"]):
        p = cli("session", "exec", pool, "sess-1", *bad, check=2)
        assert "usage: legion session exec POOL ID" in p.stderr, bad
    cli("session", "exec", pool, check=2)
    cli("session", "exec", check=2)
    p = cli("session", "exec", pool, "abc", "-c", "1", check=1)
    assert p.stderr == "legion: invalid session identifier `abc`: 4 to 128 of [A-Za-z0-9._:-]\n"
    cli("session", "exec", pool, "a/bcd", "-c", "1", check=1)
    p = cli("session", "exec", pool, "sess-1", "--file", str(tmp_path / "missing.py"), check=1)
    assert p.stderr.startswith("legion: read `") and "No such file" in p.stderr
    p = cli("session", "exec", pool, "sess-1", "-", input=b"\xff\xfe", check=1)
    assert p.stderr == "legion: the code is not UTF-8 text\n"
    assert len(fake.requests) == n  # nothing was sent


def test_exec_failed_timed_out_restarted(cli, fake, pool):
    p = cli("session", "exec", pool, "sess-1", "-c", "print('before')\n1/0", check=1)
    assert p.stdout == "before\n"
    assert p.stderr.startswith("Traceback (most recent call last):\n")
    assert p.stderr.endswith("ZeroDivisionError: division by zero\n")
    p = cli("session", "exec", pool, "sess-1", "-c", "1/0", "--json", check=1)
    assert json.loads(p.stdout)["error"]["type"] == "ZeroDivisionError" and p.stderr == ""
    p = cli("session", "exec", pool, "sess-1", "-c", "__timeout__", "--timeout", "2", check=124)
    assert p.stdout == "started\n"
    assert p.stderr == "legion: the execution took longer than 2 s\n"
    p = cli("session", "exec", pool, "sess-1", "-c", "__timeout__", "--json", check=124)
    assert json.loads(p.stdout)["status"] == "TimedOut"
    p = cli("session", "exec", pool, "sess-1", "-c", "__restart__", check=1)
    assert p.stderr == ("InterpreterDied: the interpreter exited (status 3)\n"
                        "legion: the interpreter was restarted; its variables are lost, its files are not\n")
    p = cli("session", "exec", pool, "sess-1", "-c", "__big__", check=0)
    assert p.stdout == "x" * 10 and p.stderr == "legion: the execution's stdout was cut at 1 MiB\n"


def test_exec_api_errors(cli, fake, pool):
    cli("session", "exec", pool, "sess-1", "-c", "1", check=0)
    cli("session", "exec", pool, "sess-2", "-c", "1", check=0)
    p = cli("session", "exec", pool, "sess-3", "-c", "1", check=1)
    assert p.stdout == ""
    assert p.stderr == "legion: session pool `interp` has reached maxSessions (2 of 2 in use)\n"
    p = cli("session", "exec", pool, "sess-2", "-c", "__lost__", check=1)
    assert p.stderr == "legion: session `sess-2` lost its sandbox; its variables and files are gone\n"
    p = cli("session", "exec", "nopool", "sess-1", "-c", "1", check=1)
    assert p.stderr == "legion: SessionPool default/nopool not found\n"


# ---- files ------------------------------------------------------------------------------

def test_upload_download_ls_rm(cli, fake, pool, tmp_path):
    local = tmp_path / "my data.csv"
    local.write_bytes(b"a,b\n1,2\n")
    p = cli("session", "upload", pool, "sess-1", str(local), check=0)
    assert p.stdout == "uploaded %s (8 B) to /mnt/data/my data.csv in session sess-1\n" % local
    method, path, q, body = fake.requests[-1]
    assert method == "PUT" and path == "/v1/sessionpools/interp/files/my%20data.csv?identifier=sess-1"
    assert body == b"a,b\n1,2\n"
    # REMOTE given, with directories and characters to encode; one ending in / takes the base name.
    cli("session", "upload", pool, "sess-1", str(local), "in/ü?#%.txt", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/files/in/%C3%BC%3F%23%25.txt?identifier=sess-1"
    cli("session", "upload", pool, "sess-1", str(local), "/mnt/data/sub/", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/files/sub/my%20data.csv?identifier=sess-1"
    p = cli("session", "upload", pool, "sess-1", "-", "stdin.bin", input=b"\x00\x01binary", check=0)
    assert p.stdout == "uploaded stdin (8 B) to /mnt/data/stdin.bin in session sess-1\n"
    assert fake.sessions[("default", "interp", "sess-1")]["files"]["stdin.bin"] == b"\x00\x01binary"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    cli("session", "upload", pool, "sess-1", str(empty), check=0)
    assert fake.sessions[("default", "interp", "sess-1")]["files"]["empty"] == b""

    p = cli("session", "ls", pool, "sess-1", check=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert [ln.rsplit(None, 3)[0] for ln in lines[1:]] == ["empty", "in/ü?#%.txt", "my data.csv", "stdin.bin",
                                                            "sub/my data.csv"]
    assert lines[3].split()[-3:] == ["8", "B", "2026-01-06T00:00:00Z"]
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/files?identifier=sess-1"
    p = cli("session", "ls", pool, "sess-1", "--json", check=0)
    assert len(json.loads(p.stdout)) == 5

    p = cli("session", "download", pool, "sess-1", "in/ü?#%.txt", "-", binary_out=True, check=0)
    assert p.stdout == b"a,b\n1,2\n"
    p = cli("session", "download", pool, "sess-1", "stdin.bin", check=0)
    assert (tmp_path / "stdin.bin").read_bytes() == b"\x00\x01binary"
    assert p.stdout == "downloaded /mnt/data/stdin.bin (8 B) from session sess-1 to stdin.bin\n"
    out = tmp_path / "out"
    out.mkdir()
    cli("session", "download", pool, "sess-1", "/mnt/data/sub/my data.csv", str(out), check=0)
    assert (out / "my data.csv").read_bytes() == b"a,b\n1,2\n"
    cli("session", "download", pool, "sess-1", "stdin.bin", str(out / "renamed"), check=0)
    assert (out / "renamed").read_bytes() == b"\x00\x01binary"
    p = cli("session", "download", pool, "sess-1", "missing.txt", check=1)
    assert p.stderr == "legion: no file `missing.txt`\n"
    assert sorted(os.listdir(tmp_path)) == ["empty", "home", "my data.csv", "out", "stdin.bin"]  # no leftovers
    p = cli("session", "download", pool, "nosuch", "stdin.bin", "-", check=1)
    assert p.stderr == "legion: no session `nosuch` in pool `interp`\n"

    p = cli("session", "rm", pool, "sess-1", "stdin.bin", "/mnt/data/in/ü?#%.txt", check=0)
    assert p.stdout == "removed /mnt/data/stdin.bin\nremoved /mnt/data/in/ü?#%.txt\n"
    assert fake.requests[-1][:2] == ("DELETE", "/v1/sessionpools/interp/files/in/%C3%BC%3F%23%25.txt"
                                                "?identifier=sess-1")
    p = cli("session", "rm", pool, "sess-1", "stdin.bin", check=1)
    assert p.stderr == "legion: no file `stdin.bin`\n"


def test_file_errors(cli, fake, pool, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    p = cli("session", "upload", pool, "sess-1", str(big), check=1)
    assert p.stderr == "legion: `big.bin` is larger than maxFileBytes (1Ki)\n"
    n = len(fake.requests)
    for remote in ("../etc/passwd", "a//b", "a/./b", "dir/", "/mnt/data/"):
        p = cli("session", "download", pool, "sess-1", remote, "-", check=1)
        assert p.stderr.startswith("legion: invalid file path `%s`" % remote), remote
    p = cli("session", "upload", pool, "sess-1", str(tmp_path / "missing"), check=1)
    assert "No such file or directory" in p.stderr
    p = cli("session", "upload", pool, "sess-1", str(tmp_path), check=1)
    assert "Is a directory" in p.stderr
    assert len(fake.requests) == n
    cli("session", "upload", pool, "sess-1", "-", check=2)  # stdin needs a name
    cli("session", "upload", pool, "sess-1", check=2)
    cli("session", "upload", pool, "sess-1", "a", "b", "c", check=2)
    cli("session", "download", pool, "sess-1", check=2)
    cli("session", "ls", pool, check=2)
    cli("session", "rm", pool, "sess-1", check=2)
    p = cli("session", "ls", pool, "sess-9", check=1)
    assert p.stderr == "legion: no session `sess-9` in pool `interp`\n"


# ---- sessions -----------------------------------------------------------------------------

def test_session_list_show_delete(cli, fake, pool):
    p = cli("session", "list", pool, check=0)
    assert p.stdout == "" and p.stderr == "no sessions in pool interp\n"
    cli("session", "exec", pool, "user:1", "-c", "1", check=0)
    cli("session", "exec", pool, "user:1", "-c", "2", check=0)
    cli("session", "exec", pool, "user:2", "-c", "3", check=0)
    p = cli("session", "list", pool, check=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["IDENTIFIER", "EXECUTIONS", "CREATED", "LAST-ACTIVITY", "EXPIRES"]
    assert lines[1].split() == ["user:1", "2", "2026-01-06T00:00:00Z", "2026-01-06T00:01:00Z", "2026-01-06T00:06:00Z"]
    assert lines[2].split()[:2] == ["user:2", "1"]
    assert fake.requests[-1][:2] == ("GET", "/v1/sessionpools/interp/sessions")
    p = cli("session", "show", pool, "user:1", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/sessions/user:1"
    assert "identifier:     user:1\n" in p.stdout and "executions:     2\n" in p.stdout
    assert "expires:        2026-01-06T00:06:00Z (after 300 s without a call)\n" in p.stdout
    assert json.loads(cli("session", "show", pool, "user:1", "--json", check=0).stdout)["executions"] == 2
    p = cli("session", "delete", pool, "user:1", "user:2", check=0)
    assert p.stdout == "ended session user:1\nended session user:2\n"
    assert not fake.sessions
    p = cli("session", "delete", pool, "user:1", check=1)
    assert p.stderr == "legion: no session `user:1` in pool `interp`\n"
    p = cli("session", "show", pool, "user:1", check=1)
    assert p.stderr == "legion: no session `user:1` in pool `interp`\n"
    cli("session", "delete", pool, check=2)
    cli("session", "show", pool, check=2)
    cli("session", "list", check=2)
    cli("session", "delete", pool, "ok-id", "no", check=1)  # checked before anything is sent


# ---- namespace, help ------------------------------------------------------------------------

def test_namespace_only_when_given(cli, fake):
    cli("sessionpool", "create", "interp", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp"  # the token's namespace
    cli("sessionpool", "create", "interp", "--ns", "team-a", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp?namespace=team-a"
    assert ("team-a", "interp") in fake.pools
    p = cli("--ns=team-a", "session", "exec", "interp", "sess-1", "-c", "1", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/executions?identifier=sess-1&namespace=team-a"
    cli("session", "ls", "interp", "sess-1", env_extra={"LEGION_NAMESPACE": "team-a"}, check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/files?identifier=sess-1&namespace=team-a"
    cli("session", "list", "interp", "--ns", "team-a", check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/sessions?namespace=team-a"
    # A namespace token without --ns: its own namespace.
    p = cli("session", "list", "interp", "--token", NS_TOKEN, check=0)
    assert fake.requests[-1][1] == "/v1/sessionpools/interp/sessions"
    assert p.stdout.splitlines()[1].split()[0] == "sess-1"
    p = cli("sessionpool", "list", "--token", NS_TOKEN, "--ns", "default", check=1)
    assert p.stderr == "legion: namespace `default` not found\n"


def test_help(cli):
    p = cli("--help", check=0)
    assert "  sessionpool " in p.stdout and "  session " in p.stdout
    for args in (["sessionpool", "--help"], ["sessionpool", "create", "--help"], ["sessionpool", "list", "-h"],
                 ["sessionpool", "show", "--help"], ["sessionpool", "delete", "--help"], ["session", "--help"],
                 ["session", "exec", "--help"], ["session", "upload", "--help"], ["session", "download", "--help"],
                 ["session", "ls", "--help"], ["session", "rm", "--help"], ["session", "list", "--help"],
                 ["session", "show", "--help"], ["session", "delete", "--help"]):
        p = cli(*args, check=0)
        assert p.stdout.startswith("usage: legion " + args[0]), args
        assert p.stderr == ""
    assert "=> VALUE" in cli("session", "exec", "--help", check=0).stdout
    p = cli("session", "frob", check=2)
    assert p.stderr.startswith("legion: unknown command `session frob`\nusage: legion session <command>")
    cli("session", check=2)
    cli("sessionpool", check=2)
