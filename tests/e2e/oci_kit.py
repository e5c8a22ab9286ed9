"""Test kit for OCI images: build small images from host files, write them
as `docker save` or OCI image layout archives, and run Debian's
docker-registry on 127.0.0.1 (anonymous, htpasswd basic auth, or bearer
token auth with a token server of our own) to push them into.

Used by the image, pod and benchmark tests; everything stays on loopback.

    layer = busybox_layer()                  # uncompressed tar bytes
    img = Image([layer], config={"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"]})
    write_docker_archive(path, [(img, ["busybox:test"])])
    write_oci_archive(path, img, "busybox:test")
    with Registry(tmpdir, auth="basic") as reg:
        reg.push(img, "busybox", "1")         # reg.host is "127.0.0.1:PORT"
"""
import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

LAYER_TYPES = {
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
}

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ["sh", "true", "false", "echo", "cat", "sleep", "id", "env", "pwd", "ls", "nc",
                   "httpd", "wget", "head", "tail", "dd", "kill", "ps",
                   "hostname", "printf", "test", "yes", "seq", "wc", "grep", "touch", "rm", "mkdir"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---- layers ------------------------------------------------------------------

def tar_layer(entries):
    """A tar (bytes) from entries: list of (path, kind, value, opts) where kind
    is "file" (value bytes), "dir", "symlink" (value target), "hardlink"
    (value target path) or "raw" (value a tarfile.TarInfo and data).
    opts: dict with mode, uid, gid."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            path, kind, value = e[0], e[1], e[2] if len(e) > 2 else None
            opts = e[3] if len(e) > 3 else {}
            ti = tarfile.TarInfo(path)
            ti.mtime = 1700000000
            ti.uid, ti.gid = opts.get("uid", 0), opts.get("gid", 0)
            data = None
            if kind == "file":
                ti.type, ti.size, ti.mode = tarfile.REGTYPE, len(value), opts.get("mode", 0o644)
                data = io.BytesIO(value)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, opts.get("mode", 0o755)
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, value, 0o777
            elif kind == "hardlink":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, value, opts.get("mode", 0o644)
            elif kind == "chardev":
                ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.CHRTYPE, value[0], value[1], 0o666
            else:
                raise ValueError(kind)
            t.addfile(ti, data)
    return buf.getvalue()


def busybox_layer(extra=None):
    """/bin/busybox (Debian's busybox-static) with its applets as symlinks,
    /etc/passwd and /etc/group with root and app (1000), /tmp, and extra
    entries appended (tar_layer form)."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [("bin", "dir"), ("bin/busybox", "file", bb, {"mode": 0o755})]
    entries += [(f"bin/{a}", "symlink", "busybox") for a in BUSYBOX_APPLETS]
    entries += [("etc", "dir"),
                ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
                ("etc/group", "file", b"root:x:0:\napp:x:1000:\n"),
                ("tmp", "dir", None, {"mode": 0o1777}), ("root", "dir", None, {"mode": 0o700}),
                ("home", "dir"), ("home/app", "dir", None, {"uid": 1000, "gid": 1000})]
    return tar_layer(entries + list(extra or []))


def python_layer():
    """The host's python3 interpreter, the libraries it links and a trimmed
    standard library: enough for `python3 -c ...` in a sandbox."""
    entries, seen = [], set()

    def add_dirs(path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d and d not in seen:
                seen.add(d)
                entries.append((d, "dir"))

    def add_file(host, path=None):
        path = (path or host).lstrip("/")
        if path in seen:
            return
        add_dirs(path)
        seen.add(path)
        with open(host, "rb") as f:
            entries.append((path, "file", f.read(), {"mode": os.stat(host).st_mode & 0o777}))

    exe = os.path.realpath("/usr/bin/python3")
    add_file(exe)
    add_dirs("usr/bin/x")
    entries.append(("usr/bin/python3", "symlink", os.path.basename(exe)))
    out = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        host = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if host.startswith("/"):
            add_file(os.path.realpath(host), host)
    ver = "python%d.%d" % tuple(int(x) for x in subprocess.run(
        [exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True, text=True, check=True).stdout.split())
    root = f"/usr/lib/{ver}"
    skip = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo", "__pycache__",
            "site-packages", "dist-packages", "pydoc_data", "config-3.11-x86_64-linux-gnu"}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in skip]
        for name in files:
            if name.endswith((".py", ".so")):
                add_file(os.path.join(d, name))
    return tar_layer(entries)


def random_layer(size, path="data/random.bin"):
    """An incompressible layer of about size bytes (for the 100 MB benchmark)."""
    return tar_layer([("data", "dir"), (path, "file", os.urandom(size))])


def compress(data, kind):
    if kind == "none":
        return data
    if kind == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout
    raise ValueError(kind)


# ---- images ------------------------------------------------------------------

class Image:
    """An image from uncompressed layer tars and an image config
    (Entrypoint, Cmd, Env, WorkingDir, User, ...). style "oci" or
    "docker" picks the media types; compression "gzip", "zstd" or "none"
    (per image, or a list per layer)."""

    def __init__(self, layers, config=None, style="oci", compression="gzip", arch="amd64", os_="linux"):
        self.layers = layers
        self.style = style
        comps = compression if isinstance(compression, list) else [compression] * len(layers)
        self.blobs = {}
        self.layer_descs = []
        diff_ids = []
        for tar, comp in zip(layers, comps):
            blob = compress(tar, comp)
            d = "sha256:" + sha256(blob)
            self.blobs[d] = blob
            self.layer_descs.append({"mediaType": LAYER_TYPES[(style, comp)], "digest": d, "size": len(blob)})
            diff_ids.append("sha256:" + sha256(tar))
        cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        cfg.update(config or {})
        self.config = {
            "architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
            "config": cfg, "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "oci_kit"} for _ in layers],
        }
        self.config_bytes = json.dumps(self.config, sort_keys=True).encode()
        self.config_digest = "sha256:" + sha256(self.config_bytes)
        self.blobs[self.config_digest] = self.config_bytes
        self.manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if style == "oci" else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if style == "oci" else DOCKER_CONFIG,
                       "digest": self.config_digest, "size": len(self.config_bytes)},
            "layers": self.layer_descs,
        }
        self.manifest_bytes = json.dumps(self.manifest, sort_keys=True).encode()
        self.digest = "sha256:" + sha256(self.manifest_bytes)
        self.arch, self.os = arch, os_

    @property
    def id(self):
        return self.config_digest

    def descriptor(self):
        return {"mediaType": self.manifest["mediaType"], "digest": self.digest,
                "size": len(self.manifest_bytes), "platform": {"architecture": self.arch, "os": self.os}}


def index_of(images, style="oci"):
    """(bytes, digest, media type) of an image index / manifest list."""
    mt = OCI_INDEX if style == "oci" else DOCKER_LIST
    doc = {"schemaVersion": 2, "mediaType": mt, "manifests": [i.descriptor() for i in images]}
    data = json.dumps(doc, sort_keys=True).encode()
    return data, "sha256:" + sha256(data), mt


def _add(t, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, 1700000000
    t.addfile(ti, io.BytesIO(data))


def write_docker_archive(path, images, gz=False):
    """`docker save` form: manifest.json, <config hex>.json and
    <layer id>/layer.tar (uncompressed). images: [(Image, [tags])]."""
    manifest, repos = [], {}
    with tarfile.open(path, "w:gz" if gz else "w") as t:
        written = set()
        for img, tags in images:
            layer_paths = []
            for tar in img.layers:
                lid = sha256(tar)
                p = f"{lid}/layer.tar"
                if p not in written:
                    written.add(p)
                    _add(t, f"{lid}/VERSION", b"1.0")
                    _add(t, p, tar)
                layer_paths.append(p)
            cfg = img.config_digest.split(":")[1] + ".json"
            if cfg not in written:
                written.add(cfg)
                _add(t, cfg, img.config_bytes)
            manifest.append({"Config": cfg, "RepoTags": list(tags), "Layers": layer_paths})
            for tag in tags:
                repo, _, tg = tag.rpartition(":")
                repos.setdefault(repo, {})[tg] = sha256(img.layers[-1])
        _add(t, "manifest.json", json.dumps(manifest).encode())
        _add(t, "repositories", json.dumps(repos).encode())


def write_oci_archive(path, image, ref_name=None, index_images=None):
    """OCI image layout in a tar (what `skopeo copy ... oci-archive:` makes).
    With index_images, index.json points at a nested image index of those
    images (multi-platform) tagged ref_name."""
    with tarfile.open(path, "w") as t:
        _add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        blobs = {}
        imgs = index_images or [image]
        for img in imgs:
            blobs.update(img.blobs)
            blobs[img.digest] = img.manifest_bytes
        if index_images:
            data, digest, mt = index_of(index_images)
            blobs[digest] = data
            top = {"mediaType": mt, "digest": digest, "size": len(data)}
        else:
            top = {"mediaType": image.manifest["mediaType"], "digest": image.digest,
                   "size": len(image.manifest_bytes)}
        if ref_name:
            top["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
        for d, data in sorted(blobs.items()):
            _add(t, "blobs/sha256/" + d.split(":")[1], data)
        _add(t, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                          "manifests": [top]}).encode())


# ---- registry ----------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """A bearer token issuer for docker-registry's `auth: token`: answers
    GET /token?service=&scope= with an RS256 JWT when the basic credentials
    match, signed with a key made by openssl."""

    def __init__(self, workdir, username, password, service="legion-test", issuer="legion-test-issuer"):
        self.dir = os.path.join(workdir, "token")
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "key.pem")
        self.cert = os.path.join(self.dir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "2", "-subj", "/CN=legion-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(f"openssl x509 -in {self.cert} -pubkey -noout | openssl pkey -pubin -outform DER",
                             shell=True, check=True, capture_output=True).stdout
        # libtrust key id: base32 of the first 240 bits of sha256(DER SPKI),
        # in groups of four joined by ':' (what docker-registry matches `kid` with).
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        self.kid = ":".join(b32[i:i + 4] for i in range(0, 48, 4))
        self.username, self.password, self.service, self.issuer = username, password, service, issuer
        self.requests = 0
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        kit = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                kit.requests += 1
                u = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(u.query)
                auth = self.headers.get("Authorization", "")
                ok = auth.startswith("Basic ") and base64.b64decode(auth[6:]).decode() == \
                    f"{kit.username}:{kit.password}"
                if u.path != "/token" or not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    typ, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
                    access.append({"type": typ, "name": name, "actions": actions.split(",")})
                tok = kit.sign({"iss": kit.issuer, "sub": kit.username, "aud": q.get("service", [""])[0],
                                "exp": int(time.time()) + 600, "nbf": int(time.time()) - 10,
                                "iat": int(time.time()), "jti": os.urandom(8).hex(), "access": access})
                body = json.dumps({"token": tok, "access_token": tok, "expires_in": 600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, claims):
        head = _b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": self.kid}).encode())
        body = _b64url(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=f"{head}.{body}".encode(),
                             capture_output=True, check=True).stdout
        return f"{head}.{body}.{_b64url(sig)}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Registry:
    """Debian's docker-registry on 127.0.0.1:<free port> (or another
    loopback address: bind), storage in workdir. auth: None, "basic"
    (htpasswd) or "token" (bearer, TokenServer)."""

    def __init__(self, workdir, auth=None, username="legion", password="s3cret-pass", bind="127.0.0.1"):
        if not shutil.which("docker-registry"):
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
        self.dir = os.path.join(workdir, "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.storage = os.path.join(self.dir, "storage")
        self.port = free_port()
        self.host = f"{bind}:{self.port}"
        self.username, self.password, self.auth = username, password, auth
        self.token_server = None
        self._token = None
        cfg = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
               "storage:", "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:",
               "    enabled: true", "http:", f"  addr: {bind}:{self.port}"]
        if auth == "basic":
            htp = os.path.join(self.dir, "htpasswd")
            out = subprocess.run(["htpasswd", "-Bbn", username, password], capture_output=True, check=True).stdout
            open(htp, "wb").write(out)
            cfg += ["auth:", "  htpasswd:", "    realm: legion-test", f"    path: {htp}"]
        elif auth == "token":
            self.token_server = TokenServer(self.dir, username, password)
            ts = self.token_server
            cfg += ["auth:", "  token:", f"    realm: {ts.realm}", f"    service: {ts.service}",
                    f"    issuer: {ts.issuer}", f"    rootcertbundle: {ts.cert}"]
        elif auth is not None:
            raise ValueError(auth)
        self.config = os.path.join(self.dir, "config.yml")
        open(self.config, "w").write("\n".join(cfg) + "\n")
        self.log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config], stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection((bind, self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("docker-registry did not start: " +
                                       open(os.path.join(self.dir, "registry.log")).read())
                time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.token_server:
            self.token_server.stop()
            self.token_server = None

    # -- the push side of the distribution API, with auth ----------------------

    def _auth_header(self, challenge):
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if challenge.startswith("Basic"):
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        q = urllib.parse.urlencode({"service": params.get("service", ""), "scope": params.get("scope", "")})
        req = urllib.request.Request(params["realm"] + "?" + q, headers={"Authorization": basic})
        with urllib.request.urlopen(req, timeout=30) as r:
            return "Bearer " + json.load(r)["token"]

    def _request(self, method, path, data=None, headers=None):
        url = path if path.startswith("http") else f"http://{self.host}{path}"
        hdrs = dict(headers or {})
        for _ in range(2):
            if self._token:
                hdrs["Authorization"] = self._token
            req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return r.status, dict(r.headers), r.read()
            except urllib.error.HTTPError as e:
                if e.code == 401 and self.auth:
                    self._token = self._auth_header(e.headers.get("WWW-Authenticate", ""))
                    continue
                if method == "HEAD" and e.code == 404:
                    return 404, dict(e.headers), b""
                raise AssertionError(f"registry {method} {path}: {e.code} {e.read()[:300]!r}")
        raise AssertionError(f"registry {method} {path}: still 401 after authenticating")

    def push_blob(self, repo, digest, data):
        self._token = None if self.auth == "token" else self._token  # scope differs per repo
        if self._request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200:
            return
        _, h, _ = self._request("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        loc = h.get("Location") or h.get("location")
        if loc.startswith("/"):
            loc = f"http://{self.host}{loc}"
        sep = "&" if "?" in loc else "?"
        self._request("PUT", f"{loc}{sep}digest={digest}", data=data,
                      headers={"Content-Type": "application/octet-stream"})

    def push_manifest(self, repo, ref, data, media_type):
        self._request("PUT", f"/v2/{repo}/manifests/{ref}", data=data, headers={"Content-Type": media_type})

    def push(self, image, repo, tag):
        """Push an image's blobs and manifest; returns "HOST/REPO:TAG"."""
        for d, data in image.blobs.items():
            self.push_blob(repo, d, data)
        self.push_manifest(repo, tag, image.manifest_bytes, image.manifest["mediaType"])
        return f"{self.host}/{repo}:{tag}"

    def push_index(self, repo, tag, images, style="oci"):
        """Push several images (e.g. linux/amd64 and linux/arm64) and an
        index (OCI) or manifest list (docker) pointing at them."""
        for img in images:
            for d, data in img.blobs.items():
                self.push_blob(repo, d, data)
            self.push_manifest(repo, img.digest, img.manifest_bytes, img.manifest["mediaType"])
        data, digest, mt = index_of(images, style)
        self.push_manifest(repo, tag, data, mt)
        return f"{self.host}/{repo}:{tag}", digest

    def blob_path(self, digest):
        """Where the registry keeps a blob: corrupt it to test verification."""
        hexd = digest.split(":")[1]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")


# ---- container app images (issue 12) -------------------------------------------

_python_layer = None


def python_layer_cached():
    """python_layer(), made once per test process (23 MB of host files)."""
    global _python_layer
    if _python_layer is None:
        _python_layer = python_layer()
    return _python_layer


def files_layer(files):
    """A layer of files {path: bytes or str} with their directories."""
    entries, dirs = [], set()
    for path in sorted(files):
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append((d, "dir"))
        data = files[path]
        entries.append((path, "file", data.encode() if isinstance(data, str) else data, {"mode": 0o755}))
    return tar_layer(entries)


# A Python http.server app: GET / answers who and what it is (version, a
# random id of this server process, hostname, pid, the connection's peer,
# path, environment); /sleep?s=N answers after N seconds; /alloc?mb=N holds
# N MiB more; /healthz answers $HEALTHZ_STATUS (200); /exit?code=N exits.
# Port: argv[1], else $PORT, else 8080. Requests are logged on stderr
# (http.server's own log lines), which `legion app logs` shows.
PYWEB_SERVER = r'''
import http.server, json, os, socket, socketserver, sys, time

VERSION = open("/app/VERSION").read().strip()
INSTANCE = os.urandom(8).hex()  # this server process, unlike any other
HELD = []  # what /alloc took
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8080"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path, _, query = self.path.partition("?")
        q = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if path == "/healthz":
            code = int(os.environ.get("HEALTHZ_STATUS", "200"))
            return self.reply(code, {"healthz": code})
        if path == "/sleep":
            time.sleep(float(q.get("s", "1")))
        if path == "/alloc":
            HELD.append(b"x" * (int(q.get("mb", "1")) << 20))
        if path == "/exit":
            sys.stderr.write("pyweb: exiting on request\n")
            sys.stderr.flush()
            os._exit(int(q.get("code", "3")))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(200, {"app": "pyweb", "version": VERSION, "instance": INSTANCE, "hostname": socket.gethostname(),
                         "pid": os.getpid(), "peer": "%s:%d" % self.client_address[:2], "path": path,
                         "method": self.command, "body": body.decode(),
                         "env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv})

    do_POST = do_GET

    def reply(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # No socket.getfqdn (http.server's): a reverse lookup may wait on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "pyweb", self.server_address[1]


sys.stderr.write(f"pyweb {VERSION} listening on port {PORT}\n")
Server(("0.0.0.0", PORT), Handler).serve_forever()
'''

# An app configured only through its environment: it listens on $PORT (no
# default: without it, it exits at start) and answers
# "$GREETING, $WHO!" plus, for /env/NAME, that variable's value.
ENVAPP_SERVER = r'''
import json, os, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/env/"):
            name = self.path[5:]
            doc = {"name": name, "value": os.environ.get(name)}
        else:
            doc = {"greeting": "%s, %s!" % (os.environ.get("GREETING", "hello"), os.environ.get("WHO", "world"))}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "envapp", self.server_address[1]


port = int(os.environ["PORT"])
sys.stderr.write(f"envapp listening on port {port}\n")
Server(("0.0.0.0", port), Handler).serve_forever()
'''

APP_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pyweb_image(version="1"):
    """busybox + host python3 + /app/server.py (PYWEB_SERVER) answering
    version; python3 /app/server.py is its entrypoint (port 8080)."""
    app = files_layer({"app/server.py": PYWEB_SERVER, "app/VERSION": version + "\n"})
    return Image([busybox_layer(), python_layer_cached(), app],
                 config={"Entrypoint": ["python3", "/app/server.py"], "WorkingDir": "/app",
                         "Env": [APP_PATH_ENV, "PYTHONUNBUFFERED=1", "GREETING=hello from the image",
                                 "IMAGE_ONLY=kept"],
                         "ExposedPorts": {"8080/tcp": {}}})


def envapp_image():
    """busybox + host python3 + /app/env.py (ENVAPP_SERVER): needs $PORT."""
    app = files_layer({"app/env.py": ENVAPP_SERVER})
    return Image([busybox_layer(), python_layer_cached(), app],
                 config={"Entrypoint": ["python3", "/app/env.py"],
                         "Env": [APP_PATH_ENV, "PYTHONUNBUFFERED=1", "WHO=image"]})


def httpd_image(text="hello from busybox httpd\n"):
    """busybox httpd serving /www (index.html = text) on port 8080 in the
    foreground, logging requests (-v) on stderr."""
    layer = busybox_layer([("www", "dir"), ("www/index.html", "file", text.encode()),
                           ("www2", "dir"), ("www2/index.html", "file", b"the other site\n")])
    return Image([layer], config={"Cmd": ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
                                  "Env": ["PATH=/bin"]})


def crash_image():
    """A server that exits at once (code 3), its reason on stderr."""
    return Image([busybox_layer()], config={
        "Entrypoint": ["sh", "-c", "echo starting; echo 'fatal: no config file at /etc/app.conf' >&2; exit 3"],
        "Env": ["PATH=/bin"]})


def silent_image():
    """A server that never opens its port: it waits for ever."""
    return Image([busybox_layer()], config={
        "Entrypoint": ["sh", "-c", "echo 'waiting for a database that never comes' >&2; exec sleep 1000000"],
        "Env": ["PATH=/bin"]})
