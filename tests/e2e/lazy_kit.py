"""Test kit for lazy images (issue 13, docs/lazy-images.md): what the lazy
image tests need besides oci_kit and the harness.

- require(): skip unless this machine can run lazy images at all
  (docker-registry, busybox-static, /dev/fuse, mkfs.erofs and a kernel that
  mounts an EROFS image from a regular file).
- RegistryProxy: an HTTP proxy in front of a Registry, on its own loopback
  port, that the lazily pulling legiond is pointed at. It counts the bytes
  of every blob it serves, can hold blob range requests (so that a read is
  certainly in flight when the test acts), and can be stopped and started
  again on the same port (a registry outage as the fetcher sees it).
- Node helpers: a legiond with lazy images (no background hydration, so
  that what is local is what was read), publish() (push, full pull and
  `legion image convert --push` on the converting node), lazy_pull(),
  the store's and fetcher's files, the node's mounts.
- What the image holds: host_sums() from the layer tars; read_files()
  reads files of a mount in a child process (errno kept, bounded in time).
- The lazy artifact in the registry: artifact(), tamper_artifact(),
  LGCHUNK1 chunk tables parsed and written.
"""
import ctypes
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import oci_kit
from apps_kit import feature_flags
from test_legiond import LEGIOND, Legiond, free_port, kill_legiond
from test_pods_runtime import PODS, create, get

ARTIFACT_TYPE = "application/vnd.legion.lazy.v1"
CONFIG_TYPE = "application/vnd.legion.lazy.config.v1+json"
META_TYPE = "application/vnd.legion.erofs.meta.v1"
CHUNKS_TYPE = "application/vnd.legion.erofs.chunks.v1"
BLOB_TYPE = "application/vnd.legion.erofs.blob.v1"

# busybox applets the readers in sandboxes use (oci_kit's list lacks them).
READER_APPLETS = ["sha256sum", "find", "xargs", "sort", "cut", "stat", "cmp", "od"]


# ---- what this machine must have ------------------------------------------------

_mount_ok = None


def workdir(prefix):
    """A new directory for homes and registries, not on tmpfs: EROFS mounts
    a regular file only from a file system that reads pages for it (tmpfs
    gives ENOTBLK), and a Debian /tmp may be tmpfs."""
    parent = None
    fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", tempfile.gettempdir()], capture_output=True,
                        text=True).stdout.strip()
    if fs == "tmpfs":
        parent = "/var/tmp"
    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def erofs_file_mount():
    """None if this kernel mounts an EROFS image from a regular file (what
    lazy layers are), else why not. Tried once, with mount(2) as legiond
    does (mount(8) would make a loop device)."""
    global _mount_ok
    if _mount_ok is not None:
        return _mount_ok or None
    if "erofs" not in open("/proc/filesystems").read():
        _mount_ok = "the kernel has no erofs (modprobe erofs)"
        return _mount_ok
    top = workdir("lg-erofs-probe-")
    try:
        src, img, mnt = os.path.join(top, "src"), os.path.join(top, "img"), os.path.join(top, "mnt")
        os.makedirs(src)
        os.makedirs(mnt)
        open(os.path.join(src, "f"), "w").write("probe\n")
        subprocess.run(["mkfs.erofs", "--quiet", img, src], check=True, capture_output=True)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(img.encode(), mnt.encode(), b"erofs", 1, None) != 0:  # MS_RDONLY
            e = ctypes.get_errno()
            _mount_ok = (f"this kernel cannot mount an EROFS image from a regular file ({os.strerror(e)}; "
                         "needs Linux >= 6.12 with CONFIG_EROFS_FS_BACKED_BY_FILE)")
        else:
            ok = open(os.path.join(mnt, "f")).read() == "probe\n"
            libc.umount2(mnt.encode(), 2)  # MNT_DETACH
            _mount_ok = "" if ok else "an EROFS file-backed mount read wrong bytes"
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return _mount_ok or None


def require():
    """Skip (with what is missing) unless this machine can run the tests."""
    if os.geteuid() != 0:
        pytest.skip("lazy image tests need root (mounts, namespaces)")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    if not shutil.which("docker-registry"):
        pytest.skip("needs docker-registry (Debian package docker-registry)")
    if not os.path.exists(oci_kit.BUSYBOX):
        pytest.skip("needs busybox-static")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse (modprobe fuse)")
    if not shutil.which("mkfs.erofs"):
        pytest.skip("needs mkfs.erofs (Debian package erofs-utils)")
    why = erofs_file_mount()
    if why:
        pytest.skip(why)


# ---- images -----------------------------------------------------------------------

def reader_layer():
    """busybox with the applets the readers need."""
    return oci_kit.busybox_layer([(f"bin/{a}", "symlink", "busybox") for a in READER_APPLETS])


def data_layer(files, tag="data"):
    """A layer of data files {name: bytes} under /data, plus a marker file
    naming the layer (so that two data layers with the same files differ)."""
    entries = [("data", "dir"), (f"data/.layer-{tag}", "file", tag.encode() + b"\n")]
    entries += [(f"data/{n}", "file", b) for n, b in sorted(files.items())]
    return oci_kit.tar_layer(entries)


def random_files(n, size, prefix="f"):
    """{name: bytes}: n files of size random bytes each (incompressible, so
    that no two chunks of them are alike)."""
    return {f"{prefix}{i:02d}.bin": os.urandom(size) for i in range(n)}


def layer_hexes(img):
    """The hex of each layer's (compressed) digest: its store directory
    name, images/layers/<hex>/."""
    return [d["digest"].split(":")[1] for d in img.layer_descs]


def host_sums(img):
    """{path: sha256 hex} of every regular file of the image's root (layers
    applied in order, whiteouts honoured), computed from the layer tars."""
    sums = {}
    for layer in img.layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:
            for m in t.getmembers():
                path = m.name.lstrip("./")
                base = os.path.basename(path)
                if base == ".wh..wh..opq":
                    d = os.path.dirname(path) + "/"
                    sums = {p: s for p, s in sums.items() if not p.startswith(d)}
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(os.path.dirname(path), base[4:])
                    sums = {p: s for p, s in sums.items() if p != gone and not p.startswith(gone + "/")}
                    continue
                if m.isreg():
                    sums[path] = hashlib.sha256(t.extractfile(m).read()).hexdigest()
                elif m.islnk():
                    sums[path] = sums[m.linkname.lstrip("./")]
                else:
                    sums.pop(path, None)
    return sums


def layer_files(img, i):
    """{path: bytes} of the regular files of layer i."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(img.layers[i])) as t:
        for m in t.getmembers():
            if m.isreg():
                out[m.name] = t.extractfile(m).read()
    return out


# ---- a proxy in front of the registry ----------------------------------------------

class RegistryProxy:
    """HTTP proxy on 127.0.0.1:<port> forwarding to a registry. A node that
    pulls HOST/repo:tag with HOST = proxy.host reaches the registry only
    through it (the lazy layer's source then names the proxy).

    served[digest]: body bytes of blob GETs (range or whole) it answered.
    requests: (method, path, range header, status) of each request.
    hold(): blob GETs with a Range header wait (held counts them) until
    release(). stop() closes the port and every open connection (the
    registry as gone as can be); start() serves the same port again."""

    def __init__(self, upstream_host):
        self.upstream = upstream_host
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.served = {}
        self.requests = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0
        self.conns = set()
        self.httpd = None
        self.start()

    def start(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with proxy.lock:
                    proxy.conns.add(self.connection)

            def finish(self):
                with proxy.lock:
                    proxy.conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def forward(self):
                rng = self.headers.get("Range")
                is_blob = "/blobs/sha256:" in self.path and self.command == "GET"
                if is_blob and rng and not proxy.gate.is_set():
                    with proxy.lock:
                        proxy.held += 1
                    proxy.gate.wait()
                body = None
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    body = self.rfile.read(n)
                up = http.client.HTTPConnection(proxy.upstream, timeout=120)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                hdrs["Host"] = proxy.upstream
                try:
                    up.request(self.command, self.path, body=body, headers=hdrs)
                    r = up.getresponse()
                    data = r.read()
                except OSError:
                    self.send_error(502)
                    return
                finally:
                    up.close()
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, rng, r.status))
                    if is_blob and r.status in (200, 206):
                        digest = self.path.rsplit("/", 1)[1]
                        proxy.served[digest] = proxy.served.get(digest, 0) + len(data)
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, proxy.host)
                    self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", r.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.gate.set()

    def hold(self):
        with self.lock:
            self.held = 0
        self.gate.clear()

    def release(self):
        self.gate.set()

    def blob_bytes(self, digest):
        with self.lock:
            return self.served.get(digest, 0)

    def range_gets(self):
        with self.lock:
            return [r for r in self.requests if r[0] == "GET" and r[2]]


# ---- nodes ---------------------------------------------------------------------------

def legiond_help():
    return subprocess.run([LEGIOND, "--help"], capture_output=True, text=True).stdout


def lazy_flags(hydrate=False):
    """legiond flags for the lazy tests: lazy images on (auto), and no
    background hydration unless hydrate, so that what is local is what was
    read. Fails (not skips) when this legiond lacks them."""
    h = legiond_help()
    assert "--lazy-images" in h, "legiond has no --lazy-images (issue 13 not built yet?)"
    flags = ["--lazy-images", "auto"]
    if not hydrate:
        flag = next((f for f in ("--lazy-hydrate-rate", "--lazy-rate", "--lazy-hydration-rate") if f in h), None)
        assert flag, "legiond has no flag to turn background hydration off (--lazy-hydrate-rate 0)"
        flags += [flag, "0"]
    return flags


def new_node(top, name, args=(), hydrate=False):
    """A started legiond with its own home top/name (own chunk store,
    fetcher and mounts), lazy images on."""
    home = os.path.join(top, name)
    os.makedirs(home)
    d = Legiond(home, free_port(), [*feature_flags(), *lazy_flags(hydrate), *args])
    d.start()
    return d


def stop_node(d):
    """SIGKILL legiond, --stop-all its workloads, fetcher and mounts: no
    process (fetcher included), no mount under its home is left."""
    kill_legiond(d)
    left = mounts_under(d.home)
    for m in sorted(left, key=lambda m: -len(m[1])):
        subprocess.run(["umount", "-l", m[1]], capture_output=True)
    assert left == [], f"mounts left after legiond --stop-all: {left}"


def mounts_under(path):
    """[(fstype, mount point, source)] of the mounts at or under path."""
    out = []
    path = os.path.realpath(path)
    for line in open("/proc/self/mountinfo"):
        pre, _, post = line.partition(" - ")
        mp = pre.split()[4].replace("\\040", " ")
        fstype, source = post.split()[:2]
        if mp == path or mp.startswith(path + "/"):
            out.append((fstype, mp, source))
    return out


def layer_dir(d, hexd):
    return os.path.join(d.home, "images", "layers", hexd)


def erofs_mounts(d):
    return {mp for fs, mp, _ in mounts_under(d.home) if fs == "erofs"}


def is_lazy_mount(d, hexd):
    return layer_dir(d, hexd) in erofs_mounts(d)


def lazy_dir(d, *parts):
    return os.path.join(d.home, "lazy", *parts)


def chunk_files(d):
    """{sha256 hex: size} of the chunks in the node's chunk store."""
    out = {}
    top = lazy_dir(d, "chunks")
    for dirpath, _, files in os.walk(top):
        for f in files:
            if len(f) == 64:
                out[f] = os.path.getsize(os.path.join(dirpath, f))
    return out


def chunk_path(d, sha_hex):
    return lazy_dir(d, "chunks", sha_hex[:2], sha_hex)


def lazy_layers(d):
    """The layer hexes with a lazy form on the node (lazy/layers/<hex>)."""
    p = lazy_dir(d, "layers")
    return set(os.listdir(p)) if os.path.isdir(p) else set()


def source_of(d, hexd):
    return json.load(open(lazy_dir(d, "layers", hexd, "source.json")))


def fetcher_pid(d):
    """The node's fetcher pid (run/lazy/fetcher.pid), or None if none runs."""
    try:
        pid = int(open(os.path.join(d.home, "run", "lazy", "fetcher.pid")).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def publish(conv, reg, img, repo, tag="1"):
    """Push img to reg as repo:tag, pull it (fully) on the converting node
    conv, and `legion image convert --push` it there: the registry then has
    the image and its lazy artifact. Returns "repo:tag" (no host)."""
    ref = reg.push(img, repo, tag)
    conv.cli("image", "pull", ref, "--lazy", "never", timeout=180)
    out, err = conv.cli("image", "convert", ref, "--push", timeout=300)
    return f"{repo}:{tag}"


def pull(d, ref, *args, check=0):
    """`legion image pull` on d; (stdout, stderr)."""
    return d.cli("image", "pull", ref, *args, check=check, timeout=300)


def pull_api(d, ref, **extra):
    """POST /v1/images/pull with NDJSON progress: (progress lines, final doc)."""
    body = dict({"image": ref}, **extra)
    st, data = d.http("POST", "/v1/images/pull", body, headers={"Accept": "application/x-ndjson"}, timeout=300)
    assert st == 200, (st, data)
    lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    return lines[:-1], lines[-1]


def inspect(d, ref):
    out, _ = d.cli("image", "inspect", ref)
    return json.loads(out)


def lazy_of(doc):
    """The image's whole "lazy" figures {bytes, localBytes, chunks, localChunks}."""
    assert "lazy" in doc and doc["lazy"], f"inspect shows no lazy figures: {doc}"
    return doc["lazy"]


def layer_lazy(doc):
    """[lazy figures or None] per layer of an inspected image, lowest first."""
    per = doc.get("layerDetails") or doc.get("lazyLayers")
    if per is None and doc["layers"] and isinstance(doc["layers"][0], dict):
        per = doc["layers"]
    assert per is not None, f"inspect shows no per-layer lazy figures: {doc}"
    return [x.get("lazy") for x in per]


# ---- reading files ---------------------------------------------------------------------

_READER = r'''
import hashlib, json, os, sys
out = {}
for p in json.loads(sys.argv[1]):
    try:
        fd = os.open(p, os.O_RDONLY)
        try:
            if sys.argv[2] == "drop":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h, n = hashlib.sha256(), 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
            out[p] = h.hexdigest()
        finally:
            os.close(fd)
    except OSError as e:
        out[p] = __import__("errno").errorcode.get(e.errno, "E%s" % e.errno)
    sys.stdout.write(json.dumps({p: out[p]}) + "\n")
    sys.stdout.flush()
'''


def read_files(paths, drop=False, timeout=120):
    """Read each file (a path on the host, e.g. in a layer's mount) in a
    child process: {path: sha256 hex, or "EIO" etc. when the read failed}.
    drop: the file's cached pages are dropped first (posix_fadvise), so that
    the bytes come from the lazy layer again, not the page cache. The child
    is killed after timeout (a bound for a hung read, not a timing check);
    files it did not get to are reported as "HUNG"."""
    paths = list(paths)
    p = subprocess.Popen([sys.executable, "-c", _READER, json.dumps(paths), "drop" if drop else "keep"],
                         stdout=subprocess.PIPE, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    res = {}
    for line in out.splitlines():
        res.update(json.loads(line))
    for x in paths:
        res.setdefault(x, "HUNG")
    return res


def drop_caches():
    """Drop the clean page cache (the EROFS mounts' pages among it), so that
    reads go to the lazy layers again. Used where the files are not known."""
    subprocess.run(["sync"])
    open("/proc/sys/vm/drop_caches", "w").write("1\n")


# ---- pods --------------------------------------------------------------------------------

def create_pod(d, name, image, script, restart="Never"):
    return create(d, name, [{"name": "main", "image": image, "command": ["sh", "-c", script]}],
                  restartPolicy=restart)


def get_pod(d, name):
    return get(d, name)


def pod_phase(d, name):
    p = get_pod(d, name)
    return p and p["status"].get("phase")


def wait_pod_done(d, name, timeout=300):
    """Wait until the pod Succeeded or Failed (a bound for a hung test)."""
    return d.wait_for(lambda: pod_phase(d, name) in ("Succeeded", "Failed") and get_pod(d, name),
                      timeout=timeout, what=f"pod {name} to finish: {get_pod(d, name)}")


def pod_logs(d, name):
    """The pod's log ("" while its container is still being made)."""
    st, body = d.http("GET", f"{PODS}/{name}/log")
    if st == 400 and b"waiting to start" in body:
        return ""
    assert st == 200, body
    return body.decode(errors="replace")


def delete_pod(d, name):
    st, body = d.http("DELETE", f"{PODS}/{name}?gracePeriodSeconds=0")
    assert st in (200, 202, 404), body
    d.wait_for(lambda: get_pod(d, name) is None, timeout=120, what=f"pod {name} gone")


# sha256sum over the image's own directories, then a line with its status.
def sum_script(dirs):
    return f"cd / && find {' '.join(dirs)} -type f -exec sha256sum {{}} + 2>&1; echo \"DONE $?\""


def parse_sums(log):
    """(sums {path: hex}, error lines, done status or None) of sum_script's log."""
    sums, errors, done = {}, [], None
    for line in log.splitlines():
        parts = line.split("  ", 1)
        if len(parts) == 2 and len(parts[0]) == 64 and all(c in "0123456789abcdef" for c in parts[0]):
            sums[parts[1].lstrip("./")] = parts[0]
        elif line.startswith("DONE "):
            done = int(line.split()[1])
        elif line.strip():
            errors.append(line)
    return sums, errors, done


def compare_sums(expected, got, paths=None):
    """Paths (of expected, or paths) whose sum is missing or wrong in got."""
    return {p: (expected[p], got.get(p)) for p in (paths or expected) if got.get(p) != expected[p]}


# ---- the artifact in the registry ----------------------------------------------------------

def get_json(reg, path, accept=None):
    st, h, body = reg._request("GET", path, headers={"Accept": accept} if accept else None)
    return json.loads(body)


def artifact(reg, repo, img):
    """(artifact manifest, its digest, config doc) of img's lazy artifact,
    found by the referrers tag schema (sha256-<manifest hex>)."""
    tag = "sha256-" + img.digest.split(":")[1]
    idx = get_json(reg, f"/v2/{repo}/manifests/{tag}", oci_kit.OCI_INDEX)
    arts = [m for m in idx["manifests"] if m.get("artifactType") == ARTIFACT_TYPE]
    assert len(arts) == 1, idx
    man = get_json(reg, f"/v2/{repo}/manifests/{arts[0]['digest']}", oci_kit.OCI_MANIFEST)
    assert man.get("artifactType") == ARTIFACT_TYPE and man["subject"]["digest"] == img.digest, man
    st, _, cfg = reg._request("GET", f"/v2/{repo}/blobs/{man['config']['digest']}")
    return man, arts[0]["digest"], json.loads(cfg)


def blob(reg, repo, digest):
    return reg._request("GET", f"/v2/{repo}/blobs/{digest}")[2]


def tamper_artifact(reg, repo, img, change):
    """Replace img's lazy artifact by a changed copy: change(config, blobs)
    gets the config doc, {digest: bytes} of the artifact's layers (not
    the BLOBs) and the config's entry of the image's top layer, and returns (config bytes or doc, {old digest: new bytes}). The new blobs,
    config and manifest are pushed and the referrers tag names only it."""
    man, _, cfg = artifact(reg, repo, img)
    blobs = {l["digest"]: blob(reg, repo, l["digest"]) for l in man["layers"] if l["mediaType"] != BLOB_TYPE}
    top = next(x for x in cfg["layers"] if x["layer"] == img.layer_descs[-1]["digest"])
    new_cfg, replaced = change(cfg, blobs, top)
    if isinstance(new_cfg, dict):
        new_cfg = json.dumps(new_cfg).encode()
    rename = {}
    for old, data in replaced.items():
        nd = "sha256:" + oci_kit.sha256(data)
        reg.push_blob(repo, nd, data)
        rename[old] = (nd, len(data))
    text = new_cfg.decode(errors="replace")
    for old, (nd, _) in rename.items():
        text = text.replace(old, nd)
    new_cfg = text.encode(errors="surrogateescape") if isinstance(text, str) else text
    cfg_digest = "sha256:" + oci_kit.sha256(new_cfg)
    reg.push_blob(repo, cfg_digest, new_cfg)
    man = json.loads(json.dumps(man))
    man["config"] = dict(man["config"], digest=cfg_digest, size=len(new_cfg))
    for l in man["layers"]:
        if l["digest"] in rename:
            l["digest"], l["size"] = rename[l["digest"]]
    data = json.dumps(man).encode()
    mdigest = "sha256:" + oci_kit.sha256(data)
    reg.push_manifest(repo, mdigest, data, oci_kit.OCI_MANIFEST)
    idx = {"schemaVersion": 2, "mediaType": oci_kit.OCI_INDEX,
           "manifests": [{"mediaType": oci_kit.OCI_MANIFEST, "digest": mdigest, "size": len(data),
                          "artifactType": ARTIFACT_TYPE}]}
    reg.push_manifest(repo, "sha256-" + img.digest.split(":")[1], json.dumps(idx).encode(), oci_kit.OCI_INDEX)
    return mdigest


# ---- LGCHUNK1 chunk tables ---------------------------------------------------------------

def parse_chunks(data):
    """(chunk_size, blob_size, [(offset, length, flags, sha256 hex)])."""
    magic, version, csize, bsize, n = struct.unpack_from("<8sIIQQ", data, 0)
    assert magic == b"LGCHUNK1" and version == 1, (magic, version)
    out = []
    for i in range(n):
        off, ln, fl, sha = struct.unpack_from("<QII32s", data, 32 + 48 * i)
        out.append((off, ln, fl, sha.hex()))
    return csize, bsize, out


def write_chunks(csize, bsize, chunks):
    data = struct.pack("<8sIIQQ", b"LGCHUNK1", 1, csize, bsize, len(chunks))
    for off, ln, fl, sha in chunks:
        data += struct.pack("<QII32s", off, ln, fl, bytes.fromhex(sha))
    return data


def eio(v):
    return v == "EIO"
