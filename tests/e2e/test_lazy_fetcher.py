"""The lazy fetcher (src/lazy/fetcher.c, fuse-proto.c) on a real FUSE
connection: a layer's EROFS metadata mounted with its BLOB on the fetcher's
filesystem as device, the BLOB in Debian's docker-registry on loopback.

Each test: a tree of files, made into META + BLOB by mkfs.erofs and a chunk
table; BLOB pushed to the registry; the FUSE filesystem mounted with
lg_lazy_fuse_mount (lazy-test-tool, which hands the /dev/fuse fd to this
process, as legiond keeps it); `legiond lazy-fetcher` serving it; EROFS
mounted on top with mount(2) device=<blob file>.

Needs root, /dev/fuse, mkfs.erofs and docker-registry; skips otherwise."""
import ctypes
import fcntl
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import BUILD
from oci_kit import Registry

LEGIOND = os.path.abspath(os.path.join(BUILD, "legiond"))
TOOL = os.path.abspath(os.path.join(BUILD, "tests", "lazy-test-tool"))
CHUNK = 65536
REPO = "lazy/blobs"

libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1
MNT_DETACH = 2


def mount(src, dst, fstype, flags, data):
    if libc.mount(src.encode(), dst.encode(), fstype.encode(), ctypes.c_ulong(flags), data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} {src} at {dst}: {os.strerror(e)}")


def umount(path):
    if libc.umount2(path.encode(), 0) != 0:
        libc.umount2(path.encode(), MNT_DETACH)


def mounted(path):
    """path (absolute, no symlinks) is a mount point. Without a stat: a
    FUSE root whose server is gone would make one wait."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.fixture(scope="module")
def tools():
    if os.geteuid() != 0:
        pytest.skip("FUSE and EROFS mounts need root")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse on this machine")
    for t in ("mkfs.erofs", "docker-registry"):
        if not shutil.which(t):
            pytest.skip(f"{t} is not installed")
    for p in (LEGIOND, TOOL):
        if not os.path.exists(p):
            pytest.fail(f"{p} is not built: run `ninja -C build` first")


def make_tree(root, seed=13):
    """Files of sizes around the chunk and block edges, a few identical,
    random content (so each 64 KiB piece is found once in BLOB)."""
    rnd = random.Random(seed)
    sizes = [0, 1, 100, 4095, 4096, 4097, 65535, 65536, 65537, 131072, 200000, 300001,
             1 << 20, (1 << 20) + 12345, 3 << 20, 5 * 65536 + 7]
    sizes += [rnd.randrange(1, 600000) for _ in range(24)]
    files = {}
    for i, size in enumerate(sizes):
        rel = os.path.join(f"d{i % 4}", f"f{i:02d}.bin")
        files[rel] = rnd.randbytes(size)
    files["d0/same-a.bin"] = files["d1/f13.bin"]
    files["d2/same-b.bin"] = files["d1/f13.bin"]
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    os.symlink("d0/f00.bin", os.path.join(root, "link"))
    return {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}, files


def parse_table(data):
    """(offset, length, sha256 hex) of each chunk of a chunk table."""
    assert data[:8] == b"LGCHUNK1"
    _, _, _, n = struct.unpack("<IIQQ", data[8:32])
    out = []
    for i in range(n):
        off, length, _ = struct.unpack("<QII", data[32 + 48 * i:48 + 48 * i])
        out.append((off, length, data[48 + 48 * i:80 + 48 * i].hex()))
    return out


def fiemap(path):
    """(physical offset, length) of each extent of path (FS_IOC_FIEMAP)."""
    n = 512
    buf = bytearray(struct.pack("<QQIIII", 0, 2**64 - 1, 0, 0, n, 0) + bytes(56 * n))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), 0xC020660B, buf)
    mapped = struct.unpack_from("<I", buf, 20)[0]
    assert mapped < n
    return [struct.unpack_from("<QQQ", buf, 32 + 56 * i)[1:] for i in range(mapped)]


class Layer:
    """A tree made into META + BLOB + chunk table by lg_lazy_build (the
    test tool), BLOB in the registry."""

    def __init__(self, work, registry):
        self.tree = os.path.join(work, "tree")
        os.makedirs(self.tree)
        self.sums, self.files = make_tree(self.tree)
        out = os.path.join(work, "built")
        subprocess.run([TOOL, "build", self.tree, out], check=True, capture_output=True, timeout=300)
        self.meta = os.path.join(out, "meta.erofs")
        self.blob = open(os.path.join(out, "blob"), "rb").read()
        self.table = open(os.path.join(out, "chunks"), "rb").read()
        self.chunks = parse_table(self.table)
        self.shas = [c[2] for c in self.chunks]
        assert len(self.chunks) > 10 and self.chunks[-1][0] + self.chunks[-1][1] == len(self.blob)
        self.digest = "sha256:" + hashlib.sha256(self.blob).hexdigest()
        self.hex = hashlib.sha256(b"layer" + self.blob).hexdigest()  # stands for the layer digest
        registry.push_blob(REPO, self.digest, self.blob)
        self.registry = registry
        # The layer mounted on its local BLOB, for FIEMAP (chunks_of).
        self.mnt = os.path.join(work, "local")
        os.makedirs(self.mnt)
        mount(self.meta, self.mnt, "erofs", MS_RDONLY, "device=" + os.path.join(out, "blob"))

    def close(self):
        if mounted(self.mnt):
            umount(self.mnt)

    def chunk_at(self, off):
        return next(i for i, (o, n, _) in enumerate(self.chunks) if o <= off < o + n)

    def chunks_of(self, rel):
        """Indexes of the table chunks holding rel's data in BLOB, by the
        FIEMAP extents of the file in an EROFS mount of the layer (META
        only: no data is read). None when EROFS keeps it inline in META."""
        out = set()
        for phys, length in fiemap(os.path.join(self.mnt, rel)):
            out.update(range(self.chunk_at(phys), self.chunk_at(phys + length - 1) + 1))
        return out

    def registry_data(self):
        h = self.digest[7:]
        return os.path.join(self.registry.storage, "docker", "registry", "v2", "blobs", "sha256", h[:2], h, "data")


class Rig:
    """A home with the layer, the FUSE mount, a fetcher, EROFS on top."""

    def __init__(self, work, layer, registry_host, timeout_ms=3000, rate="0", prefetch=None, mirrors=None):
        self.layer, self.timeout_ms, self.rate = layer, timeout_ms, rate
        os.makedirs(work, exist_ok=True)
        self.home = os.path.join(work, "home")
        ldir = os.path.join(self.home, "lazy", "layers", layer.hex)
        os.makedirs(ldir)
        open(os.path.join(ldir, "chunks"), "wb").write(layer.table)
        source = {"registry": registry_host, "repository": REPO, "digest": layer.digest, "insecure": True}
        if mirrors:
            source["mirrors"] = [{"registry": m, "insecure": True} for m in mirrors]
        json.dump(source, open(os.path.join(ldir, "source.json"), "w"))
        if prefetch is not None:  # a record kept from an earlier attachment
            os.makedirs(os.path.join(self.home, "lazy", "prefetch"))
            open(os.path.join(self.home, "lazy", "prefetch", layer.digest[7:]), "wb").write(prefetch)
        self.blobs = os.path.join(self.home, "run", "lazy", "blobs")
        os.makedirs(self.blobs)
        self.mnt = os.path.join(work, "mnt")
        os.makedirs(self.mnt)
        self.fd = None
        self.proc = None
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            subprocess.run([TOOL, "mount", self.blobs, str(b.fileno())], pass_fds=(b.fileno(),), check=True,
                           capture_output=True, timeout=30)
            _, fds, _, _ = socket.recv_fds(a, 1, 1)
            self.fd = fds[0]
        finally:
            a.close()
            b.close()
        self.start()
        self.mount_erofs()

    def start(self, resume=False):
        args = [LEGIOND, "lazy-fetcher", "--home", self.home, "--fd", str(self.fd), "--rate", self.rate,
                "--timeout-ms", str(self.timeout_ms)] + (["--resume"] if resume else [])
        self.proc = subprocess.Popen(args, pass_fds=(self.fd,), stderr=subprocess.PIPE)

    def mount_erofs(self):
        mount(self.layer.meta, self.mnt, "erofs", MS_RDONLY, f"device={self.blobs}/{self.layer.hex}")

    def remount(self):
        """A fresh EROFS superblock: nothing of the layer in the page cache."""
        umount(self.mnt)
        self.mount_erofs()

    def ctl(self, req):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(os.path.join(self.home, "run", "lazy", "fetcher.sock"))
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(4096)
            assert d, "control socket closed"
            buf += d
        s.close()
        return json.loads(buf)

    def status(self):
        return self.ctl({"op": "status", "layer": self.layer.hex})

    def local_chunks(self):
        """Table chunk indexes whose bytes are in the chunk store."""
        store = os.path.join(self.home, "lazy", "chunks")
        return {i for i, h in enumerate(self.layer.shas) if os.path.exists(os.path.join(store, h[:2], h))}

    def stop_fetcher(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.proc:
            return ""
        err = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        if self.proc.returncode != 0:
            err = f"exit status {self.proc.returncode}: {err}"
        self.proc = None
        return err

    def abort(self):
        """Abort this FUSE connection (fusectl): what is waiting on it
        fails, so that a test that found a hang can end."""
        conns = "/sys/fs/fuse/connections"
        if not os.path.isdir(os.path.join(conns, ".")) or not os.listdir(conns):
            subprocess.run(["mount", "-t", "fusectl", "none", conns], capture_output=True)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == self.blobs:
                    with open(os.path.join(conns, fields[2].split(":")[1], "abort"), "w") as a:
                        a.write("1")

    def close(self):
        if mounted(self.mnt):
            umount(self.mnt)
        err = self.stop_fetcher()
        if mounted(self.blobs):
            umount(self.blobs)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return err


def read(path):
    """sha256 of the file, or the errno name reading it failed with."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        return "errno:" + (os.strerror(e.errno) if e.errno else str(e))


EIO = "errno:" + os.strerror(5)


@pytest.fixture()
def work(tools):
    d = tempfile.mkdtemp(prefix="lg-lazyf-")
    reg = Registry(d)
    rigs, layers = [], []
    yield d, reg, rigs, layers
    errs = [r.close() for r in rigs]
    for layer in layers:
        layer.close()
    reg.stop()
    shutil.rmtree(d, ignore_errors=True)
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    assert d not in out, "mounts left behind"
    # SIGTERM ends a fetcher cleanly: no message (ASan's included).
    assert errs == [""] * len(errs)


def test_every_file_reads_as_the_original(work):
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    rig = Rig(d, layer, reg.host)
    rigs.append(rig)
    got = {rel: read(os.path.join(rig.mnt, rel)) for rel in layer.sums}
    assert got == layer.sums
    assert os.readlink(os.path.join(rig.mnt, "link")) == "d0/f00.bin"
    # The blob directory itself: one read-only file per layer.
    assert os.listdir(rig.blobs) == [layer.hex]
    st = os.stat(os.path.join(rig.blobs, layer.hex))
    assert (st.st_mode, st.st_size, st.st_uid) == (0o100444, len(layer.blob), 0)
    assert os.statvfs(rig.blobs).f_bsize == 4096
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(rig.blobs, "f" * 64))
    with pytest.raises(OSError) as e:
        open(os.path.join(rig.blobs, layer.hex), "r+b")
    assert e.value.errno in (30, 13)  # EROFS (a read-only mount may say so first) or EACCES
    st = rig.status()
    assert st["ok"] and st["errors"] == 0 and st["misses"] > 0, st
    assert st["chunks"] == len(layer.shas) and st["bytes"] == len(layer.blob), st
    assert 0 < st["fetchedBytes"] <= len(layer.blob) and st["localBytes"] == st["fetchedBytes"], st
    # The first reads were recorded: chunk indexes, each once.
    acc = open(os.path.join(rig.home, "lazy", "layers", layer.hex, "accessed"), "rb").read()
    idx = struct.unpack(f"<{len(acc) // 4}I", acc)
    assert idx and len(set(idx)) == len(idx) and max(idx) < len(layer.shas)
    pf = open(os.path.join(rig.home, "lazy", "prefetch", layer.digest[7:]), "rb").read()
    assert pf == acc
    # A second pass comes from the chunk store (EROFS remounted: no cache).
    rig.remount()
    reg.stop()
    assert {rel: read(os.path.join(rig.mnt, rel)) for rel in layer.sums} == layer.sums


def test_corrupt_blob_in_registry_fails_only_its_files(work):
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    victim = "d1/f13.bin"           # 1 MiB + 12345, also same-a and same-b
    bad_chunk = sorted(layer.chunks_of(victim))[1]
    path = layer.registry_data()
    data = bytearray(open(path, "rb").read())
    data[layer.chunks[bad_chunk][0] + 100] ^= 0xff
    open(path, "wb").write(bytes(data))
    expect_bad = {rel for rel in layer.sums if bad_chunk in layer.chunks_of(rel)}
    assert {victim, "d0/same-a.bin", "d2/same-b.bin"} <= expect_bad and len(expect_bad) < len(layer.sums) - 10
    rig = Rig(d, layer, reg.host)
    rigs.append(rig)
    got = {rel: read(os.path.join(rig.mnt, rel)) for rel in layer.sums}
    assert {rel for rel, v in got.items() if v == EIO} == expect_bad
    assert {rel: v for rel, v in got.items() if rel not in expect_bad} == \
        {rel: v for rel, v in layer.sums.items() if rel not in expect_bad}
    assert bad_chunk not in rig.local_chunks()
    st = rig.status()
    assert st["errors"] > 0, st


def test_registry_stopped_fails_only_unfetched_ranges(work):
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    rig = Rig(d, layer, reg.host, timeout_ms=2000)
    rigs.append(rig)
    names = sorted(layer.sums)
    first = names[::3]
    assert {rel: read(os.path.join(rig.mnt, rel)) for rel in first} == {rel: layer.sums[rel] for rel in first}
    reg.stop()
    rig.remount()
    local = rig.local_chunks()
    expect_ok = {rel for rel in names if layer.chunks_of(rel) <= local}
    assert set(first) <= expect_ok and len(expect_ok) < len(names) - 5
    got = {rel: read(os.path.join(rig.mnt, rel)) for rel in names}
    assert {rel for rel in names if got[rel] == layer.sums[rel]} == expect_ok
    assert {rel for rel in names if got[rel] == EIO} == set(names) - expect_ok

    # A registry that answers a byte at a time, forever: no HTTP client
    # timeout ends that; the READ still ends, EIO, at the fetcher's
    # deadline (2 s here; the test's bound is 120 s).
    hole = Trickle(reg.port)
    try:
        rig.remount()
        missing = sorted(set(names) - expect_ok)[0]
        p = subprocess.Popen([sys.executable, "-c", "import sys\ntry:\n open(sys.argv[1],'rb').read()\n"
                              "except OSError as e:\n print(e.errno)\n", os.path.join(rig.mnt, missing)],
                             stdout=subprocess.PIPE, text=True)
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            rig.abort()  # the read is stuck in the kernel until its request ends
            p.kill()
            p.wait()
            raise
        assert out.strip() == "5"
        assert hole.served, "the trickling registry was not asked"
    finally:
        hole.close()


class TcpServer:
    """A listener on 127.0.0.1:port (0: any) handing each connection to
    self.conn(sock) on a thread of its own; close() ends it."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def close(self):
        self.stopped = True
        self.sock.close()


class Trickle(TcpServer):
    """An HTTP server that answers every request 206 with a large body
    sent one byte every 100 ms."""

    served = 0

    def conn(self, c):
        try:
            c.recv(65536)
            self.served += 1
            c.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1048576\r\n"
                      b"Content-Range: bytes 0-1048575/1048576\r\n\r\n")
            while not self.stopped:
                c.sendall(b"x")
                time.sleep(0.1)
        except OSError:
            pass
        c.close()


def wait_for(cond, what, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_prefetch_record_first_then_hydration(work):
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    rig = Rig(os.path.join(d, "first"), layer, reg.host)
    rigs.append(rig)
    for rel in ("d0/f04.bin", "d2/f10.bin"):
        assert read(os.path.join(rig.mnt, rel)) == layer.sums[rel]
    record = open(os.path.join(rig.home, "lazy", "prefetch", layer.digest[7:]), "rb").read()
    recorded = set(struct.unpack(f"<{len(record) // 4}I", record))
    assert recorded

    # Another node (home) that has the record: with no hydration (rate 0)
    # and no read, the recorded chunks come, and not the whole layer.
    again = Rig(os.path.join(d, "again"), layer, reg.host, prefetch=record)
    rigs.append(again)
    wait_for(lambda: recorded <= again.local_chunks(), "recorded chunks")
    assert again.local_chunks() != set(range(len(layer.shas)))
    st = again.status()
    assert st["misses"] == 0 and st["errors"] == 0 and st["fetchedBytes"] > 0, st

    # Hydration: everything, at a rate, without any read.
    full = Rig(os.path.join(d, "full"), layer, reg.host, rate="64M")
    rigs.append(full)
    wait_for(lambda: full.status()["localChunks"] == len(layer.shas), "hydration")
    reg.stop()
    assert {rel: read(os.path.join(full.mnt, rel)) for rel in layer.sums} == layer.sums
    st = full.status()
    assert st["misses"] == 0 and st["fetchedBytes"] == len(layer.blob), st


class Liar:
    """A registry mirror that answers every range with zeros."""

    def __init__(self):
        liar = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                liar.asked += 1
                a, b = (int(x) for x in self.headers["Range"].split("=")[1].split("-"))
                self.send_response(206)
                self.send_header("Content-Length", str(b - a + 1))
                self.send_header("Content-Range", f"bytes {a}-{b}/*")
                self.end_headers()
                self.wfile.write(bytes(b - a + 1))

            def log_message(self, *a):
                pass

        self.asked = 0
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.host = f"127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_mirrors_first_never_their_wrong_bytes(work):
    """The mirrors are asked before the registry; one answering zeros is
    refused (and left alone), the next one's verified bytes are served."""
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    mirror = Registry(os.path.join(d, "mirror"))
    liar = Liar()
    try:
        mirror.push_blob(REPO, layer.digest, layer.blob)
        reg.stop()  # only the mirrors can give the bytes
        rig = Rig(d, layer, reg.host, mirrors=[liar.host, mirror.host])
        rigs.append(rig)
        assert {rel: read(os.path.join(rig.mnt, rel)) for rel in layer.sums} == layer.sums
        assert liar.asked >= 1
        st = rig.status()
        assert st["errors"] == 0 and st["fetchedBytes"] > 0, st
    finally:
        liar.close()
        mirror.stop()


class SlowProxy(TcpServer):
    """TCP proxy to the registry that holds every answer a while, so that
    reads are in flight when the fetcher is killed."""

    def __init__(self, upstream_port, delay):
        self.port_up, self.delay = upstream_port, delay
        super().__init__()

    def conn(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.port_up))
        except OSError:  # the registry is gone (teardown)
            c.close()
            return
        threading.Thread(target=self.pump, args=(c, u, 0), daemon=True).start()
        self.pump(u, c, self.delay)

    def pump(self, a, b, delay):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


READER = r"""
import hashlib, json, os, sys
root, names = sys.argv[1], sys.argv[2:]
out = {}
for rel in names:
    try:
        with open(os.path.join(root, rel), "rb") as f:
            out[rel] = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        out[rel] = "errno:%d" % e.errno
print(json.dumps(out))
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_fetcher_killed_under_20_readers_resumes_without_failures(work, sig):
    """Killed (SIGKILL) or stopped (SIGTERM, which leaves the reads it
    waits on to the next fetcher) during 20 readers' cold reads; the next
    one started with --resume on the kept fd: no read fails."""
    d, reg, rigs, layers = work
    layer = Layer(d, reg)
    layers.append(layer)
    proxy = SlowProxy(reg.port, 0.02)
    try:
        rig = Rig(d, layer, proxy.host, timeout_ms=60000)
        rigs.append(rig)
        names = sorted(layer.sums)
        readers = []
        for k in range(20):
            order = names[k % len(names):] + names[:k % len(names)]
            readers.append(subprocess.Popen([sys.executable, "-c", READER, rig.mnt, *order],
                                            stdout=subprocess.PIPE, text=True))
        # Kill it once reads are under way, not all done.
        deadline = time.time() + 60
        while len(rig.local_chunks()) < 4 and time.time() < deadline:
            time.sleep(0.01)
        assert len(rig.local_chunks()) < len(layer.shas) // 2, "reads were done before the kill"
        rig.proc.send_signal(sig)
        rig.proc.wait(timeout=60)
        if sig == signal.SIGTERM:
            assert rig.proc.returncode == 0 and rig.proc.stderr.read() == b""
        rig.proc.stderr.close()
        rig.proc = None
        rig.start(resume=True)
        results = [json.loads(p.communicate(timeout=120)[0]) for p in readers]
        bad = [(k, rel, v) for k, r in enumerate(results) for rel, v in r.items() if v != layer.sums[rel]]
        assert bad == [], bad[:5]
        assert rig.status()["errors"] == 0
    finally:
        # Readers still there wait on requests no fetcher may answer (a
        # failure before the restart): end them by aborting the connection.
        readers = locals().get("readers", [])
        if any(p.poll() is None for p in readers) and rigs:
            rigs[-1].abort()
        for p in readers:
            if p.poll() is None:
                p.kill()
                p.wait()
        proxy.close()
