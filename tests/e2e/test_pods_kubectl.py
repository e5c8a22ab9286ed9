"""The Kubernetes Pod API driven by the real kubectl (1.32 and Debian's 1.20
when present), against a real legiond: apply, get (tables, -o wide, json),
label/annotate, selectors, watch, logs, delete, validation errors, namespace
tokens, and hostile input over plain HTTP.

Tests marked `runs` need the pod manager to run containers from an
imported busybox image."""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import kube_kit
import oci_kit
from conftest import BUILD
from test_legiond import LEGIOND, Legiond, free_port

KUBECTLS = kube_kit.kubectls()
IMAGE = "legion-test/busybox:1"

if not KUBECTLS:
    pytest.skip("no kubectl found (set KUBECTL, or install kubernetes-client)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    top = tempfile.mkdtemp(prefix="lg-kube-")
    home = os.path.join(top, "home")
    os.makedirs(home)
    d = Legiond(home, free_port())
    d.start()
    st, body = d.http("POST", "/v1/namespaces", {"name": "team"})
    assert st == 201, body
    st, body = d.http("POST", "/v1/namespaces/team/tokens", {"description": "kubectl"})
    assert st == 201, body
    d.team_token = json.loads(body)["token"]
    d.kc_admin = kube_kit.write_kubeconfig(os.path.join(top, "admin.kubeconfig"), d, d.token)
    d.kc_team = kube_kit.write_kubeconfig(os.path.join(top, "team.kubeconfig"), d, d.team_token, "team")
    d.kc_bad = kube_kit.write_kubeconfig(os.path.join(top, "bad.kubeconfig"), d, "lgn_" + "0" * 64)
    d.top = top
    d.image_error = import_busybox(d, top)
    yield d
    d.stop(signal.SIGKILL)
    shutil.rmtree(top, ignore_errors=True)


def import_busybox(d, top):
    """Import a busybox image; the error text when that is not possible yet."""
    try:
        img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"]})
        path = os.path.join(top, "busybox.tar")
        oci_kit.write_docker_archive(path, [(img, [IMAGE])])
        with open(path, "rb") as f:
            st, body = d.http("POST", "/v1/images/import", f.read(),
                              headers={"Content-Type": "application/x-tar"}, timeout=120)
        return None if st in (200, 201) else f"image import: {st} {body[:300]!r}"
    except Exception as e:  # the image kit or API is not there yet
        return f"image import: {e}"


@pytest.fixture(params=KUBECTLS, ids=[kube_kit.kubectl_id(k) for k in KUBECTLS])
def kc(request, cluster):
    k = kube_kit.Kubectl(request.param, cluster.kc_admin)
    k.tag = kube_kit.kubectl_id(request.param).replace(".", "-").replace("kubectl-", "k")
    return k


@pytest.fixture()
def runs(cluster):
    if cluster.image_error:
        pytest.fail(f"cannot run pods: {cluster.image_error}")


def manifest(name, command=None, labels=None, extra_spec=None, containers=None, restart="Never", ns=None):
    md = {"name": name, "labels": labels or {"app": "demo"}}
    if ns:
        md["namespace"] = ns
    spec = {"containers": containers or [{"name": "main", "image": IMAGE,
                                          "command": command or ["sh", "-c", "echo hello; sleep 1"]}]}
    if restart:
        spec["restartPolicy"] = restart
    spec.update(extra_spec or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def apply(kc, doc, check=0):
    return kc("apply", "-f", "-", input=json.dumps(doc), check=check)


def get_json(kc, name, ns="default"):
    return json.loads(kc("get", "pod", name, "-n", ns, "-o", "json").stdout)


def wait_phase(kc, name, phases, timeout=60):
    deadline = time.time() + timeout
    pod = None
    while time.time() < deadline:
        pod = get_json(kc, name)
        if pod["status"].get("phase") in phases:
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {name} never reached {phases}: {json.dumps(pod.get('status') if pod else None)}")


def pod_names(cluster, ns="default"):
    st, body = cluster.http("GET", f"/api/v1/namespaces/{ns}/pods")
    assert st == 200, body
    return sorted(p["metadata"]["name"] for p in json.loads(body)["items"])


def cleanup(kc, *names):
    for n in names:
        kc("delete", "pod", n, "--grace-period=0", "--force", "--ignore-not-found", check=None)


# ---- discovery and access -----------------------------------------------------------------------


def test_discovery(kc):
    out = kc("api-resources").stdout
    line = next(l for l in out.splitlines() if l.startswith("pods "))
    assert "po" in line.split() and "Pod" in line.split() and "true" in line.split()
    v = json.loads(kc("version", "-o", "json").stdout)
    assert v["serverVersion"]["major"] == "1"
    assert "default" in kc("get", "namespaces").stdout
    assert kc("get", "namespace", "nope", check=1).stderr.strip().endswith('namespaces "nope" not found')


def test_bad_token(kc, cluster):
    p = kc("get", "pods", kubeconfig=cluster.kc_bad, check=1)
    assert "Unauthorized" in p.stderr or "must be logged in" in p.stderr, p.stderr
    st, body = cluster.http("GET", "/api/v1/namespaces/default/pods", auth=False)
    assert st == 401 and json.loads(body)["kind"] == "Status" and json.loads(body)["reason"] == "Unauthorized"


def test_namespace_token(kc, cluster):
    name = f"nst-{kc.tag}"
    apply(kc, manifest(name, ns="team"))
    try:
        out = kc("get", "pods", kubeconfig=cluster.kc_team).stdout
        assert name in out
        p = kc("get", "pods", "-n", "default", kubeconfig=cluster.kc_team, check=1)
        assert 'namespaces "default" not found' in p.stderr
        p = kc("get", "pods", "-A", kubeconfig=cluster.kc_team, check=1)
        assert "Forbidden" in p.stderr or "forbidden" in p.stderr
        # Creating in another namespace is refused the same way.
        p = kc("apply", "-n", "default", "-f", "-", input=json.dumps(manifest(f"x-{kc.tag}")),
               kubeconfig=cluster.kc_team, check=1)
        assert "not found" in p.stderr
        assert f"x-{kc.tag}" not in pod_names(cluster)
        # The admin sees it with -A.
        assert name in kc("get", "pods", "-A").stdout
    finally:
        kc("delete", "pod", name, "-n", "team", "--grace-period=0", "--force", "--ignore-not-found", check=None)


# ---- the object API (no container needs to run) ----------------------------------------------------


def test_apply_get_label_delete(kc, cluster):
    name = f"web-{kc.tag}"
    doc = manifest(name, command=["sh", "-c", "sleep 30"])
    assert "created" in apply(kc, doc).stdout
    try:
        assert "unchanged" in apply(kc, doc).stdout
        doc["metadata"]["labels"] = {"app": "demo", "tier": "front"}
        assert "configured" in apply(kc, doc).stdout
        pod = get_json(kc, name)
        assert pod["metadata"]["labels"] == {"app": "demo", "tier": "front"}
        assert "kubectl.kubernetes.io/last-applied-configuration" in pod["metadata"]["annotations"]
        assert pod["metadata"]["uid"] and int(pod["metadata"]["resourceVersion"]) > 0
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["terminationGracePeriodSeconds"] == 30
        c = pod["spec"]["containers"][0]
        assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
        assert pod["status"]["phase"] in ("Pending", "Running", "Succeeded", "Failed")

        out = kc("get", "pods").stdout.splitlines()
        assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        row = next(l.split() for l in out if l.startswith(name + " "))
        assert row[1].endswith("/1")
        wide = kc("get", "pods", "-o", "wide").stdout.splitlines()
        assert wide[0].split()[5:] == ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]

        assert "labeled" in kc("label", "pod", name, "color=blue").stdout
        assert name in kc("get", "pods", "-l", "color=blue").stdout
        assert name not in kc("get", "pods", "-l", "color=red").stdout
        assert name in kc("get", "pods", "-l", "tier in (front,back),color!=red").stdout
        assert "annotated" in kc("annotate", "pod", name, "note=hello world").stdout
        assert get_json(kc, name)["metadata"]["annotations"]["note"] == "hello world"
        assert name in kc("get", "pods", "--field-selector", f"metadata.name={name}").stdout
        assert name not in kc("get", "pods", "--field-selector", f"metadata.name!={name}").stdout
        p = kc("get", "pods", "--field-selector", "spec.bogus=1", check=1)
        assert "field label not supported: spec.bogus" in p.stderr
        # Changing the spec is refused, and changes nothing.
        doc["spec"]["containers"][0]["image"] = "other:1"
        p = apply(kc, doc, check=1)
        assert "Forbidden: pod updates may not change fields other than" in p.stderr
        assert get_json(kc, name)["spec"]["containers"][0]["image"] == IMAGE
        kc("get", "pod", name, "-o", "yaml")
        kc("describe", "pod", name)
    finally:
        p = kc("delete", "pod", name, "--grace-period=1", timeout=120)
    assert f'pod "{name}" deleted' in p.stdout
    assert name not in pod_names(cluster)
    assert f'pods "{name}" not found' in kc("get", "pod", name, check=1).stderr


def test_unsupported_fields_422(kc, cluster):
    name = f"bad-{kc.tag}"
    doc = manifest(name, extra_spec={"volumes": [{"name": "v", "emptyDir": {}}], "nodeSelector": {"a": "b"}})
    doc["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    doc["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
    doc["spec"]["containers"][0]["resources"] = {"limits": {"memory": "12 parsecs"}}
    p = apply(kc, doc, check=1)
    assert f'The Pod "{name}" is invalid' in p.stderr, p.stderr
    for field in ("spec.volumes: Forbidden", "spec.nodeSelector: Forbidden",
                  "spec.containers[0].securityContext: Forbidden", "spec.containers[0].livenessProbe: Forbidden",
                  "spec.containers[0].resources.limits[memory]: Invalid value"):
        assert field in p.stderr, (field, p.stderr)
    assert name not in pod_names(cluster)
    # The same over HTTP: one cause per field.
    st, body = cluster.http("POST", "/api/v1/namespaces/default/pods", doc)
    s = json.loads(body)
    assert st == 422 and s["kind"] == "Status" and s["reason"] == "Invalid" and s["code"] == 422
    fields = {c["field"] for c in s["details"]["causes"]}
    assert {"spec.volumes", "spec.nodeSelector", "spec.containers[0].securityContext"} <= fields
    assert s["details"]["name"] == name and s["details"]["kind"] == "Pod"


def test_hostile_input(cluster):
    base = "/api/v1/namespaces/default/pods"
    before = pod_names(cluster)

    def status(method, path, body=None, code=None, reason=None, headers=None):
        st, data = cluster.http(method, path, body, headers=headers)
        s = json.loads(data)
        assert s["kind"] == "Status" and s["status"] == "Failure" and s["message"], s
        if code:
            assert st == code and s["code"] == code, (st, s)
        if reason:
            assert s["reason"] == reason, s
        return s

    status("POST", base, b"{not json", 400, "BadRequest")
    status("POST", base, b"[1,2]", 400, "BadRequest")
    status("POST", base, b"", 400, "BadRequest")
    status("POST", base, manifest("UPPER"), 422, "Invalid")
    status("POST", base, manifest("x" * 64), 422, "Invalid")
    status("POST", base, manifest("a/b"), 422, "Invalid")
    bad = manifest("kind-ok")
    bad["kind"] = "Deployment"
    status("POST", base, bad, 400, "BadRequest")
    bad = manifest("apiversion")
    bad["apiVersion"] = "apps/v1"
    status("POST", base, bad, 400, "BadRequest")
    status("POST", base, manifest("nsmismatch", ns="team"), 400, "BadRequest")
    status("POST", base, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nospec"}}, 422, "Invalid")
    bad = manifest("noimage")
    del bad["spec"]["containers"][0]["image"]
    s = status("POST", base, bad, 422, "Invalid")
    assert s["details"]["causes"][0]["field"] == "spec.containers[0].image"
    bad = manifest("dupe", containers=[{"name": "a", "image": IMAGE}, {"name": "a", "image": IMAGE}])
    status("POST", base, bad, 422, "Invalid")
    bad = manifest("fin")
    bad["metadata"]["finalizers"] = ["x"]
    status("POST", base, bad, 422, "Invalid")
    bad = manifest("lbl", labels={"bad key!": "v"})
    status("POST", base, bad, 422, "Invalid")
    st, _ = cluster.http("POST", base, b"{" + b" " * (9 << 20) + b"}")
    assert st == 413
    status("POST", "/api/v1/namespaces/nope/pods", manifest("x"), 404, "NotFound")
    status("GET", base + "/NOPE", None, 404, "NotFound")
    status("GET", base + "?labelSelector=a%20in%20(", None, 400, "BadRequest")
    status("GET", base + "?fieldSelector=status.bogus%3Dx", None, 400, "BadRequest")
    status("GET", base + "?watch=1&resourceVersion=abc", None, 400, "BadRequest")
    status("DELETE", base + "/never-was", None, 404, "NotFound")
    status("PUT", "/api/v1/namespaces/default/pods/x/status", manifest("x"), 405, "MethodNotAllowed")
    status("GET", "/api/v1/nothing", None, 404, "NotFound")
    assert pod_names(cluster) == before

    # Patches on a live object.
    st, body = cluster.http("POST", base, manifest("patchme", command=["sleep", "30"]))
    assert st == 201, body
    created = json.loads(body)
    try:
        assert created["status"]["phase"] == "Pending" and created["metadata"]["uid"]
        merge = {"Content-Type": "application/merge-patch+json"}
        jp = {"Content-Type": "application/json-patch+json"}
        status("PATCH", base + "/patchme", {"spec": {"restartPolicy": "Always"}}, 422, "Invalid", merge)
        status("PATCH", base + "/patchme", [{"op": "replace", "path": "/spec/containers/0/image", "value": "x"}],
               422, "Invalid", jp)
        status("PATCH", base + "/patchme", [{"op": "remove", "path": "/nope/x"}], 422, "Invalid", jp)
        status("PATCH", base + "/patchme", b"{bad", 400, "BadRequest", merge)
        status("PATCH", base + "/patchme", b"kind: Pod", 415, "UnsupportedMediaType",
               {"Content-Type": "application/apply-patch+yaml"})
        status("PATCH", base + "/patchme", {"metadata": {"labels": {"bad key!": "x"}}}, 422, "Invalid", merge)
        st, body = cluster.http("PATCH", base + "/patchme",
                                [{"op": "add", "path": "/metadata/labels/k", "value": "v"}], headers=jp)
        assert st == 200 and json.loads(body)["metadata"]["labels"]["k"] == "v", body
        st, body = cluster.http("PATCH", base + "/patchme", {"metadata": {"labels": {"k": None, "s": "1"}}},
                                headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert st == 200 and json.loads(body)["metadata"]["labels"] == {"app": "demo", "s": "1"}, body
        # PUT with a stale resourceVersion conflicts.
        stale = dict(created)
        status("PUT", base + "/patchme", stale, 409, "Conflict")
        # Deleting with a wrong uid precondition conflicts and keeps the pod.
        status("DELETE", base + "/patchme",
               {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-it"}}, 409, "Conflict")
        assert "patchme" in pod_names(cluster)
        # dryRun creates nothing.
        st, body = cluster.http("POST", base + "?dryRun=All", manifest("dry"))
        assert st == 201 and "dry" not in pod_names(cluster)
        status("POST", base, manifest("patchme"), 409, "AlreadyExists")
    finally:
        cluster.http("DELETE", base + "/patchme?gracePeriodSeconds=0")


def test_watch_http(cluster):
    base = "/api/v1/namespaces/default/pods"
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=60)
    c.request("GET", base + "?watch=1&fieldSelector=metadata.name%3Dwatched&timeoutSeconds=30",
              headers={"Authorization": "Bearer " + cluster.token})
    r = c.getresponse()
    assert r.status == 200
    st, body = cluster.http("POST", base, manifest("watched", command=["sleep", "30"]))
    assert st == 201, body
    st, body = cluster.http("POST", base, manifest("unwatched", command=["sleep", "30"]))
    assert st == 201, body
    cluster.http("DELETE", base + "/watched?gracePeriodSeconds=0")
    types = []
    while "DELETED" not in types:
        ev = json.loads(r.readline())
        assert ev["object"]["metadata"]["name"] == "watched"
        types.append(ev["type"])
    assert types[0] == "ADDED"
    c.close()
    cluster.http("DELETE", base + "/unwatched?gracePeriodSeconds=0")
    # A resourceVersion older than the event log keeps is a 410 in an ERROR event.
    st, body = cluster.http("GET", base + "?watch=1&resourceVersion=1&timeoutSeconds=1")
    assert st == 200


# ---- running pods (needs the pod manager and an image) ---------------------------------------------


def test_run_logs_watch(kc, cluster, runs):
    name = f"job-{kc.tag}"
    # kubectl's watch starts from the list it prints first: once the header
    # is out, a pod made after it is seen from its first state, however
    # slowly kubectl started. A pod that is there makes the list print one.
    sentinel = f"sentinel-{kc.tag}"
    apply(kc, manifest(sentinel, command=["sleep", "3600"]))
    w = kc.popen("get", "pods", "-w")
    try:
        ready, _, _ = select.select([w.stdout], [], [], 60)
        assert ready, "kubectl get pods -w printed nothing"
        assert w.stdout.readline().startswith("NAME")
        apply(kc, manifest(name, command=["sh", "-c", "for i in 1 2 3 4; do echo line$i; done; sleep 1"]))
        seen = []
        deadline = time.time() + 90
        while time.time() < deadline:
            line = w.stdout.readline()
            if not line:
                break
            if line.startswith(name + " "):
                seen.append(line.split()[2])
                if seen[-1] == "Completed":
                    break
        assert "Completed" in seen, seen
        assert seen[0] in ("Pending", "ContainerCreating"), seen
        assert "Running" in seen or seen.index("Completed") > 0, seen
    finally:
        w.kill()
        w.wait()
        kc("delete", "pod", sentinel, "--grace-period=1", timeout=120)
    pod = get_json(kc, name)
    assert pod["status"]["phase"] == "Succeeded"
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["state"]["terminated"]["reason"] == "Completed"
    assert kc("logs", name).stdout == "line1\nline2\nline3\nline4\n"
    assert kc("logs", name, "--tail", "2").stdout == "line3\nline4\n"
    assert kc("logs", name, "-c", "main").stdout.startswith("line1\n")
    assert kc("logs", name, "-f").stdout.endswith("line4\n")
    row = next(l.split() for l in kc("get", "pods").stdout.splitlines() if l.startswith(name + " "))
    assert row[1:3] == ["0/1", "Completed"]
    assert name in kc("get", "pods", "--field-selector", "status.phase=Succeeded").stdout
    assert name not in kc("get", "pods", "--field-selector", "status.phase=Running").stdout
    kc("delete", "pod", name, timeout=120)
    assert name not in pod_names(cluster)


def test_logs_follow_and_containers(kc, cluster, runs):
    name = f"two-{kc.tag}"
    apply(kc, manifest(name, containers=[
        {"name": "a", "image": IMAGE, "command": ["sh", "-c", "for i in 1 2 3; do echo a$i; sleep 0.3; done"]},
        {"name": "b", "image": IMAGE, "command": ["sh", "-c", "echo b1; sleep 60"]}]))
    try:
        # kubectl 1.32 picks the first container itself; 1.20 asks the server.
        st, body = cluster.http("GET", f"/api/v1/namespaces/default/pods/{name}/log")
        assert st == 400, body
        msg = f"a container name must be specified for pod {name}, choose one of: [a b]"
        assert json.loads(body)["message"] == msg
        p = kc("logs", name, check=None)
        assert msg in p.stderr or 'Defaulted container "a"' in p.stderr, p.stderr
        wait_phase(kc, name, ("Running", "Succeeded", "Failed"))
        assert kc("logs", name, "-c", "a", "-f", timeout=60).stdout == "a1\na2\na3\n"
        assert name in kc("get", "pods", "--field-selector", f"status.phase=Running,metadata.name={name}").stdout
        assert kc("logs", name, "-c", "b").stdout == "b1\n"
        assert "is not valid for pod" in kc("logs", name, "-c", "zzz", check=1).stderr
    finally:
        p = kc("delete", "pod", name, "--grace-period=0", "--force", timeout=120)
    assert name not in pod_names(cluster)


def test_oomkilled(kc, cluster, runs):
    name = f"oom-{kc.tag}"
    apply(kc, manifest(name, containers=[{
        "name": "hog", "image": IMAGE, "resources": {"limits": {"memory": "16Mi"}},
        "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]}]))
    try:
        pod = wait_phase(kc, name, ("Failed", "Succeeded"), timeout=90)
        cs = pod["status"]["containerStatuses"][0]
        assert cs["state"]["terminated"]["reason"] == "OOMKilled", cs
        assert pod["status"]["phase"] == "Failed"
        row = next(l.split() for l in kc("get", "pods").stdout.splitlines() if l.startswith(name + " "))
        assert row[2] == "OOMKilled"
    finally:
        cleanup(kc, name)


def test_graceful_and_forced_delete(kc, cluster, runs):
    name = f"term-{kc.tag}"
    apply(kc, manifest(name, command=["sleep", "600"], extra_spec={"terminationGracePeriodSeconds": 2}))
    wait_phase(kc, name, ("Running",))
    assert f'pod "{name}" deleted' in kc("delete", "pod", name, timeout=120).stdout
    assert name not in pod_names(cluster)
    name2 = f"force-{kc.tag}"
    apply(kc, manifest(name2, command=["sleep", "600"]))
    wait_phase(kc, name2, ("Running",))
    kc("delete", "pod", name2, "--grace-period=0", "--force", timeout=120)
    deadline = time.time() + 30
    while name2 in pod_names(cluster) and time.time() < deadline:
        time.sleep(0.1)
    assert name2 not in pod_names(cluster)


def test_restarts_and_previous_logs(kc, cluster, runs):
    name = f"crash-{kc.tag}"
    apply(kc, manifest(name, restart="OnFailure", command=["sh", "-c", "echo a; echo b; exit 3"]))
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            cs = get_json(kc, name)["status"].get("containerStatuses") or [{}]
            if cs[0].get("restartCount", 0) >= 1:
                break
            time.sleep(0.2)
        assert cs[0]["restartCount"] >= 1, cs
        assert cs[0]["lastState"]["terminated"]["exitCode"] == 3
        # Following one run ends with that run, restarts or not.
        assert kc("logs", name, "-f", timeout=60).stdout in ("a\nb\n", "")
        assert kc("logs", name, "--previous").stdout == "a\nb\n"
        assert kc("logs", name, "--limit-bytes=1", "--previous").stdout == "a"
        row = next(l.split() for l in kc("get", "pods").stdout.splitlines() if l.startswith(name + " "))
        assert row[2] in ("CrashLoopBackOff", "Error", "Running", "ContainerCreating") and int(row[3]) >= 1, row
    finally:
        cleanup(kc, name)


QUANTITY_OK = ["500m", "1", "1.5", 2, "0.25", "1e3", "64Mi", "1G", "128974848", "129e6", "123Ki", "1Ei"]
QUANTITY_BAD = ["1.2.3", "Mi", "-1", "1Qi", "", "1 Mi", "abc", "0x10", "1e", True, None]


def dry_create(cluster, doc):
    st, body = cluster.http("POST", "/api/v1/namespaces/default/pods?dryRun=All", doc)
    return st, json.loads(body)


def test_validation_dry_run(cluster):
    before = pod_names(cluster)
    for q in QUANTITY_OK:
        doc = manifest("q", containers=[{"name": "c", "image": IMAGE,
                                         "resources": {"limits": {"cpu": q, "memory": q}}}])
        st, s = dry_create(cluster, doc)
        assert st == 201, (q, s)
        # Requests default to the limits.
        assert s["spec"]["containers"][0]["resources"]["requests"] == {"cpu": q, "memory": q}
        assert s["status"]["qosClass"] == "Guaranteed"
    for q in QUANTITY_BAD:
        doc = manifest("q", containers=[{"name": "c", "image": IMAGE, "resources": {"limits": {"memory": q}}}])
        st, s = dry_create(cluster, doc)
        assert st == 422 and s["details"]["causes"][0]["field"] == "spec.containers[0].resources.limits[memory]", (q, s)
    cases = [
        ({"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "spec.containers[0].env[0].valueFrom"),
        ({"env": [{"name": "1BAD", "value": "x"}]}, "spec.containers[0].env[0].name"),
        ({"ports": [{"containerPort": 80, "hostPort": 8080}]}, "spec.containers[0].ports[0].hostPort"),
        ({"ports": [{"containerPort": 70000}]}, "spec.containers[0].ports[0].containerPort"),
        ({"ports": [{"containerPort": 80, "protocol": "HTTP"}]}, "spec.containers[0].ports[0].protocol"),
        ({"stdin": True}, "spec.containers[0].stdin"),
        ({"imagePullPolicy": "Sometimes"}, "spec.containers[0].imagePullPolicy"),
        ({"workingDir": "relative"}, "spec.containers[0].workingDir"),
        ({"command": "sh -c x"}, "spec.containers[0].command"),
        ({"volumeMounts": [{"name": "v", "mountPath": "/v"}]}, "spec.containers[0].volumeMounts"),
        ({"resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.containers[0].resources.limits[nvidia.com/gpu]"),
        ({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
         "spec.containers[0].resources.requests"),
    ]
    for extra, field in cases:
        c = {"name": "c", "image": IMAGE}
        c.update(extra)
        st, s = dry_create(cluster, manifest("v", containers=[c]))
        assert st == 422 and field in [x["field"] for x in s["details"]["causes"]], (extra, s)
    spec_cases = [
        ({"restartPolicy": "Sometimes"}, "spec.restartPolicy"),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
        ({"terminationGracePeriodSeconds": -1}, "spec.terminationGracePeriodSeconds"),
        ({"securityContext": {"runAsUser": 0}}, "spec.securityContext"),
        ({"initContainers": [{"name": "i", "image": IMAGE}]}, "spec.initContainers"),
        ({"nodeName": "some-other-node"}, "spec.nodeName"),
        ({"hostPID": True}, "spec.hostPID"),
        ({"containers": []}, "spec.containers"),
        ({"containers": [{"name": f"c{i}", "image": IMAGE} for i in range(65)]}, "spec.containers"),
    ]
    for extra, field in spec_cases:
        st, s = dry_create(cluster, manifest("v", extra_spec=extra))
        assert st == 422 and field in [x["field"] for x in s["details"]["causes"]], (extra, s)
    # Defaults as Kubernetes stores them.
    st, s = dry_create(cluster, manifest("d", containers=[{"name": "c", "image": "busybox"},
                                                          {"name": "e", "image": "x/y:latest", "ports": [{"containerPort": 1}]}],
                                         restart=None))
    assert st == 201, s
    spec = s["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler" and spec["nodeName"]
    assert [c["imagePullPolicy"] for c in spec["containers"]] == ["Always", "Always"]
    assert spec["containers"][1]["ports"][0]["protocol"] == "TCP"
    assert s["status"]["qosClass"] == "BestEffort"
    assert pod_names(cluster) == before
