"""Pool groups of images end to end (issue 12): a pool group that names an
image pulls it when it is made (from a local docker-registry), keeps warm
sandboxes of it that container apps take (their cold start says "from a
placeholder", the pool's taken counter moves), pins the image, replaces its
warm sandboxes gradually when its image changes (status updated/outdated,
no old sandbox reused) and moves its apps as its upgrade policy says
(their next instance, or a new revision at once). A "process" pool's
placeholders already run the server."""
import concurrent.futures
import json
import os
import signal

import pytest

import oci_kit
from apps_kit import cleanup, top  # noqa: F401  (the fixtures)
from apps_kit import (CRASH, build_images, call, call_json, condition, delete, deploy, logs, new_legiond, pool,
                      pool_delete, pool_put, restart, sandboxes, status, stop, wait_pool, wait_status)


@pytest.fixture(scope="module")
def reg(top):
    """A registry holding pool/web:1 and :2 (pyweb answering version 1, 2)."""
    with oci_kit.Registry(top) as r:
        r.v1 = oci_kit.pyweb_image("1")
        r.v2 = oci_kit.pyweb_image("2")
        r.ref1 = r.push(r.v1, "pool/web", "1")
        r.ref2 = r.push(r.v2, "pool/web", "2")
        yield r


@pytest.fixture(scope="module")
def d(top):
    dd = new_legiond(top, "home", {CRASH: build_images()[CRASH]})
    yield dd
    stop(dd)


def ready_of(d, name, n):
    return wait_pool(d, name, lambda s: s.get("ready") == n and s.get("starting", 0) == 0, f"{n} ready")


def test_pool_prepulls_and_apps_take_its_warm_sandboxes(d, reg, cleanup):
    cleanup.pools.append("web")
    cleanup.apps.append("front")
    d.cli("image", "inspect", reg.ref1, check=1)
    # Made by the CLI: the image is pulled before the pool group is stored.
    out, err = d.cli("pool", "create", "web", "--image", reg.ref1, "--ready", "2", timeout=180)
    assert json.loads(d.cli("image", "inspect", reg.ref1)[0])["id"] == reg.v1.id, (out, err)
    ready_of(d, "web", 2)
    p = pool(d, "web")
    assert p["spec"]["image"] == reg.ref1 and reg.v1.id in json.dumps(p["status"]), p
    taken = p["status"]["taken"]
    # An app of the pool without an image of its own: the pool's.
    deploy(d, "front", {"poolGroup": "web", "port": 8080, "env": {"MARK": "app"}})
    r = call_json(d, "front", "/")
    assert r["version"] == "1" and r["env"]["MARK"] == "app", r
    assert pool(d, "web")["status"]["taken"] == taken + 1
    assert "from a placeholder" in logs(d, "front")
    s = status(d, "front")
    assert s["image"]["id"] == reg.v1.id and s["coldStarts"]["count"] == 1, s
    # The taken one is made again.
    ready_of(d, "web", 2)
    # The image is pinned while the pool group names it.
    st, body = d.http("DELETE", "/v1/images/" + reg.ref1)
    assert st == 409 and "web" in body.decode(), (st, body)
    _, err = d.cli("image", "rm", reg.ref1, check=None)
    assert "web" in err, err
    # An app of the pool naming another image is refused.
    st, body = d.http("PUT", "/v1/namespaces/default/apps/other",
                      {"spec": {"poolGroup": "web", "port": 8080, "image": reg.ref2}}, timeout=120)
    assert 400 <= st < 500, (st, body)
    assert d.http("GET", "/v1/namespaces/default/apps/other")[0] == 404


def test_rolling_replacement_after_an_image_change(d, reg, cleanup):
    cleanup.pools.append("roll")
    cleanup.apps.append("follow")
    before = sandboxes(d)
    pool_put(d, "roll", {"image": reg.ref1, "ready": 3, "upgrade": {"maxUnavailable": 1}})
    ready_of(d, "roll", 3)
    assert len(sandboxes(d) - before) == 3
    deploy(d, "follow", {"poolGroup": "roll", "port": 8080, "idleTimeoutSeconds": 1})
    first = call_json(d, "follow", "/")
    assert first["version"] == "1"
    ready_of(d, "roll", 3)
    # The old image's: three warm sandboxes and the app's instance.
    old_warm = sandboxes(d) - before
    assert len(old_warm) == 4, old_warm
    # The new image (pulled first, with progress): sandboxes replaced at
    # most one missing at a time.
    missing = d.http("GET", "/v1/images/" + reg.ref2)[0] == 404
    body = pool_put(d, "roll", {"image": reg.ref2, "ready": 3, "upgrade": {"maxUnavailable": 1}},
                    headers={"Accept": "application/x-ndjson"})
    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
    assert "error" not in lines[-1], lines[-1]
    assert not missing or [x for x in lines[:-1] if "phase" in x], lines
    seen = []

    def done():
        s = pool(d, "roll")["status"]
        seen.append(s)
        assert s["updated"] + s["outdated"] >= 3 - 1, seen
        return s["updated"] == 3 and s["outdated"] == 0 and not s["rolling"]

    d.wait_for(done, timeout=120, what="the rolling replacement")
    assert reg.v2.id in json.dumps(pool(d, "roll")["status"]), pool(d, "roll")
    # No old warm sandbox is left (the app's own instance still runs).
    left = sandboxes(d) & old_warm
    assert len(left) <= 1, left
    # nextInstance (the default): the running instance stays...
    r = call_json(d, "follow", "/")
    assert r["version"] == "1" and r["instance"] == first["instance"], r
    assert status(d, "follow")["revision"] == 1
    # ...and the next one is of the new image, from a new warm sandbox.
    wait_status(d, "follow", lambda s: s["instances"] == 0, "scale to zero")
    r = call_json(d, "follow", "/")
    assert r["version"] == "2" and r["instance"] != first["instance"], r
    assert logs(d, "follow").count("from a placeholder") == 2
    assert not (sandboxes(d) & old_warm), sandboxes(d) & old_warm


def test_burst_takes_the_warm_sandboxes_then_makes_more(d, reg, cleanup):
    cleanup.pools.append("burstpool")
    cleanup.apps.append("burstapp")
    pool_put(d, "burstpool", {"image": reg.ref1, "ready": 2})
    ready_of(d, "burstpool", 2)
    before = pool(d, "burstpool")["status"]
    deploy(d, "burstapp", {"poolGroup": "burstpool", "port": 8080, "concurrency": 1, "maxInstances": 4})
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: call(d, "burstapp", "/sleep?s=1"), range(4)))
    assert all(st == 200 for st, _, _ in results), results
    n = len({json.loads(b)["instance"] for _, _, b in results})
    after = pool(d, "burstpool")["status"]
    out = logs(d, "burstapp")
    # Every instance came from a placeholder or was made on demand (one
    # may be started and then find no request left).
    assert out.count("from a placeholder") + out.count("no placeholder ready") >= n, out
    assert out.count("from a placeholder") == after["taken"] - before["taken"] >= 1, (before, after, out)
    assert out.count("no placeholder ready") == after["onDemand"] - before["onDemand"], (before, after, out)


def test_no_old_sandbox_is_taken_after_an_image_change(d, reg, cleanup):
    cleanup.pools.append("takes")
    cleanup.apps += ["taker1", "taker2"]
    pool_put(d, "takes", {"image": reg.ref1, "ready": 2})
    ready_of(d, "takes", 2)
    deploy(d, "taker1", {"poolGroup": "takes", "port": 8080})
    deploy(d, "taker2", {"poolGroup": "takes", "port": 8080})
    pool_put(d, "takes", {"image": reg.ref2, "ready": 2})
    # At once, while old placeholders are still there: the new image.
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda a: call_json(d, a, "/"), ["taker1", "taker2"]))
    assert [r["version"] for r in results] == ["2", "2"], results


def cpu_millis(sandbox_id):
    """The CPU limit (millicores) of the sandbox's cgroup, None when unlimited."""
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        d = os.path.join(top, sandbox_id)
        if os.path.exists(os.path.join(d, "cpu.max")):  # cgroup v2
            quota, period = open(os.path.join(d, "cpu.max")).read().split()
            return None if quota == "max" else int(quota) * 1000 // int(period)
        if os.path.exists(os.path.join(d, "cpu.cfs_quota_us")):  # v1
            quota = int(open(os.path.join(d, "cpu.cfs_quota_us")).read())
            return None if quota < 0 else quota * 1000 // int(open(os.path.join(d, "cpu.cfs_period_us")).read())
        dirs[:] = [x for x in dirs if x.startswith("legion") or top == "/sys/fs/cgroup"]
    raise AssertionError(f"no cgroup {sandbox_id}")


def test_startup_boost_then_the_apps_cpu(d, reg, cleanup):
    cleanup.pools.append("boost")
    cleanup.apps.append("boosted")
    pool_put(d, "boost", {"image": reg.ref1, "ready": 1, "startupBoost": {"cpu": "2", "seconds": 10}})
    ready_of(d, "boost", 1)
    deploy(d, "boosted", {"poolGroup": "boost", "port": 8080, "cpu": "250m"})
    sid = call_json(d, "boosted", "/")["hostname"]  # the sandbox's id
    assert cpu_millis(sid) == 2000
    d.wait_for(lambda: cpu_millis(sid) == 250, timeout=60, what="the app's own CPU after the boost")


def test_apps_new_revision_policy(d, reg, cleanup):
    cleanup.pools.append("nr")
    cleanup.apps.append("nrapp")
    pool_put(d, "nr", {"image": reg.ref1, "ready": 1, "upgrade": {"apps": "newRevision"}})
    ready_of(d, "nr", 1)
    deploy(d, "nrapp", {"poolGroup": "nr", "port": 8080})
    first = call_json(d, "nrapp", "/")
    assert first["version"] == "1" and status(d, "nrapp")["revision"] == 1
    d.cli("pool", "create", "nr", "--image", reg.ref2, "--ready", "1", "--apps", "new-revision", timeout=180)
    assert pool(d, "nr")["spec"]["upgrade"]["apps"] == "newRevision"
    # A new revision at once, on the new image; the old instance drains.
    wait_status(d, "nrapp", lambda s: s["revision"] == 2, "a new revision")
    s = status(d, "nrapp")
    assert s["image"]["id"] == reg.v2.id, s
    r = call_json(d, "nrapp", "/")
    assert r["version"] == "2" and r["instance"] != first["instance"], r
    wait_status(d, "nrapp", lambda s: s["draining"] == 0 and s["instances"] == 1, "the old instance drained")


def test_process_placeholders_run_the_server_already(d, reg, cleanup):
    cleanup.pools.append("proc")
    cleanup.apps.append("procapp")
    d.cli("pool", "create", "proc", "--image", reg.ref1, "--ready", "1", "--placeholder", "process", "--port",
          "8080", "--ready-path", "/healthz", "--env", "MARK=pool", timeout=180)
    ready_of(d, "proc", 1)
    out, _ = d.cli("pool", "list")
    assert "proc" in out and "pool/web:1" in out, out
    deploy(d, "procapp", {"poolGroup": "proc", "port": 8080})
    r = call_json(d, "procapp", "/")
    assert r["version"] == "1" and r["env"]["MARK"] == "pool", r
    assert "from a placeholder" in logs(d, "procapp")
    assert condition(d.app("procapp"), "Ready")["status"] == "True"
    # An app that would need its own process cannot use such a pool.
    for spec in ({"poolGroup": "proc", "port": 8080, "env": {"MARK": "mine"}},
                 {"poolGroup": "proc", "port": 9090},
                 {"poolGroup": "proc", "port": 8080, "command": ["sh"]}):
        st, body = d.http("PUT", "/v1/namespaces/default/apps/procbad", {"spec": spec}, timeout=120)
        assert 400 <= st < 500 and "process" in body.decode(), (spec, st, body)
    assert d.http("GET", "/v1/namespaces/default/apps/procbad")[0] == 404
    # A new image: its started placeholders are replaced too.
    cleanup.apps.append("procapp2")
    d.cli("pool", "create", "proc", "--image", reg.ref2, "--ready", "1", "--placeholder", "process", "--port",
          "8080", "--ready-path", "/healthz", "--env", "MARK=pool", timeout=180)
    wait_pool(d, "proc", lambda s: s["updated"] == 1 and s["outdated"] == 0 and not s["rolling"], "rolled")
    deploy(d, "procapp2", {"poolGroup": "proc", "port": 8080})
    r = call_json(d, "procapp2", "/")
    assert r["version"] == "2" and r["env"]["MARK"] == "pool", r
    assert "from a placeholder" in logs(d, "procapp2")


def test_bad_image_pool_specs_are_refused(d, reg):
    for bad in ({"image": reg.ref1, "runtime": "python3"}, {"image": reg.ref1, "placeholder": "bogus"},
                {"image": reg.ref1, "port": 8080}, {"image": reg.ref1, "placeholder": "process"},
                {"image": reg.ref1, "upgrade": {"maxUnavailable": -1}},
                {"image": reg.ref1, "upgrade": {"apps": "sometimes"}}, {"image": reg.ref1, "ready": -1},
                {"image": reg.ref1, "version": "2"}, {"image": 5}, {"image": reg.ref1, "extra": 1}):
        st, body = d.http("PUT", "/v1/poolgroups/badpool", bad, timeout=120)
        assert st == 400, (bad, st, body)
        assert d.http("GET", "/v1/poolgroups/badpool")[0] == 404


def test_pool_with_unpullable_image_is_refused(d, reg):
    ref = f"{reg.host}/pool/nothing:1"
    st, body = d.http("PUT", "/v1/poolgroups/nopull", {"image": ref, "ready": 1}, timeout=180)
    assert st >= 400 and ref in body.decode(), (st, body)
    assert d.http("GET", "/v1/poolgroups/nopull")[0] == 404


def test_language_worker_pool_version_change_rolls(d, cleanup):
    cleanup.pools.append("pyv")
    base = sandboxes(d)
    pool_put(d, "pyv", {"runtime": "python3", "ready": 2, "version": "1"})
    ready_of(d, "pyv", 2)
    old = sandboxes(d) - base
    assert len(old) == 2, old
    pool_put(d, "pyv", {"runtime": "python3", "ready": 2, "version": "2", "upgrade": {"maxUnavailable": 1}})
    d.wait_for(lambda: (lambda s: s["updated"] == 2 and s["outdated"] == 0 and not s["rolling"])(
        pool(d, "pyv")["status"]), timeout=120, what="the version rolled")
    # The old sandboxes are gone, two new ones there.
    assert not (sandboxes(d) & old)
    assert len(sandboxes(d) - base) == 2


def test_process_pool_whose_server_dies_says_why(d, cleanup):
    cleanup.pools.append("dies")
    pool_put(d, "dies", {"image": CRASH, "ready": 1, "placeholder": "process", "port": 8080})
    wait_pool(d, "dies", lambda s: s.get("lastError", {}).get("failures", 0) >= 1, "a failure")
    s = pool(d, "dies")["status"]
    assert s["ready"] == 0, s
    msg = s["lastError"]["message"]
    assert "exited with code 3" in msg and "fatal: no config file" in msg, s


def test_pool_instance_survives_legiond_restart(top, reg):
    d = new_legiond(top, "restart")
    try:
        pool_put(d, "web", {"image": reg.ref1, "ready": 1})
        ready_of(d, "web", 1)
        deploy(d, "front", {"poolGroup": "web", "port": 8080})
        before = call_json(d, "front", "/")
        restart(d, signal.SIGKILL)
        after = call_json(d, "front", "/")
        assert after["instance"] == before["instance"], (before, after)
        # The pool is whole again and its warm sandboxes serve.
        ready_of(d, "web", 1)
        deploy(d, "second", {"poolGroup": "web", "port": 8080})
        assert call_json(d, "second", "/")["version"] == "1"
        assert "from a placeholder" in logs(d, "second")
        assert pool(d, "web")["spec"]["image"] == reg.ref1
        # Stopped with its workloads and started again: the pool fills
        # from its image again, and the apps take its sandboxes.
        d.stop(signal.SIGTERM)
        d.start()
        ready_of(d, "web", 1)
        r = call_json(d, "front", "/")
        assert r["version"] == "1" and r["instance"] != after["instance"], r
        assert logs(d, "front").count("from a placeholder") == 2
    finally:
        stop(d)
