"""What the worker tests (test_runtimes.py, test_session_runtime.py) share:
the C sandbox driver (worker_driver.c, compiled against the built
libraries), the environment each test runs sandboxes in, the control
protocol framing, and the base of their sandbox handles.

The driver creates a sandbox with a worker control channel and relays the
legion-init control protocol to the test over a socketpair, stamping each
frame with CLOCK_MONOTONIC."""
import http.client
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(os.environ.get("LEGION_BUILD", os.path.join(ROOT, "build")))
RUNTIMES = os.path.join(ROOT, "runtimes")
CGROUP_PARENT = "legion-e2e-wk-%d" % os.getpid()


@pytest.fixture(scope="session")
def driver():
    """worker_driver.c compiled against the built libraries."""
    if os.geteuid() != 0:
        pytest.skip("sandboxes need root")
    libs = [os.path.join(BUILD, "liblegion-sandbox.a"), os.path.join(BUILD, "liblegion-common.a")]
    for lib in libs + [os.path.join(BUILD, "legion-init")]:
        if not os.path.exists(lib):
            pytest.fail(f"{lib} is not built: run `ninja -C build` first")
    out_dir = tempfile.mkdtemp(prefix="lg-wdrv-")
    out = os.path.join(out_dir, "worker_driver")
    p = subprocess.run(["cc", "-std=gnu11", "-O1", "-Wall", "-I", os.path.join(ROOT, "src"),
                        os.path.join(HERE, "worker_driver.c"), *libs, "-o", out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail("cannot build worker_driver.c:\n" + p.stderr)
    yield out
    shutil.rmtree(out_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def cgroup_parent():
    yield CGROUP_PARENT
    # The library removes each sandbox's group; the parent is ours.
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if not os.path.isdir(base):
            continue
        for hier in [base] + [os.path.join(base, d) for d in os.listdir(base)]:
            d = os.path.join(hier, CGROUP_PARENT)
            if os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


@pytest.fixture()
def env(driver, cgroup_parent):
    """A private state directory per test; nothing may be left in it."""
    run_dir = tempfile.mkdtemp(prefix="lg-wk-")
    e = dict(os.environ)
    e["LEGION_RUN_DIR"] = run_dir
    e["LEGION_CGROUP_PARENT"] = cgroup_parent
    e.setdefault("LEGION_INIT", os.path.join(BUILD, "legion-init"))
    yield e
    # Whatever a driver that died left behind (normally nothing).
    subprocess.run([driver, "--gc"], env=e, timeout=30)
    leftovers = [os.path.join(sub, d) for sub in ("sandboxes", "uids")
                 if os.path.isdir(os.path.join(run_dir, sub)) for d in os.listdir(os.path.join(run_dir, sub))]
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not leftovers, "sandbox state left behind: %r" % leftovers


def encode(op, fields):
    payload = b"op=" + op.encode() + b"\0"
    for k, v in fields:
        payload += f"{k}={v}".encode() + b"\0"
    return struct.pack("<I", len(payload)) + payload


class Frame(dict):
    """First value per key in the dict; all fields in .fields."""

    def __init__(self, fields):
        super().__init__()
        self.fields = fields
        for k, v in fields:
            self.setdefault(k, v)

    def getall(self, key):
        return [v for k, v in self.fields if k == key]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=15):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class DriverSandbox:
    """A sandbox run by the driver: the control protocol side. Subclasses
    set dir, sock_path, stdout_path, stderr_path and build the arguments."""
    read_timeout = 15

    def start(self, args, env):
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen(args, stdin=theirs, stdout=theirs, env=env)
        theirs.close()
        self.frames = []
        self.buf = b""

    def _recv_exact(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the driver in time; stderr:\n" + self.stderr())
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return None
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.read_timeout)
        hdr = self._recv_exact(4, deadline)
        if hdr is None:
            return None
        (n,) = struct.unpack("<I", hdr)
        payload = self._recv_exact(n, deadline)
        assert payload is not None and payload.endswith(b"\0")
        fields = [tuple(f.decode("utf-8", "replace").split("=", 1)) for f in payload[:-1].split(b"\0")]
        f = Frame(fields)
        self.frames.append(f)
        return f

    def wait(self, pred, timeout=None):
        while True:
            f = self.read(timeout)
            if f is None:
                raise AssertionError("driver ended before the expected frame; frames: %r\nstderr:\n%s"
                                     % (self.frames, self.stderr()))
            if f.get("op") == "driver" and f.get("event") == "error":
                raise AssertionError("driver: " + f.get("message", ""))
            if pred(f):
                return f

    def send(self, op, *fields):
        self.sock.sendall(encode(op, list(fields)))

    def wait_placeholder(self):
        f = self.wait(lambda f: f.get("op") in ("ready", "error", "exit"))
        assert f.get("op") == "ready" and f.get("phase") == "placeholder", (f, self.stderr())
        assert f.get("via") == "worker"
        return f

    def stats(self):
        self.send("stats")
        return self.wait(lambda f: f.get("event") == "stats")

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
