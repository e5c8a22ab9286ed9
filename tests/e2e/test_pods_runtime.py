"""The pod manager through a real legiond: images pulled from a local
docker-registry, containers run, restarted with back-off, logs, host network,
graceful deletion and a legiond restart, all over the Kubernetes Pod API
(plain HTTP; the kubectl tests are in test_pods_kubectl.py)."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

import oci_kit
from test_legiond import LEGIOND, Legiond, free_port

BACKOFF_MS = 300
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture(scope="module")
def env():
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    if not shutil.which("docker-registry") or not os.path.exists(oci_kit.BUSYBOX):
        pytest.skip("needs docker-registry and busybox-static")
    top = tempfile.mkdtemp(prefix="lg-pods-rt-")
    reg = oci_kit.Registry(top)
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    image = reg.push(img, "rt/busybox", "1")
    home = os.path.join(top, "home")
    os.makedirs(home)
    d = Legiond(home, free_port())
    d.env["LEGION_POD_BACKOFF_MS"] = str(BACKOFF_MS)
    d.start()
    d.image, d.registry, d.top = image, reg, top
    yield d
    d.stop(signal.SIGKILL)
    reg.stop()
    shutil.rmtree(top, ignore_errors=True)


def create(d, name, containers, **spec):
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": dict({"containers": containers}, **spec)}
    st, body = d.http("POST", PODS, doc)
    assert st == 201, body
    return json.loads(body)


def get(d, name):
    st, body = d.http("GET", f"{PODS}/{name}")
    if st == 404:
        return None
    assert st == 200, body
    return json.loads(body)


def wait(d, name, pred, what, timeout=120):
    """Poll until pred(pod) holds (a bound for a hung test, not a timing check)."""
    deadline = time.time() + timeout
    pod = None
    while time.time() < deadline:
        pod = get(d, name)
        if pred(pod):
            return pod
        time.sleep(0.1)
    raise AssertionError(f"pod {name}: never {what}: {json.dumps(pod and pod.get('status'), indent=1)}")


def phase(p):
    return lambda pod: pod is not None and pod["status"].get("phase") == p


def cstatus(pod, name):
    return next(c for c in pod["status"].get("containerStatuses", []) if c["name"] == name)


def logs(d, name, container=None, previous=False):
    q = []
    if container:
        q.append(f"container={container}")
    if previous:
        q.append("previous=true")
    st, body = d.http("GET", f"{PODS}/{name}/log" + ("?" + "&".join(q) if q else ""))
    assert st == 200, body
    return body.decode()


def delete(d, name, grace=None):
    path = f"{PODS}/{name}" + (f"?gracePeriodSeconds={grace}" if grace is not None else "")
    st, body = d.http("DELETE", path)
    assert st in (200, 202), body
    wait(d, name, lambda p: p is None, "deleted")


def test_pulled_image_runs_to_completion(env):
    d = env
    create(d, "hello", [{"name": "main", "image": d.image, "command": ["sh", "-c", "echo out; echo err >&2; exit 0"]}],
           restartPolicy="Never")
    pod = wait(d, "hello", phase("Succeeded"), "Succeeded")
    cs = cstatus(pod, "main")
    term = cs["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert cs["containerID"].startswith("legion://")
    assert cs["imageID"].startswith("sha256:")
    assert cs["restartCount"] == 0 and cs["ready"] is False
    conds = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "PodCompleted"
    assert conds["PodScheduled"]["status"] == "True"
    assert pod["status"]["qosClass"] == "BestEffort"
    assert logs(d, "hello") == "out\nerr\n"
    delete(d, "hello")
    # The logs went with the pod.
    assert not os.path.exists(os.path.join(d.home, "logs", "pods", "default", "hello"))


def test_crash_loop_and_previous_log(env):
    d = env
    create(d, "crash", [{"name": "main", "image": d.image, "command": ["sh", "-c", "echo run; exit 7"]}])
    pod = wait(d, "crash", lambda p: cstatus(p, "main")["restartCount"] >= 2
               and "waiting" in cstatus(p, "main")["state"], "restarted twice")
    cs = cstatus(pod, "main")
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "restarting failed container=main" in cs["state"]["waiting"]["message"]
    assert cs["lastState"]["terminated"]["exitCode"] == 7
    assert pod["status"]["phase"] == "Running"
    assert logs(d, "crash", previous=True) == "run\n"
    delete(d, "crash", grace=0)


def test_pull_failure_backs_off(env):
    d = env
    missing = d.registry.host + "/rt/absent:1"
    create(d, "nopull", [{"name": "main", "image": missing}])
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        pod = wait(d, "nopull", lambda p: cstatus(p, "main")["state"].get("waiting", {}).get("reason") == reason,
                   reason)
    assert pod["status"]["phase"] == "Pending"
    delete(d, "nopull")


def test_host_network_and_shared_loopback(env):
    d = env
    port = free_port()
    create(d, "web", [
        {"name": "server", "image": d.image, "command": ["sh", "-c",
         f"mkdir -p /www && echo served > /www/index.html && exec httpd -f -p {port} -h /www"]},
    ], hostNetwork=True)
    pod = wait(d, "web", lambda p: "running" in cstatus(p, "server")["state"], "running")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"]
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert r.read() == b"served\n"
                break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    delete(d, "web", grace=1)

    create(d, "duo", [
        {"name": "server", "image": d.image, "command": ["sh", "-c",
         "mkdir -p /www && echo pod-local > /www/index.html && exec httpd -f -p 80 -h /www"]},
        {"name": "client", "image": d.image, "command": ["sh", "-c",
         "for i in $(seq 600); do wget -q -O - http://127.0.0.1/ && exit 0; sleep 0.1; done; exit 1"]},
    ], restartPolicy="Never")
    pod = wait(d, "duo", lambda p: "terminated" in cstatus(p, "client")["state"], "client done")
    assert cstatus(pod, "client")["state"]["terminated"]["exitCode"] == 0
    # Its own address on the node's network, not the host's.
    assert pod["status"].get("podIP") not in (None, pod["status"]["hostIP"]), pod["status"]
    assert logs(d, "duo", container="client") == "pod-local\n"
    delete(d, "duo", grace=1)


def test_graceful_delete_reaches_workload(env):
    d = env
    create(d, "polite", [{"name": "main", "image": d.image, "command": ["sh", "-c",
           "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.1; done"]}])
    wait(d, "polite", lambda p: p and "running" in cstatus(p, "main")["state"] and logs(d, "polite") == "up\n",
         "running")
    start = time.time()
    delete(d, "polite", grace=120)
    assert time.time() - start < 100  # went when the workload exited, not at the end of the grace period


def test_restart_of_legiond_restarts_pods(env):
    d = env
    create(d, "survivor", [{"name": "main", "image": d.image, "command": ["sleep", "1000"]}])
    wait(d, "survivor", lambda p: "running" in cstatus(p, "main")["state"], "running")
    d.stop(signal.SIGTERM)
    d.proc = None
    d.start()
    pod = wait(d, "survivor", lambda p: cstatus(p, "main")["restartCount"] == 1
               and "running" in cstatus(p, "main")["state"], "restarted")
    assert pod["status"]["phase"] == "Running"
    delete(d, "survivor", grace=0)
