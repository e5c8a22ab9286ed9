"""A python3 image built from host files (busybox layer + python layer, in
`docker save` form) run as pods through kubectl: the image config's
Entrypoint, Cmd, Env, WorkingDir and User apply, and command/args override
them as Kubernetes says."""
import json
import os
import shutil
import signal
import tempfile
import time

import pytest

import kube_kit
import oci_kit
from test_legiond import LEGIOND, Legiond, free_port

IMAGE = "legion-test/python:3"
KUBECTLS = kube_kit.kubectls()

if not KUBECTLS:
    pytest.skip("no kubectl found (set KUBECTL, or install kubernetes-client)", allow_module_level=True)

REPORT = ("import json, os; print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(), "
          "'greeting': os.environ.get('GREETING'), 'extra': os.environ.get('EXTRA'), "
          "'path': os.environ.get('PATH')}))")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    top = tempfile.mkdtemp(prefix="lg-py-")
    home = os.path.join(top, "home")
    os.makedirs(home)
    d = Legiond(home, free_port())
    d.start()
    img = oci_kit.Image([oci_kit.busybox_layer(), oci_kit.python_layer()], style="docker",
                        config={"Entrypoint": ["python3"], "Cmd": ["-c", REPORT],
                                "Env": ["PATH=/usr/bin:/bin", "GREETING=from-the-image"],
                                "WorkingDir": "/home/app", "User": "app"})
    archive = os.path.join(top, "python.tar")
    oci_kit.write_docker_archive(archive, [(img, [IMAGE])])
    d.cli("image", "import", archive)
    d.kc = kube_kit.Kubectl(KUBECTLS[0], kube_kit.write_kubeconfig(os.path.join(top, "kubeconfig"), d, d.token))
    yield d
    d.stop(signal.SIGKILL)
    shutil.rmtree(top, ignore_errors=True)


def run_pod(cluster, name, container):
    container = dict({"name": "main", "image": IMAGE}, **container)
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never", "containers": [container]}}
    cluster.kc("apply", "-f", "-", input=json.dumps(doc))
    deadline = time.time() + 60
    while time.time() < deadline:
        pod = json.loads(cluster.kc("get", "pod", name, "-o", "json").stdout)
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.1)
    assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"])
    logs = cluster.kc("logs", name).stdout
    cluster.kc("delete", "pod", name)
    return logs


def test_image_config_applies(cluster):
    out = json.loads(run_pod(cluster, "py-defaults", {}))
    assert out == {"uid": 1000, "gid": 1000, "cwd": "/home/app", "greeting": "from-the-image",
                   "extra": None, "path": "/usr/bin:/bin"}


def test_env_workdir_and_args_override(cluster):
    # args replace Cmd and keep the Entrypoint; env adds to and overrides the
    # image's; workingDir replaces WorkingDir.
    out = json.loads(run_pod(cluster, "py-args", {
        "args": ["-c", REPORT], "workingDir": "/tmp",
        "env": [{"name": "GREETING", "value": "from-the-pod"}, {"name": "EXTRA", "value": "1"}]}))
    assert out["cwd"] == "/tmp" and out["greeting"] == "from-the-pod" and out["extra"] == "1"
    assert out["uid"] == 1000


def test_command_replaces_entrypoint_and_cmd(cluster):
    out = run_pod(cluster, "py-command", {"command": ["/bin/sh", "-c", "echo shell-ran; id -u"]})
    assert out.split() == ["shell-ran", "1000"]
