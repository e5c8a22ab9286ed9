"""Container apps end to end (issue 12, docs/container-apps.md): apps whose spec
gives an OCI image and a port instead of a runtime and a package, run by a
real legiond from images built here from host files (oci_kit: a Python
http.server app, busybox httpd, an app configured by its environment, a
server that exits at once and one that never opens its port). Deploy by
the API and by `legion app deploy --image`, calls through the router, env,
scale out and to zero, revisions with drain, pull at deploy from a local
docker-registry (and a pull that fails), readiness failures and the crash
loop backoff as status conditions and answers, restarts of legiond, and
per-app auth (none, token, keys) with host routing."""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import oci_kit
from apps_kit import top  # noqa: F401  (the fixture)
from apps_kit import (CRASH, DOMAIN, ENVAPP, HTTPD, PYWEB, SILENT, build_images, call, call_json,
                      condition, delete, deploy, error_of, has_flag, logs, new_legiond, restart, status, stop,
                      wait_status)
from test_legiond import LEGION, free_port
from test_survive import Traffic, assert_nothing_left


@pytest.fixture(scope="module")
def images():
    return build_images()


@pytest.fixture(scope="module")
def d(top, images):
    dd = new_legiond(top, "home", images)
    yield dd
    stop(dd)


@pytest.fixture()
def apps(d):
    """Names of the apps a test made: deleted after it (their instances go)."""
    names = []
    yield names
    for n in names:
        delete(d, n)


def host_of(d, addresses):
    """The addresses in the legiond's pod CIDR (10.201.N.x)."""
    prefix = d.net.cidr.rsplit(".", 1)[0] + "."
    return [a for a in addresses if a.startswith(prefix)]


# ---- deploy and call ---------------------------------------------------------------

def test_deploy_by_api_and_call(d, images, apps):
    apps.append("web")
    doc = deploy(d, "web", {"image": PYWEB, "port": 8080})
    assert doc["spec"]["image"] == PYWEB
    r = call_json(d, "web", "/hello?x=1")
    assert r["app"] == "pyweb" and r["version"] == "1" and r["path"] == "/hello", r
    # The image's entrypoint, working directory and environment.
    assert r["argv"] == ["/app/server.py"] and r["cwd"] == "/app", r
    assert r["env"]["IMAGE_ONLY"] == "kept" and r["env"]["GREETING"] == "hello from the image", r
    st, _, body = call(d, "web", "/post", method="POST", body=b"payload")
    assert st == 200 and json.loads(body)["body"] == "payload" and json.loads(body)["method"] == "POST"
    # One instance, reached over one kept-alive connection.
    again = call_json(d, "web", "/")
    assert again["instance"] == r["instance"] and again["peer"] == r["peer"], (r, again)
    app = d.app("web")
    s = app["status"]
    assert s["revision"] == 1 and s["instances"] == 1 and s["coldStarts"]["count"] == 1, s
    assert s["image"]["id"] == images[PYWEB].id and PYWEB in s["image"]["ref"], s
    assert condition(app, "Ready")["status"] == "True", s
    assert condition(app, "ImagePulled")["status"] == "True", s
    # The router reaches it over the pod network, from the pod CIDR's
    # gateway address: never the host's own (external) address.
    assert [a for a in host_of(d, s["addresses"]) if a.endswith(":8080") or ":" not in a], s
    assert r["peer"].rsplit(":", 1)[0] == d.net.gateway, r
    # Its stderr (http.server's request log) is in the app's logs, with
    # the gateway as the client.
    out = logs(d, "web")
    assert "pyweb 1 listening on port 8080" in out and '"GET /hello?x=1 HTTP/1.1" 200' in out, out
    clients = set(re.findall(r"(\S+) - - \[", out))
    assert clients == {d.net.gateway}, (clients, out)
    # And followed: a new request's line arrives.
    follow = subprocess.Popen([LEGION, "app", "logs", "web", "--follow"], env=d.env, stdout=subprocess.PIPE,
                              text=True)
    try:
        lines = []
        threading.Thread(target=lambda: lines.extend(follow.stdout), daemon=True).start()
        d.wait_for(lambda: any("/hello?x=1" in x for x in lines), what="the old lines")
        assert call(d, "web", "/followed")[0] == 200
        d.wait_for(lambda: any('"GET /followed HTTP/1.1" 200' in x for x in lines), what=f"the new line: {lines}")
    finally:
        follow.terminate()
        follow.wait()


def test_deploy_by_cli_busybox_httpd_with_command_and_args(d, images, apps):
    apps += ["bb", "bb2"]
    out, err = d.cli("app", "deploy", "bb", "--image", HTTPD, "--port", "8080", timeout=120)
    assert "revision 1" in out, (out, err)
    st, _, body = call(d, "bb", "/")
    assert st == 200 and body == b"hello from busybox httpd\n", (st, body)
    # command and args replace the image's: another port, another site.
    d.cli("app", "deploy", "bb2", "--image", HTTPD, "--port", "9090", "--command", "httpd", "--arg", "-f",
          "--arg", "-p", "--arg", "9090", "--arg", "-h", "--arg", "/www2", timeout=120)
    st, _, body = call(d, "bb2", "/")
    assert st == 200 and body == b"the other site\n", (st, body)
    assert d.app("bb2")["spec"]["command"] == ["httpd"]
    # The standard library's own server, started by command and args.
    apps.append("pymod")
    d.cli("app", "deploy", "pymod", "--image", PYWEB, "--port", "8081", "--command", "python3", "--arg", "-m",
          "--arg", "http.server", "--arg", "8081", "--arg", "--bind", "--arg", "0.0.0.0", "--arg", "-d",
          "--arg", "/app", timeout=120)
    st, _, body = call(d, "pymod", "/VERSION")
    assert st == 200 and body == b"1\n", (st, body)
    out, _ = d.cli("app", "show", "bb")
    assert HTTPD in out and "8080" in out and "Ready" in out, out
    # An image app's spec is checked.
    for bad in ({"image": HTTPD}, {"image": HTTPD, "port": 0}, {"image": HTTPD, "port": 70000},
                {"image": HTTPD, "port": 8080, "runtime": "python3"},
                {"image": HTTPD, "port": 8080, "readinessPath": "healthz"},
                {"image": HTTPD, "port": 8080, "command": "httpd"},
                {"image": HTTPD, "port": "8080"}, {"image": HTTPD, "port": 8080, "command": [1]},
                {"image": HTTPD, "port": 8080, "env": {"1BAD": "x"}}, {"image": HTTPD, "port": 8080, "env": ["A=1"]},
                {"image": HTTPD, "port": 8080, "readinessPath": "/a b"}, {"image": "Not A Ref!", "port": 8080},
                {"image": "", "port": 8080}, {"image": HTTPD, "port": 8080, "auth": "sometimes"},
                {"image": HTTPD, "port": 8080, "poolGroup": "no-such-pool"}):
        st, body = d.http("PUT", "/v1/namespaces/default/apps/badspec", {"spec": bad}, timeout=120)
        assert 400 <= st < 500, (bad, st, body)
        assert d.http("GET", "/v1/namespaces/default/apps/badspec")[0] == 404


def test_env_reaches_the_app(d, apps):
    apps += ["env", "noport"]
    d.cli("app", "deploy", "env", "--image", ENVAPP, "--port", "9000", "--env", "PORT=9000",
          "--env", "GREETING=hej", timeout=120)
    assert call_json(d, "env", "/") == {"greeting": "hej, image!"}
    # The image's own variables stay unless the app sets them.
    assert call_json(d, "env", "/env/PATH")["value"] == oci_kit.APP_PATH_ENV.split("=", 1)[1]
    # A change of env is a new revision whose instances see it.
    deploy(d, "env", {"image": ENVAPP, "port": 9000, "env": {"PORT": "9000", "GREETING": "hej", "WHO": "you"}})
    assert status(d, "env")["revision"] == 2
    assert call_json(d, "env", "/") == {"greeting": "hej, you!"}
    # Without PORT the app dies at start: the answer names why (its stderr).
    deploy(d, "noport", {"image": ENVAPP, "port": 9000})
    st, _, body = call(d, "noport", "/")
    assert st == 502, (st, body)
    e = error_of(body)
    assert "KeyError: 'PORT'" in e["message"] and "ExitedAtStart" in json.dumps(e), e


# ---- scaling and revisions -----------------------------------------------------------

def test_scale_out_under_load_and_back_to_zero(d, apps):
    apps.append("burst")
    deploy(d, "burst", {"image": PYWEB, "port": 8080, "concurrency": 1, "maxInstances": 4,
                        "idleTimeoutSeconds": 1})
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: call(d, "burst", "/sleep?s=1"), range(8)))
    assert all(st == 200 for st, _, _ in results), [r for r in results if r[0] != 200][:2]
    hosts = {json.loads(b)["instance"] for _, _, b in results}
    assert 1 < len(hosts) <= 4, hosts
    s = status(d, "burst")
    assert s["coldStarts"]["count"] >= len(hosts), s
    wait_status(d, "burst", lambda s: s["instances"] == 0 and s["starting"] == 0, "scale to zero", timeout=60)
    # And back: a new instance, none of the old ones.
    r = call_json(d, "burst", "/")
    assert r["instance"] not in hosts
    assert status(d, "burst")["coldStarts"]["count"] > s["coldStarts"]["count"]


def test_new_revision_drains_the_old_instance(d, apps):
    apps.append("drain")
    deploy(d, "drain", {"image": PYWEB, "port": 8080, "env": {"MARK": "old"}})
    old = call_json(d, "drain", "/")
    assert old["env"]["MARK"] == "old"
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(call, d, "drain", "/sleep?s=6")
        d.wait_for(lambda: status(d, "drain")["activeRequests"] == 1, what="the slow request in flight")
        deploy(d, "drain", {"image": PYWEB, "port": 8080, "env": {"MARK": "new"}})
        s = status(d, "drain")
        assert s["revision"] == 2 and s["draining"] == 1, s
        new = call_json(d, "drain", "/")
        assert new["env"]["MARK"] == "new" and new["instance"] != old["instance"], new
        st, _, body = slow.result()
    # The old instance finished its request...
    assert st == 200 and json.loads(body)["instance"] == old["instance"], body
    assert json.loads(body)["env"]["MARK"] == "old"
    # ...and is gone, never used again.
    wait_status(d, "drain", lambda s: s["draining"] == 0 and s["instances"] == 1, "the old instance drained")
    for _ in range(5):
        r = call_json(d, "drain", "/")
        assert r["instance"] == new["instance"] and r["env"]["MARK"] == "new", r
    # The same spec again is not a new revision.
    deploy(d, "drain", {"image": PYWEB, "port": 8080, "env": {"MARK": "new"}})
    assert status(d, "drain")["revision"] == 2


# ---- images pulled at deploy --------------------------------------------------------

def test_image_missing_is_pulled_at_deploy_with_progress(d, top, apps):
    apps += ["pulled", "pulledcli"]
    img = oci_kit.pyweb_image("pulled")
    httpd = oci_kit.httpd_image("pulled by the cli\n")
    with oci_kit.Registry(os.path.join(top, "reg-pull")) as reg:
        ref = reg.push(img, "team/web", "1")
        d.cli("image", "inspect", ref, check=1)
        st, body = d.http("PUT", "/v1/namespaces/default/apps/pulled", {"spec": {"image": ref, "port": 8080}},
                          headers={"Accept": "application/x-ndjson"}, timeout=180)
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        assert st == 200 and lines, (st, body)
        assert [x for x in lines[:-1] if "phase" in x], lines  # progress
        assert "error" not in lines[-1], lines[-1]
        assert call_json(d, "pulled", "/")["version"] == "pulled"
        s = status(d, "pulled")
        assert s["image"]["id"] == img.id, s
        assert json.loads(d.cli("image", "inspect", ref)[0])["id"] == img.id
        # The CLI prints the pull's progress.
        ref2 = reg.push(httpd, "team/httpd", "1")
        out, err = d.cli("app", "deploy", "pulledcli", "--image", ref2, "--port", "8080", timeout=180)
        assert "revision 1" in out and "pull" in (out + err).lower(), (out, err)
        st, _, body = call(d, "pulledcli", "/")
        assert st == 200 and body == b"pulled by the cli\n"


def test_a_moved_tag_is_a_new_revision_at_redeploy(d, top, apps):
    apps.append("moving")
    v1, v2 = oci_kit.pyweb_image("moved-1"), oci_kit.pyweb_image("moved-2")
    with oci_kit.Registry(os.path.join(top, "reg-moving")) as reg:
        ref = reg.push(v1, "team/moving", "1")
        spec = {"image": ref, "port": 8080, "idleTimeoutSeconds": 1}
        deploy(d, "moving", spec)
        first = call_json(d, "moving", "/")
        assert first["version"] == "moved-1"
        # The tag moves in the registry, then in the store.
        reg.push(v2, "team/moving", "1")
        d.cli("image", "pull", ref, timeout=180)
        # The app's revision still runs the old image, untagged now: GC keeps
        # it, and a new instance of it starts.
        d.cli("--json", "image", "gc")
        wait_status(d, "moving", lambda s: s["instances"] == 0, "scale to zero")
        r = call_json(d, "moving", "/")
        assert r["version"] == "moved-1" and r["instance"] != first["instance"], r
        # The same spec again: a new revision, of the new image.
        deploy(d, "moving", spec)
        s = status(d, "moving")
        assert s["revision"] == 2 and s["image"]["id"] == v2.id, s
        assert call_json(d, "moving", "/")["version"] == "moved-2"


def test_concurrent_deploys_of_one_missing_image(d, top, apps):
    apps += ["twin1", "twin2"]
    img = oci_kit.pyweb_image("twins")
    with oci_kit.Registry(os.path.join(top, "reg-twins")) as reg:
        ref = reg.push(img, "team/twins", "1")
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            results = list(ex.map(lambda n: d.http("PUT", f"/v1/namespaces/default/apps/{n}",
                                                   {"spec": {"image": ref, "port": 8080}}, timeout=180),
                                  ["twin1", "twin2"]))
        assert all(st in (200, 201) for st, _ in results), results
        for n in ("twin1", "twin2"):
            assert call_json(d, n, "/")["version"] == "twins"
            assert status(d, n)["image"]["id"] == img.id


def test_unpullable_image_fails_the_deploy_and_stores_nothing(d, top, apps):
    apps.append("keepsold")
    with oci_kit.Registry(os.path.join(top, "reg-fail")) as reg:
        missing = f"{reg.host}/team/nothing:1"
        unreachable = f"127.0.0.1:{free_port()}/team/nothing:1"
        for ref in (missing, unreachable):
            st, body = d.http("PUT", "/v1/namespaces/default/apps/nopull", {"spec": {"image": ref, "port": 8080}},
                              timeout=180)
            assert st >= 400, (st, body)
            e = error_of(body)
            assert e["code"] == "ImagePullFailed" and ref in e["message"], e
            assert d.http("GET", "/v1/namespaces/default/apps/nopull")[0] == 404
            # Streamed: the last line is the error.
            st, body = d.http("PUT", "/v1/namespaces/default/apps/nopull", {"spec": {"image": ref, "port": 8080}},
                              headers={"Accept": "application/x-ndjson"}, timeout=180)
            last = json.loads(body.decode().splitlines()[-1])
            assert last["error"]["code"] == "ImagePullFailed", (st, body)
            assert d.http("GET", "/v1/namespaces/default/apps/nopull")[0] == 404
            out, err = d.cli("app", "deploy", "nopull", "--image", ref, "--port", "8080", check=1, timeout=180)
            assert ref in err, (out, err)
            assert d.http("GET", "/v1/namespaces/default/apps/nopull")[0] == 404
        # An app that exists keeps its revision when the new image cannot be pulled.
        deploy(d, "keepsold", {"image": HTTPD, "port": 8080})
        st, body = d.http("PUT", "/v1/namespaces/default/apps/keepsold", {"spec": {"image": missing, "port": 8080}},
                          timeout=180)
        assert st >= 400 and error_of(body)["code"] == "ImagePullFailed", (st, body)
        assert d.app("keepsold")["spec"]["image"] == HTTPD
        assert status(d, "keepsold")["revision"] == 1
        assert call(d, "keepsold", "/")[0] == 200
    out, _ = d.cli("image", "ls")
    assert "team/nothing" not in out, out


# ---- failures: readiness, crash loop -------------------------------------------------

def test_port_never_opens(d, apps):
    apps.append("silent")
    # A request waits longer than the readiness check (60 s by default).
    deploy(d, "silent", {"image": SILENT, "port": 8080, "timeoutSeconds": 120})
    st, _, body = call(d, "silent", "/", timeout=180)
    assert st == 502, (st, body)
    e = error_of(body)
    assert "8080 never opened" in e["message"] and "PortNeverOpened" in json.dumps(e), e
    c = condition(d.app("silent"), "Ready")
    assert c["status"] == "False" and c["reason"] == "PortNeverOpened" and "8080" in c["message"], c
    out = logs(d, "silent")
    assert "never opened" in out and "waiting for a database that never comes" in out, out


def test_readiness_path_failing(d, apps):
    apps += ["unready", "ready"]
    deploy(d, "unready", {"image": PYWEB, "port": 8080, "readinessPath": "/healthz", "timeoutSeconds": 120,
                          "env": {"HEALTHZ_STATUS": "500"}})
    st, _, body = call(d, "unready", "/", timeout=180)
    assert st == 502, (st, body)
    e = error_of(body)
    assert "/healthz" in e["message"] and "500" in e["message"] and "ReadinessFailed" in json.dumps(e), e
    c = condition(d.app("unready"), "Ready")
    assert c["status"] == "False" and c["reason"] == "ReadinessFailed", c
    assert "/healthz" in logs(d, "unready")
    # A check that passes: legiond asked for the path before the first call.
    deploy(d, "ready", {"image": PYWEB, "port": 8080, "readinessPath": "/healthz"})
    assert call_json(d, "ready", "/first")["path"] == "/first"
    out = logs(d, "ready")
    assert out.index('"GET /healthz HTTP/1.1" 200') < out.index('"GET /first HTTP/1.1" 200'), out


def test_crash_loop_backs_off_visibly(d, apps):
    has_flag("--app-backoff-ms")
    apps.append("crash")
    deploy(d, "crash", {"image": CRASH, "port": 8080})
    # The first two starts happen at once, and fail: 502 naming why.
    for _ in range(2):
        st, _, body = call(d, "crash", "/")
        assert st == 502, (st, body)
        e = error_of(body)
        assert "exited with code 3" in e["message"] and "fatal: no config file" in e["message"], e
    # Then starts wait (200 ms, doubling): a call meanwhile gets 503.
    seen = []
    for _ in range(12):
        st, h, body = call(d, "crash", "/")
        seen.append(st)
        if st == 503:
            break
        assert st == 502, (st, body)
    assert seen[-1] == 503, seen
    e = error_of(body)
    assert e["code"] == "CrashLoopBackOff" and "crash" in e["message"], e
    assert "exited with code 3" in e["message"] or "ExitedAtStart" in e["message"], e
    assert int(h["retry-after"]) >= 1, h
    app = d.app("crash")
    c = condition(app, "Ready")
    assert c["status"] == "False" and c["reason"] in ("CrashLoopBackOff", "ExitedAtStart"), app["status"]
    assert "CrashLoopBackOff" in json.dumps(app["status"]), app["status"]
    out, _ = d.cli("app", "show", "crash")
    assert "CrashLoopBackOff" in out, out
    out = logs(d, "crash")
    assert "fatal: no config file" in out and "back" in out.lower(), out
    # A new revision (a working image) starts at once: the streak is reset.
    deploy(d, "crash", {"image": PYWEB, "port": 8080})
    assert call_json(d, "crash", "/")["app"] == "pyweb"
    c = condition(d.app("crash"), "Ready")
    assert c["status"] == "True", c


def test_crash_loop_with_min_instances_backs_off_without_requests(d, apps):
    has_flag("--app-backoff-ms")
    apps.append("crashmin")
    deploy(d, "crashmin", {"image": CRASH, "port": 8080, "minInstances": 1})
    # No request: the minInstances ticks start it, fail, and back off.
    wait_status(d, "crashmin", lambda s: (condition(s, "Ready") or {}).get("reason") == "CrashLoopBackOff",
                "CrashLoopBackOff")
    c = condition(d.app("crashmin"), "Ready")
    assert c["status"] == "False" and c["failures"] >= 2 and "exited with code 3" in c["message"], c
    st, h, body = call(d, "crashmin", "/")
    assert st in (502, 503), (st, body)


def test_instance_crashing_after_start_is_replaced(d, apps):
    apps.append("exits")
    deploy(d, "exits", {"image": PYWEB, "port": 8080})
    first = call_json(d, "exits", "/")
    st, _, body = call(d, "exits", "/exit?code=4")
    # legiond sees the connection fail before it learns how the process
    # ended: the 502 and the app's log still say why (its code and last
    # stderr line; its own output went with it).
    assert st == 502, (st, body)
    assert b"Exited(4): pyweb: exiting on request" in body, body
    r = call_json(d, "exits", "/")
    assert r["instance"] != first["instance"]
    # Logged before the 502 was answered (the app's own output went with
    # it: logs show the live instances' output).
    out = logs(d, "exits")
    assert "exited: Exited(4): pyweb: exiting on request" in out, out


def test_memory_limit_applies(d, apps):
    apps.append("small")
    deploy(d, "small", {"image": PYWEB, "port": 8080, "memory": "64Mi"})
    assert call(d, "small", "/alloc?mb=8")[0] == 200
    st, _, body = call(d, "small", "/alloc?mb=256")
    assert st == 502 and b"OOMKilled" in body, (st, body)
    # Killed by the kernel: the app says so.
    d.wait_for(lambda: "OOMKilled" in logs(d, "small"), what="OOMKilled in the app's log")
    assert "OOMKilled" in json.dumps(status(d, "small")), status(d, "small")  # a failure: Crashed
    assert call(d, "small", "/")[0] == 200


# ---- legiond restarts ----------------------------------------------------------------

def test_instances_survive_legiond_restart(top, images):
    d = new_legiond(top, "restart", {PYWEB: images[PYWEB], HTTPD: images[HTTPD]})
    try:
        deploy(d, "keep", {"image": PYWEB, "port": 8080, "env": {"MARK": "kept"}})
        deploy(d, "bb", {"image": HTTPD, "port": 8080})
        before = call_json(d, "keep", "/")
        assert call(d, "bb", "/")[0] == 200
        inits = d.sandbox_inits()
        # kill -9 under traffic: the only failed calls are those in flight.
        traffic = Traffic(d, "GET", "/fn/default/keep/")
        d.wait_for(lambda: traffic.ok >= 5, what="traffic flowing")
        d.stop(signal.SIGKILL, keep=True)
        killed = time.time()
        d.start()
        ok_then = traffic.ok
        d.wait_for(lambda: traffic.ok >= ok_then + 5, what="traffic flowing again")
        _, failed = traffic.finish()
        assert all(started < killed for started, _ in failed), failed
        # The same instance answers, reached at its address again.
        after = call_json(d, "keep", "/")
        assert after["instance"] == before["instance"] and after["pid"] == before["pid"], (before, after)
        assert after["env"]["MARK"] == "kept"
        assert after["peer"].rsplit(":", 1)[0] == d.net.gateway, after  # its host route, taken back
        assert call(d, "bb", "/")[2] == b"hello from busybox httpd\n"
        s = status(d, "keep")
        assert s["instances"] == 1 and s["coldStarts"]["count"] == 0, s
        assert "taken back after a legiond restart" in logs(d, "keep")
        restart(d, signal.SIGTERM)
        assert call_json(d, "keep", "/")["pid"] == before["pid"]
        ids = {os.path.basename(p) for p in inits.values()}
        d.stop(signal.SIGTERM)  # and --stop-all
        assert_nothing_left(d, ids)
        # Its network goes too (host ends of veths go with their namespaces).
        d.wait_for(lambda: d.net.prefix not in open("/proc/net/dev").read(), what="the sandbox links gone")
        # Started again from its store alone: the apps are there, new instances.
        d.start()
        again = call_json(d, "keep", "/")
        assert again["instance"] != before["instance"] and again["env"]["MARK"] == "kept", again
        assert call(d, "bb", "/")[2] == b"hello from busybox httpd\n"
        assert condition(d.app("keep"), "ImagePulled")["status"] == "True"
    finally:
        stop(d)


def test_old_revision_starts_after_its_tag_moved_and_a_restart(top):
    """An app deployed from web:1; web:1 pushed again with other content and
    pulled (the app keeps its revision, on the old image by id); legiond
    restarted with its instances stopped: the revision still makes new
    instances of the old image (dangling in the store, kept by GC while the
    app uses it), and GC drops it once the app is gone."""
    d = new_legiond(top, "retag")
    try:
        with oci_kit.Registry(os.path.join(top, "reg-retag")) as reg:
            one, two = oci_kit.httpd_image("one\n"), oci_kit.httpd_image("two\n")
            ref = reg.push(one, "team/web", "1")
            deploy(d, "old", {"image": ref, "port": 8080})
            assert call(d, "old", "/")[2] == b"one\n"
            assert status(d, "old")["image"]["id"] == one.id
            reg.push(two, "team/web", "1")
            d.cli("image", "pull", ref, timeout=180)
            assert json.loads(d.cli("image", "inspect", ref)[0])["id"] == two.id
            doc = json.loads(d.cli("image", "inspect", one.id)[0])
            assert doc["names"] == [] and doc["dangling"] is True, doc
            # Pinned by the app's revision: GC keeps it.
            gc = json.loads(d.cli("--json", "image", "gc")[0])
            assert gc["imagesRemoved"] == 0, gc
            # Restart with the instances gone: a new one is made from the old image.
            d.stop(signal.SIGTERM)
            d.start()
            st, _, body = call(d, "old", "/")
            assert (st, body) == (200, b"one\n"), (st, body, status(d, "old"))
            s = status(d, "old")
            assert s["revision"] == 1 and s["image"]["id"] == one.id, s
            # A new app from the same ref gets the new image.
            deploy(d, "new", {"image": ref, "port": 8080})
            assert call(d, "new", "/")[2] == b"two\n"
            # The app gone (its instance torn down, which pins it until it is
            # gone), nothing pins the old image: GC drops it.
            delete(d, "old")
            removed = []

            def gc_drops_it():
                removed.append(json.loads(d.cli("--json", "image", "gc")[0])["imagesRemoved"])
                return sum(removed) >= 1

            d.wait_for(gc_drops_it, what="GC dropping the old image")
            assert sum(removed) == 1, removed
            _, err = d.cli("image", "inspect", one.id, check=1)
            assert "not found" in err, err
            assert call(d, "new", "/")[2] == b"two\n"
    finally:
        stop(d)


def test_pod_address_without_a_sandbox_is_not_routed_out(d, apps):
    """The router and the readiness probe connect to instances' pod
    addresses: one whose sandbox is gone (or not attached yet) must fail
    there, not leave by the host's default route, where anything (here a
    proxy answering 403) would answer for the app and pass its readiness."""
    apps.append("routed")
    deploy(d, "routed", {"image": HTTPD, "port": 8080})
    assert call(d, "routed", "/")[0] == 200
    unused = d.net.cidr.rsplit(".", 1)[0] + ".254"
    default = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    p = subprocess.run(["ip", "route", "get", unused], capture_output=True, text=True)
    if "dev" in default:
        assert f"dev {default[default.index('dev') + 1]} " not in p.stdout, (unused, p.stdout)
    assert " via " not in p.stdout, (unused, p.stdout)


def test_network_off_refuses_container_apps(top, images):
    d = new_legiond(top, "netoff", {HTTPD: images[HTTPD]}, ["--network", "off"])
    try:
        st, body = d.http("PUT", "/v1/namespaces/default/apps/web", {"spec": {"image": HTTPD, "port": 8080}})
        assert 400 <= st < 500 and "--network on" in error_of(body)["message"], (st, body)
        st, body = d.http("PUT", "/v1/poolgroups/web", {"image": HTTPD, "ready": 1})
        assert 400 <= st < 500 and "--network on" in error_of(body)["message"], (st, body)
        assert d.http("GET", "/v1/namespaces/default/apps/web")[0] == 404
    finally:
        stop(d)


# ---- auth: none, token, keys; host routing ---------------------------------------------

def test_public_token_and_key_apps(d, apps):
    apps += ["pub", "tok", "keyed"]
    deploy(d, "pub", {"image": HTTPD, "port": 8080, "auth": "none"})
    d.cli("app", "deploy", "tok", "--image", HTTPD, "--port", "8080", "--auth", "token", timeout=120)
    deploy(d, "keyed", {"image": HTTPD, "port": 8080, "auth": "keys"})
    # Public: anyone.
    st, _, body = call(d, "pub", "/", auth=False)
    assert st == 200 and body == b"hello from busybox httpd\n", (st, body)
    # Token (the default): 401 without, the same 401 as an app that does not exist.
    st_tok, _, body_tok = call(d, "tok", "/", auth=False)
    st_none, _, body_none = call(d, "no-such-app", "/", auth=False)
    assert st_tok == st_none == 401 and body_tok == body_none, (body_tok, body_none)
    assert call(d, "tok", "/")[0] == 200
    # Keys: an app key on that app's data path only.
    assert call(d, "keyed", "/", auth=False)[0] == 401
    st, body = d.http("POST", "/v1/namespaces/default/apps/keyed/keys", {})
    assert st in (200, 201), body
    key = json.loads(body)
    assert call(d, "keyed", "/", auth=False, headers={"x-legion-key": key["key"]})[0] == 200
    assert call(d, "keyed", "/", token=key["key"])[0] == 200
    assert call(d, "keyed", "/")[0] == 200  # the admin token may use the namespace
    assert call(d, "tok", "/", token=key["key"])[0] == 401
    assert call(d, "tok", "/", auth=False, headers={"x-legion-key": key["key"]})[0] == 401
    assert d.http("GET", "/v1/namespaces/default/apps", token=key["key"])[0] == 401
    st, body = d.http("GET", "/v1/namespaces/default/apps/keyed/keys")
    assert st == 200 and key["key"] not in body.decode() and key["id"] in body.decode(), body
    out, _ = d.cli("app", "keys", "list", "keyed")
    assert key["id"] in out and key["key"] not in out
    st, _ = d.http("DELETE", f"/v1/namespaces/default/apps/keyed/keys/{key['id']}")
    assert st in (200, 204)
    assert call(d, "keyed", "/", auth=False, headers={"x-legion-key": key["key"]})[0] == 401
    # auth changes in place: no new revision.
    deploy(d, "pub", {"image": HTTPD, "port": 8080, "auth": "token"})
    assert status(d, "pub")["revision"] == 1
    assert call(d, "pub", "/", auth=False)[0] == 401
    deploy(d, "pub", {"image": HTTPD, "port": 8080, "auth": "none"})
    assert call(d, "pub", "/", auth=False)[0] == 200


def test_host_routing_on_the_function_domain(d, apps):
    has_flag("--fn-domain")
    apps += ["site", "private"]
    deploy(d, "site", {"image": HTTPD, "port": 8080, "auth": "none"})
    deploy(d, "private", {"image": HTTPD, "port": 8080})
    st, body = d.http("GET", "/", auth=False, headers={"Host": f"site.default.{DOMAIN}"})
    assert st == 200 and body == b"hello from busybox httpd\n", (st, body)
    st, body = d.http("GET", "/index.html", auth=False, headers={"Host": f"site.default.{DOMAIN}:{d.port}"})
    assert st == 200 and body == b"hello from busybox httpd\n", (st, body)
    assert d.http("GET", "/", auth=False, headers={"Host": f"private.default.{DOMAIN}"})[0] == 401
    assert d.http("GET", "/", headers={"Host": f"private.default.{DOMAIN}"})[0] == 200
    # Another domain is not an app's.
    st, _ = d.http("GET", "/", auth=False, headers={"Host": "site.default.other.test"})
    assert st != 200
