"""legiond's supervision of the lazy fetcher (src/lazy/lazyd.c): a lazy
layer of the image store (built here with lg_lazy_build, all its chunks
local, no blob file) is mounted by legiond at start and read through the
fetcher; legiond killed with SIGKILL: reads go on, and the next legiond
takes the same fetcher over (same pid) without mounting the layer twice,
as after SIGTERM;
the fetcher killed: legiond starts it again on the kept FUSE connection
and reads go on; both killed: the next legiond mounts the layer again on a
new connection; --stop-all (the harness's teardown) leaves no fetcher,
FUSE or EROFS mount and no cgroup.

Needs root, /dev/fuse, mkfs.erofs and a kernel with erofs; skips otherwise."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BUILD
from oci_kit import free_port
from test_legiond import Legiond, kill_legiond

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
HEX = hashlib.sha256(b"test_lazy_fetcher_supervision").hexdigest()


@pytest.fixture(scope="module")
def lazy_build():
    """lazy_build.c compiled against the built libraries."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.path.exists("/dev/fuse") or not shutil.which("mkfs.erofs"):
        pytest.skip("needs /dev/fuse and mkfs.erofs")
    if "erofs" not in open("/proc/filesystems").read():
        subprocess.run(["modprobe", "erofs"], capture_output=True)
    libs = [os.path.join(BUILD, "src", "lazy", "liblegion-lazy.a"), os.path.join(BUILD, "src", "cas", "liblegion-cas.a"),
            os.path.join(BUILD, "liblegion-common.a")]
    out_dir = tempfile.mkdtemp(prefix="lg-lazyb-")
    out = os.path.join(out_dir, "lazy_build")
    # The libraries of a sanitized build (-Dsanitize=true) need the runtimes.
    san = []
    try:
        opts = json.load(open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")))
        if any(o["name"] == "sanitize" and o["value"] is True for o in opts):
            san = ["-fsanitize=address,undefined"]
    except (OSError, ValueError):
        pass
    p = subprocess.run(["cc", "-std=gnu17", "-O1", "-Wall", *san, "-I", os.path.join(ROOT, "src"),
                        os.path.join(HERE, "lazy_build.c"), *libs, "-lcrypto", "-lpthread", "-o", out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail("cannot build lazy_build.c:\n" + p.stderr)
    yield out
    shutil.rmtree(out_dir, ignore_errors=True)


def make_lazy_layer(tool, home, tmp_path):
    """A lazy layer in home's image store, as a conversion on this node
    leaves it: lazy/layers/<hex>/{meta.erofs,chunks,source.json} with every
    chunk in the chunk store, images/layers/<hex>.json "lazy": true. The
    blob file goes: every read must come through the fetcher. Returns
    {path in the layer: sha256}."""
    src = tmp_path / "tree"
    rnd = random.Random(13)
    files = {"big.bin": rnd.randbytes(3 * 1024 * 1024 + 1234), "etc/hello.txt": b"hello lazy\n",
             "lib/mid.bin": rnd.randbytes(200 * 1024)}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    out = os.path.join(home, "lazy", "layers", HEX)
    p = subprocess.run([tool, str(src), out, os.path.join(home, "lazy")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    os.remove(os.path.join(out, "blob"))
    with open(os.path.join(out, "source.json"), "w") as f:
        json.dump({"local": True}, f)
    layers = os.path.join(home, "images", "layers")
    os.makedirs(os.path.join(layers, HEX))
    with open(os.path.join(layers, HEX + ".json"), "w") as f:
        json.dump({"diffId": "sha256:" + HEX, "size": 0, "lazy": True}, f)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def mounts_at(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split(" - ")[1].split()[0] for line in f if line.split()[4] == path]


def read_all(mnt, want):
    """Every file read through the mount, its page cache dropped first, so
    that the bytes come from the fetcher."""
    for name, digest in want.items():
        fd = os.open(os.path.join(mnt, name), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h = hashlib.sha256()
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
        finally:
            os.close(fd)
        assert h.hexdigest() == digest, name


def fetcher_pid(home):
    try:
        return int(open(os.path.join(home, "run", "lazy", "fetcher.pid")).read())
    except (OSError, ValueError):
        return 0


def running(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_fetcher_outlives_legiond_and_is_restarted(lazy_build, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    want = make_lazy_layer(lazy_build, home, tmp_path)
    mnt = os.path.join(home, "images", "layers", HEX)
    # A fetcher log left over past 1 MiB (one that failed at every start
    # for long) moves aside when the next fetcher starts.
    os.makedirs(os.path.join(home, "logs"), exist_ok=True)
    fetcher_log = os.path.join(home, "logs", "lazy-fetcher.log")
    with open(fetcher_log, "wb") as f:
        f.write(b"old failure\n" * ((2 << 20) // 12))
    d = Legiond(home, free_port())
    d.start()
    pid, cgroups = 0, []
    try:
        # Mounted at start, read through the fetcher.
        assert mounts_at(mnt) == ["erofs"]
        read_all(mnt, want)
        assert os.path.getsize(fetcher_log + ".1") > 1 << 20
        assert os.path.getsize(fetcher_log) < 1 << 20
        pid = fetcher_pid(home)
        assert running(pid)
        # Its own session and cgroup, as sandboxes: not legiond's.
        assert os.getsid(pid) == pid
        groups = [line.strip().split(":", 2) for line in open(f"/proc/{pid}/cgroup")]
        cgroups = [os.path.join("/sys/fs/cgroup", ctl.split(",")[0] or "unified", path.lstrip("/"))
                   for _, ctl, path in groups if "/lazy-fetcher-" in path]
        assert cgroups and all(os.path.isdir(c) for c in cgroups)

        # legiond killed: reads go on; the next one takes the fetcher over.
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        read_all(mnt, want)
        d.start()
        assert fetcher_pid(home) == pid and running(pid)
        assert mounts_at(mnt) == ["erofs"]
        read_all(mnt, want)
        assert "took over the fetcher (pid %d)" % pid in open(os.path.join(home, "legiond.log")).read()

        # Stopped with SIGTERM: legiond exits cleanly (a sanitized build
        # would fail it on a leak), the fetcher and the mount stay.
        d.stop(signal.SIGTERM, keep=True)
        assert d.proc.returncode == 0
        assert running(pid) and mounts_at(mnt) == ["erofs"]
        read_all(mnt, want)
        d.start()
        assert fetcher_pid(home) == pid

        # The fetcher killed, a read waiting on it meanwhile: legiond
        # starts it again on the same connection, the read does not fail.
        errors = []

        def reader():
            try:
                for _ in range(5):
                    read_all(mnt, want)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        t = threading.Thread(target=reader)
        os.kill(pid, signal.SIGKILL)
        t.start()
        d.wait_for(lambda: fetcher_pid(home) not in (0, pid) and running(fetcher_pid(home)), what="a new fetcher")
        t.join(60)
        assert not t.is_alive() and errors == []
        read_all(mnt, want)
        assert mounts_at(mnt) == ["erofs"]
        log = open(os.path.join(home, "legiond.log")).read()
        assert "lazy: fetcher (pid %d) exited" % pid in log and "restart 1" in log
        pid = fetcher_pid(home)

        # Both killed: the FUSE connection is gone with them. The next
        # legiond unmounts what was left and mounts the layer again, once,
        # on a new connection served by a new fetcher.
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        os.kill(pid, signal.SIGKILL)
        d.wait_for(lambda: not running(pid), what="the fetcher's end")
        d.start()
        assert mounts_at(mnt) == ["erofs"]
        assert mounts_at(os.path.join(home, "run", "lazy", "blobs")) == ["fuse"]
        read_all(mnt, want)
        assert fetcher_pid(home) != pid
        pid = fetcher_pid(home)
        assert running(pid)
    finally:
        # --stop-all: kill_legiond checks no process of this home and no
        # mount under it is left.
        kill_legiond(d)
    assert not running(pid)
    assert mounts_at(mnt) == [] and mounts_at(os.path.join(home, "run", "lazy", "blobs")) == []
    assert not [c for c in cgroups if os.path.exists(c)]
