#!/usr/bin/python3
"""The lazy images benchmark's driver (bench/lazy/run.sh starts legiond and
runs this; see run.sh for the whole picture).

Images, built from host files and pushed to Debian's docker-registry,
which runs in a network namespace of the benchmark's own, reached over a
veth (a 100.64.0.0/10 transfer /30):
  py100  base (the C libraries python3 links and more of the host's
         /usr/lib/x86_64-linux-gnu), python (the interpreter, its whole
         standard library with the host's .pyc files, the host's
         dist-packages), app (/srv): `python3 -m http.server` answering on
         8080
  py500  the same plus a layer of host files (/opt/unused) that the server
         never reads
  pybase the base and python layers alone (arm D keeps it local)
Each converted to the lazy form and pushed (`legion image convert --push`)
by legiond itself once, untimed; then forgotten locally.

Arms, each the time from the first request to legiond until the server in
the image answers a GET through legiond's router (a container app without
a pool, made for the try):
  A        full pull and extract (`lazy: never`), then the start
  B        the image local (just pulled whole by A), then the start
  B-cold   the same with the layers' files dropped from the page cache
  C-first  lazy pull, nothing local, no prefetch record, then the start
  C        the same with the prefetch record an earlier run left
  D        lazy pull with the base and python layers local (pybase pulled
           lazily and read whole before, untimed), then the start
Links: the registry's veth as it is ("unshaped", straight to the
registry), and "shaped": htb rate on both ends of the veth and the
registry behind bench/lazy/delayproxy (a one-way delay in each direction;
this kernel has no netem). Bytes fetched before the answer: the bytes the
host received on the veth from the request until the answer, and the
image's local bytes (legiond's image inspect) at the answer.

Every figure in the report comes from OUT's JSON files."""
import argparse
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
import oci_kit  # noqa: E402

log = harness.logger("bench/lazy")
write, summary = harness.write_json, harness.summary
PORT = 8080
REPO = "bench/lazy"
ARMS = ["C-first", "C", "D", "A", "B", "B-cold"]
LAZY_ARMS = ("C-first", "C", "D")


class Api(harness.Api):
    """JSON asked for, long image operations allowed."""

    timeout = 900
    ok = (200, 201, 202, 204)
    json_headers = True


# ---- images from host files ------------------------------------------------------------

class LayerTar:
    """An uncompressed layer tar built from host paths (owners root, modes
    and mtimes kept: the host's timestamp .pyc files stay valid)."""

    def __init__(self):
        self.io = io.BytesIO()
        self.t = tarfile.open(fileobj=self.io, mode="w", format=tarfile.PAX_FORMAT)
        self.seen = set()
        self.file_bytes = 0

    def _root(self, ti):
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def dirs(self, arc):
        parts = arc.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in self.seen:
                self.seen.add(d)
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                self.t.addfile(ti)

    def add(self, host, arc=None, recursive=True, skip=lambda p: False):
        """host (a file, symlink or directory, recursively) as arc."""
        arc = (arc or host).strip("/")
        self.dirs(arc)
        if arc in self.seen:
            return
        self.seen.add(arc)
        ti = self.t.gettarinfo(host, arc)
        if ti is None or not (ti.isreg() or ti.isdir() or ti.issym()):
            return
        self._root(ti)
        if ti.isreg():
            with open(host, "rb") as f:
                self.t.addfile(ti, f)
            self.file_bytes += ti.size
        else:
            self.t.addfile(ti)
        if ti.isdir() and recursive:
            for name in sorted(os.listdir(host)):
                p = os.path.join(host, name)
                if not skip(p):
                    self.add(p, arc + "/" + name, True, skip)

    def file(self, arc, data, mode=0o644):
        arc = arc.strip("/")
        self.dirs(arc)
        self.seen.add(arc)
        ti = tarfile.TarInfo(arc)
        ti.size, ti.mode, ti.mtime = len(data), mode, 1700000000
        self.t.addfile(ti, io.BytesIO(data))

    def bytes(self):
        self.t.close()
        return self.io.getvalue()


def python_libs():
    exe = os.path.realpath("/usr/bin/python3")
    out = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        host = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if host.startswith("/"):
            libs.append(host)
    return exe, libs


def host_files(root, budget, exclude, largest=None):
    """Regular files under root (sorted walk, none over largest bytes)
    until budget bytes."""
    out, n = [], 0
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if p in exclude or os.path.islink(p) or not os.path.isfile(p):
                continue
            sz = os.path.getsize(p)
            if largest and sz > largest:
                continue
            out.append(p)
            n += sz
            if n >= budget:
                return out, n
    return out, n


def build_images(out, base_mb, unused_mb):
    t0 = time.monotonic()
    exe, libs = python_libs()
    ver = os.path.basename(exe)  # python3.11
    # base: the libraries python3 links, then more of the host's libraries
    base = LayerTar()
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    base.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    for lib in libs:
        base.add(os.path.realpath(lib), lib)
    extra, _ = host_files("/usr/lib/x86_64-linux-gnu", base_mb << 20, set(os.path.realpath(x) for x in libs),
                          largest=4 << 20)
    for p in extra:
        base.add(p)
    base_tar = base.bytes()
    # python: the interpreter, its standard library, dist-packages
    py = LayerTar()
    py.add(exe, "usr/bin/" + ver)
    py.dirs("usr/bin/x")
    ti = tarfile.TarInfo("usr/bin/python3")
    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, ver, 0o777
    py.t.addfile(ti)
    py.add(f"/usr/lib/{ver}", skip=lambda p: p.endswith("/site-packages"))
    if os.path.isdir("/usr/lib/python3/dist-packages"):
        py.add("/usr/lib/python3/dist-packages")
    py_tar = py.bytes()
    # never read by the server: more host files under /opt/unused
    unused = LayerTar()
    used = set(extra)
    files, _ = host_files("/usr/lib/x86_64-linux-gnu", unused_mb << 20, used)
    have = sum(os.path.getsize(p) for p in files)
    for p in files:
        unused.add(p, "opt/unused" + p)
    if have < unused_mb << 20:
        more, _ = host_files("/usr/share", (unused_mb << 20) - have, set())
        for p in more:
            unused.add(p, "opt/unused" + p)
    unused_tar = unused.bytes()
    app = LayerTar()
    app.file("srv/index.html", b"<html><body>lazy bench</body></html>\n")
    app_tar = app.bytes()
    cfg = {"Cmd": ["/usr/bin/python3", "-m", "http.server", str(PORT), "--directory", "/srv"],
           "WorkingDir": "/srv", "ExposedPorts": {f"{PORT}/tcp": {}}}
    imgs = {
        "py100": oci_kit.Image([base_tar, py_tar, app_tar], config=cfg),
        "py500": oci_kit.Image([base_tar, py_tar, unused_tar, app_tar], config=cfg),
        "pybase": oci_kit.Image([base_tar, py_tar], config=cfg),
    }
    sizes = {"base": len(base_tar), "python": len(py_tar), "unused": len(unused_tar), "app": len(app_tar)}
    log(f"images built in {time.monotonic() - t0:.0f} s: layers (MB, uncompressed) " +
        ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes.items()))
    return imgs, sizes, time.monotonic() - t0


# ---- the link and the registry --------------------------------------------------------

def sh(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()[:300]}")
    return p


class Link:
    """A network namespace with a veth to the host (a /30 of 100.64.0.0/10)."""

    def __init__(self, ns, host_if, host_ip, ns_ip):
        self.ns, self.host_if, self.host_ip, self.ns_ip = ns, host_if, host_ip, ns_ip
        self.shaping = None
        try:
            for c in (["ip", "netns", "add", ns],
                      ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
                      ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
                      ["ip", "link", "set", host_if, "up"],
                      ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", "eth0"],
                      ["ip", "-n", ns, "link", "set", "eth0", "up"],
                      ["ip", "-n", ns, "link", "set", "lo", "up"]):
                sh(*c)
        except Exception:
            self.delete()
            raise

    def shape(self, rate):
        """htb at rate on both ends (the kernel has htb and tbf, no netem)."""
        for pre in ([], ["-n", self.ns]):
            dev = self.host_if if not pre else "eth0"
            sh("tc", *pre, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
            sh("tc", *pre, "class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
               "rate", rate, "ceil", rate)
        self.shaping = rate

    def unshape(self):
        for pre, dev in (([], self.host_if), (["-n", self.ns], "eth0")):
            sh("tc", *pre, "qdisc", "del", "dev", dev, "root", check=False)
        self.shaping = None

    def qdiscs(self):
        return (sh("tc", "qdisc", "show", "dev", self.host_if).stdout.strip() + " | " +
                sh("tc", "-n", self.ns, "qdisc", "show", "dev", "eth0").stdout.strip())

    def rx_bytes(self):
        with open(f"/sys/class/net/{self.host_if}/statistics/rx_bytes") as f:
            return int(f.read())

    def delete(self):
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "link", "del", self.host_if, check=False)


def wait_port(host, port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.05)


class NsRegistry(oci_kit.Registry):
    """Debian's docker-registry (anonymous) inside the link's namespace, on
    0.0.0.0:5000 there; pushes (oci_kit's) go to ns_ip:5000."""

    def __init__(self, workdir, link, port=5000):
        if not shutil.which("docker-registry"):
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
        self.dir = os.path.join(workdir, "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.storage = os.path.join(self.dir, "storage")
        self.port = port
        self.host = f"{link.ns_ip}:{port}"
        self.auth, self.token_server, self._token = None, None, None
        self.username = self.password = None
        cfg = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
               "storage:", "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:",
               "    enabled: true", "http:", f"  addr: 0.0.0.0:{port}"]
        self.config = os.path.join(self.dir, "config.yml")
        open(self.config, "w").write("\n".join(cfg) + "\n")
        self.log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", link.ns, "docker-registry", "serve", self.config],
                                     stdout=self.log, stderr=self.log)
        wait_port(link.ns_ip, port, self.proc, "docker-registry")


class DelayProxy:
    """bench/lazy/delayproxy in the link's namespace: ns_ip:port ->
    127.0.0.1:target there, delay_us each way."""

    def __init__(self, binary, link, port, target, delay_us):
        self.proc = subprocess.Popen(["ip", "netns", "exec", link.ns, binary, f"{link.ns_ip}:{port}",
                                      f"127.0.0.1:{target}", str(delay_us)])
        wait_port(link.ns_ip, port, self.proc, "delayproxy")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def round_trip_us(host, port, n=200):
    """p50 of GET /v2/ on one keep-alive connection (the registry's answer
    time plus the link's round trip)."""
    conn = harness.RawConn.__new__(harness.RawConn)
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.s, conn.unix, conn.port, conn.timeout = s, None, port, 10
    req = f"GET /v2/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    ts = []
    try:
        for _ in range(n):
            ns, st, _ = conn.request(req)
            ts.append(ns / 1e3)
    finally:
        s.close()
    return summary(ts)


def range_reads(host, repo, digest, size, n=64, length=1 << 20):
    """n GETs of `length`-byte ranges, one after the other on one kept-alive
    connection, of a blob: what the registry and the link give one client
    (the fetcher's unit of work on a miss), MB/s and the p50 per request."""
    import http.client
    h, p = host.split(":")
    c = http.client.HTTPConnection(h, int(p), timeout=30)
    ts, got = [], 0
    t0 = time.perf_counter()
    for i in range(n):
        off = (i * length) % max(1, size - length)
        t = time.perf_counter()
        c.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={off}-{off + length - 1}"})
        r = c.getresponse()
        got += len(r.read())
        ts.append((time.perf_counter() - t) * 1e3)
    el = time.perf_counter() - t0
    c.close()
    return {"n": n, "length": length, "bytes": got, "s": el, "mb_per_s": got / el / 1e6, "ms": summary(ts)}


# ---- legiond -----------------------------------------------------------------------

def quote(ref):
    return urllib.parse.quote(ref, safe="")


class Node:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.port, harness.read_token(args.home))
        self.token = harness.read_token(args.home)
        self.env = dict(os.environ, LEGION_API=f"http://127.0.0.1:{args.port}", LEGION_HOME=args.home)
        self.seq = 0
        self.pkg_state = {}
        self.registry_pid = None

    def legion(self, *a):
        p = subprocess.run([self.args.legion, *a], env=self.env, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"legion {' '.join(a)}: {p.returncode} {(p.stderr or p.stdout)[-600:]}")
        return p.stdout

    lazy_field = True  # this legiond's pull takes "lazy" (issue 13)

    def pull(self, ref, lazy):
        body = {"image": ref, "insecure": True}
        if lazy is not None and self.lazy_field:
            body["lazy"] = lazy
        st, doc = self.api.call("POST", "/v1/images/pull", body, ok=())
        if st == 400 and b"unknown field" in repr(doc).encode() and "lazy" in body and lazy == "never":
            # A legiond from before lazy images: every pull is whole.
            self.lazy_field = False
            return self.pull(ref, lazy)
        if st not in (200, 201):
            raise RuntimeError(f"pull {ref} (lazy {lazy}): {st} {repr(doc)[:400]}")
        return doc

    def inspect(self, ref):
        st, doc = self.api.call("GET", "/v1/images/" + quote(ref), ok=(200, 404))
        return doc if st == 200 else None

    def layer_dir(self, digest):
        return os.path.join(self.args.home, "images", "layers", digest.split(":")[1])

    def forget(self, refs, digests, timeout=60):
        """Remove the images refs and collect garbage until none of the
        layers digests is left in the store."""
        for ref in refs:
            self.api.call("DELETE", "/v1/images/" + quote(ref) + "?force=true", ok=(204, 404))
        deadline = time.monotonic() + timeout
        while True:
            self.api.call("POST", "/v1/images/gc")
            left = [d for d in digests if os.path.exists(self.layer_dir(d)) or
                    os.path.exists(self.layer_dir(d) + ".json")]
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"layers still in the store after GC: {left}")
            time.sleep(0.2)

    def forget_package(self, timeout=60):
        """No lazy package left on the node: apps gone (the caller's),
        GC until no package mount is left under the home."""
        deadline = time.monotonic() + timeout
        while True:
            self.api.call("POST", "/v1/images/gc")
            left = [ln.split()[1] for ln in open("/proc/self/mounts")
                    if ln.split()[1].startswith(os.path.join(self.args.home, "lazy", "mnt", "pkg-"))]
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"package mounts still there after GC: {left}")
            time.sleep(0.2)

    def drop_prefetch(self):
        d = os.path.join(self.args.home, "lazy", "prefetch")
        n = 0
        if os.path.isdir(d):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
                n += 1
        return n

    def read_layers(self, digests):
        """Read every regular file of the layers (their mounts): a lazy
        layer's chunks all become local."""
        n = 0
        for dg in digests:
            for d, _, files in os.walk(self.layer_dir(dg)):
                for f in files:
                    p = os.path.join(d, f)
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as fh:
                            while True:
                                b = fh.read(1 << 20)
                                if not b:
                                    break
                                n += len(b)
        return n

    def accessed(self, hexes):
        """(chunks, bytes) the lazy layers hexes' prefetch records
        (lazy/layers/<hex>/accessed, a u32 chunk index per first read) name
        so far: what was read, as opposed to what was fetched."""
        n = b = 0
        for h in hexes:
            d = os.path.join(self.args.home, "lazy", "layers", h)
            try:
                rec = open(os.path.join(d, "accessed"), "rb").read()
                table = open(os.path.join(d, "chunks"), "rb").read()
            except OSError:
                continue
            idx = set(struct.unpack_from(f"<{len(rec) // 4}I", rec))
            count = struct.unpack_from("<Q", table, 24)[0]
            for i in idx:
                if i < count:
                    n += 1
                    b += struct.unpack_from("<I", table, 32 + 48 * i + 8)[0]
        return n, b

    def fetcher_status(self, hexes):
        """The fetcher's own figures (control socket, op status) summed over
        the layers hexes: {"misses", "fetchedBytes", "errors"}, or None."""
        tot = {"misses": 0, "fetchedBytes": 0, "errors": 0}
        path = os.path.join(self.args.home, "run", "lazy", "fetcher.sock")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            f = s.makefile("rwb")
            for h in hexes:
                f.write(json.dumps({"op": "status", "layer": h}).encode() + b"\n")
                f.flush()
                ans = json.loads(f.readline())
                if ans.get("ok"):
                    for k in tot:
                        tot[k] += int(ans.get(k, 0))
            s.close()
            return tot
        except (OSError, ValueError):
            return None

    def drop_page_cache(self, digests):
        for dg in digests:
            for d, _, files in os.walk(self.layer_dir(dg)):
                for f in files:
                    p = os.path.join(d, f)
                    if os.path.isfile(p) and not os.path.islink(p):
                        try:
                            fd = os.open(p, os.O_RDONLY)
                        except OSError:
                            continue
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)

    def start(self, ref, conn):
        """A new container app of ref and the first request through the
        router: (status, body, app)."""
        self.seq += 1
        app = f"lz-{self.seq}"
        self.api.call("PUT", f"/v1/namespaces/default/apps/{app}",
                      {"image": ref, "port": PORT, "readinessPath": "/"})
        try:
            conn.connect()  # legiond closes idle connections: a new one (loopback, some 0.1 ms)
            req = f"GET /fn/default/{app}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n\r\n"
            _, status, body = conn.request(req.encode())
        except Exception:
            self.delete_app(app)
            raise
        return status, body, app

    def delete_app(self, app):
        self.api.call("DELETE", f"/v1/namespaces/default/apps/{app}", ok=())


def lazy_totals(doc):
    """(bytes, localBytes) of an image's lazy layers from inspect, or None."""
    if not doc:
        return None
    lz = doc.get("lazy")
    if isinstance(lz, dict) and "bytes" in lz:
        return lz.get("bytes"), lz.get("localBytes")
    return None


# ---- the arms ------------------------------------------------------------------------

def one_try(node, link, conn, arm, ref, digests, img_bytes, base_ref, base_digests):
    """Set the state up for arm (untimed), time it; a result row."""
    row = {"arm": arm}
    if arm in ("C-first", "C", "A"):
        node.forget([ref, base_ref], digests + base_digests)
        if arm == "C-first":
            row["prefetch_records_dropped"] = node.drop_prefetch()
    elif arm == "D":  # pybase stays (set up by base_setup): only the image's own layers go
        node.forget([ref], [d for d in digests if d not in base_digests])
    elif arm == "B-cold":
        node.drop_page_cache(digests)
    # B and B-cold: the image A pulled, still local
    lazy = {"A": "never", "C-first": "auto", "C": "auto", "D": "auto"}.get(arm)
    rx0 = link.rx_bytes()
    t0 = time.perf_counter()
    if lazy:
        doc = node.pull(ref, lazy)
        row["pull_ms"] = (time.perf_counter() - t0) * 1e3
        row["pull_lazy"] = doc.get("lazy") if isinstance(doc, dict) else None
        row["pull_lazy_reason"] = doc.get("lazyReason") if isinstance(doc, dict) else None
        row["local_after_pull"] = lazy_totals(node.inspect(ref)) if lazy == "auto" else None
    status, body, app = node.start(ref, conn)
    t1 = time.perf_counter()
    rx1 = link.rx_bytes()
    row.update({"ms": (t1 - t0) * 1e3, "status": status, "body": body[:60].decode(errors="replace"),
                "rx_bytes": rx1 - rx0, "rx_pct": 100.0 * (rx1 - rx0) / img_bytes})
    lt = lazy_totals(node.inspect(ref))
    row["local_at_answer"] = lt
    if lt:
        hexes = [d.split(":")[1] for d in digests]
        row["accessed_chunks"], row["accessed_bytes"] = node.accessed(hexes)
        row["fetcher"] = node.fetcher_status(hexes)
    node.delete_app(app)
    ok = status == 200 and b"lazy bench" in body
    if arm in LAZY_ARMS and not lt:
        ok = False
        row["why"] = "the pull was not lazy"
    row["ok"] = ok
    return row


def cpu_s(pid):
    """CPU seconds (user + system) of process pid so far, or None."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def base_setup(node, ref, digests, base_ref, base_digests):
    """Arm D's state: nothing local but pybase, pulled lazily and read
    whole (every chunk of the base and python layers local)."""
    node.forget([ref, base_ref], digests + base_digests)
    d = node.pull(base_ref, "auto")
    try:
        fpid = int(open(os.path.join(node.args.home, "run", "lazy", "fetcher.pid")).read().split()[0])
    except (OSError, ValueError, IndexError):
        fpid = None
    procs = {"fetcher": fpid, "registry": node.registry_pid}
    cpu0 = {k: cpu_s(v) for k, v in procs.items() if v}
    rx0, t0 = node.link.rx_bytes(), time.perf_counter()
    read = node.read_layers(base_digests)
    t1, rx1 = time.perf_counter(), node.link.rx_bytes()
    cpu = {k: cpu_s(procs[k]) - v for k, v in cpu0.items() if v is not None and cpu_s(procs[k]) is not None}
    return {"base_pull_lazy": d.get("lazy") if isinstance(d, dict) else None, "base_read_bytes": read,
            "base_read_s": t1 - t0, "base_read_rx_bytes": rx1 - rx0, "base_read_cpu_s": cpu,
            "base_local": lazy_totals(node.inspect(base_ref))}


def run_link(args, node, link, registry_host, link_name, imgs, sizes, res):
    conn = harness.RawConn(args.port, timeout=300)
    arms = [a for a in ARMS if a in args.arms.split(",")]
    try:
        for name in [x for x in args.images.split(",") if x]:
            img = imgs[name]
            ref = f"{registry_host}/{REPO}/{name}:1"
            base_ref = f"{registry_host}/{REPO}/pybase:1"
            digests = [d["digest"] for d in img.layer_descs]
            base_digests = [d["digest"] for d in imgs["pybase"].layer_descs]
            img_bytes = sum(len(t) for t in img.layers)
            key = f"{link_name}/{name}"
            res["runs"][key] = {"link": link_name, "image": name, "ref": ref, "image_bytes": img_bytes,
                                "compressed_bytes": sum(d["size"] for d in img.layer_descs),
                                "arms": {a: {"rows": [], "failures": []} for a in arms}}
            # D's state (pybase local) is made once, so its tries come in a
            # block after the others, which are interleaved try by try.
            blocks = [[a for a in arms if a != "D"]] + ([["D"]] if "D" in arms else [])
            for block in blocks:
                if block == ["D"]:
                    try:
                        res["runs"][key]["base_setup"] = base_setup(node, ref, digests, base_ref, base_digests)
                    except Exception as e:
                        res["runs"][key]["base_setup"] = {"error": f"{type(e).__name__}: {e}"}
                        log(f"{key} D: {e}")
                        continue
                for i in range(-args.warmup, args.n):
                    for arm in block:
                        try:
                            row = one_try(node, link, conn, arm, ref, digests, img_bytes, base_ref, base_digests)
                        except Exception as e:
                            row = {"arm": arm, "ok": False, "error": f"{type(e).__name__}: {e}"}
                            log(f"{key} {arm}: {row['error']}")
                        row["i"] = i
                        if i < 0:
                            continue
                        a = res["runs"][key]["arms"][arm]
                        (a["rows"] if row.get("ok") else a["failures"]).append(row)
                    log(f"{key}: try {i + 1}/{args.n} " + ", ".join(
                        f"{a} {r['ms']:.0f} ms" for a in block
                        for r in res["runs"][key]["arms"][a]["rows"][-1:] if r.get("i") == i))
                    write(args.out, "lazy.json", res)
            node.forget([ref, base_ref], digests + base_digests)
            for a, v in res["runs"][key]["arms"].items():
                v["ms"] = summary([r["ms"] for r in v["rows"]])
                v["rx_bytes"] = summary([r["rx_bytes"] for r in v["rows"]])
    finally:
        conn.s.close()


# ---- a function package with large unused files -------------------------------------

PKG_ARMS = ["C-first", "C", "B-mounted", "A", "B"]
PKG_MAIN = b'''"""bench/lazy's function: a small answer; data/ is never read."""


def main(req):
    return {"status": 200, "body": {"message": "lazy package"}}
'''


def build_package(out, unused_mb):
    """Two package directories of main.py and unused_mb of host files under
    data/, which differ in one byte (two archives, so that the full and the
    lazy one never share a tree or a mount): pkg (pushed lazily) and
    pkg-full (pushed --no-lazy)."""
    files, n = host_files("/usr/share", unused_mb << 20, set())
    dirs = {}
    for variant in ("pkg", "pkg-full"):
        d = dirs[variant] = os.path.join(out, variant)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "data"))
        open(os.path.join(d, "main.py"), "wb").write(PKG_MAIN)
        open(os.path.join(d, "variant"), "w").write(variant + "\n")
        for i, p in enumerate(files):
            shutil.copyfile(p, os.path.join(d, "data", f"{i:05d}-{os.path.basename(p)}"))
    return dirs, n + len(PKG_MAIN) + 4


def pkg_try(node, link, conn, arm, refs, pkg_bytes, state):
    """One start of a new function app of package refs[lazy or full]."""
    row = {"arm": arm}
    if arm in ("C-first", "C"):
        node.forget_package()
        if arm == "C-first":
            row["prefetch_records_dropped"] = node.drop_prefetch()
        # A lazy deploy that fell back to extracting left a tree that the
        # next one would use: not ours to keep.
        if state.get("lazy_hex"):
            shutil.rmtree(os.path.join(node.args.home, "packages", "extracted", state["lazy_hex"]),
                          ignore_errors=True)
    elif arm == "A" and state.get("full_hex"):
        # Extracted trees are never collected: removed here (no app uses it).
        shutil.rmtree(os.path.join(node.args.home, "packages", "extracted", state["full_hex"]))
    # B-mounted: the lazy package as C left it (mounted, what it read local);
    # B: the full one as A left it (extracted)
    ref = refs["full" if arm in ("A", "B") else "lazy"]
    rx0 = link.rx_bytes()
    t0 = time.perf_counter()
    node.seq += 1
    app = f"lzp-{node.seq}"
    try:
        node.api.call("PUT", f"/v1/namespaces/default/apps/{app}", {"runtime": "python3", "packageImage": ref})
        conn.connect()
        req = f"GET /fn/default/{app}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.token}\r\n\r\n"
        _, status, body = conn.request(req.encode())
        t1 = time.perf_counter()
        rx1 = link.rx_bytes()
        row.update({"ms": (t1 - t0) * 1e3, "status": status, "body": body[:60].decode(errors="replace"),
                    "rx_bytes": rx1 - rx0, "rx_pct": 100.0 * (rx1 - rx0) / pkg_bytes})
        st, doc = node.api.call("GET", f"/v1/namespaces/default/apps/{app}", ok=())
        pk = ((doc or {}).get("status") or {}).get("package") if isinstance(doc, dict) else None
        row["package_status"] = pk
        if pk:
            state["full_hex" if arm in ("A", "B") else "lazy_hex"] = pk.get("archive", "").split(":")[-1]
            if pk.get("lazy"):
                row["accessed_chunks"], row["accessed_bytes"] = node.accessed([state["lazy_hex"]])
    finally:
        node.delete_app(app)
    lazy = bool(pk and pk.get("lazy"))
    row["ok"] = status == 200 and b"lazy package" in body and lazy == (arm not in ("A", "B"))
    if status == 200 and not row["ok"]:
        row["why"] = f"the package was {'' if lazy else 'not '}mounted lazily: {pk}"
    return row


def run_package(args, node, link, registry_host, link_name, pkg_bytes, res):
    refs = {"lazy": f"{registry_host}/{REPO}/pkg:1", "full": f"{registry_host}/{REPO}/pkg-full:1"}
    key = f"{link_name}/pkg"
    r = res["runs"][key] = {"link": link_name, "image": "pkg", "ref": refs["lazy"], "image_bytes": pkg_bytes,
                            "arms": {a: {"rows": [], "failures": []} for a in PKG_ARMS}}
    conn = harness.RawConn(args.port, timeout=300)
    state = node.pkg_state  # the archives' hex, across links: the trees outlive a link's run
    try:
        for i in range(-args.warmup, args.n):
            for arm in PKG_ARMS:
                try:
                    row = pkg_try(node, link, conn, arm, refs, pkg_bytes, state)
                except Exception as e:
                    row = {"arm": arm, "ok": False, "error": f"{type(e).__name__}: {e}"}
                    log(f"{key} {arm}: {row['error']}")
                row["i"] = i
                if i >= 0:
                    a = r["arms"][arm]
                    (a["rows"] if row.get("ok") else a["failures"]).append(row)
            log(f"{key}: try {i + 1}/{args.n} " + ", ".join(
                f"{a} {x['ms']:.0f} ms" for a in PKG_ARMS for x in r["arms"][a]["rows"][-1:] if x.get("i") == i))
            write(args.out, "lazy.json", res)
        node.forget_package()
    finally:
        conn.s.close()
    for a, v in r["arms"].items():
        v["ms"] = summary([x["ms"] for x in v["rows"]])
        v["rx_bytes"] = summary([x["rx_bytes"] for x in v["rows"]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--legion", required=True)
    ap.add_argument("--delayproxy", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--link", required=True)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--images", default="py100,py500")
    ap.add_argument("--links", default="unshaped,shaped")
    ap.add_argument("--rate", default="10gbit")
    ap.add_argument("--delay-us", type=int, default=250)
    ap.add_argument("--base-mb", type=int, default=40)
    ap.add_argument("--unused-mb", type=int, default=400)
    ap.add_argument("--package", default="on", help="on: also the function package part")
    args = ap.parse_args()
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"
    res = {"arms": ARMS, "n": args.n, "warmup": args.warmup, "runs": {}}
    node = Node(args)
    link = node.link = Link(args.netns, args.link, "100.64.13.1", "100.64.13.2")
    reg = proxy = None
    status = 0
    try:
        imgs, sizes, build_s = build_images(args.out, args.base_mb, args.unused_mb)
        res["images"] = {"layer_bytes": sizes, "build_s": build_s,
                         "images": {k: {"layers": [d["digest"] for d in v.layer_descs],
                                        "bytes": sum(len(t) for t in v.layers),
                                        "compressed_bytes": sum(d["size"] for d in v.layer_descs)}
                                    for k, v in imgs.items()}}
        reg = NsRegistry(args.out, link)
        node.registry_pid = reg.proc.pid  # ip netns exec execs docker-registry
        proxy = DelayProxy(args.delayproxy, link, 5001, 5000, args.delay_us)
        t0 = time.monotonic()
        for name, img in imgs.items():
            reg.push(img, f"{REPO}/{name}", "1")
        res["images"]["push_s"] = time.monotonic() - t0
        pkg = None
        if args.package == "on":
            try:
                pkg_dirs, pkg_bytes = build_package(args.out, args.unused_mb)
                t0 = time.monotonic()
                out = node.legion("package", "push", pkg_dirs["pkg"], f"{reg.host}/{REPO}/pkg:1", "--insecure")
                out += node.legion("package", "push", pkg_dirs["pkg-full"], f"{reg.host}/{REPO}/pkg-full:1",
                                   "--insecure", "--no-lazy")
                res["package"] = {"bytes": pkg_bytes, "push_s": time.monotonic() - t0, "push_output": out[-2000:]}
                pkg = pkg_bytes
            except Exception as e:
                res["package"] = {"error": f"{type(e).__name__}: {e}"}
                log(f"package push failed, no package part: {e}")
        # The lazy form, made and pushed by legiond (untimed), then forgotten.
        lazy_arms = [a for a in args.arms.split(",") if a in LAZY_ARMS]
        if lazy_arms:
            t0 = time.monotonic()
            conv = {}
            try:
                for name in imgs:
                    ref = f"{reg.host}/{REPO}/{name}:1"
                    node.pull(ref, "never")
                    conv[name] = node.legion("image", "convert", ref, "--push", "--insecure")[-2000:]
            except Exception as e:
                # Measure what can be: the arms without the lazy form.
                res["images"]["convert_error"] = f"{type(e).__name__}: {e}"
                log(f"convert failed, no lazy arms: {e}")
                args.arms = ",".join(a for a in args.arms.split(",") if a not in LAZY_ARMS)
            res["images"]["convert_s"] = time.monotonic() - t0
            res["images"]["convert_output"] = conv
        all_digests = sorted({d for v in res["images"]["images"].values() for d in v["layers"]})
        node.forget([f"{reg.host}/{REPO}/{n}:1" for n in imgs], all_digests)
        for link_name in args.links.split(","):
            if link_name == "shaped":
                link.shape(args.rate)
                host = f"{link.ns_ip}:5001"
            else:
                link.unshape()
                host = reg.host
            res.setdefault("links", {})[link_name] = {
                "registry": host, "qdiscs": link.qdiscs(), "rate": args.rate if link_name == "shaped" else None,
                "delay_us_each_way": args.delay_us if link_name == "shaped" else 0,
                "registry_round_trip_us": round_trip_us(*host.split(":"))}
            big = max(imgs["py500"].layer_descs, key=lambda d: d["size"])
            res["links"][link_name]["range_reads"] = range_reads(host, f"{REPO}/py500", big["digest"], big["size"])
            log(f"link {link_name}: registry {host}, GET /v2/ p50 "
                f"{res['links'][link_name]['registry_round_trip_us']['p50']:.0f} us, 1 MiB range reads "
                f"{res['links'][link_name]['range_reads']['mb_per_s']:.0f} MB/s")
            run_link(args, node, link, host, link_name, imgs, sizes, res)
            if pkg:
                run_package(args, node, link, host, link_name, pkg, res)
            write(args.out, "lazy.json", res)
    except Exception as e:
        status = 1
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        log(res["traceback"])
    finally:
        write(args.out, "lazy.json", res)
        if proxy:
            proxy.stop()
        if reg:
            reg.stop()
        link.unshape()
        link.delete()
    sys.exit(status)


if __name__ == "__main__":
    main()
