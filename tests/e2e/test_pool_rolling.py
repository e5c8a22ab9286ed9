"""Rolling replacement of a pool group's placeholders (issue 12,
node-pool.c over warm.c's lg_warm_pool_retire): a change of its shape (cpu,
version, image) replaces its ready sandboxes gradually instead of
destroying them all at once. Polled at every 100 ms: `updated + outdated`
never below `ready - maxUnavailable`; at the end `updated == ready`,
`outdated == 0`, not rolling, and none of the old sandboxes is left. An
instance started while it rolls never gets an old placeholder. The exact
limit at every discard, and never more placeholders than `ready` at once,
are tests/unit/test-warm.c's; this checks legiond wires it (before, a
change deleted every old placeholder at once: the first poll saw 0 ready).
Language worker pools, and an image pool in placeholder mode process."""
import os
import re

import pytest

import oci_kit
from apps_kit import cleanup, top  # noqa: F401  (the fixtures)
from apps_kit import (call_json, delete, deploy, logs, new_legiond, pool, pool_delete, pool_put, sandboxes, stop,
                      wait_pool)
from test_legiond import PY_APP, write_app


@pytest.fixture(scope="module")
def d(top):
    dd = new_legiond(top, "roll")
    # The first start's pool groups filled: the tests tell their own
    # sandboxes by what appears after that.
    for name, n in (("python3", 2), ("node", 1)):
        wait_pool(dd, name, lambda s: s.get("ready") == n and s.get("starting", 0) == 0, f"{name} filled")
    yield dd
    stop(dd)


def ready_of(d, name, n):
    return wait_pool(d, name, lambda s: s.get("ready") == n and s.get("starting", 0) == 0 and not s.get("rolling"),
                     f"{n} ready")


def roll(d, name, spec, ready, max_unavailable, base):
    """PUT spec and poll until the replacement is over; returns the polls."""
    old = sandboxes(d) - base
    assert len(old) == ready, old
    pool_put(d, name, spec)
    seen = []

    def done():
        s = pool(d, name)["status"]
        seen.append(s)
        assert s["updated"] + s["outdated"] >= ready - max_unavailable, seen
        return s["updated"] == ready and s["outdated"] == 0 and not s["rolling"]

    d.wait_for(done, timeout=180, what="the rolling replacement")
    d.wait_for(lambda: not (sandboxes(d) & old), timeout=30, what="the old sandboxes gone")
    assert len(sandboxes(d) - base) == ready
    return seen


def test_cpu_change_replaces_ready_5_gradually(d, cleanup):
    cleanup.pools.append("rcpu")
    base = sandboxes(d)
    pool_put(d, "rcpu", {"runtime": "python3", "ready": 5, "cpu": "500m"})
    ready_of(d, "rcpu", 5)
    seen = roll(d, "rcpu", {"runtime": "python3", "ready": 5, "cpu": "700m", "upgrade": {"maxUnavailable": 1}},
                5, 1, base)
    # It was seen rolling, with old and new side by side.
    assert any(s["rolling"] and s["outdated"] > 0 for s in seen), seen
    s = pool(d, "rcpu")["status"]
    assert s["ready"] == 5 and s["starting"] == 0, s


def test_version_changes_in_a_row_and_delete(d, cleanup):
    cleanup.pools.append("rver")
    base = sandboxes(d)
    pool_put(d, "rver", {"runtime": "python3", "ready": 3, "version": "1"})
    ready_of(d, "rver", 3)
    roll(d, "rver", {"runtime": "python3", "ready": 3, "version": "2", "upgrade": {"maxUnavailable": 2}}, 3, 2, base)
    # Two changes before the first is over: both old shapes go.
    old = sandboxes(d) - base
    pool_put(d, "rver", {"runtime": "python3", "ready": 3, "version": "3", "upgrade": {"maxUnavailable": 1}})
    pool_put(d, "rver", {"runtime": "python3", "ready": 3, "version": "4", "upgrade": {"maxUnavailable": 1}})
    wait_pool(d, "rver", lambda s: s["updated"] == 3 and s["outdated"] == 0 and not s["rolling"], "version 4")
    d.wait_for(lambda: not (sandboxes(d) & old), timeout=30, what="the old sandboxes gone")
    # Deleted while rolling: the old placeholders go with the new ones.
    pool_put(d, "rver", {"runtime": "python3", "ready": 3, "version": "5"})
    wait_pool(d, "rver", lambda s: s["rolling"], "rolling", timeout=30)
    pool_delete(d, "rver")
    d.wait_for(lambda: not (sandboxes(d) - base), timeout=30, what="every placeholder gone")


def test_an_instance_started_while_rolling_gets_the_new_shape(d, cleanup, tmp_path):
    """Called right after the change, while old placeholders are still
    ready and new ones are starting: the instance is a new placeholder or
    made on demand, never an old one (an old one would have been the only
    ready placeholder most of the time, so taking it fails this)."""
    cleanup.pools.append("rtake")
    cleanup.apps.append("rtakeapp")
    base = sandboxes(d)
    pool_put(d, "rtake", {"runtime": "python3", "ready": 3, "version": "1"})
    ready_of(d, "rtake", 3)
    old = {os.path.basename(s) for s in sandboxes(d) - base}
    app = write_app(tmp_path, "rtakeapp", {"main.py": PY_APP})
    d.cli("app", "deploy", "rtakeapp", "--runtime", "python3", "--dir", app, "--pool", "rtake")
    pool_put(d, "rtake", {"runtime": "python3", "ready": 3, "version": "2", "upgrade": {"maxUnavailable": 1}})
    assert d.http("GET", "/fn/default/rtakeapp/")[0] == 200
    inst = re.search(r"instance (i-[0-9a-f]+) ready", logs(d, "rtakeapp")).group(1)
    assert inst not in old, (inst, old)
    wait_pool(d, "rtake", lambda s: s["updated"] == 3 and s["outdated"] == 0 and not s["rolling"], "rolled")


def test_image_pool_in_process_mode_rolls(d, cleanup, top):  # noqa: F811  (the fixture)
    """An image pool group whose placeholders run the server already: the
    new image's are ready only once their server passed the readiness
    check, and the old ones go as they do; an app's instance then runs
    the new image."""
    cleanup.pools.append("rproc")
    cleanup.apps.append("rprocapp")
    with oci_kit.Registry(top) as reg:
        v1, v2 = oci_kit.pyweb_image("1"), oci_kit.pyweb_image("2")
        ref1, ref2 = reg.push(v1, "roll/web", "1"), reg.push(v2, "roll/web", "2")
        base = sandboxes(d)
        proc = {"placeholder": "process", "port": 8080, "readinessPath": "/healthz"}
        pool_put(d, "rproc", {"image": ref1, "ready": 3, **proc})
        ready_of(d, "rproc", 3)
        roll(d, "rproc", {"image": ref2, "ready": 3, **proc, "upgrade": {"maxUnavailable": 1}}, 3, 1, base)
        assert v2.id in str(pool(d, "rproc")["status"])
        deploy(d, "rprocapp", {"poolGroup": "rproc", "port": 8080})
        assert call_json(d, "rprocapp", "/")["version"] == "2"
