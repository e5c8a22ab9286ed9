#!/usr/bin/python3
"""The pods benchmark's driver (bench/pods/run.sh starts legiond and runs
this; see run.sh for the whole picture).

Parts, each writing raw JSON into OUT:
  start   pod create -> container running and pod create -> exit (/bin/true,
          restartPolicy Never, until phase Succeeded) through legiond's Pod
          API, on a legiond with warm pod sandboxes (the default; before
          each pod, untimed, until its image's warm sandbox is ready, and
          whether the pod took it is recorded) and on one with
          LEGION_POD_WARM=0 (the cold path), against `runc run -d` and
          `runc run` on a bundle whose rootfs is the same image's extracted
          layers; interleaved run by run
  image   import of a ~100 MB image (`legion image import`), pull of the
          same image from a docker-registry on 127.0.0.1 (`legion image
          pull`), cold and with every layer present, against `skopeo copy`
          of the image to an OCI directory (and `umoci unpack` of it)

Every figure in the report comes from these files."""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
import harness  # noqa: E402
import oci_kit  # noqa: E402
from runc import Runc  # noqa: E402

NS = "default"
IMAGE = "busybox:bench"
BIG = "big:bench"


log = harness.logger("bench/pods")
write = harness.write_json


class Api(harness.Api):
    """The pods' API calls: JSON asked for, long image operations allowed."""

    timeout = 300
    ok = (200, 201, 202, 204)
    json_headers = True


class Watch:
    """A watch of one pod on its own connection, read as it streams
    (chunked transfer decoded here, so no client library sits on the timed
    path)."""

    def __init__(self, port, token, name, rv):
        q = urllib.parse.urlencode({"watch": "true", "fieldSelector": f"metadata.name={name}",
                                    "resourceVersion": rv, "timeoutSeconds": "600"})
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.sendall((f"GET /api/v1/namespaces/{NS}/pods?{q} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n").encode())
        self.f = self.s.makefile("rb")
        self.chunked = None
        self.buf = b""

    def _head(self):
        line = self.f.readline()
        if not line.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"watch: {line!r} {self.f.read1(400)!r}")
        self.chunked = False
        while True:
            h = self.f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            if h.lower().startswith(b"transfer-encoding:") and b"chunked" in h.lower():
                self.chunked = True

    def next(self):
        """The next event, or None when the stream ended."""
        if self.chunked is None:
            self._head()
        while b"\n" not in self.buf:
            if self.chunked:
                size = int(self.f.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return None
                data = self.f.read(size)
                self.f.readline()
            else:
                data = self.f.read1(65536)
                if not data:
                    return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line) if line.strip() else self.next()

    def close(self):
        self.f.close()
        self.s.close()


def running(pod):
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if "running" in (cs.get("state") or {}):
            return True
    return pod.get("status", {}).get("phase") == "Running"


def succeeded(pod):
    return pod.get("status", {}).get("phase") == "Succeeded"


def warm_state(api):
    """(taken so far, ready warm sandboxes of any image, images in the pool)
    on that legiond."""
    _, doc = api.call("GET", "/v1/pods/warm")
    return doc["taken"], sum(i["ready"] for i in doc["images"]), len(doc["images"])


def wait_warm_ready(api, timeout=5.0):
    """Untimed: until a warm sandbox is ready (the pool refilled after the
    last pod), at most timeout seconds; then the pod goes anyway. Nothing
    to wait for before the image's first pod."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, ready, images = warm_state(api)
        if ready > 0 or images == 0:
            return
        time.sleep(0.002)


def pod_once(api, args, name, cmd, until, port=None):
    """Seconds from the create request to until(pod) in the watch; then the
    pod is deleted (untimed) and its DELETED event awaited."""
    _, lst = api.call("GET", f"/api/v1/namespaces/{NS}/pods?fieldSelector=metadata.name%3D{name}")
    w = Watch(port or args.port, api.token, name, lst["metadata"]["resourceVersion"])
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "pods"}},
           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": IMAGE, "command": cmd}]}}
    try:
        t0 = time.perf_counter()
        api.call("POST", f"/api/v1/namespaces/{NS}/pods", doc)
        dt = None
        while dt is None:
            ev = w.next()
            if ev is None:
                raise RuntimeError(f"pod {name}: the watch ended before the pod was ready")
            obj = ev.get("object") or {}
            if ev.get("type") == "ERROR":
                raise RuntimeError(f"pod {name}: watch error {obj}")
            if until(obj):
                dt = time.perf_counter() - t0
            elif obj.get("status", {}).get("phase") == "Failed":
                raise RuntimeError(f"pod {name} failed: {json.dumps(obj.get('status'))[:600]}")
        api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0",
                 {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        while True:
            ev = w.next()
            if ev is None or ev.get("type") == "DELETED":
                break
        return dt
    finally:
        w.close()


def legion(args, *argv, check=True, input=None, cold=False):
    port, home = (args.cold_port, args.cold_home) if cold else (args.port, args.home)
    env = dict(os.environ, LEGION_API=f"http://127.0.0.1:{port}", LEGION_HOME=home)
    t0 = time.perf_counter()
    p = subprocess.run([args.legion, *argv], env=env, capture_output=True, input=input)
    dt = time.perf_counter() - t0
    if check and p.returncode:
        raise RuntimeError(f"legion {' '.join(argv)}: {p.returncode} {p.stderr.decode()[:600]}")
    return dt, p


def part_start(args, api, cold):
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"]})
    archive = os.path.join(args.out, "busybox.tar")
    oci_kit.write_docker_archive(archive, [(img, [IMAGE])])
    dt, _ = legion(args, "image", "import", archive)
    legion(args, "image", "import", archive, cold=True)
    log(f"imported {IMAGE} in {dt * 1000:.0f} ms")
    _, doc = cold.call("GET", "/v1/pods/warm")
    if doc["perImage"] != 0:
        raise RuntimeError("the cold legiond has warm pod sandboxes on (LEGION_POD_WARM=0 expected)")
    # The store's layer dirs are named by the stored blob: ask legiond which
    # blobs the imported image has (uppermost first; copied lowest first).
    _, doc = api.call("GET", "/v1/images/" + urllib.parse.quote(IMAGE, safe=""))
    layer_dirs = [os.path.join(args.home, "images", "layers", d.split(":")[1]) for d in reversed(doc["layers"])]
    for d in layer_dirs:
        if not os.path.isdir(d):
            raise RuntimeError(f"{d}: the image's extracted layer is not where docs/images.md says")
    runc = Runc(args.out, layer_dirs, {"true": ["/bin/true"], "sleep": ["/bin/sleep", "3600"]})
    res = {"n": args.n, "warmup": args.warmup, "legion_running": [], "legion_exit": [], "runc_running": [],
           "runc_exit": [], "cold_running": [], "cold_exit": [], "warm_taken_running": [], "warm_taken_exit": [],
           "image": IMAGE, "layers": len(layer_dirs)}

    def warm_pod(name, cmd, until):
        """A pod on the warm legiond: (seconds, whether it took a warm sandbox)."""
        wait_warm_ready(api)
        before = warm_state(api)[0]
        dt = pod_once(api, args, name, cmd, until)
        return dt, warm_state(api)[0] > before

    try:
        for i in range(-args.warmup, args.n):
            k = i + args.warmup
            a, a_warm = warm_pod(f"run-{k}", ["/bin/sleep", "3600"], running)
            ac = pod_once(cold, args, f"run-{k}", ["/bin/sleep", "3600"], running, port=args.cold_port)
            b = runc.run_running("sleep")
            c, c_warm = warm_pod(f"true-{k}", ["/bin/true"], succeeded)
            cc = pod_once(cold, args, f"true-{k}", ["/bin/true"], succeeded, port=args.cold_port)
            d = runc.run_exit("true")
            if i >= 0:
                res["legion_running"].append(a)
                res["warm_taken_running"].append(a_warm)
                res["cold_running"].append(ac)
                res["runc_running"].append(b)
                res["legion_exit"].append(c)
                res["warm_taken_exit"].append(c_warm)
                res["cold_exit"].append(cc)
                res["runc_exit"].append(d)
            if i >= 0 and (i + 1) % 50 == 0:
                log(f"start: {i + 1}/{args.n}")
    finally:
        runc.cleanup()
    write(args.out, "start.json", res)


def timed(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.returncode} {p.stderr.decode()[:600]}")
    return dt


def forget(args, ref):
    """Remove the image and collect its blobs and layers (untimed)."""
    legion(args, "image", "rm", ref, check=False)
    legion(args, "image", "gc")


def part_image(args):
    size = args.big_mb * 1000 * 1000
    log(f"building a {args.big_mb} MB image (busybox + random data)")
    big = oci_kit.Image([oci_kit.busybox_layer(), oci_kit.random_layer(size)], config={"Cmd": ["/bin/sh"]})
    archive = os.path.join(args.out, "big.tar")
    oci_kit.write_oci_archive(archive, big, BIG)
    res = {"runs": args.image_n, "archive_bytes": os.path.getsize(archive),
           "image_bytes": sum(d["size"] for d in big.layer_descs), "import": [], "pull": [],
           "pull_cached": [], "skopeo": [], "skopeo_cached": [], "umoci_unpack": []}
    for i in range(args.image_n):
        forget(args, BIG)
        res["import"].append(legion(args, "image", "import", archive, "--name", BIG)[0])
    forget(args, BIG)
    work = os.path.join(args.out, "registry")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    reg = oci_kit.Registry(work)
    try:
        ref = reg.push(big, "big", "bench")
        log(f"pushed {ref}")
        for i in range(args.image_n):
            forget(args, ref)
            res["pull"].append(legion(args, "image", "pull", ref)[0])
        for i in range(args.image_n):
            res["pull_cached"].append(legion(args, "image", "pull", ref)[0])
        forget(args, ref)
        for i in range(args.image_n):
            dest = os.path.join(args.out, "skopeo-oci")
            shutil.rmtree(dest, ignore_errors=True)
            src = f"docker://{ref}"
            res["skopeo"].append(timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", src,
                                        f"oci:{dest}:bench"]))
            if shutil.which("umoci"):
                bundle = os.path.join(args.out, "umoci-bundle")
                shutil.rmtree(bundle, ignore_errors=True)
                res["umoci_unpack"].append(timed(["umoci", "unpack", "--image", f"{dest}:bench", bundle]))
                shutil.rmtree(bundle, ignore_errors=True)
        for i in range(args.image_n):
            res["skopeo_cached"].append(timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                               f"docker://{ref}", f"oci:{dest}:bench"]))
        shutil.rmtree(dest, ignore_errors=True)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
        os.unlink(archive)
    write(args.out, "image.json", res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--legion", required=True)
    ap.add_argument("--cold-port", type=int, required=True)
    ap.add_argument("--cold-home", required=True)
    ap.add_argument("--parts", default="start,image")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image-n", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=100)
    args = ap.parse_args()
    token = harness.read_token(args.home)
    api = Api(args.port, token)
    cold = Api(args.cold_port, harness.read_token(args.cold_home))
    parts = args.parts.split(",")
    failed = False
    for part in ("start", "image"):
        if part not in parts:
            continue
        log(f"part {part}")
        try:
            part_start(args, api, cold) if part == "start" else part_image(args)
        except Exception as e:  # noqa: BLE001 -- recorded for the report, then the next part
            failed = True
            log(f"part {part} failed: {e}")
            write(args.out, f"{part}-error.json", {"error": str(e)})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
