"""Lazy function packages (docs/packages.md, "Packages in a registry"): a
legiond pushes a package to a registry (docker-registry on loopback) as an
artifact with its lazy form; a second legiond deploys an app from it with
--package-image, mounts it once and binds it at /code in every instance,
fetching only what is read; the archive alone (no lazy form) is extracted
as an upload is; bad references and corrupted artifacts are refused with
what is wrong, and nothing is stored."""
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile

import pytest

from oci_kit import Registry
from test_legiond import LEGIOND, kill_legiond, start_legiond, write_app


def lazy_wired():
    """legiond mounts lazy layers: it has lazyd (--lazy-rate) and the
    fetcher process (`legiond lazy-fetcher`)."""
    try:
        daemon = subprocess.run([LEGIOND, "--help"], capture_output=True, text=True, timeout=10)
        fetcher = subprocess.run([LEGIOND, "lazy-fetcher", "--help"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "--lazy-rate" in daemon.stdout + daemon.stderr and "legiond lazy-fetcher" in fetcher.stdout + fetcher.stderr


needs_lazy = pytest.mark.skipif(not lazy_wired(), reason="this legiond has no lazy fetcher yet (lazyd, lazy-fetcher)")

HANDLER = '''
import os
def main(req):
    with open("/code/small.txt") as f:
        small = f.read()
    return {"small": small, "files": sorted(os.listdir("/code")), "code": os.path.realpath("/code")}
'''

BIG = 200 << 20  # the file never read


@pytest.fixture()
def registry(tmp_path):
    r = Registry(str(tmp_path))
    yield r
    r.stop()


@pytest.fixture()
def pusher(legion_bin, tmp_path):
    d = start_legiond(tmp_path / "a")
    yield d
    kill_legiond(d)


@pytest.fixture()
def node(legion_bin, tmp_path):
    # No background hydration: what is local is what was read.
    d = start_legiond(tmp_path / "b", args=["--lazy-rate", "0"] if lazy_wired() else [])
    yield d
    kill_legiond(d)


def mounts(kind="erofs"):
    return subprocess.run(["findmnt", "-rn", "-t", kind, "-o", "TARGET"], capture_output=True,
                          text=True).stdout.split()


def small_app(tmp_path, big=0):
    d = write_app(tmp_path, "code", {"main.py": HANDLER, "small.txt": "hello lazy\n"})
    if big:
        with open(os.path.join(d, "big.bin"), "wb") as f:
            left = big
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
    return d


def archive_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_artifact(reg, repo, tag, archive, config=None, extra_layers=(), artifact_type=None):
    """An artifact pushed by hand: the archive layer, config (default the
    OCI empty one) and extra layers."""
    reg.push_blob(repo, "sha256:" + hashlib.sha256(archive).hexdigest(), archive)
    cfg = config if config is not None else b"{}"
    cfg_type = "application/vnd.legion.lazy.config.v1+json" if config is not None else \
        "application/vnd.oci.empty.v1+json"
    reg.push_blob(repo, "sha256:" + hashlib.sha256(cfg).hexdigest(), cfg)
    layers = [{"mediaType": "application/vnd.legion.package.archive.v1",
               "digest": "sha256:" + hashlib.sha256(archive).hexdigest(), "size": len(archive)}]
    for mt, data in extra_layers:
        reg.push_blob(repo, "sha256:" + hashlib.sha256(data).hexdigest(), data)
        layers.append({"mediaType": mt, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)})
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "artifactType": artifact_type or "application/vnd.legion.package.v1",
         "config": {"mediaType": cfg_type, "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(), "size": len(cfg)},
         "layers": layers}
    reg.push_manifest(repo, tag, json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json")


def test_archive_only_package_is_extracted(node, registry, tmp_path):
    """The fallback: an artifact without lazy form (pushed by hand here,
    the format docs/packages.md gives) deploys from its archive."""
    arch = archive_of({"main.py": HANDLER.encode(), "small.txt": b"hello lazy\n"})
    push_artifact(registry, "code/plain", "v1", arch)
    ref = f"{registry.host}/code/plain:v1"
    out, _ = node.cli("app", "deploy", "plain", "--runtime", "python3", "--package-image", ref, timeout=120)
    assert "extracted" in out, out
    out, _ = node.cli("invoke", "plain")
    doc = json.loads(out)
    assert doc["small"] == "hello lazy\n" and doc["files"] == ["main.py", "small.txt"], doc
    st = node.app("plain")["status"]["package"]
    hexd = hashlib.sha256(arch).hexdigest()
    assert st["lazy"] is False and st["archive"] == hexd and st["ref"] == ref, st
    assert "no lazy form" in st["lazyReason"], st
    assert os.path.isdir(os.path.join(node.home, "packages", "extracted", hexd))


def test_bad_refs_and_artifacts_are_refused_and_nothing_is_stored(node, registry, tmp_path):
    def deploy(ref):
        return node.cli("app", "deploy", "bad", "--runtime", "python3", "--package-image", ref, check=None,
                        timeout=120)

    def stored():
        st, body = node.http("GET", "/v1/namespaces/default/apps/bad")
        return st

    before = sorted(os.listdir(os.path.join(node.home, "packages", "extracted")))
    # A malformed reference: refused before anything is asked of a registry.
    out, err = deploy("UPPER/case:@@")
    assert "packageImage" in err, err
    # No such tag.
    out, err = deploy(f"{registry.host}/code/none:v1")
    assert "could not be fetched" in err and "code/none" in err, err
    # An image, not a package.
    registry.push_blob("code/img", "sha256:" + hashlib.sha256(b"{}").hexdigest(), b"{}")
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}, "layers": []}
    registry.push_manifest("code/img", "v1", json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json")
    out, err = deploy(f"{registry.host}/code/img:v1")
    assert "is not a legion package" in err and "artifactType" in err, err
    # The archive's bytes changed in the registry's storage: its digest
    # no longer matches, refused.
    arch = archive_of({"main.py": HANDLER.encode(), "small.txt": b"hello lazy\n"})
    push_artifact(registry, "code/corrupt", "v1", arch)
    path = registry.blob_path("sha256:" + hashlib.sha256(arch).hexdigest())
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xff
    open(path, "wb").write(bytes(data))
    out, err = deploy(f"{registry.host}/code/corrupt:v1")
    assert "could not be fetched" in err and ("digest" in err or "match" in err), err
    # An archive that is no archive: the package rules refuse it.
    push_artifact(registry, "code/text", "v1", b"just some text, not an archive\n")
    out, err = deploy(f"{registry.host}/code/text:v1")
    assert "not a valid archive" in err, err
    assert stored() == 404
    assert sorted(os.listdir(os.path.join(node.home, "packages", "extracted"))) == before
    assert [x for x in os.listdir(os.path.join(node.home, "packages", "extracted")) if x.startswith(".tmp")] == []


def manifest_of(registry, repo, tag):
    st, _, body = registry._request("GET", f"/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert st == 200, body
    return json.loads(body)


def test_push_makes_the_artifact_and_keeps_nothing(pusher, registry, tmp_path):
    code = small_app(tmp_path, big=1 << 20)
    ref = f"{registry.host}/code/push:v1"
    out, _ = pusher.cli("package", "push", code, ref, "--chunk-size", "16384", timeout=300)
    assert "lazy form" in out and "16.0 KiB" in out, out
    m = manifest_of(registry, "code/push", "v1")
    assert m["artifactType"] == "application/vnd.legion.package.v1" and "subject" not in m, m
    assert [x["mediaType"] for x in m["layers"]] == [
        "application/vnd.legion.package.archive.v1", "application/vnd.legion.erofs.meta.v1",
        "application/vnd.legion.chunks.v1", "application/vnd.legion.erofs.blob.v1"], m
    assert m["config"]["mediaType"] == "application/vnd.legion.lazy.config.v1+json"
    st, _, cfg = registry._request("GET", f"/v2/code/push/blobs/{m['config']['digest']}")
    cfg = json.loads(cfg)
    archive = m["layers"][0]["digest"]
    assert cfg["chunkSize"] == 16384 and cfg["layers"][0]["layer"] == archive, cfg
    # The archive is the one `app deploy` uploads for the same directory.
    tmp = pusher.cli("--json", "app", "deploy", "same", "--runtime", "python3", "--dir", code)[0]
    assert json.loads(tmp)["spec"]["package"] == archive[7:]
    # Nothing of the push stays on the pushing node.
    assert os.listdir(os.path.join(pusher.home, "lazy", "tmp")) == []
    # --no-lazy: the archive alone, the OCI empty config.
    pusher.cli("package", "push", code, f"{registry.host}/code/push:plain", "--no-lazy", timeout=300)
    m = manifest_of(registry, "code/push", "plain")
    assert [x["mediaType"] for x in m["layers"]] == ["application/vnd.legion.package.archive.v1"], m
    assert m["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    # Refused: a bad archive (the package rules), a digest as target, a
    # registry that is not there, a namespace token.
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive at all")
    out, err = pusher.cli("package", "push", str(bad), ref, check=1)
    assert "not a valid archive" in err, err
    out, err = pusher.cli("package", "push", code, f"{registry.host}/code/push@sha256:" + "0" * 64, check=1)
    assert "digest" in err, err
    out, err = pusher.cli("package", "push", code, "127.0.0.1:1/code/none:v1", check=1, timeout=120)
    assert "127.0.0.1:1" in err, err
    assert pusher.http("POST", "/v1/namespaces", body={"name": "team"})[0] == 201
    st, body = pusher.http("POST", "/v1/namespaces/team/tokens", body={})
    tok = json.loads(body)["token"]
    st, body = pusher.http("POST", "/v1/packages/push?ref=" + ref, body=b"x", token=tok)
    assert st == 403, body
    assert os.listdir(os.path.join(pusher.home, "lazy", "tmp")) == []


def test_a_plain_http_registry_needs_saying_so(legion_bin, tmp_path):
    """127.0.0.1 and localhost are reached over plain HTTP; any other
    registry only with push --insecure and legiond --insecure-registry."""
    reg = Registry(str(tmp_path / "r"), bind="127.0.0.2")
    a = start_legiond(tmp_path / "a")
    b = start_legiond(tmp_path / "b", args=["--insecure-registry", reg.host])
    try:
        code = small_app(tmp_path)
        ref = f"{reg.host}/code/plain:v1"
        out, err = a.cli("package", "push", code, ref, check=1, timeout=120)
        assert reg.host in err, err
        a.cli("package", "push", code, ref, "--insecure", timeout=120)
        out, err = a.cli("app", "deploy", "p", "--runtime", "python3", "--package-image", ref, check=1, timeout=120)
        assert "could not be fetched" in err, err
        b.cli("app", "deploy", "p", "--runtime", "python3", "--package-image", ref, timeout=120)
        assert json.loads(b.cli("invoke", "p")[0])["small"] == "hello lazy\n"
    finally:
        kill_legiond(a)
        kill_legiond(b)
        reg.stop()


@needs_lazy
def test_pushed_package_is_mounted_lazily_and_shared(pusher, node, registry, tmp_path):
    code = small_app(tmp_path, big=BIG)
    ref = f"{registry.host}/code/app:v1"
    out, _ = pusher.cli("package", "push", code, ref, timeout=600)
    assert "lazy form" in out, out
    m = manifest_of(registry, "code/app", "v1")
    package_bytes = sum(layer["size"] for layer in m["layers"] if "archive" in layer["mediaType"])
    assert package_bytes > BIG

    out, _ = node.cli("app", "deploy", "lazy", "--runtime", "python3", "--package-image", ref, "--min", "2",
                      "--concurrency", "1", timeout=120)
    assert "mounted lazily" in out, out
    doc = json.loads(node.cli("invoke", "lazy")[0])
    assert doc["small"] == "hello lazy\n" and doc["files"] == ["big.bin", "main.py", "small.txt"], doc
    st = node.app("lazy")["status"]
    pkg = st["package"]
    assert pkg["lazy"] is True and pkg["digest"].startswith("sha256:"), pkg
    # What was fetched to answer: far below a tenth of the package.
    fetched = pkg["local"]["localBytes"]
    print(f"package {package_bytes} bytes, local after the first answer {fetched} bytes "
          f"({100.0 * fetched / package_bytes:.2f}%)")
    assert 0 < fetched < package_bytes / 10, (fetched, package_bytes)
    # One mount for the node, whatever the instances.
    node.wait_for(lambda: node.app("lazy")["status"].get("instances", 0) >= 2, timeout=60, what="2 instances")
    mine = [t for t in mounts() if t.startswith(node.home)]
    assert mine == [os.path.join(node.home, "lazy", "mnt", "pkg-" + pkg["archive"])], mine
    # The revision pins the artifact: a new push to the tag is a new
    # revision only at the next deploy.
    rev = node.app("lazy")["status"]["revision"]
    out, _ = node.cli("app", "deploy", "lazy", "--runtime", "python3", "--package-image", ref, "--min", "2",
                      "--concurrency", "1", timeout=120)
    assert node.app("lazy")["status"]["revision"] == rev


def chunk_files(d):
    top = os.path.join(d.home, "lazy", "chunks")
    return sum(len(files) for _, _, files in os.walk(top)) if os.path.isdir(top) else 0


@needs_lazy
def test_gc_keeps_a_used_package_and_removes_it_after(pusher, node, registry, tmp_path):
    code = small_app(tmp_path, big=4 << 20)
    ref = f"{registry.host}/code/gc:v1"
    pusher.cli("package", "push", code, ref, timeout=300)
    node.cli("app", "deploy", "gcapp", "--runtime", "python3", "--package-image", ref, timeout=120)
    assert json.loads(node.cli("invoke", "gcapp")[0])["small"] == "hello lazy\n"
    hexd = node.app("gcapp")["status"]["package"]["archive"]
    layer = os.path.join(node.home, "lazy", "layers", hexd)
    mnt = os.path.join(node.home, "lazy", "mnt", "pkg-" + hexd)
    assert os.path.isfile(os.path.join(layer, "chunks")) and mnt in mounts()
    assert chunk_files(node) > 0
    st, body = node.http("POST", "/v1/images/gc")
    assert st == 200 and json.loads(body)["packagesRemoved"] == 0, body
    assert os.path.isdir(layer) and mnt in mounts()
    assert json.loads(node.cli("invoke", "gcapp")[0])["small"] == "hello lazy\n"
    node.cli("app", "delete", "gcapp")
    # Its instances drain; GC then unmounts and removes it, chunks too.
    def gone():
        st, body = node.http("POST", "/v1/images/gc")
        return st == 200 and json.loads(body)["packagesRemoved"] == 1
    node.wait_for(gone, timeout=60, what="the package's GC")
    assert not os.path.exists(layer) and mnt not in mounts() and not os.path.exists(mnt)
    assert not os.path.exists(os.path.join(node.home, "lazy", "packages", hexd))
    assert chunk_files(node) == 0


@needs_lazy
def test_corrupted_lazy_form_falls_back_to_the_archive(pusher, node, registry, tmp_path):
    code = small_app(tmp_path, big=1 << 20)
    ref = f"{registry.host}/code/bad:v1"
    pusher.cli("package", "push", code, ref, timeout=300)
    m = manifest_of(registry, "code/bad", "v1")
    chunks = [layer for layer in m["layers"] if layer["mediaType"] == "application/vnd.legion.chunks.v1"][0]
    path = registry.blob_path(chunks["digest"])
    data = bytearray(open(path, "rb").read())
    data[40] ^= 0xff
    open(path, "wb").write(bytes(data))
    out, _ = node.cli("app", "deploy", "bad", "--runtime", "python3", "--package-image", ref, timeout=120)
    assert "extracted" in out, out
    pkg = node.app("bad")["status"]["package"]
    assert pkg["lazy"] is False and "chunk table" in pkg["lazyReason"], pkg
    assert json.loads(node.cli("invoke", "bad")[0])["small"] == "hello lazy\n"
    # Nothing of the refused lazy form stays.
    assert not os.path.exists(os.path.join(node.home, "lazy", "layers", pkg["archive"]))
    assert os.listdir(os.path.join(node.home, "lazy", "tmp")) == []


@needs_lazy
def test_one_mount_for_two_apps_kept_across_restarts(pusher, node, registry, tmp_path):
    code = small_app(tmp_path, big=8 << 20)
    ref = f"{registry.host}/code/two:v1"
    pusher.cli("package", "push", code, ref, timeout=300)
    for app in ("one", "two"):
        node.cli("app", "deploy", app, "--runtime", "python3", "--package-image", ref, timeout=120)
        assert json.loads(node.cli("invoke", app)[0])["small"] == "hello lazy\n"
    hexd = node.app("one")["status"]["package"]["archive"]
    mnt = os.path.join(node.home, "lazy", "mnt", "pkg-" + hexd)
    mine = lambda: [t for t in mounts() if t.startswith(node.home + "/lazy/mnt/")]
    assert mine() == [mnt]
    # kill -9: the mount and the instances stay, the next legiond uses them.
    node.stop(signal.SIGKILL, keep=True)
    node.start()
    for app in ("one", "two"):
        assert json.loads(node.cli("invoke", app)[0])["small"] == "hello lazy\n"
    assert mine() == [mnt]
    # Everything stopped (as a reboot leaves it: no mount), the registry
    # gone: the apps come back mounted from their lazy layer, and what was
    # read before is local.
    node.stop(signal.SIGKILL)
    assert mine() == []
    registry.stop()
    node.start()
    for app in ("one", "two"):
        node.wait_for(lambda: node.app(app)["status"].get("package", {}).get("lazy"), timeout=60,
                      what=f"{app} mounted again")
        assert json.loads(node.cli("invoke", app)[0])["small"] == "hello lazy\n"
    assert mine() == [mnt]
