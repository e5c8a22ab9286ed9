"""The registry client (src/image/registry.h) end to end, through its
command-line driver (tests/e2e/registry_driver.c, built as
src/image/registry-driver) against Debian's docker-registry on 127.0.0.1
(anonymous, htpasswd, bearer tokens) and small fake servers of our own for
what docker-registry will not do: redirects, ignored ranges, silence."""
import hashlib
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import BUILD
from oci_kit import Image, Registry, busybox_layer, files_layer

DRIVER = os.path.abspath(os.path.join(BUILD, "src", "image", "registry-driver"))
ENOENT, EACCES, EINVAL, ERANGE, ETIMEDOUT, ECONNREFUSED, EPROTO, EBADMSG = 2, 13, 22, 34, 110, 111, 71, 74


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def drive(*args, env=None, timeout=60, input=None):
    """(returncode, stdout bytes, errno or 0, stderr text)."""
    import subprocess
    if not os.path.exists(DRIVER):
        pytest.fail(f"{DRIVER} is not built")
    e = dict(os.environ)
    for k in ("LG_REG_USER", "LG_REG_PASS", "LG_REG_CONNECT_MS", "LG_REG_REQUEST_MS", "LG_REG_ACCEPT"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([DRIVER, *map(str, args)], capture_output=True, env=e, timeout=timeout, input=input)
    err = p.stderr.decode(errors="replace")
    code = 0
    if p.returncode == 1 and err.startswith("ERR "):
        code = int(err.split()[1])
    return p.returncode, p.stdout, code, err


def ok(*args, **kw):
    rc, out, _, err = drive(*args, **kw)
    assert rc == 0, err
    return out


def fails(code, *args, **kw):
    rc, _, got, err = drive(*args, **kw)
    assert rc == 1 and got == code, (rc, got, err)
    return err


@pytest.fixture(scope="module")
def blob():
    # Not a multiple of anything, so the last range is odd-sized.
    return os.urandom(300_001)


@pytest.fixture(scope="module")
def anon(tmp_path_factory, blob):
    with Registry(str(tmp_path_factory.mktemp("anon"))) as reg:
        reg.push_blob("lazy/blobs", sha(blob), blob)
        yield reg


def test_ranges_start_middle_end(anon, blob):
    d = sha(blob)
    for off, n in [(0, 4096), (0, 1), (123_457, 65_536), (len(blob) - 4096, 4096), (len(blob) - 1, 1),
                   (0, len(blob))]:
        assert ok("range", anon.host, "lazy/blobs", d, off, n) == blob[off:off + n], (off, n)


def test_ranges_past_the_end_are_refused(anon, blob):
    d = sha(blob)
    err = fails(ERANGE, "range", anon.host, "lazy/blobs", d, len(blob), 10)
    assert "past the end" in err
    err = fails(ERANGE, "range", anon.host, "lazy/blobs", d, len(blob) - 10, 20)
    assert "past the end" in err
    # A read from 0 of more than the blob: the registry answers 206 with less.
    fails(ERANGE, "range", anon.host, "lazy/blobs", d, 0, len(blob) + 1)


def test_range_errors(anon, blob):
    fails(ENOENT, "range", anon.host, "lazy/blobs", sha(b"absent"), 0, 10)
    fails(EINVAL, "range", anon.host, "lazy/blobs", "sha256:1234", 0, 10)
    fails(EINVAL, "range", anon.host, "lazy/blobs", sha(blob), 0, 0)
    fails(EINVAL, "range", anon.host, "Bad/Repo", sha(blob), 0, 10)


def test_blob_get_and_exists(anon, blob):
    d = sha(blob)
    assert ok("exists", anon.host, "lazy/blobs", d).split() == [b"1", str(len(blob)).encode()]
    assert ok("exists", anon.host, "lazy/blobs", sha(b"nope")).strip() == b"0"
    assert ok("get", anon.host, "lazy/blobs", d, len(blob)) == blob
    fails(EBADMSG, "get", anon.host, "lazy/blobs", d, len(blob) - 1)


@pytest.fixture(scope="module")
def token_reg(tmp_path_factory, blob):
    with Registry(str(tmp_path_factory.mktemp("token")), auth="token") as reg:
        reg.push_blob("lazy/blobs", sha(blob), blob)
        yield reg


def creds(reg, password=None):
    return {"LG_REG_USER": reg.username, "LG_REG_PASS": password or reg.password}


def test_ranges_with_token_auth(token_reg, blob):
    d = sha(blob)
    assert ok("range", token_reg.host, "lazy/blobs", d, 1000, 5000, env=creds(token_reg)) == blob[1000:6000]
    # One client keeps its token: 20 reads, one token.
    before = token_reg.token_server.requests
    ok("ranges", token_reg.host, "lazy/blobs", d, 4096, 4096, 20, env=creds(token_reg))
    assert token_reg.token_server.requests - before == 1
    err = fails(EACCES, "range", token_reg.host, "lazy/blobs", d, 0, 10, env=creds(token_reg, "wrong"))
    assert "authentication" in err
    fails(EACCES, "range", token_reg.host, "lazy/blobs", d, 0, 10)


def test_ranges_from_threads(token_reg, blob):
    """A client per thread (as the fetcher's readers): 8 threads, 40
    random ranges each, every byte compared with a whole read."""
    ok("parallel", token_reg.host, "lazy/blobs", sha(blob), len(blob), 8, env=creds(token_reg), timeout=120)


def test_expired_token_is_fetched_again(blob):
    """A long-lived client (the fetcher's) whose token the registry stops
    taking: the next challenge is answered with a new token."""
    st = {"token": 1, "served": 0, "tokens": 0}

    def handle(h):
        if h.path.startswith("/token?"):
            st["tokens"] += 1
            body = json.dumps({"token": f"t{st['token']}"}).encode()
            h.send_response(200)
        elif h.headers.get("Authorization") == f"Bearer t{st['token']}":
            a, b = map(int, h.headers["Range"].split("=")[1].split("-"))
            body = blob[a:b + 1]
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {a}-{b}/{len(blob)}")
            st["served"] += 1
            if st["served"] % 2 == 0:
                st["token"] += 1  # the registry drops the token
        else:
            body = b""
            h.send_response(401)
            h.send_header("WWW-Authenticate", f'Bearer realm="http://{fake.host}/token",service="fake"')
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    fake = Fake(handle)
    try:
        ok("ranges", fake.host, "lazy/blobs", sha(blob), 10, 100, 6)
        assert st["served"] == 6 and st["tokens"] == 3, st
    finally:
        fake.close()


def test_ranges_with_basic_auth(tmp_path, blob):
    with Registry(str(tmp_path), auth="basic") as reg:
        reg.push_blob("lazy/blobs", sha(blob), blob)
        assert ok("range", reg.host, "lazy/blobs", sha(blob), 7, 70, env=creds(reg)) == blob[7:77]
        fails(EACCES, "range", reg.host, "lazy/blobs", sha(blob), 7, 70)


# ---- fake servers ------------------------------------------------------------

class Fake:
    """An HTTP server on 127.0.0.1 whose GETs handle(h) answers."""

    def __init__(self, handle):
        fake = self
        self.requests = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.requests.append((self.path, dict(self.headers)))
                handle(self)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.host = f"127.0.0.1:{self.srv.server_port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_range_follows_redirects(anon, blob):
    """Blob storage elsewhere (as S3-backed registries): the Range goes
    along to the redirected URL."""
    def handle(h):
        h.send_response(307)
        h.send_header("Location", f"http://{anon.host}{h.path}")
        h.send_header("Content-Length", "0")
        h.end_headers()
    front = Fake(handle)
    try:
        assert ok("range", front.host, "lazy/blobs", sha(blob), 5000, 3000) == blob[5000:8000]
        assert front.requests[0][1].get("Range") == "bytes=5000-7999"
    finally:
        front.close()


def test_range_ignored_or_wrong_is_refused(blob):
    mode = {}

    def handle(h):
        body = blob
        if mode["m"] == "whole":
            h.send_response(200)
        else:
            # Asked 0-99: 100 bytes that claim to be another range.
            body = blob[0:100]
            h.send_response(206)
            h.send_header("Content-Range", "bytes 50-99/%d" % len(blob))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    fake = Fake(handle)
    try:
        mode["m"] = "whole"
        err = fails(EPROTO, "range", fake.host, "lazy/blobs", sha(blob), 4096, 4096)
        assert "ignored the Range" in err
        # From 0, a whole blob larger than asked is no answer either.
        err = fails(EPROTO, "range", fake.host, "lazy/blobs", sha(blob), 0, 4096)
        assert "ignored the Range" in err
        # Read whole, it is.
        assert ok("range", fake.host, "lazy/blobs", sha(blob), 0, len(blob)) == blob
        mode["m"] = "other-range"
        fails(EPROTO, "range", fake.host, "lazy/blobs", sha(blob), 0, 100)
    finally:
        fake.close()


def test_referrers_api_is_asked_first(blob):
    """A registry with the OCI 1.1 referrers API answers the index itself;
    the tag schema is not asked."""
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": []}).encode()

    def handle(h):
        ok_ = h.path == f"/v2/lazy/app/referrers/{sha(blob)}"
        h.send_response(200 if ok_ else 404)
        h.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
        h.send_header("Content-Length", str(len(index) if ok_ else 0))
        h.end_headers()
        if ok_:
            h.wfile.write(index)
    fake = Fake(handle)
    try:
        rc, out, _, how = drive("referrers", fake.host, "lazy/app", sha(blob))
        assert rc == 0 and out == index and how.strip() == "api", how
        assert [p for p, _ in fake.requests] == [f"/v2/lazy/app/referrers/{sha(blob)}"]
    finally:
        fake.close()


def test_unreachable_registry_fails_in_bounded_time(blob):
    # Nothing listens: refused at once.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fails(ECONNREFUSED, "range", f"127.0.0.1:{port}", "lazy/blobs", sha(blob), 0, 10)

    # A listener that never answers (the kernel completes the handshake,
    # nobody reads): the request's total time runs out. The subprocess
    # timeout fails the test if the call hangs instead.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        host = f"127.0.0.1:{s.getsockname()[1]}"
        err = fails(ETIMEDOUT, "range", host, "lazy/blobs", sha(blob), 0, 10, env={"LG_REG_REQUEST_MS": "1500"},
                    timeout=30)
        assert host in err
    finally:
        s.close()

    # A server that starts its answer and stalls in the body.
    def handle(h):
        h.send_response(206)
        h.send_header("Content-Range", "bytes 0-9999/300001")
        h.send_header("Content-Length", "10000")
        h.end_headers()
        h.wfile.write(b"x" * 100)
        h.wfile.flush()
        time.sleep(8)
    fake = Fake(handle)
    try:
        fails(ETIMEDOUT, "range", fake.host, "lazy/blobs", sha(blob), 0, 10000, env={"LG_REG_REQUEST_MS": "1500"},
              timeout=30)
    finally:
        fake.close()


# ---- pull goes through the same client ------------------------------------------

def test_pull_with_token_auth(token_reg, tmp_path):
    img = Image([busybox_layer()])
    ref = token_reg.push(img, "lazy/pulled", "1")
    out = ok("pull", str(tmp_path / "store"), ref, env=creds(token_reg), timeout=120)
    assert out.decode().strip() == img.digest
    fails(EACCES, "pull", str(tmp_path / "store2"), ref, timeout=120)


def test_manifest_get(anon):
    img = Image([busybox_layer()])
    anon.push(img, "lazy/man", "v1")
    rc, out, _, err = drive("manifest-get", anon.host, "lazy/man", "v1")
    assert rc == 0, err
    assert out == img.manifest_bytes
    assert err.split() == [img.manifest["mediaType"], img.digest]
    assert ok("manifest-get", anon.host, "lazy/man", img.digest) == img.manifest_bytes
    fails(ENOENT, "manifest-get", anon.host, "lazy/man", "v2")
    fails(EINVAL, "manifest-get", anon.host, "lazy/man", "bad tag")


def test_manifest_push(token_reg, tmp_path):
    img = Image([busybox_layer()])
    for d, data in img.blobs.items():
        token_reg.push_blob("lazy/put", d, data)
    f = tmp_path / "m"
    f.write_bytes(img.manifest_bytes)
    c = creds(token_reg)
    mt = img.manifest["mediaType"]
    assert ok("manifest-put", token_reg.host, "lazy/put", "v1", mt, f, env=c).decode().strip() == img.digest
    assert ok("manifest-put", token_reg.host, "lazy/put", "-", mt, f, env=c).decode().strip() == img.digest
    assert ok("manifest-get", token_reg.host, "lazy/put", "v1", env=c) == img.manifest_bytes
    # The registry checks what the manifest names.
    other = Image([busybox_layer()], config={"Cmd": ["x"]})  # its config is not pushed
    f.write_bytes(other.manifest_bytes)
    err = fails(EINVAL, "manifest-put", token_reg.host, "lazy/put", "v2", mt, f, env=c)
    assert "MANIFEST_BLOB_UNKNOWN" in err or "BLOB_UNKNOWN" in err, err
    fails(EACCES, "manifest-put", token_reg.host, "lazy/put", "v3", mt, f)


# ---- push, referrers and the lazy artifact (docker-registry 2.8) --------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAZY = "application/vnd.legion.lazy.v1"


def test_blob_push(token_reg, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)  # over curl's 1 MiB Expect: 100-continue
    f = tmp_path / "b"
    f.write_bytes(data)
    assert ok("push", token_reg.host, "lazy/pushed", f, env=creds(token_reg)).decode().split() == \
        ["pushed", sha(data)]
    assert ok("push", token_reg.host, "lazy/pushed", f, env=creds(token_reg)).decode().split() == \
        ["present", sha(data)]
    assert ok("range", token_reg.host, "lazy/pushed", sha(data), len(data) - 5, 5, env=creds(token_reg)) == data[-5:]
    # The registry checks the digest.
    err = fails(EBADMSG, "push-as", token_reg.host, "lazy/pushed", sha(b"other"), f, env=creds(token_reg))
    assert "DIGEST_INVALID" in err
    # Pull-only credentials (none) may not push.
    fails(EACCES, "push", token_reg.host, "lazy/pushed", f)


def lazy_files(tmp_path, name, n_chunks=3, prefetch=True):
    """meta, chunks, blob, prefetch files of one layer (random content of
    the right sizes; the registry does not look inside)."""
    d = tmp_path / name
    d.mkdir()
    files = {"meta": os.urandom(8192), "chunks": os.urandom(32 + 48 * n_chunks),
             "blob": os.urandom(4096 * n_chunks + 100)}
    if prefetch:
        files["prefetch"] = os.urandom(4 * n_chunks)
    paths = {}
    for k, v in files.items():
        (d / k).write_bytes(v)
        paths[k] = str(d / k)
    return files, paths


def layer_args(img, i, paths):
    diff_id = img.config["rootfs"]["diff_ids"][i]
    return [img.layer_descs[i]["digest"], diff_id, paths["meta"], paths["chunks"], paths["blob"],
            paths.get("prefetch", "-")]


@pytest.mark.parametrize("style", ["oci", "docker"])
def test_lazy_artifact_on_docker_registry(token_reg, tmp_path, style):
    """docker-registry 2.8.2 takes the artifact manifest (its config media
    type, artifactType and subject) and the tag-schema index; the artifact
    is found again; the image still pulls with the referrers tag there."""
    repo = f"lazy/app-{style}"
    img = Image([busybox_layer(), files_layer({"etc/extra": "x"})], style=style)
    ref = token_reg.push(img, repo, "1")
    f0, p0 = lazy_files(tmp_path, "l0")
    f1, p1 = lazy_files(tmp_path, "l1", prefetch=False)
    c = creds(token_reg)
    fails(ENOENT, "lazy-find", token_reg.host, repo, img.digest, env=c)
    digest = ok("lazy-push", token_reg.host, repo, img.digest, 65536, *layer_args(img, 0, p0),
                *layer_args(img, 1, p1), env=c).decode().strip()

    man = json.loads(ok("manifest-get", token_reg.host, repo, digest, env=dict(c, LG_REG_ACCEPT=OCI_MANIFEST)))
    assert man["mediaType"] == OCI_MANIFEST and man["artifactType"] == LAZY
    assert man["config"]["mediaType"] == "application/vnd.legion.lazy.config.v1+json"
    assert man["subject"] == {"mediaType": img.manifest["mediaType"], "digest": img.digest,
                              "size": len(img.manifest_bytes)}
    assert [(x["mediaType"].rsplit(".", 2)[-2], x["digest"]) for x in man["layers"]] == [
        ("meta", sha(f0["meta"])), ("chunks", sha(f0["chunks"])), ("blob", sha(f0["blob"])),
        ("prefetch", sha(f0["prefetch"])),
        ("meta", sha(f1["meta"])), ("chunks", sha(f1["chunks"])), ("blob", sha(f1["blob"]))]

    rc, out, _, how = drive("referrers", token_reg.host, repo, img.digest, env=c)
    assert rc == 0 and how.strip() == "tag", how
    index = json.loads(out)
    assert index["mediaType"] == OCI_INDEX
    assert [(m["digest"], m["artifactType"]) for m in index["manifests"]] == [(digest, LAZY)]

    found = json.loads(ok("lazy-find", token_reg.host, repo, img.digest, env=c))
    assert found["digest"] == digest and found["chunkSize"] == 65536
    l0, l1 = found["layers"]
    assert l0["layer"] == img.layer_descs[0]["digest"] and l0["diffId"] == img.config["rootfs"]["diff_ids"][0]
    assert (l0["blob"], l0["blobSize"]) == (sha(f0["blob"]), len(f0["blob"]))
    assert (l0["prefetch"], l0["prefetchSize"]) == (sha(f0["prefetch"]), len(f0["prefetch"]))
    assert (l1["chunks"], l1["chunksSize"]) == (sha(f1["chunks"]), len(f1["chunks"]))
    assert l1["prefetch"] == ""
    # The blob reads by range where the fetcher will read it.
    assert ok("range", token_reg.host, repo, l0["blob"], 4096, 4096, env=c) == f0["blob"][4096:8192]

    # Pushed again with another prefetch record, next to someone else's
    # artifact: ours is replaced, theirs stays.
    other = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/example.sig",
             "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(b"{}"), "size": 2},
             "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(b"{}"), "size": 2}],
             "subject": man["subject"]}
    token_reg.push_blob(repo, sha(b"{}"), b"{}")
    other_bytes = json.dumps(other).encode()
    token_reg.push_manifest(repo, sha(other_bytes), other_bytes, OCI_MANIFEST)
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": sha(other_bytes), "size": len(other_bytes),
                               "artifactType": "application/example.sig"})
    token_reg.push_manifest(repo, "sha256-" + img.digest[7:], json.dumps(index).encode(), OCI_INDEX)
    (tmp_path / "l0" / "prefetch").write_bytes(os.urandom(8))
    digest2 = ok("lazy-push", token_reg.host, repo, img.digest, 65536, *layer_args(img, 0, p0),
                 *layer_args(img, 1, p1), env=c).decode().strip()
    assert digest2 != digest
    index = json.loads(ok("referrers", token_reg.host, repo, img.digest, env=c))
    assert sorted((m["digest"], m["artifactType"]) for m in index["manifests"]) == sorted(
        [(sha(other_bytes), "application/example.sig"), (digest2, LAZY)])
    assert json.loads(ok("lazy-find", token_reg.host, repo, img.digest, env=c))["digest"] == digest2

    # A plain pull of the image is not disturbed by the referrers tag.
    out = ok("pull", str(tmp_path / "store"), ref, env=c, timeout=120)
    assert out.decode().strip() == img.digest


def test_lazy_artifact_needs_its_image(anon, tmp_path):
    _, p = lazy_files(tmp_path, "l")
    absent = sha(b"no such manifest")
    err = fails(ENOENT, "lazy-push", anon.host, "lazy/none", absent, 65536, sha(b"l"), sha(b"d"), p["meta"],
                p["chunks"], p["blob"], "-")
    assert "the image of the lazy artifact" in err
