"""Warm pod sandboxes through a real legiond (docs/pods.md, "Warm
sandboxes"): after a pod of an image started, the next pod's first
container takes a sandbox made ahead for that image, visible in
GET /v1/pods/warm; its workload, logs and limits are the pod's; removing
the image drops them, and image GC then frees the layers;
LEGION_POD_WARM=0 turns them off."""
import json
import os
import shutil
import signal
import tempfile
import time

import pytest

import oci_kit
from test_legiond import LEGIOND, Legiond, free_port
from test_pods_runtime import cstatus, create, delete, logs, phase, wait

IMAGE = "warm/busybox:1"


def start_legiond(top, name, **env):
    home = os.path.join(top, name)
    os.makedirs(home)
    d = Legiond(home, free_port())
    d.env.update(env)
    d.start()
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"],
                                                         "WorkingDir": "/etc"})
    archive = os.path.join(top, name + ".tar")
    oci_kit.write_docker_archive(archive, [(img, [IMAGE])])
    d.cli("image", "import", archive)
    return d


@pytest.fixture(scope="module")
def top():
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    if not os.path.exists(oci_kit.BUSYBOX):
        pytest.skip("needs busybox-static")
    t = tempfile.mkdtemp(prefix="lg-pods-warm-")
    yield t
    shutil.rmtree(t, ignore_errors=True)


@pytest.fixture(scope="module")
def env(top):
    d = start_legiond(top, "home")
    yield d
    d.stop(signal.SIGKILL)


def warm(d):
    st, body = d.http("GET", "/v1/pods/warm")
    assert st == 200, body
    return json.loads(body)


def image_id(d):
    out, _ = d.cli("image", "inspect", IMAGE)
    return json.loads(out)["id"]


def warm_entry(d):
    iid = image_id(d)
    return next((i for i in warm(d)["images"] if i["imageID"] == iid), None)


def wait_ready(d, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        e = warm_entry(d)
        if e and e["ready"] >= 1:
            return e
        time.sleep(0.05)
    raise AssertionError(f"no warm sandbox became ready: {warm(d)}")


def test_second_pod_takes_a_warm_sandbox(env):
    d = env
    assert warm_entry(d) is None
    doc = warm(d)
    assert doc["perImage"] == 1 and doc["maxImages"] == 4 and doc["idleSeconds"] == 300
    create(d, "first", [{"name": "c", "image": IMAGE, "command": ["sleep", "1000"]}])
    first = wait(d, "first", lambda p: p and "running" in cstatus(p, "c")["state"], "running")
    e = wait_ready(d)
    assert e["taken"] == 0 and e["made"] == 1

    create(d, "second", [{"name": "c", "image": IMAGE,
                          "command": ["sh", "-c", "echo hi from $(cat /proc/sys/kernel/hostname) in $(pwd); "
                                      "echo err >&2; id -u"]}],
           restartPolicy="Never")
    pod = wait(d, "second", phase("Succeeded"), "Succeeded")
    cs = cstatus(pod, "c")
    assert cs["state"]["terminated"]["reason"] == "Completed"
    assert cs["containerID"].startswith("legion://")
    assert cs["containerID"] != cstatus(first, "c")["containerID"]
    assert cs["imageID"] == image_id(d)
    assert logs(d, "second") == "hi from second in /etc\nerr\n0\n"
    assert warm_entry(d)["taken"] == 1
    assert warm(d)["taken"] >= 1
    # The one taken is made again.
    wait_ready(d)
    delete(d, "first", grace=0)
    delete(d, "second")


def test_warm_sandbox_gets_the_pods_limits(env):
    d = env
    wait_ready(d)
    taken = warm_entry(d)["taken"]
    create(d, "oom", [{"name": "c", "image": IMAGE, "command": ["tail", "/dev/zero"],
                       "resources": {"limits": {"memory": "16Mi"}}}], restartPolicy="Never")
    pod = wait(d, "oom", phase("Failed"), "Failed")
    term = cstatus(pod, "c")["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137
    assert warm_entry(d)["taken"] == taken + 1
    delete(d, "oom")


def test_host_network_does_not_take_one(env):
    d = env
    wait_ready(d)
    taken = warm_entry(d)["taken"]
    create(d, "hostnet", [{"name": "c", "image": IMAGE, "command": ["true"]}], restartPolicy="Never",
           hostNetwork=True)
    wait(d, "hostnet", phase("Succeeded"), "Succeeded")
    assert warm_entry(d)["taken"] == taken and warm_entry(d)["ready"] == 1
    delete(d, "hostnet")


def test_image_rm_drops_them_and_gc_frees_the_layers(env):
    d = env
    wait_ready(d)
    layers = set(os.listdir(os.path.join(d.home, "images", "layers")))
    assert layers
    # Warm sandboxes are not "a running pod": no 409.
    out, _ = d.cli("image", "rm", IMAGE)
    assert "removed" in out
    assert warm(d)["images"] == []
    out, _ = d.cli("--json", "image", "gc")
    assert json.loads(out)["layersRemoved"] >= 1
    left = set(os.listdir(os.path.join(d.home, "images", "layers")))
    assert not (layers & left)


def test_warm_off(top):
    d = start_legiond(top, "home-off", LEGION_POD_WARM="0")
    try:
        for name in ("x", "y"):
            create(d, name, [{"name": "c", "image": IMAGE, "command": ["echo", name]}], restartPolicy="Never")
            wait(d, name, phase("Succeeded"), "Succeeded")
            assert logs(d, name) == name + "\n"
            delete(d, name)
        doc = warm(d)
        assert doc["perImage"] == 0 and doc["images"] == [] and doc["taken"] == 0
    finally:
        d.stop(signal.SIGKILL)
