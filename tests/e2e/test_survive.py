"""Workloads outlive legiond: kill -9 (or SIGTERM) legiond under steady
traffic, start it again on the same home, and the same function instance,
session (its variables) and pod (restartCount unchanged) are there; the only
failed requests are those in flight at the kill. `legiond --stop-all` then
leaves no process, mount, cgroup or socket file behind."""
import concurrent.futures
import http.client
import json
import os
import signal
import threading
import time
import urllib.parse

import oci_kit
from test_legiond import PY_APP, legiond, write_app  # noqa: F401  (legiond: the fixture)
from test_sessions import make_pool, run

PODS = "/api/v1/namespaces/default/pods"


def run_pod(d, tmp_path, name):
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"]})
    path = str(tmp_path / "busybox.tar")
    oci_kit.write_docker_archive(path, [(img, ["legion.local/busybox:1"])])
    with open(path, "rb") as f:
        st, body = d.http("POST", "/v1/images/import", f.read(), headers={"Content-Type": "application/x-tar"},
                          timeout=120)
    assert st in (200, 201), body
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "main", "image": "legion.local/busybox:1",
                                    "command": ["sh", "-c", "while :; do echo tick; sleep 0.2; done"]}]}}
    st, body = d.http("POST", PODS, doc)
    assert st == 201, body
    return d.wait_for(lambda: running(d, name), what="the pod running")


def running(d, name):
    """The container's status while it runs, else None."""
    st, body = d.http("GET", f"{PODS}/{name}")
    cs = json.loads(body)["status"].get("containerStatuses", []) if st == 200 else []
    return cs[0] if cs and "running" in cs[0]["state"] else None


def instance_of(d, app):
    st, body = d.http("GET", f"/fn/default/{app}/")
    assert st == 200, body
    return json.loads(body)["pid"]  # the sandbox's hostname: its id


class Traffic:
    """Threads calling one URL in a loop. A call that could not connect
    (legiond down) is retried, not counted: it never reached a server. A
    call that connected and then failed is recorded with its start time."""

    def __init__(self, d, method, path, body=None, threads=2):
        self.d, self.method, self.path, self.body = d, method, path, body
        self.stop = threading.Event()
        self.ok, self.failed = 0, []
        self.lock = threading.Lock()
        self.ex = concurrent.futures.ThreadPoolExecutor(threads)
        self.futs = [self.ex.submit(self.loop) for _ in range(threads)]

    def call(self):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)
        try:
            c.connect()
        except OSError:
            return None  # legiond is down: not a request
        started = time.time()
        try:
            h = {"Authorization": "Bearer " + self.d.token}
            body = json.dumps(self.body).encode() if self.body is not None else None
            c.request(self.method, self.path, body=body, headers=h)
            r = c.getresponse()
            r.read()
            return started, r.status
        except (OSError, http.client.HTTPException) as e:  # e.g. BadStatusLine: cut before the status
            return started, repr(e)
        finally:
            c.close()

    def loop(self):
        while not self.stop.is_set():
            res = self.call()
            if res is None:
                time.sleep(0.02)
                continue
            with self.lock:
                if res[1] == 200:
                    self.ok += 1
                else:
                    self.failed.append(res)

    def finish(self):
        self.stop.set()
        for f in self.futs:
            f.result()
        self.ex.shutdown()
        return self.ok, self.failed


def cgroup_dirs(ids):
    found = []
    for ctrl in os.listdir("/sys/fs/cgroup"):
        for top, dirs, _ in os.walk(os.path.join("/sys/fs/cgroup", ctrl)):
            found += [os.path.join(top, x) for x in dirs if x in ids]
            if top.count("/") > 5:
                dirs[:] = []
    return found


def assert_nothing_left(d, ids):
    assert d.sandbox_inits() == {}
    mounts = open("/proc/self/mountinfo").read()
    assert d.home not in mounts
    assert cgroup_dirs(ids) == []
    socks = os.path.join(d.home, "run", "sockets")
    assert not os.path.isdir(socks) or os.listdir(socks) == []


def test_kill_9_under_traffic_keeps_instance_session_and_pod(legiond, tmp_path):  # noqa: F811
    d = legiond
    app = write_app(tmp_path, "keep", {"main.py": PY_APP})
    d.cli("app", "deploy", "keep", "--runtime", "python3", "--dir", app, "--set", "A=kept")
    make_pool(d)
    assert run(d, "user-0001", "x = 41")["status"] == "Succeeded"
    pod = run_pod(d, tmp_path, "ticker")
    before = instance_of(d, "keep")
    ident = urllib.parse.urlencode({"identifier": "user-0001"})
    fn = Traffic(d, "GET", "/fn/default/keep/")
    sess = Traffic(d, "POST", f"/v1/sessionpools/py/executions?{ident}", {"code": "x"})
    pods = Traffic(d, "GET", f"{PODS}/ticker/log?tailLines=1", threads=1)
    time.sleep(1)
    d.stop(signal.SIGKILL, keep=True)
    killed = time.time()  # legiond is dead and reaped: its listener is gone
    inits = d.sandbox_inits()
    assert inits, "the sandboxes died with legiond"
    time.sleep(0.5)
    d.start()
    restarted = time.time()
    time.sleep(1)
    ok_fn, failed_fn = fn.finish()
    ok_s, failed_s = sess.finish()
    ok_p, failed_p = pods.finish()
    assert ok_fn > 0 and ok_s > 0 and ok_p > 0
    # Failed: only what was in flight when legiond died.
    failed = failed_fn + failed_s + failed_p
    assert all(started < killed for started, _ in failed), failed
    assert instance_of(d, "keep") == before
    after = running(d, "ticker")
    assert after and after["containerID"] == pod["containerID"], (pod, after)
    assert after["restartCount"] == 0 and after["state"] == pod["state"], (pod, after)
    r = run(d, "user-0001", "x + 1")
    assert r["result"] == "42", r
    log, _ = d.cli("app", "logs", "keep")
    assert "taken back after a legiond restart" in log
    assert restarted > killed
    ids = {os.path.basename(p) for p in inits.values()}
    d.stop(signal.SIGTERM)  # and --stop-all
    assert_nothing_left(d, ids)


def test_sigterm_keeps_workloads_and_a_lost_session_says_so(legiond, tmp_path):  # noqa: F811
    d = legiond
    make_pool(d)
    assert run(d, "user-0002", "y = 'still here'")["status"] == "Succeeded"
    assert run(d, "user-0003", "z = 1")["status"] == "Succeeded"
    d.stop(signal.SIGTERM, keep=True)
    # user-0003's sandbox dies while legiond is down.
    inits = d.sandbox_inits()
    for pid, path in inits.items():
        rec = os.path.join(d.home, "run", "instances", os.path.basename(path))
        if os.path.exists(rec) and "identifier=user-0003" in open(rec).read():  # placeholders have none
            os.kill(pid, signal.SIGKILL)
    d.start()
    assert run(d, "user-0002", "y")["result"] == "'still here'"
    st, body = d.http("POST", "/v1/sessionpools/py/executions?identifier=user-0003", body={"code": "z"})
    assert st == 410 and json.loads(body)["error"]["code"] == "SessionLost", body
    # The next call starts a new session.
    assert run(d, "user-0003", "1 + 1")["result"] == "2"
    d.stop(signal.SIGTERM)
    assert d.sandbox_inits() == {}


def test_restart_while_creating_and_destroying(legiond, tmp_path):  # noqa: F811
    d = legiond
    app = write_app(tmp_path, "burst", {"main.py": PY_APP})
    d.cli("app", "deploy", "burst", "--runtime", "python3", "--dir", app, "--concurrency", "1", "--max", "6")
    # Sandboxes being made (cold starts past the warm placeholders) when
    # legiond dies.
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        futs = [ex.submit(d.http, "GET", "/fn/default/burst/sleep?s=2", None, None, True, None, 10)
                for _ in range(6)]
        time.sleep(0.3)
        d.stop(signal.SIGKILL, keep=True)
        for f in futs:
            try:
                f.result()
            except OSError:
                pass
    d.start()
    assert d.http("GET", "/fn/default/burst/")[0] == 200
    # Being destroyed: the app is deleted, and legiond dies right after.
    d.cli("app", "delete", "burst")
    d.stop(signal.SIGKILL, keep=True)
    d.start()
    assert d.http("GET", "/fn/default/burst/")[0] == 404
    ids = {os.path.basename(p) for p in d.sandbox_inits().values()}
    d.stop(signal.SIGTERM)
    assert_nothing_left(d, ids)
