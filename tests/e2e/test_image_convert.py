"""Lazy images in the image store end to end (docs/lazy-images.md, "Lazy
images in the image store"): `legion image convert --push` on one node
into Debian's docker-registry on 127.0.0.1, a lazy pull of the image on a
second node (its own home, chunk store, fetcher and mounts), what inspect
says is local before and after a pod read files, the fallback to a full
pull when the registry has no lazy form or a blob of it is gone (nothing
left behind), and rm + gc: the chunks only the removed image had go, the
ones another image shares stay. The issue's wider lazy tests (corruption,
outages, the fetcher killed under load) are test_lazy_images.py."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

import oci_kit
from oci_kit import Image, Registry, busybox_layer, tar_layer
from test_legiond import LEGIOND, Legiond, free_port, kill_legiond

# Chunk-sized (64 KiB) blocks, no two alike: so that every chunk is its own.
BIG = b"".join(hashlib.sha256(b"big-%d" % i).digest() * 2048 for i in range(48))    # 3 MiB
OTHER = b"".join(hashlib.sha256(b"other-%d" % i).digest() * 2048 for i in range(16))  # 1 MiB


def require():
    if os.geteuid() != 0:
        pytest.skip("lazy images need root (mounts)")
    if not shutil.which("mkfs.erofs"):
        pytest.fail("mkfs.erofs is missing: scripts/install-deps.sh installs erofs-utils")
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    h = subprocess.run([LEGIOND, "--help"], capture_output=True, text=True).stdout
    if "--lazy-images" not in h:
        pytest.skip("this legiond has no lazy images yet (--lazy-images)")


@pytest.fixture()
def top(tmp_path):
    require()
    return tmp_path


@pytest.fixture()
def reg(top):
    r = Registry(str(top))
    yield r
    r.stop()


def mounts_under(path):
    path = os.path.realpath(path)
    out = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == path or f[4].startswith(path + "/"):
            out.append(f[4])
    return out


@pytest.fixture()
def nodes(top):
    """new(name, *args): a started legiond with a home of its own and lazy
    images on, background hydration off (what is local is what was read).
    All are stopped after the test (--stop-all: fetcher and mounts too)."""
    started = []

    def new(name, *args):
        home = os.path.join(str(top), name)
        os.makedirs(home)
        d = Legiond(home, free_port(), ["--lazy-images", "auto", "--lazy-rate", "0", *args])
        d.start()
        started.append(d)
        return d

    yield new
    for d in started:
        kill_legiond(d)
        left = mounts_under(d.home)
        for m in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        assert left == [], f"mounts left after legiond: {left}"


def api(d, method, path, body=None, ndjson=False):
    h = {"Accept": "application/x-ndjson"} if ndjson else None
    st, data = d.http(method, path, body, headers=h, timeout=300)
    if ndjson:
        assert st == 200, (st, data)
        lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        return lines[:-1], lines[-1]
    return st, json.loads(data) if data else None


def inspect(d, ref):
    st, doc = api(d, "GET", "/v1/images/" + ref)
    assert st == 200, doc
    return doc


def lazy_dirs(d):
    p = os.path.join(d.home, "lazy", "layers")
    return set(os.listdir(p)) if os.path.isdir(p) else set()


def chunks(d):
    root = os.path.join(d.home, "lazy", "chunks")
    return {f for _, _, fs in os.walk(root) for f in fs}


def layer_records(d):
    root = os.path.join(d.home, "images", "layers")
    return {n[:-5]: json.load(open(os.path.join(root, n))) for n in os.listdir(root) if n.endswith(".json")}


def hexes(img):
    return [l["digest"].split(":")[1] for l in img.manifest["layers"]]


def publish(conv, reg, img, repo):
    """Push img, pull it whole on conv, convert it there with --push."""
    ref = reg.push(img, repo, "1")
    conv.cli("image", "pull", ref, "--lazy", "never", timeout=180)
    out, err = conv.cli("image", "convert", ref, "--push", timeout=300)
    return ref, out


def data_image(files, base=None):
    layers = [base] if base else []
    layers.append(tar_layer([("data", "dir")] + [(f"data/{n}", "file", b) for n, b in files]))
    return Image(layers, config={"Cmd": ["/bin/sh"]})


# ---- convert -----------------------------------------------------------------------------

def test_convert_push_and_convert_again(nodes, reg):
    a = nodes("a")
    img = data_image([("big", BIG), ("small", b"small\n")], base=busybox_layer())
    ref, out = publish(a, reg, img, "conv/one")
    # One line per layer (12 hex digits), the time, where it went.
    for h in hexes(img):
        assert h[:12] in out, out
    assert "converted " in out and " s, pushed to " in out, out
    # The figures, as JSON: the data layer's BLOB holds the 3 MiB file in
    # 48 distinct 64 KiB chunks at least.
    res = json.loads(a.cli("--json", "image", "convert", ref, timeout=300)[0])
    assert [l["digest"] for l in res["layers"]] == [l["digest"] for l in img.manifest["layers"]]
    data = res["layers"][1]
    assert data["reused"] and data["chunkSize"] == 65536, data
    assert data["blobSize"] >= len(BIG) and data["chunks"] >= 48 and data["uniqueBytes"] >= len(BIG), data
    assert not res["pushed"]
    # The lazy forms sit in lazy/layers; the extracted layers stay.
    assert lazy_dirs(a) >= set(hexes(img))
    for h in hexes(img):
        src = json.load(open(os.path.join(a.home, "lazy", "layers", h, "source.json")))
        assert src["local"] is True and src["digest"].startswith("sha256:")
        assert not layer_records(a)[h].get("lazy")
    # The registry has the artifact at the referrers tag of the image.
    tag = "sha256-" + img.digest.split(":")[1]
    st, _, body = reg._request("GET", f"/v2/conv/one/manifests/{tag}",
                               headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    idx = json.loads(body)
    assert [m.get("artifactType") for m in idx["manifests"]] == ["application/vnd.legion.lazy.v1"], idx
    # Refusals say what is wrong.
    _, err = a.cli("image", "convert", ref, "--chunk-size", "3000", check=2)
    assert "power of two" in err, err
    _, err = a.cli("image", "convert", "conv/nothing:1", check=1)
    assert "not found" in err, err


# ---- lazy pull -------------------------------------------------------------------------------

PODS = "/api/v1/namespaces/default/pods"


def run_pod(d, name, image, script):
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}]}}
    st, body = d.http("POST", PODS, doc, timeout=300)
    assert st == 201, (st, body)

    def done():
        st, body = d.http("GET", f"{PODS}/{name}")
        return st == 200 and json.loads(body)["status"].get("phase") in ("Succeeded", "Failed")

    d.wait_for(done, timeout=300, what=f"pod {name} to finish")
    st, body = d.http("GET", f"{PODS}/{name}/log")
    assert st == 200, body
    st, _ = d.http("DELETE", f"{PODS}/{name}?gracePeriodSeconds=0")
    return body.decode(errors="replace")


def test_lazy_pull_inspect_and_pod(nodes, reg):
    a, b = nodes("a"), nodes("b")
    img = data_image([("big", BIG), ("other", OTHER), ("small", b"small\n")], base=busybox_layer())
    ref, _ = publish(a, reg, img, "lazy/one")

    progress, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last.get("lazy") is True, last
    doc = last["image"]
    assert [l["how"] for l in doc["pulledLayers"]] == ["lazy", "lazy"], doc
    assert any(p["phase"] == "lazy" for p in progress), progress
    # Recorded as a full pull records it: same id and digest.
    assert doc["id"] == img.id and doc["digest"] == img.digest
    # Only the small parts came: no layer blob, the layers are mounts.
    recs = layer_records(b)
    for h in hexes(img):
        assert recs[h]["lazy"] is True
        assert not os.path.exists(os.path.join(b.home, "images", "blobs", "sha256", h))
        assert os.path.join(os.path.realpath(b.home), "images", "layers", h) in mounts_under(b.home)
        src = os.path.join(b.home, "lazy", "layers", h, "source.json")
        assert oct(os.stat(src).st_mode & 0o777) == "0o600"
        assert json.load(open(src))["registry"] == reg.host
    before = inspect(b, ref)["lazy"]
    assert before["bytes"] >= len(BIG) + len(OTHER) and before["localBytes"] < len(BIG), before
    out, err = b.cli("image", "inspect", ref)
    assert json.loads(out)["lazy"]["chunks"] == before["chunks"]
    assert err.startswith("local: ") and "%)" in err, err
    out, _ = b.cli("image", "list")
    assert "LAZY" in out and "LOCAL" in out, out

    # A pod reads the big file: its sum is the original's, and it is local now.
    log = run_pod(b, "reader", ref, "sha256sum /data/big /data/small; echo DONE $?")
    assert f"{hashlib.sha256(BIG).hexdigest()}  /data/big" in log, log
    assert "DONE 0" in log, log
    after = inspect(b, ref)["lazy"]
    assert after["localBytes"] >= before["localBytes"] + len(BIG), (before, after)
    assert after["localBytes"] < after["bytes"], after  # OTHER was not read
    per = [l["lazy"] for l in inspect(b, ref)["layerDetails"]]
    assert per[1]["localChunks"] < per[1]["chunks"], per


def test_fallback_to_full_pull(nodes, reg):
    b = nodes("b")
    img = data_image([("small", b"no lazy form\n")])
    ref = reg.push(img, "plain/one", "1")
    _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last["lazy"] is False and "no lazy form" in last["lazyReason"], last
    assert last["image"]["lazy"] is False and last["image"]["lazyReason"] == last["lazyReason"]
    assert not layer_records(b)[hexes(img)[0]].get("lazy")
    assert lazy_dirs(b) == set()
    out, _ = b.cli("image", "pull", ref, "--lazy", "never")
    assert "not lazily: not asked for" in out, out


def test_failed_lazy_pull_leaves_nothing(nodes, reg):
    a, b = nodes("a"), nodes("b")
    img = data_image([("big", BIG)])
    ref, _ = publish(a, reg, img, "broken/one")
    # The artifact's meta blob is gone from the registry: the lazy pull
    # fails half way and becomes a full pull, leaving no lazy layer.
    tag = "sha256-" + img.digest.split(":")[1]
    _, _, body = reg._request("GET", f"/v2/broken/one/manifests/{tag}",
                              headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    art = json.loads(body)["manifests"][0]["digest"]
    _, _, body = reg._request("GET", f"/v2/broken/one/manifests/{art}",
                              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    meta = next(l for l in json.loads(body)["layers"] if l["mediaType"] == "application/vnd.legion.erofs.meta.v1")
    os.remove(reg.blob_path(meta["digest"]))
    _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last["lazy"] is False and "meta" in last["lazyReason"], last
    assert lazy_dirs(b) == set()
    assert not any(r.get("lazy") for r in layer_records(b).values())
    assert mounts_under(os.path.join(b.home, "images")) == []
    assert os.listdir(os.path.join(b.home, "lazy", "tmp")) == []


# ---- GC ----------------------------------------------------------------------------------------

def test_rm_and_gc_keep_shared_chunks(nodes, reg):
    a, b = nodes("a"), nodes("b")
    # The same big file in two layers that differ (another path beside
    # it): two lazy layers whose BLOBs share the big file's chunks.
    bb = busybox_layer()
    x = data_image([("big", BIG), ("x", b"x\n")], base=bb)
    y = data_image([("big", BIG), ("y", OTHER)], base=bb)
    rx, _ = publish(a, reg, x, "gc/x")
    ry, _ = publish(a, reg, y, "gc/y")
    for r in (rx, ry):
        _, last = api(b, "POST", "/v1/images/pull", {"image": r}, ndjson=True)
        assert last["lazy"] is True, last
    assert run_pod(b, "readx", rx, "cat /data/big >/dev/null; echo DONE $?").count("DONE 0") == 1
    # y's big file came with x's reads: stored once.
    ly = inspect(b, ry)["lazy"]
    assert ly["localBytes"] >= len(BIG), ly
    shared = chunks(b)
    assert len(shared) >= 48
    b.cli("image", "rm", rx)
    gc = json.loads(b.cli("--json", "image", "gc")[0])
    assert gc["layersRemoved"] == 1, gc
    # The shared base layer stays (y uses it), x's data layer went.
    assert hexes(x)[1] not in lazy_dirs(b) and hexes(y)[1] in lazy_dirs(b) and hexes(x)[0] in lazy_dirs(b)
    # x's own chunks (its small file) went, the big file's stayed for y.
    assert chunks(b) <= shared and len(chunks(b)) >= 48, gc
    assert inspect(b, ry)["lazy"]["localBytes"] == ly["localBytes"]
    assert run_pod(b, "ready", ry, "sha256sum /data/big; echo DONE $?").count(hashlib.sha256(BIG).hexdigest()) == 1
    b.cli("image", "rm", ry)
    gc = json.loads(b.cli("--json", "image", "gc")[0])
    assert gc["layersRemoved"] == 2 and gc["chunksRemoved"] >= 48, gc
    assert chunks(b) == set() and lazy_dirs(b) == set()
    assert mounts_under(os.path.join(b.home, "images")) == []
