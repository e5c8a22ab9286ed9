#!/usr/bin/python3
"""bench/lazy/alternatives.py OUT_DIR: the measurements behind issue 13's
choice of EROFS over a FUSE blob file (docs/lazy-images.md, "Why EROFS over
a FUSE blob"). Run as root; everything it mounts it unmounts, also on
failure; no traffic, no drop_caches (shared machine).

fanotify  Does a FAN_PRE_ACCESS mark (kernel >= 6.14; the constants are
          defined here, Debian 12's headers predate them) on the regular
          file an EROFS file-backed mount uses as its device= blob see
          EROFS's reads of it, with the mark made before the mount and
          after it? What does a reader get when the listener holding its
          pending permission event dies (blob sparse: the bytes a lazy
          cache would not have yet)? And what when a living listener
          answers FAN_DENY_ERRNO(EIO)?
reads     Cost of reading the same tree (a copy of the host's Python
          standard library plus one large file) through EROFS whose blob
          is a file on a FUSE filesystem (a small /dev/fuse server in this
          script, one process, serving from a local file), the same EROFS
          with the blob a local file, and the plain extracted directory
          (what Legion has today). Cold: every try is a fresh EROFS (and
          FUSE) mount and posix_fadvise(DONTNEED) of the local files read
          (the blob, META, the source file the FUSE server reads, the
          plain tree's files), instead of drop_caches; the plain tree's
          dentries and inodes stay cached (it favours the plain tree).
          Warm: the same read again in the same mount.
          Workloads: every file of the tree read whole (walk order), the
          large file read sequentially (1 MiB reads), and 4 KiB preads at
          random 4 KiB-aligned offsets of the large file.

Writes OUT_DIR/alternatives.json and OUT_DIR/alternatives.md; with
`--docs docs/lazy-images.md` also puts the tables between that file's
markers BEGIN and END (below), so that the docs' figures are this script's.

    bench/lazy/alternatives.py bench/out/lazy-alt --docs docs/lazy-images.md

Environment: ALT_PARTS [fanotify,reads], ALT_MEDIA [disk,memory],
ALT_TRIES [7], ALT_BIG_MIB [128], ALT_RAND_N [2000]."""
import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]

MS_RDONLY = 1
MNT_DETACH = 2
# <linux/fanotify.h> of kernel 6.14+ (pre-content events).
FAN_CLOEXEC = 0x1
FAN_CLASS_PRE_CONTENT = 0x8
FAN_MARK_ADD = 0x1
FAN_PRE_ACCESS = 0x00100000
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_EVENT_INFO_TYPE_RANGE = 6


def FAN_DENY_ERRNO(e):
    return FAN_DENY | ((e & 0xff) << 24)


BEGIN = "<!-- figures from bench/lazy/alternatives.py: begin -->"
END = "<!-- figures from bench/lazy/alternatives.py: end -->"
AT_FDCWD = -100
CHUNK = 65536
MOUNTS = []  # what this script mounted, unmounted at exit in reverse


def log(*a):
    print("bench/lazy/alternatives:", *a, file=sys.stderr, flush=True)


def mount(src, target, fstype, flags, data):
    if libc.mount(src.encode(), target.encode(), fstype.encode(), flags, data.encode() if data else None):
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} {src} on {target} ({data}): {os.strerror(e)}")
    MOUNTS.append(target)


def umount(target):
    if libc.umount2(target.encode(), 0):
        libc.umount2(target.encode(), MNT_DETACH)
    if target in MOUNTS:
        MOUNTS.remove(target)


def umount_all():
    for t in reversed(list(MOUNTS)):
        umount(t)


def drop(path):
    """Drop path's clean pages from the page cache (this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def erofs_build(src, meta, blob):
    for p in (meta, blob):
        if os.path.exists(p):
            os.unlink(p)
    subprocess.run(["mkfs.erofs", "--quiet", f"--chunksize={CHUNK}", f"--blobdev={blob}", meta, src],
                   check=True, capture_output=True)


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


# ---- fanotify -----------------------------------------------------------------

def fan_group():
    fd = libc.fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC, os.O_RDONLY | os.O_LARGEFILE)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fanotify_init(FAN_CLASS_PRE_CONTENT): {os.strerror(e)}")
    return fd


def fan_mark(fd, path):
    if libc.fanotify_mark(fd, FAN_MARK_ADD, FAN_PRE_ACCESS, AT_FDCWD, path.encode()):
        e = ctypes.get_errno()
        raise OSError(e, f"fanotify_mark(FAN_PRE_ACCESS, {path}): {os.strerror(e)}")


def fan_events(buf):
    """(mask, fd, pid, range (offset, count) or None) of each event in buf."""
    out, off = [], 0
    while off + 24 <= len(buf):
        ev_len, _vers, _res, meta_len, mask, fd, pid = struct.unpack_from("<IBBHQii", buf, off)
        rng, i = None, off + meta_len
        while i + 4 <= off + ev_len:
            typ, _pad, ilen = struct.unpack_from("<BBH", buf, i)
            if typ == FAN_EVENT_INFO_TYPE_RANGE and ilen >= 24:
                rng = struct.unpack_from("<QQ", buf, i + 8)
            i += max(ilen, 4)
        out.append((mask, fd, pid, rng))
        off += ev_len
    return out


def fan_respond(group, fd, response):
    os.write(group, struct.pack("<iI", fd, response))
    os.close(fd)


class ForkedListener:
    """A forked process with a FAN_PRE_ACCESS mark on path (made before
    this returns) answering `response` to every event (None: never
    answer), counting events and the bytes of their ranges. FAN_ALLOW over
    a local blob is what a pre-content lazy cache whose data is all local
    costs per event."""

    def __init__(self, path, response=FAN_ALLOW):
        rp, wp = os.pipe()
        self.counts = mmap.mmap(-1, 16)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(rp)
                g = fan_group()
                fan_mark(g, path)
                os.write(wp, b"r")
                while True:
                    for _mask, fd, _pid, rng in fan_events(os.read(g, 65536)):
                        if response is not None:
                            fan_respond(g, fd, response)
                        n, b = struct.unpack_from("<QQ", self.counts)
                        struct.pack_into("<QQ", self.counts, 0, n + 1, b + (rng[1] if rng else 0))
            finally:
                os._exit(0)
        os.close(wp)
        ok = os.read(rp, 1) == b"r"
        os.close(rp)
        if not ok:
            self.close()
            raise RuntimeError("the fanotify listener did not start")

    def events(self):
        return struct.unpack_from("<QQ", self.counts)[0]

    def close(self):
        """Stops the listener (if alive); returns (events, bytes of their ranges)."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None
        return struct.unpack_from("<QQ", self.counts)


class Listener(threading.Thread):
    """Answers every event of group with `response`, recording them."""

    def __init__(self, group, response=FAN_ALLOW):
        super().__init__(daemon=True)
        self.group, self.response, self.events, self.stop = group, response, [], False

    def run(self):
        import select
        while not self.stop:
            r, _, _ = select.select([self.group], [], [], 0.05)
            if not r:
                continue
            for mask, fd, pid, rng in fan_events(os.read(self.group, 65536)):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = "?"
                self.events.append({"mask": hex(mask), "pid": pid, "range": rng, "file": target})
                fan_respond(self.group, fd, self.response)


def read_in_child(path, timeout=20):
    """Read path whole in a child process: (status, sha256 or errno name,
    all-zero, seconds). A child, so that its pid differs from ours."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", r'''
import errno, hashlib, os, sys
try:
    b = open(sys.argv[1], "rb").read()
    print("ok", hashlib.sha256(b).hexdigest(), int(b.count(0) == len(b)), len(b), os.getpid())
except OSError as e:
    print("err", errno.errorcode.get(e.errno, e.errno), 0, 0, os.getpid())
''', path], capture_output=True, text=True, timeout=timeout)
    st, val, zero, n, pid = p.stdout.split()
    return {"status": st, "result": val, "all_zero": zero == "1", "bytes": int(n), "s": time.monotonic() - t0,
            "pid": int(pid)}


def part_fanotify(work):
    res = {"kernel": os.uname().release}
    src = os.path.join(work, "fan-src")
    os.makedirs(src, exist_ok=True)
    data = os.urandom(4 * CHUNK)  # 4 chunks, none alike (mkfs dedups)
    with open(os.path.join(src, "f.bin"), "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    meta, blob = os.path.join(work, "fan.meta"), os.path.join(work, "fan.blob")
    erofs_build(src, meta, blob)
    mnt = os.path.join(work, "fan-mnt")
    os.makedirs(mnt, exist_ok=True)
    res["blob_bytes"] = os.path.getsize(blob)

    # Sanity: the mark works for an ordinary read of the blob.
    g = fan_group()
    fan_mark(g, blob)
    li = Listener(g)
    li.start()
    drop(blob)
    r = read_in_child(blob)
    li.stop = True
    li.join()
    os.close(g)
    res["plain_read_of_blob"] = {"events": len(li.events), "read": r["status"]}

    # 1. Marked before the mount; 2. marked after the mount (the blob is
    # opened by mount(2)); 3. a listener that marked before the mount is
    # gone and a new one marks it (a restarted fetcher).
    for when in ("mark-before-mount", "mark-after-mount", "new-listener-after-mount"):
        drop(blob)
        drop(meta)
        g = fan_group()
        if when != "mark-after-mount":
            fan_mark(g, blob)
        mount(meta, mnt, "erofs", MS_RDONLY, f"device={blob}")
        try:
            if when == "new-listener-after-mount":
                os.close(g)
                g = fan_group()
            if when != "mark-before-mount":
                fan_mark(g, blob)
            li = Listener(g)
            li.start()
            r = read_in_child(os.path.join(mnt, "f.bin"))
            li.stop = True
            li.join()
        finally:
            umount(mnt)
            os.close(g)
        res[when] = {"events": len(li.events), "read_ok": r["status"] == "ok" and r["result"] == want,
                     "event_pid_is_reader": bool(li.events) and all(e["pid"] == r["pid"] for e in li.events),
                     "sample": li.events[:3]}
        log(f"fanotify {when}: {len(li.events)} FAN_PRE_ACCESS events for EROFS's reads, read ok {res[when]['read_ok']}")

    # 3. The lazy-cache situation: the blob is sparse (nothing fetched yet),
    # the listener gets the event and dies before answering.
    sparse = os.path.join(work, "fan.sparse")
    with open(sparse, "wb") as f:
        f.truncate(os.path.getsize(blob))
    for case in ("listener-killed", "listener-denies-EIO"):
        li = ForkedListener(sparse, None if case == "listener-killed" else FAN_DENY_ERRNO(errno.EIO))
        mount(meta, mnt, "erofs", MS_RDONLY, f"device={sparse}")
        try:
            out = {}
            t = threading.Thread(target=lambda: out.update(read_in_child(os.path.join(mnt, "f.bin"), timeout=60)))
            t0 = time.monotonic()
            t.start()
            deadline = time.monotonic() + 5
            while not li.events() and time.monotonic() < deadline:
                time.sleep(0.01)
            ev = li.events()
            time.sleep(0.5)
            blocked = t.is_alive()
            li.close()
            t.join(30)
        finally:
            li.close()
            umount(mnt)
        res[case] = {"event_seen": ev > 0, "reader_blocked_before": blocked,
                     "reader": out.get("status"), "result": out.get("result"),
                     "bytes": out.get("bytes"), "all_zero": out.get("all_zero"),
                     "matches_original": out.get("result") == want,
                     "waited_s": round(time.monotonic() - t0, 3)}
        log(f"fanotify {case}: {res[case]}")
    return res


def part_fuse_restart(work):
    """The FUSE counterpart of the dead fanotify listener: the server dies
    holding a READ of EROFS's blob while its mounter keeps the /dev/fuse
    fd; a new server takes the connection over (FUSE_NOTIFY_RESEND). And
    the connection's last fd closed with no server (aborted)."""
    src = os.path.join(work, "fan-src")
    meta, blob = os.path.join(work, "fan.meta"), os.path.join(work, "fan.blob")
    want = hashlib.sha256(open(os.path.join(src, "f.bin"), "rb").read()).hexdigest()
    mnt, fmnt = os.path.join(work, "fan-mnt"), os.path.join(work, "fuse-restart")
    os.makedirs(fmnt, exist_ok=True)
    res = {}
    for case in ("server-killed-then-resumed", "server-killed-connection-closed"):
        fuse = FuseBlob(fmnt, blob, keep_fd=True, die_on_read=True)
        try:
            mount(meta, mnt, "erofs", MS_RDONLY, f"device={fuse.path}")
            out = {}
            t = threading.Thread(target=lambda: out.update(read_in_child(os.path.join(mnt, "f.bin"), timeout=60)))
            t0 = time.monotonic()
            t.start()
            os.waitpid(fuse.pid, 0)  # it died on the READ
            fuse.pid = None
            time.sleep(0.5)
            blocked = t.is_alive()
            if case == "server-killed-then-resumed":
                fuse.start(fuse.fd, resume=True)
            else:
                # Abort the connection the way its last fd closing does
                # once the mount is gone: umount -l, then close.
                libc.umount2(fmnt.encode(), MNT_DETACH)
                os.close(fuse.fd)
                fuse.fd = None
            t.join(30)
            res[case] = {"reader_blocked_while_no_server": blocked, "reader": out.get("status"),
                         "result": out.get("result"), "all_zero": out.get("all_zero"),
                         "matches_original": out.get("result") == want, "waited_s": round(time.monotonic() - t0, 3)}
        finally:
            umount(mnt)
            fuse.close()
        log(f"fuse {case}: {res[case]}")
    return res


# ---- a FUSE server with one file, on /dev/fuse ----------------------------------------

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_READ = 1, 2, 3, 14, 15
FUSE_STATFS, FUSE_RELEASE, FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR = 17, 18, 25, 26, 27
FUSE_READDIR, FUSE_RELEASEDIR, FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET = 28, 29, 36, 38, 42
FUSE_MAX_PAGES, FUSE_ASYNC_READ = 1 << 22, 1 << 0
FOPEN_DIRECT_IO = 1
FILE_INO = 2


def fuse_attr(ino, size, mode):
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                       mode, 1, 0, 0, 0, 4096, 0)


FUSE_NOTIFY_RESEND = 7  # kernel >= 6.9; Debian 12's <linux/fuse.h> lacks it


def fuse_serve(fd, name, path, counts, die_on_read=False, resume=False):
    """Serve one read-only file `name` (the bytes of path) until the
    connection ends; counts (u64 READs, u64 bytes) in the shared mapping
    counts. die_on_read: SIGKILL itself on the first READ (a crashed
    server). resume: a server taking over a live connection: no INIT,
    and the kernel asked to resend what the dead one had read. Blocks; run
    in a child process."""
    if resume:
        os.write(fd, struct.pack("<IiQ", 16, FUSE_NOTIFY_RESEND, 0))
    src = os.open(path, os.O_RDONLY)
    size = os.fstat(src).st_size
    bname = name.encode()
    while True:
        try:
            req = os.read(fd, (1 << 20) + 8192)
        except OSError as e:
            if e.errno in (errno.ENODEV,):
                return
            if e.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                continue
            raise
        ln, op, unique, node = struct.unpack_from("<IIQQ", req)
        body = req[40:ln]
        err, out = 0, b""
        if op == FUSE_INIT:
            major, minor, ra, flags = struct.unpack_from("<IIII", body)
            out = struct.pack("<IIIIHHIIHHII", 7, 31, 1 << 20, flags & (FUSE_MAX_PAGES | FUSE_ASYNC_READ),
                              16, 12, 1 << 20, 1, 256, 0, 0, 0) + b"\0" * 24
        elif op == FUSE_LOOKUP:
            if node == 1 and body.rstrip(b"\0") == bname:
                out = struct.pack("<QQQQII", FILE_INO, 0, 3600, 3600, 0, 0) + fuse_attr(FILE_INO, size, 0o100444)
            else:
                err = -errno.ENOENT
        elif op == FUSE_GETATTR:
            a = fuse_attr(1, 0, 0o40755) if node == 1 else fuse_attr(FILE_INO, size, 0o100444)
            out = struct.pack("<QII", 3600, 0, 0) + a
        elif op in (FUSE_OPEN, FUSE_OPENDIR):
            out = struct.pack("<QIi", node, FOPEN_DIRECT_IO if op == FUSE_OPEN else 0, 0)
        elif op == FUSE_READ:
            _fh, off, sz = struct.unpack_from("<QQI", body)
            if die_on_read:
                os.kill(os.getpid(), signal.SIGKILL)
            out = os.pread(src, sz, off)
            n, b = struct.unpack_from("<QQ", counts)
            struct.pack_into("<QQ", counts, 0, n + 1, b + len(out))
        elif op == FUSE_READDIR:
            out = b""
        elif op == FUSE_STATFS:
            out = struct.pack("<QQQQQIIII", 0, 0, 0, 0, 0, 4096, 255, 4096, 0) + b"\0" * 24
        elif op in (FUSE_RELEASE, FUSE_FLUSH, FUSE_RELEASEDIR, FUSE_DESTROY):
            pass
        elif op in (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT):
            continue
        else:
            err = -errno.ENOSYS
        try:
            os.write(fd, struct.pack("<IiQ", 16 + (0 if err else len(out)), err, unique) + (b"" if err else out))
        except OSError as e:
            if e.errno == errno.ENOENT:  # the request was interrupted
                continue
            raise
        if op == FUSE_DESTROY:
            return


class FuseBlob:
    """A FUSE mount at mnt holding the single file `blob` = the bytes of
    path, served by a forked child."""

    def __init__(self, mnt, path, keep_fd=False, die_on_read=False):
        self.mnt, self.src = mnt, path
        self.counts = mmap.mmap(-1, 16)
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        try:
            mount("lazyblob", mnt, "fuse",
                  0, f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,max_read={1 << 20}")
        except OSError:
            os.close(fd)
            raise
        self.fd = fd if keep_fd else None
        self.pid = None
        self.start(fd, die_on_read=die_on_read)
        if not keep_fd:
            os.close(fd)
        self.path = os.path.join(mnt, "blob")

    def start(self, fd, die_on_read=False, resume=False):
        self.pid = os.fork()
        if self.pid == 0:
            try:
                fuse_serve(fd, "blob", self.src, self.counts, die_on_read, resume)
            finally:
                os._exit(0)

    def close(self):
        """Unmounts, stops the server; returns (READs, bytes) served."""
        umount(self.mnt)
        if self.fd is not None:
            os.close(self.fd)
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
        return struct.unpack_from("<QQ", self.counts)


# ---- read cost --------------------------------------------------------------------

def walk_files(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return out


def w_tree(root, files, big):
    n = 0
    for rel in files:
        if rel == big:
            continue
        with open(os.path.join(root, rel), "rb") as f:
            n += len(f.read())
    return n


def w_seq(root, big):
    n = 0
    with open(os.path.join(root, big), "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += len(b)


def w_rand(root, big, offsets):
    fd = os.open(os.path.join(root, big), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        n = 0
        for off in offsets:
            n += len(os.pread(fd, 4096, off))
        return n
    finally:
        os.close(fd)


def part_reads(work, cold_files, tries, big_mib, rand_n):
    src = os.path.join(work, "tree")
    if os.path.exists(src):
        shutil.rmtree(src)
    shutil.copytree("/usr/lib/python3.11", os.path.join(src, "usr/lib/python3.11"), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    big = "data/big.bin"
    os.makedirs(os.path.join(src, "data"))
    with open(os.path.join(src, big), "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    files = walk_files(src)
    tree_bytes = sum(os.path.getsize(os.path.join(src, p)) for p in files if p != big)
    meta, blob = os.path.join(work, "tree.meta"), os.path.join(work, "tree.blob")
    erofs_build(src, meta, blob)
    rnd = random.Random(4096)
    size = big_mib << 20
    offsets = [rnd.randrange(size // 4096) * 4096 for _ in range(rand_n)]
    emnt, fmnt = os.path.join(work, "erofs-mnt"), os.path.join(work, "fuse-mnt")
    os.makedirs(emnt, exist_ok=True)
    os.makedirs(fmnt, exist_ok=True)
    workloads = {"tree": lambda r: w_tree(r, files, big), "seq": lambda r: w_seq(r, big),
                 "rand4k": lambda r: w_rand(r, big, offsets)}
    arms = ("plain-dir", "erofs-local-blob", "erofs-fuse-blob", "erofs-fanotify-blob")
    raw = {a: {w: {"cold": [], "warm": []} for w in workloads} for a in arms}
    upcalls = {a: {w: [] for w in workloads} for a in arms[2:]}  # (requests, bytes) per try, cold + warm
    if not cold_files:  # every local file in the page cache from the start
        for p in [meta, blob] + [os.path.join(src, f) for f in files]:
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
    for t in range(tries):
        for w, fn in workloads.items():
            for arm in arms:  # interleaved, so that drift hits every arm alike
                fuse = fan = None
                for p in (meta, blob) if cold_files else ():
                    drop(p)
                if arm == "plain-dir":
                    for p in files if cold_files else ():
                        drop(os.path.join(src, p))
                    root = src
                else:
                    dev = blob
                    if arm == "erofs-fuse-blob":
                        fuse = FuseBlob(fmnt, blob)
                        dev = fuse.path
                    elif arm == "erofs-fanotify-blob":
                        fan = ForkedListener(blob)
                    mount(meta, emnt, "erofs", MS_RDONLY, f"device={dev}")
                    root = emnt
                try:
                    for temp in ("cold", "warm"):
                        t0 = time.perf_counter()
                        fn(root)
                        raw[arm][w][temp].append(time.perf_counter() - t0)
                finally:
                    if root == emnt:
                        umount(emnt)
                    if fuse:
                        upcalls[arm][w].append(fuse.close())
                    if fan:
                        upcalls[arm][w].append(fan.close())
        log(f"reads: try {t + 1}/{tries} done")
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    summary = {a: {w: {temp: med(raw[a][w][temp]) for temp in ("cold", "warm")} for w in workloads}
               for a in arms}
    n_bytes = {"tree": tree_bytes, "seq": size, "rand4k": rand_n * 4096}
    return {"tries": tries, "files": len(files) - 1, "tree_bytes": tree_bytes, "big_bytes": size,
            "rand_reads": rand_n, "blob_bytes": os.path.getsize(blob), "meta_bytes": os.path.getsize(meta),
            "workload_bytes": n_bytes, "raw_s": raw, "median_s": summary,
            "upcalls": {a: {w: {"requests": med([u[0] for u in v]), "bytes": med([u[1] for u in v])}
                            for w, v in x.items()} for a, x in upcalls.items()}}


def report(res):
    out = []
    f = res["fanotify"]
    out.append(f"Measured by `bench/lazy/alternatives.py` on {res['date']}, kernel {f['kernel']}, "
               f"{res['cpus']} CPUs, load {res['load_start']} at the start (shared machine).")
    out.append("")
    out.append("fanotify pre-content events (FAN_PRE_ACCESS inode mark on the EROFS `device=` blob, ext4):")
    out.append("")
    out.append("| case | FAN_PRE_ACCESS events | reader got |")
    out.append("|---|---|---|")
    out.append(f"| plain `read(2)` of the blob file (control) | {f['plain_read_of_blob']['events']} | "
               f"{f['plain_read_of_blob']['read']} |")
    for k in ("mark-before-mount", "mark-after-mount", "new-listener-after-mount"):
        out.append(f"| EROFS reads a file, {k.replace('-', ' ')} | {f[k]['events']} | "
                   f"{'the right bytes' if f[k]['read_ok'] else 'wrong bytes'} |")
    for k, what in (("listener-killed", "listener gets the event and is killed (blob sparse)"),
                    ("listener-denies-EIO", "listener answers FAN_DENY_ERRNO(EIO) (blob sparse)")):
        c = f[k]
        got = (f"{c['reader']} {c['result']}" if c["reader"] != "ok" else
               f"{c['bytes']} bytes, {'all zeros' if c['all_zero'] else 'not zeros'}"
               f"{', the right bytes' if c['matches_original'] else ''}")
        out.append(f"| {what} | {'yes' if c['event_seen'] else 'none'} (reader blocked: "
                   f"{'yes' if c['reader_blocked_before'] else 'no'}) | {got} |")
    fr = res.get("fuse_restart")
    if fr:
        out.append("")
        out.append("The same with the blob on FUSE (EROFS `device=` a file of a FUSE mount whose server dies on "
                   "the first READ while the mounter keeps the `/dev/fuse` fd):")
        out.append("")
        out.append("| case | reader while no server | reader got |")
        out.append("|---|---|---|")
        for k, what in (("server-killed-then-resumed", "a new server takes the fd over, FUSE_NOTIFY_RESEND"),
                        ("server-killed-connection-closed", "no new server, the fd closed (connection aborted)")):
            c = fr[k]
            got = (f"{c['reader']} {c['result']}" if c["reader"] != "ok" else
                   ("the right bytes" if c["matches_original"] else
                    "all zeros" if c["all_zero"] else "wrong bytes"))
            out.append(f"| {what} | {'blocked' if c['reader_blocked_while_no_server'] else 'not blocked'} "
                       f"| {got} |")
    for medium, r in res["reads"].items():
        report_reads(out, medium, r)
    return "\n".join(out) + "\n"


def report_reads(out, medium, r):
    out.append("")
    where = ("on the local disk (ext4 on virtio; cold = fresh mounts and the files' pages dropped with fadvise, "
             "which the host's own cache may still hold)" if medium == "disk" else
             "in the page cache (the local files read once before; only the mounts fresh: no device time, "
             "the mechanisms' own cost; the plain tree is warm there)")
    out.append(f"Files {where}. Reading through EROFS with a FUSE blob, a local blob and the plain extracted tree "
               f"(median of {r['tries']} tries, the arms interleaved; tree = {r['files']} files, "
               f"{r['tree_bytes'] / 1e6:.1f} MB of the host's Python standard library; seq = one "
               f"{r['big_bytes'] >> 20} MiB file in 1 MiB reads; rand4k = {r['rand_reads']} 4 KiB preads "
               f"at random offsets of it). The FUSE server and the fanotify listener (answering FAN_ALLOW, data local) are "
               f"single-threaded Python processes; times cold, median (fastest), unless marked warm "
               f"(medians); ratios of the medians:")
    out.append("")
    out.append("| workload | plain dir | EROFS local blob | EROFS FUSE blob | EROFS local blob + fanotify "
               "| FUSE / local | FUSE / plain | fanotify / local | warm: plain, local, FUSE, fanotify |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    m, raw = r["median_s"], r["raw_s"]
    arms = ("plain-dir", "erofs-local-blob", "erofs-fuse-blob", "erofs-fanotify-blob")
    for w in ("tree", "seq", "rand4k"):
        p, lo, fu, fa = (m[a][w] for a in arms)
        cells = " | ".join(f"{m[a][w]['cold'] * 1e3:.1f} ({min(raw[a][w]['cold']) * 1e3:.1f}) ms" for a in arms)
        out.append(f"| {w} | {cells} | {fu['cold'] / lo['cold']:.2f}x | {fu['cold'] / p['cold']:.2f}x "
                   f"| {fa['cold'] / lo['cold']:.2f}x | {p['warm'] * 1e3:.1f}, {lo['warm'] * 1e3:.1f}, "
                   f"{fu['warm'] * 1e3:.1f}, {fa['warm'] * 1e3:.1f} ms |")
    u = r["upcalls"]
    out.append("")
    out.append("Upcalls per try (median): " + "; ".join(
        f"{w}: {u['erofs-fuse-blob'][w]['requests']} FUSE READs of {u['erofs-fuse-blob'][w]['bytes'] / 1e6:.1f} MB, "
        f"{u['erofs-fanotify-blob'][w]['requests']} FAN_PRE_ACCESS events" for w in ("tree", "seq", "rand4k")) + ".")


def main():
    if os.geteuid():
        sys.exit("bench/lazy/alternatives.py: must run as root (mounts, fanotify)")
    args = sys.argv[1:]
    docs = None
    if "--docs" in args:
        i = args.index("--docs")
        docs = args[i + 1]
        del args[i:i + 2]
        text = open(docs).read()
        if BEGIN not in text or END not in text:
            sys.exit(f"bench/lazy/alternatives.py: {docs} lacks the markers {BEGIN} ... {END}")
    out = os.path.abspath(args[0] if args else "bench/out/lazy-alt")
    parts = os.environ.get("ALT_PARTS", "fanotify,reads").split(",")
    os.makedirs(out, exist_ok=True)
    work = os.path.join(out, "work")
    os.makedirs(work, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
           "load_start": open("/proc/loadavg").read().split()[0]}
    try:
        if "fanotify" in parts:
            res["fanotify"] = part_fanotify(work)
            res["fuse_restart"] = part_fuse_restart(work)
        if "reads" in parts:
            res["reads"] = {}
            for medium in os.environ.get("ALT_MEDIA", "disk,memory").split(","):
                d = os.path.join(work, medium)
                os.makedirs(d, exist_ok=True)
                log(f"reads from {medium}")
                res["reads"][medium] = part_reads(d, medium == "disk", int(os.environ.get("ALT_TRIES", "7")),
                                                  int(os.environ.get("ALT_BIG_MIB", "128")),
                                                  int(os.environ.get("ALT_RAND_N", "2000")))
    finally:
        umount_all()
        shutil.rmtree(work, ignore_errors=True)
    res["load_end"] = open("/proc/loadavg").read().split()[0]
    with open(os.path.join(out, "alternatives.json"), "w") as f:
        json.dump(res, f, indent=1)
    if "fanotify" in res and "reads" in res:
        md = report(res)
        open(os.path.join(out, "alternatives.md"), "w").write(md)
        print(md)
        if docs:
            text = open(docs).read()
            a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
            open(docs, "w").write(text[:a] + "\n" + md + text[b:])


if __name__ == "__main__":
    main()
