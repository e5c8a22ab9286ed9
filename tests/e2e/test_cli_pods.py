"""`legion pod` end to end.

Two halves:
  - against a small fake of the Kubernetes Pod API run in this process
    (FakeKube): what the CLI sends (methods, paths, queries, bodies, content
    types), what it prints (kubectl's STATUS/READY/RESTARTS, get's summary,
    the API's Status messages), watches (wait, delete), and bad input;
  - against the real legiond (the `legiond` fixture of test_legiond.py):
    a busybox image made by oci_kit and imported with `legion image
    import`, then run/apply, list, get, logs (-f, --tail), wait, delete,
    an OOMKilled pod, an unsupported field rejected with the API's message.
"""
import datetime
import json
import os
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import oci_kit
from conftest import BUILD
from test_legiond import legiond  # noqa: F401 (fixture)

LEGION = os.path.abspath(os.path.join(BUILD, "legion"))
TOKEN = "lgn_pods_test_token"


def stamp(ago=0):
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=ago)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the fake API ------------------------------------------------------------

class FakeKube:
    def __init__(self):
        self.pods = {}  # (ns, name) -> doc
        self.rv = 100
        self.events = []  # (rv, type, doc)
        self.requests = []  # (method, path, query, content type, body)
        self.cond = threading.Condition()
        self.delete_after = 0.3  # seconds until a deleted pod is gone
        self.log_lines = [f"line {i}" for i in range(1, 11)]

    def emit(self, typ, doc):
        with self.cond:
            self.rv += 1
            doc["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, typ, json.loads(json.dumps(doc))))
            self.cond.notify_all()

    def add(self, name, ns="default", status=None, spec=None, labels=None, deleting=False, created_ago=0):
        doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "uid": "uid-" + name, "labels": labels or {},
                            "creationTimestamp": stamp(created_ago)},
               "spec": spec or {"containers": [{"name": name, "image": "busybox"}], "restartPolicy": "Always",
                                "terminationGracePeriodSeconds": 30},
               "status": status or {"phase": "Pending"}}
        if deleting:
            doc["metadata"]["deletionTimestamp"] = stamp()
        self.pods[(ns, name)] = doc
        self.emit("ADDED", doc)
        return doc

    def set_status(self, name, status, ns="default"):
        doc = self.pods[(ns, name)]
        doc["status"] = status
        self.emit("MODIFIED", doc)


def status_doc(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def match_labels(sel, labels):
    for term in filter(None, (sel or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif labels.get(term) is None:
            return False
    return True


def match_fields(sel, doc):
    for term in filter(None, (sel or "").split(",")):
        k, v = term.split("=", 1)
        cur = doc
        for part in k.split("."):
            cur = (cur or {}).get(part)
        if cur != v:
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, doc):
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, code, reason, message):
        self.reply(code, status_doc(code, reason, message))

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        api.requests.append((method, url.path, q, self.headers.get("Content-Type"), body))
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.fail(401, "Unauthorized", "Unauthorized")
        seg = url.path.strip("/").split("/")
        if seg[:2] != ["api", "v1"]:
            return self.fail(404, "NotFound", "the server could not find the requested resource")
        seg = seg[2:]
        ns = None
        if seg[:1] == ["namespaces"] and len(seg) >= 3:
            ns, seg = seg[1], seg[2:]
        if seg[:1] != ["pods"]:
            return self.fail(404, "NotFound", "the server could not find the requested resource")
        name = seg[1] if len(seg) > 1 else None
        sub = seg[2] if len(seg) > 2 else None
        if name is None and method == "GET":
            return self.list_or_watch(api, ns, q)
        if name is None and method == "POST":
            doc = json.loads(body)
            name = doc["metadata"]["name"]
            bad = [f"spec.{k}" for k in doc.get("spec", {}) if k in ("volumes", "hostNetwork")]
            if bad:
                return self.fail(422, "Invalid", f'Pod "{name}" is invalid: {bad[0]}: Unsupported value: '
                                                 "Legion does not support this field")
            if (ns, name) in api.pods:
                return self.fail(409, "AlreadyExists", f'pods "{name}" already exists')
            spec = dict(doc["spec"])
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            d = api.add(name, ns, spec=spec, labels=doc["metadata"].get("labels"))
            d["metadata"]["annotations"] = doc["metadata"].get("annotations") or {}
            return self.reply(201, d)
        pod = api.pods.get((ns, name))
        if pod is None:
            return self.fail(404, "NotFound", f'pods "{name}" not found')
        if method == "GET" and sub == "log":
            return self.log(api, pod, q)
        if method == "GET":
            return self.reply(200, pod)
        if method == "PATCH":
            if self.headers.get("Content-Type") != "application/merge-patch+json":
                return self.fail(415, "UnsupportedMediaType", "unsupported patch type")
            patch = json.loads(body)
            for field in ("labels", "annotations"):
                for k, v in patch.get("metadata", {}).get(field, {}).items():
                    m = pod["metadata"].setdefault(field, {})
                    if v is None:
                        m.pop(k, None)
                    else:
                        m[k] = v
            api.emit("MODIFIED", pod)
            return self.reply(200, pod)
        if method == "DELETE":
            opts = json.loads(body) if body else {}
            grace = opts.get("gracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
            pod["metadata"]["deletionTimestamp"] = stamp()
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            api.emit("MODIFIED", pod)

            def gone():
                time.sleep(api.delete_after)
                api.pods.pop((ns, name), None)
                api.emit("DELETED", pod)
            threading.Thread(target=gone, daemon=True).start()
            return self.reply(200, pod)
        return self.fail(405, "MethodNotAllowed", "method not allowed")

    def list_or_watch(self, api, ns, q):
        def visible(d):
            return ((ns is None or d["metadata"]["namespace"] == ns)
                    and match_labels(q.get("labelSelector"), d["metadata"].get("labels") or {})
                    and match_fields(q.get("fieldSelector"), d))
        if q.get("watch") not in ("true", "1"):
            items = [d for d in api.pods.values() if visible(d)]
            return self.reply(200, {"kind": "PodList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(api.rv)}, "items": items})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        since = int(q.get("resourceVersion") or 0)
        deadline = time.time() + float(q.get("timeoutSeconds") or 30)
        try:
            while time.time() < deadline:
                with api.cond:
                    pending = [e for e in api.events if e[0] > since]
                    if not pending:
                        api.cond.wait(0.2)
                        continue
                for rv, typ, doc in pending:
                    since = rv
                    if visible(doc):
                        self.chunk(json.dumps({"type": typ, "object": doc}).encode() + b"\n")
            self.chunk(b"")
        except OSError:
            pass
        self.close_connection = True

    def log(self, api, pod, q):
        containers = [c["name"] for c in pod["spec"]["containers"]]
        c = q.get("container")
        if c is None and len(containers) > 1:
            return self.fail(400, "BadRequest", "a container name must be specified for pod "
                                                f"{pod['metadata']['name']}, choose one of: {containers}")
        if c is not None and c not in containers:
            return self.fail(400, "BadRequest", f"container {c} is not valid for pod {pod['metadata']['name']}")
        lines = api.log_lines
        if "tailLines" in q:
            lines = lines[-int(q["tailLines"]):] if int(q["tailLines"]) else []
        if q.get("previous") == "true":
            lines = ["previous run"]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            self.chunk((line + "\n").encode())
        if q.get("follow") == "true":
            for i in range(3):
                time.sleep(0.05)
                self.chunk(f"followed {i}\n".encode())
        self.chunk(b"")


@pytest.fixture()
def fake():
    api = FakeKube()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.api = api
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()

    def run(*args, check=0, input=None, timeout=30):
        env = dict(os.environ, LEGION_API=f"http://127.0.0.1:{srv.server_address[1]}", LEGION_TOKEN=TOKEN)
        env.pop("LEGION_NAMESPACE", None)
        p = subprocess.run([LEGION, "pod", *args], env=env, capture_output=True, input=input, timeout=timeout)
        out, err = p.stdout.decode(), p.stderr.decode()
        if check is not None:
            assert p.returncode == check, (args, p.returncode, out, err)
        return out, err

    api.run = run
    yield api
    srv.shutdown()
    srv.server_close()


def table(out):
    """Rows of an aligned table, cut at the header's column starts."""
    lines = out.rstrip("\n").splitlines()
    head = lines[0]
    starts = [i for i, ch in enumerate(head) if ch != " " and (i == 0 or head[i - 1] == " ")]
    bounds = list(zip(starts, starts[1:] + [None]))
    return [[ln[a:b].strip() for a, b in bounds] for ln in lines]


# ---- against the fake ----------------------------------------------------------

def test_run_sends_the_pod_kubectl_run_would(fake):
    out, _ = fake.run("run", "web", "--image", "busybox:1", "--restart", "Never", "--memory", "64Mi",
                      "--cpu", "250m", "--env", "A=1", "--env", "B=x=y", "--label", "app=web,tier=fe",
                      "--", "sh", "-c", "echo hi")
    assert out == "pod/web created\n"
    method, path, _, ctype, body = fake.requests[-1]
    assert (method, path, ctype) == ("POST", "/api/v1/namespaces/default/pods", "application/json")
    doc = json.loads(body)
    assert doc["kind"] == "Pod" and doc["apiVersion"] == "v1"
    assert doc["metadata"] == {"name": "web", "labels": {"app": "web", "tier": "fe"}}
    c = doc["spec"]["containers"][0]
    assert doc["spec"]["restartPolicy"] == "Never"
    assert c["name"] == "web" and c["image"] == "busybox:1" and c["args"] == ["sh", "-c", "echo hi"]
    assert "command" not in c
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]
    assert c["resources"] == {"limits": {"memory": "64Mi", "cpu": "250m"}}
    # --command: the words are the command; the default label is run=NAME.
    fake.run("run", "cmd", "--image", "busybox", "--command", "--ns", "team", "--", "/bin/sleep", "5")
    method, path, _, _, body = fake.requests[-1]
    doc = json.loads(body)
    assert path == "/api/v1/namespaces/team/pods"
    assert doc["spec"]["containers"][0]["command"] == ["/bin/sleep", "5"]
    assert doc["metadata"]["labels"] == {"run": "cmd"} and doc["spec"]["restartPolicy"] == "Always"
    # The same name again: the API's message, exit 1.
    _, err = fake.run("run", "web", "--image", "busybox", check=1)
    assert err == 'legion: pods "web" already exists\n'


def test_run_bad_input_changes_nothing(fake):
    for args, msg in [
        (["run"], "no pod name given"),
        (["run", "x"], "--image is required"),
        (["run", "x", "--image", "b", "--restart", "Sometimes"], "--restart is Always, OnFailure or Never"),
        (["run", "x", "--image", "b", "--env", "NOVALUE"], "--env is K=V"),
        (["run", "x", "--image", "b", "--label", "=v"], "a label is K=V"),
        (["run", "x", "--image", "b", "--bogus"], "unknown option `--bogus`"),
        (["run", "x", "--image", "b", "--command"], "--command needs CMD"),
    ]:
        _, err = fake.run(*args, check=2)
        assert msg in err, (args, err)
    _, err = fake.run("run", "bad/name", "--image", "b", check=1)
    assert "invalid pod name" in err
    assert fake.requests == []
    # --dry-run prints the pod and sends nothing.
    out, _ = fake.run("run", "dry", "--image", "b", "--dry-run", "--", "true")
    assert json.loads(out)["spec"]["containers"][0]["args"] == ["true"]
    assert fake.requests == []


def test_unsupported_field_rejected_with_the_apis_message(fake, tmp_path):
    m = tmp_path / "pod.yaml"
    m.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: vol\nspec:\n  volumes: []\n"
                 "  containers:\n  - name: c\n    image: busybox\n")
    _, err = fake.run("apply", "-f", str(m), check=1)
    assert err == ('legion: Pod "vol" is invalid: spec.volumes: Unsupported value: '
                   "Legion does not support this field\n")
    assert ("default", "vol") not in fake.pods


def test_apply_yaml_json_and_lists(fake, tmp_path):
    m = tmp_path / "pods.yaml"
    m.write_text("""# two pods, one a List
apiVersion: v1
kind: Pod
metadata:
  name: a
  labels: {app: a, n: 1}
  annotations:
    note: "yes: quoted"
spec:
  containers:
  - name: main
    image: busybox
    args: ["sh", "-c", "echo 'x: y'"]
    resources: {limits: {cpu: "0.5", memory: 64Mi}}
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c, image: busybox}]}}
""")
    out, _ = fake.run("apply", "-f", str(m))
    assert out == "pod/a created\npod/b created\n"
    posted = [json.loads(r[4]) for r in fake.requests if r[0] == "POST"]
    assert posted[0]["metadata"]["labels"] == {"app": "a", "n": 1}  # YAML typed as YAML types
    assert posted[0]["metadata"]["annotations"] == {"note": "yes: quoted"}
    assert posted[0]["spec"]["containers"][0]["args"] == ["sh", "-c", "echo 'x: y'"]
    # Again: nothing to do. The server wrote cpu in another form: still equal.
    fake.pods[("default", "a")]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    fake.pods[("default", "a")]["metadata"]["labels"]["n"] = 1
    out, _ = fake.run("apply", "-f", str(m))
    assert out == "pod/a unchanged\npod/b unchanged\n"
    # Labels changed: a merge patch that sets and removes.
    m.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "a", "labels": {"app": "a2"}, "annotations": {"note": "yes: quoted"}},
                             "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    out, _ = fake.run("apply", "-f", str(m))
    assert out == "pod/a configured\n"
    method, path, _, ctype, body = fake.requests[-1]
    assert (method, path, ctype) == ("PATCH", "/api/v1/namespaces/default/pods/a", "application/merge-patch+json")
    assert json.loads(body) == {"metadata": {"labels": {"app": "a2", "n": None}}}
    assert fake.pods[("default", "a")]["metadata"]["labels"] == {"app": "a2"}
    # A spec change is refused, naming the field; nothing is sent.
    m.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"app": "a2"}},
                             "spec": {"containers": [{"name": "main", "image": "other"}]}}))
    n = len(fake.requests)
    _, err = fake.run("apply", "-f", str(m), check=1)
    assert "spec.containers[0].image differs" in err and "delete the pod and apply again" in err
    assert [r[0] for r in fake.requests[n:]] == ["GET"]
    # stdin.
    out, _ = fake.run("apply", "-f", "-", input=b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c"},'
                                                b'"spec":{"containers":[{"name":"c","image":"busybox"}]}}')
    assert out == "pod/c created\n"


def test_apply_bad_manifests(fake, tmp_path):
    cases = [
        ("a: &x 1\nb: *x\n", "anchors and aliases are not supported"),
        ("a: 1\na: 2\n", "line 2: duplicate key `a`"),
        ("a: [1\n", "YAML line 2"),
        ('{"a": 1, "a": 2}', "duplicate object key"),
        ("{", "line 1"),
        ("", "no objects in the manifest"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "`apiVersion: apps/v1, kind: Deployment` is not supported"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "has no metadata.name"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: ../x}\n", "invalid pod name"),
        ("- 1\n- 2\n", "is not a mapping"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: other}\n", "is not `team` (--ns)"),
    ]
    for text, msg in cases:
        m = tmp_path / "m.yaml"
        m.write_text(text)
        _, err = fake.run("apply", "-f", str(m), "--ns", "team", check=1)
        assert msg in err, (text, err)
        assert err.count("\n") <= 2, err
    # Hostile input: deep nesting, binary, NUL bytes, a huge file.
    hostile = [
        (b"a: " + b"[" * 200 + b"]" * 200 + b"\n", "nested too deeply"),
        (bytes(range(256)) * 4, "YAML line"),
        (b"a: \"x\\0y\"\n", "NUL character"),
        (b"a: \xff\xfe\n", "YAML line"),
        (b"{" * 100000, "line 1"),
    ]
    for data, msg in hostile:
        m = tmp_path / "h.yaml"
        m.write_bytes(data)
        _, err = fake.run("apply", "-f", str(m), check=1)
        assert msg in err, (data[:40], err)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(17 << 20)
    _, err = fake.run("apply", "-f", str(big), check=1)
    assert "larger than 16 MiB" in err
    assert not [r for r in fake.requests if r[0] != "GET"]
    _, err = fake.run("apply", check=2)
    assert "no manifest given" in err
    _, err = fake.run("apply", "-f", str(tmp_path / "missing.yaml"), check=1)
    assert "No such file or directory" in err


def test_list_shows_what_kubectl_shows(fake):
    run = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
           "containerStatuses": [{"name": "a", "ready": True, "restartCount": 0,
                                  "state": {"running": {"startedAt": stamp(60)}}}]}
    fake.add("running", status=run, labels={"app": "web"}, created_ago=200)
    fake.add("pending", status={"phase": "Pending", "containerStatuses": [
        {"name": "p", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]})
    fake.add("crashing", status={"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": stamp(30)}}}]})
    fake.add("oom", status={"phase": "Failed", "containerStatuses": [
        {"name": "o", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": stamp(9),
                                  "finishedAt": stamp(8)}}}]})
    fake.add("done", status={"phase": "Succeeded", "containerStatuses": [
        {"name": "d", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})
    fake.add("noreason", status={"phase": "Failed", "containerStatuses": [
        {"name": "n", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]})
    fake.add("killed", status={"phase": "Failed", "containerStatuses": [
        {"name": "k", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "signal": 9}}}]})
    fake.add("going", status=run, deleting=True)
    fake.add("evicted", status={"phase": "Failed", "reason": "DeadlineExceeded"})
    fake.add("elsewhere", ns="other", status=run)
    out, _ = fake.run("list")
    rows = {r[0]: r[1:] for r in table(out)}
    assert rows["NAME"] == ["READY", "STATUS", "RESTARTS", "AGE"]
    assert rows["running"][:3] == ["1/1", "Running", "0"] and rows["running"][3] in ("3m20s", "3m21s", "3m22s")
    assert rows["pending"][:2] == ["0/1", "ContainerCreating"]
    assert rows["crashing"][1] == "CrashLoopBackOff" and rows["crashing"][2].startswith("4 (")
    assert rows["crashing"][2].endswith(" ago)")
    assert rows["oom"][:3] == ["0/1", "OOMKilled", "0"]
    assert rows["done"][1] == "Completed"
    assert rows["noreason"][1] == "ExitCode:3"
    assert rows["killed"][1] == "Signal:9"
    assert rows["going"][1] == "Terminating"
    assert rows["evicted"][1] == "DeadlineExceeded"
    assert "elsewhere" not in rows
    # Selectors go to the API as they are.
    out, _ = fake.run("list", "-l", "app=web", "--field-selector", "status.phase=Running")
    assert [r[0] for r in table(out)[1:]] == ["running"]
    _, _, q, _, _ = fake.requests[-1]
    assert q == {"labelSelector": "app=web", "fieldSelector": "status.phase=Running"}
    # -A: every namespace, with a NAMESPACE column.
    out, _ = fake.run("list", "-A")
    rows = table(out)
    assert rows[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert ["other", "elsewhere"] in [r[:2] for r in rows]
    assert fake.requests[-1][1] == "/api/v1/pods"
    out, err = fake.run("list", "--ns", "empty")
    assert out == "" and err == "No resources found in empty namespace.\n"
    out, _ = fake.run("list", "--json")
    assert json.loads(out)["kind"] == "PodList"


def test_get_summary(fake):
    fake.add("oom", spec={"containers": [{"name": "o", "image": "busybox", "args": ["sh", "-c", "eat"],
                                          "resources": {"limits": {"memory": "16Mi"}}}],
                          "restartPolicy": "OnFailure"},
             status={"phase": "Running", "startTime": stamp(20), "containerStatuses": [
                 {"name": "o", "ready": False, "restartCount": 2, "image": "busybox",
                  "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting"}},
                  "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": stamp(9),
                                               "finishedAt": stamp(8)}}}]})
    out, _ = fake.run("get", "oom")
    assert "Status:         CrashLoopBackOff (Running; 0/1 ready, 2 restarts)" in out
    assert "Restart policy: OnFailure" in out
    assert "Args:           sh -c eat" in out
    assert "Limits:         memory=16Mi" in out
    assert "Waiting: CrashLoopBackOff" in out and "back-off 20s restarting" in out
    assert "Last state:     Terminated: OOMKilled, exit code 137" in out
    assert "Restart count:  2" in out
    out, _ = fake.run("get", "oom", "--json")
    assert json.loads(out)["metadata"]["name"] == "oom"
    _, err = fake.run("get", "nope", check=1)
    assert err == 'legion: pods "nope" not found\n'
    _, err = fake.run("get", check=2)
    assert "no pod name given" in err


def test_logs(fake):
    fake.add("p")
    out, _ = fake.run("logs", "p")
    assert out == "".join(f"line {i}\n" for i in range(1, 11))
    out, _ = fake.run("logs", "p", "--tail", "2")
    assert out == "line 9\nline 10\n"
    assert fake.requests[-1][2] == {"tailLines": "2"}
    out, _ = fake.run("logs", "p", "-f", "--tail", "1")
    assert out == "line 10\nfollowed 0\nfollowed 1\nfollowed 2\n"
    assert fake.requests[-1][2] == {"follow": "true", "tailLines": "1"}
    out, _ = fake.run("logs", "p", "--previous", "-c", "p")
    assert out == "previous run\n" and fake.requests[-1][2] == {"previous": "true", "container": "p"}
    _, err = fake.run("logs", "p", "-c", "nope", check=1)
    assert err == "legion: container nope is not valid for pod p\n"
    fake.add("two", spec={"containers": [{"name": "a", "image": "b"}, {"name": "b", "image": "b"}]})
    _, err = fake.run("logs", "two", check=1)
    assert "a container name must be specified" in err
    _, err = fake.run("logs", "p", "--tail", "x", check=2)
    assert "--tail needs a whole number" in err


def test_wait_watches(fake):
    fake.add("w")

    def later():
        time.sleep(0.3)
        fake.set_status("w", {"phase": "Pending", "containerStatuses": [
            {"name": "w", "state": {"waiting": {"reason": "ContainerCreating"}}}]})
        time.sleep(0.2)
        fake.set_status("w", {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                              "containerStatuses": [{"name": "w", "ready": True,
                                                     "state": {"running": {"startedAt": stamp()}}}]})
    threading.Thread(target=later, daemon=True).start()
    out, _ = fake.run("wait", "w", "--for", "phase=Running", "--timeout", "20")
    assert out == "pod/w condition met\n"
    watches = [r for r in fake.requests if r[2].get("watch") == "true"]
    assert watches and watches[0][2]["fieldSelector"] == "metadata.name=w"
    assert fake.run("wait", "w", "--for", "condition=Ready")[0] == "pod/w condition met\n"
    assert fake.run("wait", "w", "--for", "ready")[0] == "pod/w condition met\n"
    # A pod that ended cannot become Running: an error at once, not a timeout.
    fake.set_status("w", {"phase": "Failed", "containerStatuses": [
        {"name": "w", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})
    _, err = fake.run("wait", "w", "--for", "phase=Running", "--timeout", "20", check=1)
    assert err == "legion: pod/w is Failed (OOMKilled) and will never be Running\n"
    # Timeout: says what the pod is.
    fake.add("slow")
    _, err = fake.run("wait", "slow", "--for", "phase=Succeeded", "--timeout", "1", check=1)
    assert err == "legion: timed out waiting for pod/slow to be Succeeded; it is Pending\n"
    _, err = fake.run("wait", "slow", "--for", "phase=Done", check=2)
    assert "unknown phase `Done`" in err
    _, err = fake.run("wait", "nope", "--for", "phase=Running", check=1)
    assert err == 'legion: pods "nope" not found\n'


def test_delete_waits_until_gone(fake):
    fake.add("d1")
    fake.add("d2")
    fake.delete_after = 0.5
    out, _ = fake.run("delete", "d1", "d2", "--grace", "3")
    assert out == 'pod "d1" deleted\npod "d2" deleted\n'
    assert ("default", "d1") not in fake.pods and ("default", "d2") not in fake.pods
    dels = [r for r in fake.requests if r[0] == "DELETE"]
    assert [r[1] for r in dels] == ["/api/v1/namespaces/default/pods/d1", "/api/v1/namespaces/default/pods/d2"]
    assert json.loads(dels[0][4])["gracePeriodSeconds"] == 3 and dels[0][2] == {"gracePeriodSeconds": "3"}
    # --now is grace 1; --no-wait returns while the pod is still there.
    fake.add("d3")
    fake.delete_after = 2
    fake.run("delete", "d3", "--now", "--no-wait")
    assert ("default", "d3") in fake.pods
    assert json.loads(fake.requests[-1][4])["gracePeriodSeconds"] == 1
    _, err = fake.run("delete", "nope", check=1)
    assert err == 'legion: pods "nope" not found\n'
    fake.run("delete", "nope", "--ignore-not-found")
    _, err = fake.run("delete", "x", "--grace", "-1", check=2)
    assert "--grace needs a whole number" in err
    # The deletion is watched for, not polled: one watch per pod.
    fake.add("d4")
    fake.delete_after = 0.2
    n = len(fake.requests)
    fake.run("delete", "d4")
    assert len([r for r in fake.requests[n:] if r[2].get("watch") == "true"]) <= 1


def test_errors_and_auth(fake):
    env = dict(os.environ, LEGION_API="http://127.0.0.1:%d" % oci_kit.free_port(), LEGION_TOKEN=TOKEN)
    p = subprocess.run([LEGION, "pod", "list"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot reach legiond" in p.stderr
    _, err = fake.run("list", "--token", "wrong", check=1)
    assert err.startswith("legion: Unauthorized")
    _, err = fake.run("frobnicate", check=2)
    assert "unknown command `pod frobnicate`" in err
    out, _ = fake.run("--help")
    assert "apply -f FILE" in out


# ---- against legiond -------------------------------------------------------------

IMAGE = "busybox:pods-test"


def import_busybox(legiond, tmp_path):
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"]})
    archive = str(tmp_path / "busybox.tar")
    oci_kit.write_docker_archive(archive, [(img, [IMAGE])])
    legiond.cli("image", "import", archive, timeout=120)
    return img


def pod(legiond, name):
    st, body = legiond.http("GET", f"/api/v1/namespaces/default/pods/{name}")
    assert st == 200, body
    return json.loads(body)


def test_pods_on_legiond(legiond, tmp_path):  # noqa: F811
    import_busybox(legiond, tmp_path)
    # run: a pod that prints and stays up.
    out, _ = legiond.cli("pod", "run", "hello", "--image", IMAGE, "--restart", "Never", "--",
                         "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 600")
    assert out == "pod/hello created\n"
    out, _ = legiond.cli("pod", "wait", "hello", "--for", "phase=Running", "--timeout", "60", timeout=90)
    assert out == "pod/hello condition met\n"
    legiond.wait_for(lambda: "line 5" in legiond.cli("pod", "logs", "hello")[0], what="the pod's output")
    out, _ = legiond.cli("pod", "logs", "hello", "--tail", "2")
    assert out == "line 4\nline 5\n"
    out, _ = legiond.cli("pod", "list")
    rows = {r[0]: r[1:] for r in table(out)}
    assert rows["hello"][:3] == ["1/1", "Running", "0"]
    out, _ = legiond.cli("pod", "get", "hello")
    assert "Running" in out and IMAGE.split(":")[0] in out
    # apply: a YAML manifest; then labels change.
    m = tmp_path / "done.yaml"
    m.write_text(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\n  labels: {{app: batch}}\nspec:\n"
                 f"  restartPolicy: Never\n  containers:\n  - name: main\n    image: {IMAGE}\n"
                 f"    command: [/bin/sh, -c, 'echo finished; exit 0']\n")
    assert legiond.cli("pod", "apply", "-f", str(m))[0] == "pod/done created\n"
    out, _ = legiond.cli("pod", "wait", "done", "--for", "phase=Succeeded", "--timeout", "60", timeout=90)
    assert out == "pod/done condition met\n"
    assert legiond.cli("pod", "logs", "done")[0] == "finished\n"
    assert legiond.cli("pod", "apply", "-f", str(m))[0] == "pod/done unchanged\n"
    m.write_text(m.read_text().replace("app: batch", "app: batch2"))
    assert legiond.cli("pod", "apply", "-f", str(m))[0] == "pod/done configured\n"
    assert pod(legiond, "done")["metadata"]["labels"] == {"app": "batch2"}
    out, _ = legiond.cli("pod", "list", "-l", "app=batch2")
    assert [r[0] for r in table(out)[1:]] == ["done"]
    assert table(out)[1][2] == "Completed"
    out, _ = legiond.cli("pod", "list", "--field-selector", "status.phase=Running")
    assert [r[0] for r in table(out)[1:]] == ["hello"]
    # logs -f: follows until the container ends.
    legiond.cli("pod", "run", "counter", "--image", IMAGE, "--restart", "Never", "--",
                "sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    out, _ = legiond.cli("pod", "wait", "counter", "--for", "phase=Running", "--timeout", "60", check=None,
                         timeout=90)
    out, _ = legiond.cli("pod", "logs", "counter", "-f", timeout=60)
    assert out == "tick 1\ntick 2\ntick 3\n"
    # delete: waits until the pod is gone.
    out, _ = legiond.cli("pod", "delete", "hello", "--grace", "1", timeout=90)
    assert out == 'pod "hello" deleted\n'
    st, _ = legiond.http("GET", "/api/v1/namespaces/default/pods/hello")
    assert st == 404
    _, err = legiond.cli("pod", "get", "hello", check=1)
    assert "not found" in err


def test_oom_and_rejections_on_legiond(legiond, tmp_path):  # noqa: F811
    import_busybox(legiond, tmp_path)
    legiond.cli("pod", "run", "hog", "--image", IMAGE, "--restart", "Never", "--memory", "16Mi", "--",
                "sh", "-c", "x=a; while true; do x=$x$x; done")
    _, err = legiond.cli("pod", "wait", "hog", "--for", "phase=Succeeded", "--timeout", "60", check=1, timeout=90)
    assert "is Failed (OOMKilled) and will never be Succeeded" in err
    out, _ = legiond.cli("pod", "list")
    rows = {r[0]: r[1:] for r in table(out)}
    assert rows["hog"][:2] == ["0/1", "OOMKilled"]
    out, _ = legiond.cli("pod", "get", "hog")
    assert "Terminated: OOMKilled, exit code 137" in out
    # Unsupported fields: the API's message, nothing created.
    m = tmp_path / "vol.yaml"
    m.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: vol}}\nspec:\n  volumes: [{{name: v, emptyDir: {{}}}}]\n"
                 f"  containers:\n  - name: c\n    image: {IMAGE}\n")
    _, err = legiond.cli("pod", "apply", "-f", str(m), check=1)
    assert "spec.volumes" in err and err.startswith("legion: ") and err.count("\n") == 1
    assert legiond.http("GET", "/api/v1/namespaces/default/pods/vol")[0] == 404
    # Bad input: a usage error or the API's message, never a pod.
    _, err = legiond.cli("pod", "run", "Bad_Name", "--image", IMAGE, check=1)
    assert err.startswith("legion: ")
    _, err = legiond.cli("pod", "run", "x", "--image", IMAGE, "--memory", "lots", check=1)
    assert err.startswith("legion: ") and "memory" in err
    assert legiond.http("GET", "/api/v1/namespaces/default/pods/x")[0] == 404
    _, err = legiond.cli("pod", "logs", "nope", check=1)
    assert "not found" in err


def test_list_matches_kubectl(legiond, tmp_path):  # noqa: F811
    import kube_kit
    import_busybox(legiond, tmp_path)
    legiond.cli("pod", "run", "up", "--image", IMAGE, "--", "sleep", "600")
    legiond.cli("pod", "run", "ok", "--image", IMAGE, "--restart", "Never", "--", "true")
    legiond.cli("pod", "run", "bad", "--image", IMAGE, "--restart", "Never", "--", "sh", "-c", "exit 3")
    legiond.cli("pod", "run", "oom", "--image", IMAGE, "--restart", "Never", "--memory", "16Mi", "--",
                "sh", "-c", "x=a; while true; do x=$x$x; done")
    legiond.cli("pod", "wait", "up", "--for", "phase=Running", "--timeout", "60", timeout=90)
    legiond.cli("pod", "wait", "ok", "--for", "phase=Succeeded", "--timeout", "60", timeout=90)
    for name in ("bad", "oom"):
        legiond.cli("pod", "wait", name, "--for", "phase=Failed", "--timeout", "60", timeout=90)
    # A manifest kubectl applied: legion sees nothing to change (kubectl's
    # own annotation is left alone).
    m = tmp_path / "k.yaml"
    m.write_text(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kapplied\n  labels: {{app: k}}\nspec:\n"
                 f"  containers:\n  - name: main\n    image: {IMAGE}\n    args: [sleep, '600']\n")
    mine = [r[:4] for r in table(legiond.cli("pod", "list")[0])]
    for binary in kube_kit.kubectls():
        kc = kube_kit.Kubectl(binary, kube_kit.write_kubeconfig(str(tmp_path / "kubeconfig"), legiond.port,
                                                               legiond.token))
        theirs = [r[:4] for r in table(kc("get", "pods").stdout) if r[0] != "kapplied"]
        assert theirs == mine, (binary, theirs, mine)
        kc("apply", "-f", str(m))
        assert legiond.cli("pod", "apply", "-f", str(m))[0] == "pod/kapplied unchanged\n"
        legiond.cli("pod", "delete", "kapplied", "--now", timeout=90)
    rows = {r[0]: r for r in mine}
    assert rows["up"][1:3] == ["1/1", "Running"] and rows["ok"][2] == "Completed"
    assert rows["oom"][2] == "OOMKilled" and rows["bad"][2] == "Error"
