"""legiond end to end, as a user runs it: the real daemon (as root, real
sandboxes) driven by the real `legion` CLI and by plain HTTP. Each test gets
its own LEGION_HOME and port; the daemon is killed and its leftovers checked
after."""
import concurrent.futures
import fcntl
import http.client
import io
import ipaddress
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
import zipfile

import pytest

from conftest import BUILD
from oci_kit import free_port

LEGIOND = os.path.abspath(os.path.join(BUILD, "legiond"))
LEGION = os.path.abspath(os.path.join(BUILD, "legion"))

PY_APP = '''
import os, socket, time
def main(req):
    if req.path.startswith("/sleep"):
        time.sleep(float(req.query.get("s", "0.2")))
    if req.path.startswith("/crash"):
        os._exit(3)
    return {"a": os.environ.get("A"), "b": os.environ.get("B"), "pid": socket.gethostname(),
            "path": req.path, "method": req.method, "data": req.body.decode()}
'''

NODE_APP = '''
module.exports.handler = async (req) => ({
  status: 200,
  headers: {"content-type": "application/json"},
  body: JSON.stringify({greeting: process.env.GREETING || "hello", path: req.path, method: req.method}),
});
'''


class E2eNet:
    """A sandbox network for one test legiond that no other legiond on this
    machine uses (a real one, or another test run's: each would replace the
    other's nft table and sweep its links): nft table legion_e2e_N, link
    prefix lgeXY, pod CIDR 10.201.N.0/24 of 10.201.0.0/16, N held by a lock
    file for as long as this object lives."""

    def __init__(self):
        for n in range(256):
            fd = os.open(f"/tmp/legion-e2e-net-{n}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.lock, self.n = fd, n
            self.table = f"legion_e2e_{n}"
            self.prefix = "lge" + chr(ord("a") + n // 26) + chr(ord("a") + n % 26)
            self.cidr = f"10.201.{n}.0/24"
            self.gateway = f"10.201.{n}.1"
            self.args = ["--net-table", self.table, "--net-link-prefix", self.prefix, "--pod-cidr", self.cidr]
            return
        raise AssertionError("no free test network (256 in use)")

    def __del__(self):
        os.close(self.lock)


def stop_workloads(home, env, log=None, net_args=()):
    """`legiond --stop-all` on home: every sandbox a legiond left there, and
    the sandbox network net_args name."""
    p = subprocess.run([LEGIOND, "--home", home, *net_args, "--stop-all"], env=env, stdout=log, stderr=log,
                       timeout=120)
    assert p.returncode == 0


class Legiond:
    by_port = {}  # plain port -> Legiond, for helpers given only a port (kube_kit)

    def __init__(self, home, port, args=()):
        self.home, self.port = home, port
        self.net = E2eNet()
        self.net_args = self.net.args
        self.args = list(args)  # more legiond flags (after net_args: they win)
        self.listen_host = "127.0.0.1"  # where the plain API listens (the tests connect to 127.0.0.1)
        # The HTTPS listener (kubectl): same API, certificates in <home>/tls.
        self.tls_port = free_port()
        Legiond.by_port[port] = self
        self.proc = None
        self.env = dict(os.environ, LEGION_HOME=home, LEGION_API=f"http://127.0.0.1:{port}",
                        LEGION_KUBE_API=f"https://127.0.0.1:{self.tls_port}",
                        LEGION_CGROUP_PARENT=f"legion-e2e-d{os.getpid()}")
        self.log = open(os.path.join(home, "legiond.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen([LEGIOND, "--home", self.home, "--listen", f"{self.listen_host}:{self.port}",
                                      "--listen-tls", f"127.0.0.1:{self.tls_port}", *self.net_args, *self.args],
                                     env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.http("GET", "/healthz", auth=False)[0] == 200:
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break  # exited: it will not answer
                time.sleep(0.05)
        # What a failed start made (its network's table, gateway link and
        # rule: legiond exits after a failed network setup without undoing
        # it) goes now; the fixture that called start never stops it.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        log = open(os.path.join(self.home, "legiond.log")).read()
        stop_workloads(self.home, self.env, self.log, self.net_args)
        raise AssertionError("legiond did not start: " + log)

    def sandbox_inits(self, roots=("sandboxes-root", "pod-sandboxes", "job-sandboxes")):
        """pid -> state dir of every sandbox of this home whose legion-init
        still runs (zombies are dead: the host's init reaps them); roots:
        under run/, functions' and sessions', pods', jobs' (roles and the
        job pools' warm sandboxes)."""
        found = {}
        for root in roots:
            top = os.path.join(self.home, "run", root, "sandboxes")
            for name in os.listdir(top) if os.path.isdir(top) else []:
                try:
                    pid = int(open(os.path.join(top, name, "sandbox")).read().split()[1])
                    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                except (OSError, ValueError, IndexError):
                    continue
                if state != "Z":
                    found[pid] = os.path.join(top, name)
        return found

    def stop(self, sig=signal.SIGTERM, keep=False):
        """Stop legiond with sig. Its workloads outlive it (the next legiond
        on this home takes them back): unless keep, they are stopped too,
        with `legiond --stop-all`, as a test that is done wants."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if not keep:
            stop_workloads(self.home, self.env, self.log, self.net_args)

    @property
    def ca_file(self):
        """legiond's CA, which signed its HTTPS certificate."""
        return os.path.join(self.home, "tls", "ca.crt")

    @property
    def token(self):
        return open(os.path.join(self.home, "admin.token")).read().strip()

    def http(self, method, path, body=None, token=None, auth=True, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Bearer " + (token or self.token)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def cli(self, *args, check=0, input=None, timeout=60):
        p = subprocess.run([LEGION, *args], env=self.env, capture_output=True, input=input, timeout=timeout)
        out, err = p.stdout.decode(), p.stderr.decode()
        if check is not None:
            assert p.returncode == check, (args, p.returncode, out, err)
        return out, err

    def wait_for(self, pred, timeout=30, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def app(self, name, ns="default"):
        st, body = self.http("GET", f"/v1/namespaces/{ns}/apps/{name}")
        assert st == 200, body
        return json.loads(body)


def start_legiond(tmp_path, args=()):
    """A started legiond with its home in tmp_path/home (args: more flags)."""
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    home = str(tmp_path / "home")
    os.makedirs(home)
    d = Legiond(home, free_port(), args)
    d.start()
    return d


@pytest.fixture()
def legiond(legion_bin, tmp_path):
    d = start_legiond(tmp_path)
    yield d
    kill_legiond(d)


def kill_legiond(d):
    d.stop(signal.SIGKILL)
    # Nothing outlives a killed legiond: no sandbox, and no helper process
    # forked from it (those would still show legiond's command line).
    def leftovers():
        r = subprocess.run(["pgrep", "-f", f"--home {d.home} "], capture_output=True, text=True)
        return r.stdout.split()

    deadline = time.time() + 10
    while leftovers() and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers() == [], "processes outlived legiond"
    # Nor any mount under its home (lazy layers' EROFS, the lazy fetcher's
    # FUSE): --stop-all removes them.
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(d.home + "/")]
    assert mounts == [], f"mounts outlived legiond: {mounts}"


def write_app(tmp_path, name, files):
    d = tmp_path / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text)
    return str(d)


def test_deploy_python_and_node_and_invoke(legiond, tmp_path):
    py = write_app(tmp_path, "py", {"main.py": PY_APP})
    node = write_app(tmp_path, "node", {"index.js": NODE_APP})
    out, _ = legiond.cli("app", "deploy", "pyapp", "--runtime", "python3", "--dir", py, "--set", "A=1")
    assert "revision 1" in out
    legiond.cli("app", "deploy", "nodeapp", "--runtime", "node", "--dir", node, "--set", "GREETING=hej")
    out, _ = legiond.cli("invoke", "pyapp", "--path", "/x/y?z=1", "--data", "payload")
    doc = json.loads(out)
    assert doc["a"] == "1" and doc["path"] == "/x/y" and doc["method"] == "POST" and doc["data"] == "payload"
    st, body = legiond.http("GET", "/fn/default/nodeapp/hi")
    assert st == 200 and json.loads(body) == {"greeting": "hej", "path": "/hi", "method": "GET"}
    # The function never sees the caller's token.
    echo = write_app(tmp_path, "echo", {"main.py": "def main(req):\n    return dict(req.headers)\n"})
    legiond.cli("app", "deploy", "echo", "--runtime", "python3", "--dir", echo)
    st, body = legiond.http("GET", "/fn/default/echo/", headers={"X-Test": "yes"})
    headers = {k.lower(): v for k, v in json.loads(body).items()}
    assert st == 200 and headers.get("x-test") == "yes" and "authorization" not in headers
    # The Host-header form of the data path.
    st, body = legiond.http("GET", "/a/b?c=d", headers={"Host": f"pyapp.default.fn.localhost:{legiond.port}"})
    assert st == 200 and json.loads(body)["path"] == "/a/b", body
    out, _ = legiond.cli("app", "show", "pyapp")
    assert "python3" in out
    app = legiond.app("pyapp")
    assert app["status"]["coldStarts"]["count"] >= 1
    assert app["status"]["revision"] == 1


def test_bad_handler_gives_clear_error(legiond, tmp_path):
    bad = write_app(tmp_path, "bad", {"main.py": "import no_such_module\ndef main(req):\n    return 'x'\n"})
    legiond.cli("app", "deploy", "bad", "--runtime", "python3", "--dir", bad)
    st, body = legiond.http("GET", "/fn/default/bad/")
    assert st == 502
    err = json.loads(body)["error"]
    assert "no_such_module" in err["message"], err
    out, _ = legiond.cli("app", "logs", "bad")
    assert "no_such_module" in out
    # A handler that crashes mid-request: 502, and the instance is replaced.
    crash = write_app(tmp_path, "crash", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "crash", "--runtime", "python3", "--dir", crash)
    assert legiond.http("GET", "/fn/default/crash/")[0] == 200
    st, body = legiond.http("GET", "/fn/default/crash/crash")
    assert st == 502, body
    assert legiond.http("GET", "/fn/default/crash/")[0] == 200


def test_settings_change_is_a_new_revision_never_mixed(legiond, tmp_path):
    d = write_app(tmp_path, "rev", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "rev", "--runtime", "python3", "--dir", d, "--set", "A=old", "--set", "B=old",
                "--concurrency", "4")
    seen = set()
    stop = time.time() + 4

    def hammer():
        pairs = set()
        while time.time() < stop:
            st, body = legiond.http("GET", "/fn/default/rev/")
            assert st == 200, body
            doc = json.loads(body)
            pairs.add((doc["a"], doc["b"]))
        return pairs

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(hammer) for _ in range(4)]
        time.sleep(1)
        out, _ = legiond.cli("app", "set", "rev", "A=new", "B=new")
        assert "revision 2" in out
        for f in futs:
            seen |= f.result()
    assert seen <= {("old", "old"), ("new", "new")}, seen
    assert ("new", "new") in seen
    assert legiond.app("rev")["status"]["revision"] == 2


def test_burst_scales_out_with_concurrency_one(legiond, tmp_path):
    d = write_app(tmp_path, "burst", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "burst", "--runtime", "python3", "--dir", d, "--concurrency", "1", "--max", "10")

    def call(i):
        return legiond.http("GET", "/fn/default/burst/sleep?s=0.3")

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        results = list(ex.map(call, range(50)))
    assert all(st == 200 for st, _ in results), [r for r in results if r[0] != 200][:3]
    pids = {json.loads(b)["pid"] for _, b in results}
    status = legiond.app("burst")["status"]
    assert status["coldStarts"]["count"] > 1
    assert len(pids) > 1


def test_scale_to_zero_and_back(legiond, tmp_path):
    d = write_app(tmp_path, "idle", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "idle", "--runtime", "python3", "--dir", d, "--idle-timeout", "1")
    assert legiond.http("GET", "/fn/default/idle/")[0] == 200
    assert legiond.app("idle")["status"]["instances"] == 1
    legiond.wait_for(lambda: legiond.app("idle")["status"]["instances"] == 0, timeout=20, what="scale to zero")
    st, _ = legiond.http("GET", "/fn/default/idle/")
    assert st == 200
    assert legiond.app("idle")["status"]["coldStarts"]["count"] == 2


def test_kill_9_and_restart_keeps_every_app(legiond, tmp_path):
    apps = []
    for i in range(3):
        d = write_app(tmp_path, f"k{i}", {"main.py": PY_APP})
        legiond.cli("app", "deploy", f"k{i}", "--runtime", "python3", "--dir", d, "--set", f"A={i}")
        apps.append(f"k{i}")
    stop = time.time() + 1.5

    def traffic():
        n = 0
        while time.time() < stop:
            try:
                legiond.http("GET", "/fn/default/k0/", timeout=5)
                n += 1
            except OSError:
                pass
        return n

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        f = ex.submit(traffic)
        time.sleep(0.7)
        legiond.stop(signal.SIGKILL, keep=True)
        f.result()
    legiond.start()
    for i, a in enumerate(apps):
        st, body = legiond.http("GET", f"/fn/default/{a}/")
        assert st == 200, body
        assert json.loads(body)["a"] == str(i)


def test_bad_input_gets_the_right_error_and_changes_nothing(legiond, tmp_path):
    h = legiond.http
    assert h("GET", "/v1/namespaces", auth=False)[0] == 401
    assert h("GET", "/v1/namespaces", token="lgn_" + "0" * 64)[0] == 401
    st, body = h("PUT", "/v1/namespaces/default/apps/x", body=b"{not json")
    assert st == 400 and b"malformed JSON" in body
    st, body = h("PUT", "/v1/namespaces/default/apps/x", body={"runtime": "python3", "packag": "x"})
    assert st == 400 and b"packag" in body
    st, body = h("PUT", "/v1/namespaces/default/apps/Bad_Name", body={"runtime": "python3"})
    assert st == 400
    st, body = h("PUT", "/v1/namespaces/default/apps/x", body=b"x" * (9 << 20))
    assert st == 413
    assert json.loads(h("GET", "/v1/namespaces/default/apps")[1])["items"] == []

    # Another namespace's app is invisible: 404, not 403.
    assert h("POST", "/v1/namespaces", body={"name": "team-a"})[0] == 201
    assert h("POST", "/v1/namespaces", body={"name": "team-b"})[0] == 201
    st, body = h("POST", "/v1/namespaces/team-a/tokens", body={})
    tok_a = json.loads(body)["token"]
    d = write_app(tmp_path, "b", {"main.py": PY_APP})
    legiond.cli("--ns", "team-b", "app", "deploy", "secret", "--runtime", "python3", "--dir", d)
    assert h("GET", "/v1/namespaces/team-b/apps/secret", token=tok_a)[0] == 404
    assert h("GET", "/fn/team-b/secret/", token=tok_a)[0] == 404
    assert h("GET", "/v1/namespaces/team-b/apps", token=tok_a)[0] == 404
    assert h("POST", "/v1/namespaces", body={"name": "x"}, token=tok_a)[0] == 403
    assert h("GET", "/v1/namespaces/team-a/apps", token=tok_a)[0] == 200

    # Hostile packages are refused and nothing is kept of them.
    def zip_with(name, data=b"x"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, data)
        return buf.getvalue()

    def tar_with_symlink():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo("evil")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            t.addfile(info)
        return buf.getvalue()

    def bomb():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("zeros", "w", force_zip64=True) as f:
                chunk = b"\0" * (1 << 20)
                for _ in range(1024):
                    f.write(chunk)
        return buf.getvalue()

    pkgdir = os.path.join(legiond.home, "packages")
    before = sorted(os.listdir(os.path.join(pkgdir, "blobs", "sha256"))) if os.path.isdir(
        os.path.join(pkgdir, "blobs", "sha256")) else []
    for payload in (zip_with("../../escape.py"), zip_with("/abs.py"), tar_with_symlink(), bomb(), b"not an archive"):
        st, body = h("POST", "/v1/namespaces/default/packages", body=payload)
        assert st in (400, 413), (st, body)
        assert json.loads(body)["error"]["message"]
    after = sorted(os.listdir(os.path.join(pkgdir, "blobs", "sha256")))
    assert after == before
    assert not os.path.exists("/escape.py") and not os.path.exists(os.path.join(legiond.home, "escape.py"))


def test_delete_app(legiond, tmp_path):
    d = write_app(tmp_path, "del", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "del", "--runtime", "python3", "--dir", d)
    assert legiond.http("GET", "/fn/default/del/")[0] == 200
    legiond.cli("app", "delete", "del")
    assert legiond.http("GET", "/fn/default/del/")[0] == 404
    assert legiond.http("GET", "/v1/namespaces/default/apps/del")[0] == 404
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200


def instance_cgroups(legiond):
    d = f"/sys/fs/cgroup/cpu/{legiond.env['LEGION_CGROUP_PARENT']}"
    if not os.path.isdir(d):
        pytest.skip("needs the cgroup v1 cpu hierarchy to read quotas")
    return {e: os.path.join(d, e) for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))}


def test_startup_boost_then_own_cpu(legiond, tmp_path):
    st, body = legiond.http("PUT", "/v1/poolgroups/boosted", body={
        "runtime": "python3", "ready": 1, "cpu": "500m", "memory": "128Mi",
        "startupBoost": {"cpu": "2000m", "seconds": 1}})
    assert st == 201, body
    d = write_app(tmp_path, "boost", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "boost", "--runtime", "python3", "--dir", d, "--pool", "boosted", "--cpu", "250m")
    assert legiond.http("GET", "/fn/default/boost/")[0] == 200
    import re
    out, _ = legiond.cli("app", "logs", "boost")
    inst = re.search(r"instance (i-[0-9a-f]+) ready", out).group(1)
    quota = os.path.join(instance_cgroups(legiond)[inst], "cpu.cfs_quota_us")
    read = lambda: open(quota).read().strip()
    # Boosted while starting (2 CPUs), its own 250m after the boost seconds.
    assert read() == "200000"
    legiond.wait_for(lambda: read() == "25000", timeout=15, what="the end of the startup boost")


def test_min_instances_kept_warm(legiond, tmp_path):
    d = write_app(tmp_path, "warm", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "warm", "--runtime", "python3", "--dir", d, "--min", "2", "--idle-timeout", "1")
    legiond.wait_for(lambda: legiond.app("warm")["status"]["instances"] == 2, timeout=20, what="2 instances")
    time.sleep(3)
    assert legiond.app("warm")["status"]["instances"] == 2


def test_failing_pool_backs_off_says_why_and_recovers(legiond):
    # Too little memory for the Python worker to start: every placeholder dies.
    st, body = legiond.http("PUT", "/v1/poolgroups/tiny", body={"runtime": "python3", "ready": 2, "memory": "4Mi"})
    assert st == 201, body

    def status():
        return json.loads(legiond.http("GET", "/v1/poolgroups/tiny")[1])["status"]

    err = legiond.wait_for(lambda: status().get("lastError"), timeout=20, what="the failure to be reported")
    assert err["failures"] >= 1 and err["message"]
    time.sleep(2)
    # Backing off, not spinning. (Now and then a worker does fit in 4 MiB:
    # pages of python3 already in the host's page cache are charged to the
    # cgroup that first read them, not to this one. A success resets the
    # count and the error, which is right too.)
    s = status()
    assert "lastError" not in s or s["lastError"]["failures"] < 20, s
    assert json.loads(legiond.http("GET", "/v1/poolgroups/tiny")[1])["spec"]["ready"] == 2
    # Fixed, the pool fills to its target and the error goes.
    st, _ = legiond.http("PUT", "/v1/poolgroups/tiny", body={"runtime": "python3", "ready": 2, "memory": "128Mi"})
    assert st == 200
    legiond.wait_for(lambda: status()["ready"] == 2 and "lastError" not in status(), timeout=30, what="the pool to fill")


NET_APP = '''
import socket
def main(req):
    return {"host": socket.gethostname(), "hosts": open("/etc/hosts").read(), "resolv": open("/etc/resolv.conf").read(),
            "ifaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])}
'''


def host_links(prefix):
    return [name for name in os.listdir("/sys/class/net") if name.startswith(prefix)]


def ns_of(table):
    """The sandbox -> namespace map of legiond's nft table (text)."""
    return subprocess.run(["nft", "list", "map", "inet", table, "ns_of"], capture_output=True, text=True).stdout


def test_network_addresses_survive_restart_and_stop_all(legiond, tmp_path):
    net = legiond.net
    log = open(os.path.join(legiond.home, "legiond.log")).read()
    assert f"network: pod CIDR {net.cidr}, gateway {net.gateway}, DNS upstream " in log, log
    legiond.cli("app", "deploy", "netfn", "--runtime", "python3", "--dir", write_app(tmp_path, "n", {"main.py": NET_APP}))
    doc = json.loads(legiond.cli("invoke", "netfn")[0])
    addrs = legiond.app("netfn")["status"]["addresses"]
    assert len(addrs) == 1 and ipaddress.ip_address(addrs[0]) in ipaddress.ip_network(net.cidr), addrs
    assert doc["ifaces"] == ["eth0", "lo"], doc
    assert f"{addrs[0]}\t{doc['host']}" in doc["hosts"] and f"nameserver {net.gateway}" in doc["resolv"], doc
    assert addrs[0] in ns_of(net.table)  # in its namespace
    # kill -9: the same instance, with the same address, in its namespace again
    # (the next legiond makes its table anew).
    legiond.stop(signal.SIGKILL, keep=True)
    legiond.start()
    again = json.loads(legiond.cli("invoke", "netfn")[0])
    assert again["host"] == doc["host"]
    assert legiond.app("netfn")["status"]["addresses"] == addrs
    assert addrs[0] in ns_of(net.table)
    assert host_links(net.prefix)
    # --stop-all takes the network away with the workloads.
    legiond.stop()
    assert host_links(net.prefix) == []
    assert subprocess.run(["nft", "list", "table", "inet", net.table], capture_output=True).returncode != 0


def test_network_off_and_a_network_that_cannot_be(legion_bin, tmp_path):
    d = start_legiond(tmp_path, ["--network", "off"])
    try:
        legiond_log = open(os.path.join(d.home, "legiond.log")).read()
        assert "network:" not in legiond_log
        d.cli("app", "deploy", "netfn", "--runtime", "python3", "--dir", write_app(tmp_path, "n", {"main.py": NET_APP}))
        doc = json.loads(d.cli("invoke", "netfn")[0])
        assert doc["ifaces"] == ["lo"] and d.app("netfn")["status"]["addresses"] == []
        assert host_links(d.net.prefix) == []
    finally:
        kill_legiond(d)
    # On, and it cannot be set up: legiond exits saying why.
    p = subprocess.run([LEGIOND, "--home", d.home, "--listen", f"127.0.0.1:{free_port()}", "--listen-tls", "off",
                        *d.net_args, "--pod-cidr", "10.201.0.0/33"], env=d.env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "cannot set up the sandbox network" in p.stderr and "10.201.0.0/33" in p.stderr, \
        p.stderr
    assert "--network off" in p.stderr
    p = subprocess.run([LEGIOND, "--home", d.home, "--network", "maybe"], env=d.env, capture_output=True, text=True)
    assert p.returncode == 2 and "--network wants on or off" in p.stderr
