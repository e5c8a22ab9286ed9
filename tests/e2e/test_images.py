"""OCI images end to end: `legion image import|pull|list|inspect|rm|gc`
against a real legiond, archives made by oci_kit, and registries on
127.0.0.1 (Debian's docker-registry: anonymous, htpasswd basic auth, bearer
tokens; and a small fake registry of our own for what docker-registry will
not do: redirects to another origin, lying digests, schema 1). No pods."""
import base64
import hashlib
import json
import os
import socket
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import oci_kit
from oci_kit import Image, Registry, busybox_layer, tar_layer, write_docker_archive, write_oci_archive
from test_legiond import legiond  # noqa: F401  (the fixture)

CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hello"], "Env": ["PATH=/bin", "GREETING=hi there"],
          "WorkingDir": "/home/app", "User": "1000:1000"}


@pytest.fixture(scope="module")
def bb():
    return busybox_layer()


def store_files(d, sub):
    root = os.path.join(d.home, "images", sub)
    if not os.path.isdir(root):
        return set()
    return {n for n in os.listdir(root) if not n.endswith(".json")}


def blobs(d):
    return store_files(d, "blobs/sha256")


def layers(d):
    return store_files(d, "layers")


def images(d):
    st, body = d.http("GET", "/v1/images")
    assert st == 200, body
    return json.loads(body)["items"]


def inspect(d, ref):
    out, _ = d.cli("image", "inspect", ref)
    return json.loads(out)


def pull(d, ref, *args, check=0, password=None):
    extra = list(args)
    if password is not None:
        extra += ["--password-stdin"]
    return d.cli("image", "pull", ref, *extra, check=check, input=password.encode() if password else None,
                 timeout=120)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- import ----------------------------------------------------------------------------

def test_import_docker_and_oci_archives(legiond, tmp_path, bb):
    img = Image([bb, tar_layer([("home", "dir"), ("home/app", "dir"), ("home/app/hello.txt", "file", b"hi\n")])],
                config=CONFIG, style="docker")
    path = str(tmp_path / "docker.tar")
    write_docker_archive(path, [(img, ["kit/busybox:1"])])
    out, _ = legiond.cli("image", "import", path)
    assert "imported docker.io/kit/busybox:1" in out, out

    # Uncompressed, its layer is the same blob as the docker archive's base.
    oci = Image([bb], config={"Cmd": ["/bin/sh"], "WorkingDir": "/tmp"}, style="oci", compression="none")
    opath = str(tmp_path / "oci.tar")
    write_oci_archive(opath, oci, "ignored:tag")
    out, _ = legiond.cli("image", "import", opath, "--name", "127.0.0.1:5000/oci/test:2")
    assert "127.0.0.1:5000/oci/test:2" in out, out

    out, _ = legiond.cli("image", "list")
    assert "docker.io/kit/busybox:1" in out and "127.0.0.1:5000/oci/test:2" in out, out
    assert img.id.split(":")[1][:12] in out

    doc = inspect(legiond, "kit/busybox:1")
    assert doc["id"] == img.id and doc["digest"].startswith("sha256:")
    assert doc["names"] == ["docker.io/kit/busybox:1"]
    assert doc["config"] == {"entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hello"],
                             "env": ["PATH=/bin", "GREETING=hi there"], "workingDir": "/home/app",
                             "user": "1000:1000"}
    assert doc["os"] == "linux" and doc["architecture"] == "amd64"
    # docker save keeps layers uncompressed; manifest order, lowest first.
    assert doc["layers"] == ["sha256:" + hashlib.sha256(t).hexdigest() for t in img.layers]
    assert doc["created"] == "2024-01-01T00:00:00Z"

    doc2 = inspect(legiond, "127.0.0.1:5000/oci/test:2")
    assert doc2["id"] == oci.id and doc2["config"]["cmd"] == ["/bin/sh"] and doc2["config"]["entrypoint"] is None
    assert doc2["config"]["workingDir"] == "/tmp"
    # The base layer is shared: extracted once.
    assert len(layers(legiond)) == 2

    # The reference in one encoded segment, or as the rest of the path; by id.
    st, body = legiond.http("GET", "/v1/images/" + urllib.parse.quote("127.0.0.1:5000/oci/test:2", safe=""))
    assert st == 200 and json.loads(body)["id"] == oci.id
    st, body = legiond.http("GET", "/v1/images/127.0.0.1:5000/oci/test:2")
    assert st == 200 and json.loads(body)["id"] == oci.id
    st, body = legiond.http("GET", "/v1/images/" + oci.id)
    assert st == 200 and json.loads(body)["names"] == ["127.0.0.1:5000/oci/test:2"]
    st, body = legiond.http("GET", "/v1/images/nosuch/image:1")
    assert st == 404, body

    # Plain HTTP without NDJSON: 201 and the image.
    st, body = legiond.http("POST", "/v1/images/import?name=again:1", body=open(path, "rb").read())
    assert st == 201, body
    assert json.loads(body)["id"] == img.id and "docker.io/library/again:1" in json.loads(body)["names"]


def test_import_streams_ndjson_progress(legiond, tmp_path, bb):
    img = Image([bb], config=CONFIG, style="docker")
    path = str(tmp_path / "a.tar")
    write_docker_archive(path, [(img, ["nd/json:1"])], gz=True)
    st, body = legiond.http("POST", "/v1/images/import", body=open(path, "rb").read(),
                            headers={"Accept": "application/x-ndjson"})
    assert st == 200, body
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines[-1]["image"]["id"] == img.id
    assert all("phase" in x for x in lines[:-1])


def hostile_archives(tmp_path, bb):
    out = {}
    evil = Image([tar_layer([("../escape.txt", "file", b"pwned")])])
    p = str(tmp_path / "dotdot.tar")
    write_docker_archive(p, [(evil, ["evil/dotdot:1"])])
    out["dotdot"] = p
    p = str(tmp_path / "garbage.tar")
    open(p, "wb").write(os.urandom(5000))
    out["garbage"] = p
    # manifest.json names a layer the archive does not have.
    p = str(tmp_path / "missing.tar")
    img = Image([bb])
    with tarfile.open(p, "w") as t:
        oci_kit._add(t, img.config_digest.split(":")[1] + ".json", img.config_bytes)
        oci_kit._add(t, "manifest.json", json.dumps([{"Config": img.config_digest.split(":")[1] + ".json",
                                                      "RepoTags": ["evil/missing:1"],
                                                      "Layers": ["nope/layer.tar"]}]).encode())
    out["missing"] = p
    # A layer that is not what the config's diff id says.
    p = str(tmp_path / "diffid.tar")
    img = Image([bb])
    other = tar_layer([("x", "file", b"not the layer")])
    lid = hashlib.sha256(other).hexdigest()
    with tarfile.open(p, "w") as t:
        oci_kit._add(t, f"{lid}/layer.tar", other)
        oci_kit._add(t, img.config_digest.split(":")[1] + ".json", img.config_bytes)
        oci_kit._add(t, "manifest.json", json.dumps([{"Config": img.config_digest.split(":")[1] + ".json",
                                                      "RepoTags": ["evil/diffid:1"],
                                                      "Layers": [f"{lid}/layer.tar"]}]).encode())
    out["diffid"] = p
    return out


def test_hostile_archives_are_rejected_and_nothing_stays(legiond, tmp_path, bb):
    for kind, path in hostile_archives(tmp_path, bb).items():
        out, err = legiond.cli("image", "import", path, check=1)
        # Progress lines, then the error once.
        lines = err.strip().splitlines()
        assert lines[-1].startswith("legion: ") and sum(x.startswith("legion:") for x in lines) == 1, (kind, err)
        assert "/proc/self/fd" not in err, err
        st, body = legiond.http("POST", "/v1/images/import", body=open(path, "rb").read())
        assert st == 400, (kind, st, body)
        assert json.loads(body)["error"]["message"], body
        assert images(legiond) == [], kind
        assert layers(legiond) == set(), kind
    assert not os.path.exists(os.path.join(legiond.home, "images", "escape.txt"))
    assert not os.path.exists(os.path.join(legiond.home, "escape.txt"))
    # Whatever blobs a failed import wrote, nothing refers to them: gc takes them.
    legiond.cli("image", "gc")
    assert blobs(legiond) == set()
    # Nothing of the uploads is left on disk.
    assert os.listdir(os.path.join(legiond.home, "tmp")) == []


def test_import_empty_body_and_bad_name(legiond, tmp_path, bb):
    st, body = legiond.http("POST", "/v1/images/import", body=b"")
    assert st == 400, body
    st, body = legiond.http("POST", "/v1/images/import?name=UPPER/Case:1", body=b"x")
    assert st == 400, body
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    _, err = legiond.cli("image", "import", str(empty), check=1)
    assert "archive" in err, err


# ---- rm and gc -----------------------------------------------------------------------------

def test_rm_and_gc_free_the_blobs(legiond, tmp_path, bb):
    img = Image([bb, tar_layer([("a.txt", "file", b"a")])], config=CONFIG)
    path = str(tmp_path / "i.tar")
    write_docker_archive(path, [(img, ["gc/one:1", "gc/two:1"])])
    legiond.cli("image", "import", path)
    assert len(blobs(legiond)) >= 3 and len(layers(legiond)) == 2
    out, _ = legiond.cli("image", "rm", "gc/one:1")
    assert "removed gc/one:1" in out
    assert inspect(legiond, "gc/two:1")["names"] == ["docker.io/gc/two:1"]
    out, _ = legiond.cli("image", "gc")
    assert "removed 0 blobs" in out, out
    assert len(layers(legiond)) == 2
    legiond.cli("image", "rm", "gc/two:1")
    assert images(legiond) == []
    _, err = legiond.cli("image", "inspect", "gc/two:1", check=1)
    assert "not found" in err or "no such" in err.lower(), err
    out, _ = legiond.cli("--json", "image", "gc")
    doc = json.loads(out)
    assert doc["blobsRemoved"] >= 3 and doc["layersRemoved"] == 2 and doc["bytesFreed"] > 0, doc
    assert blobs(legiond) == set() and layers(legiond) == set()
    _, err = legiond.cli("image", "rm", "gc/two:1", check=1)
    assert "gc/two" in err


def test_namespace_tokens_read_but_do_not_write(legiond, tmp_path, bb):
    st, body = legiond.http("POST", "/v1/namespaces/default/tokens", body={"description": "t"})
    assert st == 201, body
    tok = json.loads(body)["token"]
    img = Image([bb])
    path = str(tmp_path / "i.tar")
    write_docker_archive(path, [(img, ["ro/img:1"])])
    st, _ = legiond.http("POST", "/v1/images/import", body=open(path, "rb").read(), token=tok)
    assert st == 403
    st, _ = legiond.http("POST", "/v1/images/pull", body={"image": "127.0.0.1:1/x:1"}, token=tok)
    assert st == 403
    st, _ = legiond.http("POST", "/v1/images/gc", token=tok)
    assert st == 403
    legiond.cli("image", "import", path)
    st, body = legiond.http("GET", "/v1/images", token=tok)
    assert st == 200 and len(json.loads(body)["items"]) == 1
    st, _ = legiond.http("DELETE", "/v1/images/ro/img:1", token=tok)
    assert st == 403
    assert len(images(legiond)) == 1


# ---- pull from docker-registry -----------------------------------------------------------------

def test_pull_anonymous_by_tag_and_digest(legiond, tmp_path, bb):
    img = Image([bb, tar_layer([("etc", "dir"), ("etc/motd", "file", b"pulled\n")])], config=CONFIG,
                style="docker")
    with Registry(str(tmp_path)) as reg:
        ref = reg.push(img, "team/busybox", "1")
        out, err = pull(legiond, ref)
        assert f"pulled {ref}" in out, (out, err)
        doc = inspect(legiond, ref)
        assert doc["id"] == img.id and doc["digest"] == img.digest, doc
        assert doc["config"]["entrypoint"] == ["/bin/sh", "-c"] and doc["config"]["user"] == "1000:1000"
        assert img.digest.split(":")[1] in blobs(legiond)
        # Again: everything is there already.
        pull(legiond, ref)
        # By digest.
        out, _ = pull(legiond, f"{reg.host}/team/busybox@{img.digest}")
        assert "pulled" in out
        # Over the HTTP API, plain JSON.
        st, body = legiond.http("POST", "/v1/images/pull", body={"image": ref}, timeout=120)
        assert st == 201 and json.loads(body)["id"] == img.id, body
        # NDJSON: download progress for the blobs, then the image.
        st, body = legiond.http("POST", "/v1/images/pull", body={"image": f"{reg.host}/team/busybox:1"},
                                headers={"Accept": "application/x-ndjson"}, timeout=120)
        lines = [json.loads(x) for x in body.decode().splitlines()]
        assert st == 200 and lines[-1]["image"]["id"] == img.id, lines
        # Unknown tag and repository.
        _, err = pull(legiond, f"{reg.host}/team/busybox:nope", check=1)
        assert "not found" in err and reg.host in err, err
        st, body = legiond.http("POST", "/v1/images/pull", body={"image": f"{reg.host}/nobody/here:1"})
        assert st == 404, body


def test_pull_again_leaves_the_old_image_dangling(legiond, tmp_path, bb):
    """web:1 pushed again with other content and pulled: the image the tag
    left stays, untagged (<none>), found by id, until GC (nothing pins it
    here) or `image rm` by id removes it."""
    old = Image([bb, tar_layer([("v", "file", b"old\n")])], config=CONFIG)
    new = Image([bb, tar_layer([("v", "file", b"new\n")])], config=CONFIG)
    other = Image([bb, tar_layer([("v", "file", b"other\n")])], config=CONFIG)
    with Registry(str(tmp_path)) as reg:
        ref = reg.push(old, "team/web", "1")
        pull(legiond, ref)
        reg.push(new, "team/web", "1")
        pull(legiond, ref)
        assert inspect(legiond, ref)["id"] == new.id
        doc = inspect(legiond, old.id)
        assert doc["id"] == old.id and doc["names"] == [] and doc["dangling"] is True, doc
        assert inspect(legiond, ref)["dangling"] is False
        out, _ = legiond.cli("image", "ls")
        row = [x for x in out.splitlines() if old.id[7:19] in x]
        assert len(row) == 1 and row[0].split()[0] == "<none>", out
        # GC: nothing uses it, so it goes, with the layer it alone had.
        out, _ = legiond.cli("--json", "image", "gc")
        doc = json.loads(out)
        assert doc["imagesRemoved"] == 1 and doc["layersRemoved"] == 1, doc
        _, err = legiond.cli("image", "inspect", old.id, check=1)
        assert "not found" in err, err
        assert inspect(legiond, ref)["id"] == new.id
        # Remove by id: a dangling image goes at once.
        reg.push(other, "team/web", "1")
        pull(legiond, ref)
        assert inspect(legiond, new.id)["dangling"] is True
        legiond.cli("image", "rm", new.id)
        _, err = legiond.cli("image", "inspect", new.id, check=1)
        assert "not found" in err, err
        legiond.cli("image", "rm", ref)
        legiond.cli("image", "gc")
        assert images(legiond) == [] and layers(legiond) == set()


def test_concurrent_pulls_and_gc(legiond, tmp_path, bb):
    imgs = [Image([bb, tar_layer([("n", "file", str(i).encode())])], config=CONFIG) for i in range(3)]
    with Registry(str(tmp_path)) as reg:
        refs = [reg.push(img, "many", str(i)) for i, img in enumerate(imgs)]
        results = []

        def go(ref, ndjson):
            h = {"Accept": "application/x-ndjson"} if ndjson else {}
            results.append(legiond.http("POST", "/v1/images/pull", body={"image": ref}, headers=h, timeout=120))

        threads = [threading.Thread(target=go, args=(refs[i % 3], i % 2 == 0)) for i in range(8)]
        threads.append(threading.Thread(target=lambda: results.append(legiond.http("POST", "/v1/images/gc"))))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(st in (200, 201) for st, _ in results), results
        for st, body in results:  # the NDJSON answers end with the image, not an error
            last = json.loads(body.decode().splitlines()[-1])
            assert "image" in last or "id" in last or "blobsRemoved" in last, body
        assert sorted(i["id"] for i in images(legiond)) == sorted(img.id for img in imgs)
        for img, ref in zip(imgs, refs):
            assert inspect(legiond, ref)["id"] == img.id


def test_pull_index_resolves_linux_amd64_with_zstd_layers(legiond, tmp_path, bb):
    amd = Image([bb, tar_layer([("arch", "file", b"amd64\n")])], config=CONFIG, compression="zstd")
    arm = Image([tar_layer([("arch", "file", b"arm64\n")])], arch="arm64")
    with Registry(str(tmp_path)) as reg:
        ref, idx_digest = reg.push_index("multi", "1", [arm, amd])
        pull(legiond, ref)
        doc = inspect(legiond, ref)
        assert doc["id"] == amd.id and doc["digest"] == amd.digest and doc["architecture"] == "amd64"
        assert arm.config_digest.split(":")[1] not in blobs(legiond)
        # A Docker manifest list too.
        amd2 = Image([bb], config={"Cmd": ["true"]}, style="docker")
        arm2 = Image([bb], config={"Cmd": ["false"]}, style="docker", arch="arm64")
        ref2, _ = reg.push_index("list", "1", [arm2, amd2], style="docker")
        pull(legiond, ref2)
        assert inspect(legiond, ref2)["id"] == amd2.id
        # No linux/amd64 at all: a clear error naming what there is.
        arm3 = Image([tar_layer([("x", "file", b"x")])], arch="arm64")
        s390 = Image([tar_layer([("y", "file", b"y")])], arch="s390x")
        ref3, _ = reg.push_index("armonly", "1", [arm3, s390])
        _, err = pull(legiond, ref3, check=1)
        assert "linux/amd64" in err and "linux/arm64" in err and "linux/s390x" in err, err
        st, body = legiond.http("POST", "/v1/images/pull", body={"image": ref3})
        assert st == 422, body


def test_pull_corrupt_blob_stores_nothing(legiond, tmp_path, bb):
    img = Image([bb, tar_layer([("f", "file", b"original content")])], config=CONFIG)
    with Registry(str(tmp_path)) as reg:
        ref = reg.push(img, "corrupt", "1")
        bad = img.layer_descs[1]["digest"]
        p = reg.blob_path(bad)
        data = bytearray(open(p, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(p, "wb").write(bytes(data))
        _, err = pull(legiond, ref, check=1)
        assert "digest" in err.lower() or "mismatch" in err.lower(), err
        assert images(legiond) == []
        assert bad.split(":")[1] not in blobs(legiond)
        assert img.digest.split(":")[1] not in blobs(legiond)
        st, body = legiond.http("POST", "/v1/images/pull", body={"image": ref})
        assert st == 400, body
        legiond.cli("image", "gc")
        assert blobs(legiond) == set() and layers(legiond) == set()


def test_pull_basic_auth(legiond, tmp_path, bb):
    img = Image([bb], config=CONFIG)
    with Registry(str(tmp_path), auth="basic") as reg:
        ref = reg.push(img, "private/img", "1")
        _, err = pull(legiond, ref, check=1)
        assert f"authentication to {reg.host} failed" in err, err
        _, err = pull(legiond, ref, "--username", reg.username, password="wrong", check=1)
        assert f"authentication to {reg.host} failed" in err and "401" in err, err
        assert "wrong" not in err
        st, body = legiond.http("POST", "/v1/images/pull",
                                body={"image": ref, "username": reg.username, "password": "wrong"})
        assert st == 502 and json.loads(body)["error"]["code"] == "RegistryAuthFailed", body
        out, _ = pull(legiond, ref, "--username", reg.username, password=reg.password)
        assert "pulled" in out
        assert inspect(legiond, ref)["id"] == img.id


def test_pull_bearer_token_auth(legiond, tmp_path, bb):
    img = Image([bb], config=CONFIG, compression="zstd")
    with Registry(str(tmp_path), auth="token") as reg:
        ref = reg.push(img, "tok/img", "7")
        before = reg.token_server.requests
        out, _ = pull(legiond, ref, "--username", reg.username, password=reg.password)
        assert "pulled" in out
        assert reg.token_server.requests == before + 1  # one token for the whole pull
        assert inspect(legiond, ref)["id"] == img.id
        _, err = pull(legiond, ref, "--username", reg.username, password="nope", check=1)
        assert f"authentication to {reg.host} failed" in err and "token server" in err, err
        _, err = pull(legiond, ref, check=1)
        assert f"authentication to {reg.host} failed" in err, err


def test_pull_unreachable_registry(legiond):
    port = closed_port()
    _, err = pull(legiond, f"127.0.0.1:{port}/x/y:1", check=1)
    assert f"127.0.0.1:{port}" in err and "connect" in err, err
    st, body = legiond.http("POST", "/v1/images/pull", body={"image": f"127.0.0.1:{port}/x/y:1"})
    assert st == 502 and json.loads(body)["error"]["code"] == "RegistryUnavailable", body
    assert images(legiond) == []


def test_pull_bad_requests(legiond):
    for body, what in [({}, "image"), ({"image": 5}, "image"), ({"image": "a", "extra": 1}, "extra"),
                       ({"image": "a", "insecure": "yes"}, "insecure"), ({"image": "a", "password": "p"}, "username"),
                       ({"image": "Bad Ref!"}, "")]:
        st, out = legiond.http("POST", "/v1/images/pull", body=body)
        assert st == 400, (body, st, out)
        assert what in json.loads(out)["error"]["message"], out
    st, _ = legiond.http("POST", "/v1/images/pull", body=b"not json")
    assert st == 400


# ---- pull from a fake registry: redirects, lies, schema 1 ------------------------------------------

class FakeRegistry:
    """Serves one image at /v2/fake/img/manifests/1 behind basic auth and
    redirects blob requests to a second server (another origin) that
    records the headers it gets. `mode` bends the rules."""

    def __init__(self, img, user="u", password="p", mode="ok"):
        self.img, self.mode = img, mode
        self.expect = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.storage_headers = []
        fake = self

        class Storage(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.storage_headers.append(dict(self.headers))
                d = self.path.rsplit("/", 1)[-1]
                data = fake.img.blobs.get(d)
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Api(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != fake.expect:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Negotiate xyz' if fake.mode == "weird-challenge"
                                     else 'Basic realm="fake"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/manifests/" in self.path:
                    body = fake.img.manifest_bytes
                    digest = fake.img.digest
                    mt = fake.img.manifest["mediaType"]
                    if fake.mode == "schema1":
                        body = json.dumps({"schemaVersion": 1, "name": "fake/img", "tag": "1",
                                           "fsLayers": [], "history": []}).encode()
                        mt = "application/vnd.docker.distribution.manifest.v1+prettyjws"
                        digest = "sha256:" + hashlib.sha256(body).hexdigest()
                    if fake.mode == "lying-digest":
                        digest = "sha256:" + "0" * 64
                    if fake.mode == "huge-manifest":
                        body = b" " * (5 << 20)
                    if fake.mode == "bad-layer-type":
                        m = json.loads(body)
                        m["layers"][0]["mediaType"] = "application/x-evil"
                        body = json.dumps(m).encode()
                        digest = "sha256:" + hashlib.sha256(body).hexdigest()
                    self.send_response(200)
                    self.send_header("Content-Type", mt)
                    self.send_header("Docker-Content-Digest", digest)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if "/blobs/" in self.path:
                    loc = f"http://127.0.0.1:{fake.storage.server_port}/data/{self.path.rsplit('/', 1)[-1]}"
                    if fake.mode == "redirect-file":
                        loc = "file:///etc/passwd"
                    if fake.mode == "redirect-loop":
                        loc = self.path
                    self.send_response(307)
                    self.send_header("Location", loc)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(404)
                self.end_headers()

        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
        self.host = f"127.0.0.1:{self.api.server_port}"
        for s in (self.storage, self.api):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in (self.api, self.storage):
            s.shutdown()
            s.server_close()


def test_pull_redirected_blobs_get_no_credentials(legiond, bb):
    img = Image([bb], config=CONFIG)
    fake = FakeRegistry(img)
    try:
        pull(legiond, f"{fake.host}/fake/img:1", "--username", "u", password="p")
        assert inspect(legiond, f"{fake.host}/fake/img:1")["id"] == img.id
        assert len(fake.storage_headers) == 2  # the config and the layer
        assert all("Authorization" not in h for h in fake.storage_headers), fake.storage_headers
    finally:
        fake.close()


@pytest.mark.parametrize("mode,status,words", [
    ("lying-digest", 400, "digest mismatch"),
    ("schema1", 422, "schema 1"),
    ("huge-manifest", 413, "larger than"),
    ("bad-layer-type", 422, "unsupported media type"),
    ("weird-challenge", 422, "unsupported scheme"),
    ("redirect-file", 502, "not https"),
    ("redirect-loop", 502, "too many redirects"),
])
def test_pull_hostile_registry(legiond, bb, mode, status, words):
    img = Image([bb], config=CONFIG)
    fake = FakeRegistry(img, mode=mode)
    try:
        _, err = pull(legiond, f"{fake.host}/fake/img:1", "--username", "u", password="p", check=1)
        assert words in err, err
        st, body = legiond.http("POST", "/v1/images/pull",
                                body={"image": f"{fake.host}/fake/img:1", "username": "u", "password": "p"})
        assert st == status, body
        assert images(legiond) == [] and fake.storage_headers == []
    finally:
        fake.close()
