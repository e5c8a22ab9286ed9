"""A legiond as another node's registry mirror (docs/lazy-images.md,
"Fetching from another legiond"): the read-only blob routes at /v2 serve
what the node holds -- image store blobs, the small files of lazy layers,
and lazy layers' BLOBs assembled from verified chunks -- whole or by range,
to the API's token (Bearer, or Basic with the token as password, which is
what the registry client sends after the Basic challenge)."""
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from oci_kit import Registry, busybox_layer, free_port
# Fixtures: a registry, and nodes with lazy images on, checked for mounts left.
from test_image_convert import OTHER, api, data_image, hexes, inspect, nodes, publish, reg, run_pod, top  # noqa: F401
from test_legiond import BUILD, LEGIOND

DRIVER = os.path.abspath(os.path.join(BUILD, "src", "image", "registry-driver"))

# Chunk-sized (64 KiB) blocks, no two alike: every chunk is its own.
BIG = b"".join(hashlib.sha256(b"peer-%d" % i).digest() * 2048 for i in range(40))    # 2.5 MiB
SMALL = b"small file\n"


def v2(d, method, path, headers=None, auth="bearer"):
    """(status, headers, body) of a raw request: path is sent as it is."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
    h = dict(headers or {})
    if auth == "bearer":
        h["Authorization"] = "Bearer " + d.token
    elif auth == "basic":
        h["Authorization"] = "Basic " + base64.b64encode(b"anyone:" + d.token.encode()).decode()
    elif auth:
        h["Authorization"] = auth
    c.request(method, path, headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def image(files=(("big", BIG), ("small", SMALL))):
    return data_image(files, base=busybox_layer())


def converted(d, reg, repo="peer/one"):
    """img pushed to reg, pulled whole on d and converted there: returns
    (img, {layer hex: lazy/layers/<hex>/source.json})."""
    img = image()
    ref = reg.push(img, repo, "1")
    d.cli("image", "pull", ref, "--lazy", "never", timeout=180)
    d.cli("image", "convert", ref, timeout=300)
    srcs = {}
    for l in img.manifest["layers"]:
        h = l["digest"].split(":")[1]
        srcs[h] = json.load(open(os.path.join(d.home, "lazy", "layers", h, "source.json")))
    return img, srcs


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_serves_blobs_and_lazy_layers(nodes, reg):
    a = nodes("a")
    img, srcs = converted(a, reg)
    # The image store's blobs: the config (and the manifest) by digest.
    cfg = img.manifest["config"]["digest"]
    st, h, body = v2(a, "GET", f"/v2/any/name/blobs/{cfg}")
    assert st == 200 and sha(body) == cfg, (st, body[:200])
    assert h["docker-content-digest"] == cfg and h["content-type"] == "application/octet-stream"
    # A converted layer's small files by the sha256 of their content.
    data_hex = img.manifest["layers"][1]["digest"].split(":")[1]
    for name in ("meta.erofs", "chunks"):
        want = open(os.path.join(a.home, "lazy", "layers", data_hex, name), "rb").read()
        st, _, body = v2(a, "GET", f"/v2/x/blobs/{sha(want)}")
        assert st == 200 and body == want, (name, st)
    # The BLOB, which this node does not keep as a file: made from the
    # chunk store, and it hashes to its digest.
    blob = srcs[data_hex]["digest"]
    st, h, whole = v2(a, "GET", f"/v2/x/blobs/{blob}")
    assert st == 200 and sha(whole) == blob, st
    assert len(whole) >= len(BIG) and BIG in whole  # one file, 64 KiB chunks, 4 KiB aligned
    st, h, body = v2(a, "HEAD", f"/v2/x/blobs/{blob}")
    assert st == 200 and body == b"" and int(h["content-length"]) == len(whole), (st, h)
    # Ranges across chunk boundaries equal the slices of the whole.
    rnd = random.Random(13)
    n = len(whole)
    cases = [(0, 0), (n - 1, n - 1), (65535, 65536), (0, n - 1), (4096, 300000)]
    cases += [(a_, min(n - 1, a_ + rnd.randrange(1, 400000))) for a_ in (rnd.randrange(n) for _ in range(12))]
    for lo, hi in cases:
        st, h, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": f"bytes={lo}-{hi}"})
        assert st == 206 and body == whole[lo:hi + 1], (lo, hi, st, len(body))
        assert h["content-range"] == f"bytes {lo}-{hi}/{n}", h
    # Open-ended, suffix, and an end past the last byte (clamped).
    st, h, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": f"bytes={n - 10}-"})
    assert st == 206 and body == whole[-10:]
    st, h, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": "bytes=-7"})
    assert st == 206 and body == whole[-7:] and h["content-range"] == f"bytes {n - 7}-{n - 1}/{n}"
    st, h, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": f"bytes={n - 3}-{n + 1000}"})
    assert st == 206 and body == whole[-3:]
    # Past the end: 416 with the size; a malformed or multiple range: the whole.
    for bad in (f"bytes={n}-{n + 5}", f"bytes={n + 100}-", "bytes=-0"):
        st, h, _ = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": bad})
        assert st == 416 and h["content-range"] == f"bytes */{n}", (bad, st, h)
    for ignored in ("bytes=5-3", "bytes=0-1,5-6", "items=0-3", "bytes=x-4", "bytes=-"):
        st, _, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": ignored})
        assert st == 200 and body == whole, (ignored, st)

    # Clients that go away in the middle of a body: the node goes on.
    for _ in range(5):
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        c.request("GET", f"/v2/x/blobs/{blob}", headers={"Authorization": "Bearer " + a.token})
        r = c.getresponse()
        assert r.status == 200 and len(r.read(1000)) == 1000
        c.close()
    st, _, body = v2(a, "GET", f"/v2/x/blobs/{blob}", {"Range": "bytes=0-99"})
    assert st == 206 and body == whole[:100]

    # The registry client (what another node's fetcher uses) reads it with
    # the token as password after the Basic challenge.
    env = dict(os.environ, LG_REG_USER="peer", LG_REG_PASS=a.token)
    p = subprocess.run([DRIVER, "range", f"127.0.0.1:{a.port}", "some/repo", blob, "70000", "200000"],
                       env=env, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == whole[70000:270000], p.stderr
    p = subprocess.run([DRIVER, "get", f"127.0.0.1:{a.port}", "some/repo", blob, str(n)],
                       env=env, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == whole, p.stderr
    env["LG_REG_PASS"] = "wrong"
    p = subprocess.run([DRIVER, "range", f"127.0.0.1:{a.port}", "some/repo", blob, "0", "10"],
                       env=env, capture_output=True, timeout=60)
    assert p.returncode == 1 and b"ERR 13 " in p.stderr, p.stderr  # EACCES


def test_auth_and_hostile_paths(nodes, reg):
    a = nodes("a")
    img = image()
    ref = reg.push(img, "peer/two", "1")
    a.cli("image", "pull", ref, "--lazy", "never", timeout=180)
    cfg = img.manifest["config"]["digest"]
    path = f"/v2/r/blobs/{cfg}"
    # No token, a wrong one, a malformed Basic: 401 with the Basic challenge.
    for auth in (None, "Bearer nope", "Basic !!!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                 "Basic " + base64.b64encode(b"u:wrong").decode(), "Digest x"):
        for p in ("/v2/", path):
            st, h, body = v2(a, "GET", p, auth=auth)
            assert st == 401 and h.get("www-authenticate") == 'Basic realm="legiond"', (auth, p, st, h)
            assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
            assert cfg.encode() not in body
    st, h, body = v2(a, "GET", "/v2/")
    assert st == 200 and json.loads(body) == {} and h["docker-distribution-api-version"] == "registry/2.0"
    for auth in ("bearer", "basic"):
        st, _, body = v2(a, "GET", path, auth=auth)
        assert st == 200 and sha(body) == cfg, (auth, st)
    # Hostile and malformed: 400 or 404, never a file.
    cases = {
        "/v2/../": (404,), "/v2/../../etc/passwd": (404, 400), "/v2/x/blobs/..": (400,),
        "/v2/../blobs/" + cfg: (400,), "/v2/x/%2e%2e/blobs/" + cfg: (400,), "/v2/X/blobs/" + cfg: (400,),
        "/v2/x/blobs/sha256:" + "0" * 64: (404,), "/v2/x/blobs/sha256:" + "A" * 64: (400,),
        "/v2/x/blobs/sha256:" + "0" * 63: (400,), "/v2/x/blobs/sha512:" + "0" * 128: (400,),
        "/v2/x/blobs/" + cfg + "0": (400,), "/v2/x/blobs/" + "a" * 5000: (400, 414),
        "/v2/x/blobs/sha256:%2e%2e%2f%2e%2e%2fetc%2fpasswd": (400,), "/v2/x/blobs/%00": (400, 404),
        "/v2/x/manifests/latest": (404,), "/v2/x/blobs/uploads/": (404,), "/v2/blobs/" + cfg: (404,),
    }
    for p, want in cases.items():
        st, _, body = v2(a, "GET", p)
        assert st in want, (p, st, body[:200])
        assert b"root:" not in body
    st, _, _ = v2(a, "DELETE", path)
    assert st == 405
    st, _, _ = v2(a, "POST", "/v2/x/blobs/uploads/")
    assert st in (404, 405)
    # A blob that is a symlink in the store is not followed.
    link = os.path.join(a.home, "images", "blobs", "sha256", "1" * 64)
    os.symlink("/etc/passwd", link)
    try:
        st, _, body = v2(a, "GET", "/v2/x/blobs/sha256:" + "1" * 64)
        assert st == 404 and b"root:" not in body, st
    finally:
        os.unlink(link)


# ---- a node fetching from another: --registry-mirror ------------------------------------

def need_fetcher():
    p = subprocess.run([LEGIOND, "lazy-fetcher", "--help"], capture_output=True, text=True)
    if "lazy-fetcher" not in p.stdout + p.stderr or "--registry-mirror" not in \
            subprocess.run([LEGIOND, "--help"], capture_output=True, text=True).stdout:
        pytest.skip("this legiond has no lazy fetcher or no --registry-mirror yet")


class LyingPeer:
    """A registry that answers every blob range with as many wrong bytes
    (zeros, the worst lie: what a lazy read must never return) and counts
    the ranges it was asked; whole blobs it does not have (404)."""

    def __init__(self):
        peer = self
        self.ranges = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v2":
                    return self.reply(200, b"{}", {})
                rng = self.headers.get("Range", "")
                if "/blobs/" not in self.path or not rng.startswith("bytes="):
                    return self.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}', {})
                lo, hi = (int(x) for x in rng[6:].split("-"))
                peer.ranges += 1
                self.reply(206, b"\0" * (hi - lo + 1), {"Content-Range": f"bytes {lo}-{hi}/*"})

            def reply(self, code, body, headers):
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_mirror_ranges_skip_a_liar(tmp_path):
    """lg_mirrors_range (what the fetcher calls) on real servers: a liar
    first, then a registry used as a mirror. The liar's zeros are refused,
    the registry's bytes taken; the liar is not asked again (skipped 30 s),
    nor is a mirror that is down."""
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    r = Registry(str(tmp_path))
    liar = LyingPeer()
    try:
        data = BIG[:300000]
        digest = sha(data)
        r.push_blob("some/repo", digest, data)
        part = data[1000:71000]
        want = hashlib.sha256(part).hexdigest()

        def ranges(times, *mirrors):
            p = subprocess.run([DRIVER, "mirror-range", r.host, "x", digest, "1000", str(len(part)), want,
                                str(times), *mirrors], capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            return p.stdout.split("\n")[:-1]

        down = f"127.0.0.1:{free_port()}"
        assert ranges(3, f"127.0.0.1:{liar.port}", down, r.host) == ["ok"] * 3
        assert liar.ranges == 1
        # Only the liar: its bytes refused (EBADMSG), then nothing to try.
        assert ranges(2, f"127.0.0.1:{liar.port}") == ["fail 74", "fail 2"]
        assert liar.ranges == 2
    finally:
        liar.stop()
        r.stop()


def mirror_args(d, top):
    """--registry-mirror flags for node d, its token in a file (0600)."""
    path = os.path.join(str(top), f"token-{d.port}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (d.token + "\n").encode())
    os.close(fd)
    return ["--registry-mirror", f"127.0.0.1:{d.port}", "--registry-mirror-token-file", path]


FILES = [("big", BIG), ("other", OTHER), ("small", SMALL)]


def sums_script(names):
    return " ".join(f"sha256sum /data/{n};" for n in names) + " echo DONE $?"


def test_pod_reads_from_peer_with_registry_stopped(nodes, reg, top):
    need_fetcher()
    a = nodes("a")
    img = image(FILES)
    ref, _ = publish(a, reg, img, "peer/mirror")
    b = nodes("b", *mirror_args(a, top))
    _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last.get("lazy") is True, last
    for h in hexes(img):
        src = json.load(open(os.path.join(b.home, "lazy", "layers", h, "source.json")))
        assert src["registry"] == reg.host
        assert src["mirrors"] == [{"registry": f"127.0.0.1:{a.port}", "insecure": True, "username": "legion",
                                   "password": a.token}], src
    before = inspect(b, ref)["lazy"]["localBytes"]
    # The registry goes: every byte the pod reads comes from a.
    reg.stop()
    log = run_pod(b, "frompeer", ref, sums_script([n for n, _ in FILES]))
    for n, data in FILES:
        assert f"{hashlib.sha256(data).hexdigest()}  /data/{n}" in log, log
    assert "DONE 0" in log, log
    assert inspect(b, ref)["lazy"]["localBytes"] >= before + len(BIG) + len(OTHER)


def test_peer_is_a_cache(nodes, reg, top):
    """a pulled lazily and read nothing; b, with a as its mirror, reads:
    a fetches what b asks through its own fetcher and keeps it."""
    need_fetcher()
    pub = nodes("pub")
    img = image(FILES)
    ref, _ = publish(pub, reg, img, "peer/cache")
    a = nodes("a")
    _, last = api(a, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last.get("lazy") is True, last
    a_before = inspect(a, ref)["lazy"]["localBytes"]
    b = nodes("b", *mirror_args(a, top))
    _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last.get("lazy") is True, last
    log = run_pod(b, "big", ref, sums_script(["big"]))
    assert f"{hashlib.sha256(BIG).hexdigest()}  /data/big" in log and "DONE 0" in log, log
    # a has the big file now (b's reads went through a), not the other.
    a_after = inspect(a, ref)["lazy"]
    assert a_after["localBytes"] >= a_before + len(BIG), (a_before, a_after)
    assert a_after["localBytes"] < a_after["bytes"], a_after


def test_lying_peer_is_never_believed(nodes, reg, top):
    need_fetcher()
    a = nodes("a")
    img = image(FILES)
    ref, _ = publish(a, reg, img, "peer/liar")
    liar = LyingPeer()
    try:
        b = nodes("b", "--registry-mirror", f"127.0.0.1:{liar.port}")
        _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
        assert last.get("lazy") is True, last
        # The liar is asked first; its zeros fail verification, the
        # registry gives the right bytes.
        log = run_pod(b, "liar", ref, sums_script(["big"]))
        assert liar.ranges >= 1, "the mirror was never asked"
        assert f"{hashlib.sha256(BIG).hexdigest()}  /data/big" in log and "DONE 0" in log, log
        # Without the registry, what is not local fails; nothing reads the
        # liar's zeros.
        reg.stop()
        asked = liar.ranges
        log = run_pod(b, "liar2", ref, "sha256sum /data/other; echo DONE $?; "
                                       "dd if=/data/other bs=65536 2>&1 | od -An -tx1 | grep -c . ; true")
        assert hashlib.sha256(OTHER).hexdigest() not in log and "DONE 0" not in log, log
        assert hashlib.sha256(b"\0" * len(OTHER)).hexdigest() not in log, log
        assert "Input/output error" in log or "I/O error" in log, log
        del asked
    finally:
        liar.stop()


def test_small_blobs_from_peer(nodes, reg, top):
    """The registry lost the meta blob of the artifact: the lazy pull takes
    it from the mirror (verified) instead of falling back to a full pull."""
    need_fetcher()
    a = nodes("a")
    img = image(FILES)
    ref, _ = publish(a, reg, img, "peer/small")
    tag = "sha256-" + img.digest.split(":")[1]
    _, _, body = reg._request("GET", f"/v2/peer/small/manifests/{tag}",
                              headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    art = json.loads(body)["manifests"][0]["digest"]
    _, _, body = reg._request("GET", f"/v2/peer/small/manifests/{art}",
                              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    metas = [l["digest"] for l in json.loads(body)["layers"]
             if l["mediaType"] == "application/vnd.legion.erofs.meta.v1"]
    for m in metas:
        os.remove(reg.blob_path(m))
    b = nodes("b", *mirror_args(a, top))
    _, last = api(b, "POST", "/v1/images/pull", {"image": ref}, ndjson=True)
    assert last.get("lazy") is True, last
    log = run_pod(b, "small", ref, sums_script(["small"]))
    assert f"{hashlib.sha256(SMALL).hexdigest()}  /data/small" in log, log
