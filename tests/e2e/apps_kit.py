"""Helpers for the container app and image pool group tests (issue 12):
a legiond with the flags those features add (when this build has them),
the test images imported, and small wrappers for deploy, call, status and
pool groups."""
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import types

import pytest

import oci_kit
from test_legiond import LEGIOND, Legiond, free_port, kill_legiond

# Image refs in the store (imported from a docker archive).
PYWEB, ENVAPP, HTTPD, CRASH, SILENT = ("e2e/pyweb:1", "e2e/envapp:1", "e2e/httpd:1", "e2e/crash:1",
                                       "e2e/silent:1")
DOMAIN = "apps.e2e.test"
BACKOFF_MS = 200
READY_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def top():
    """A directory for a test module's legiond homes and registries."""
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    if not os.path.exists(oci_kit.BUSYBOX):
        pytest.skip("needs busybox-static")
    t = tempfile.mkdtemp(prefix="lg-capps-")
    yield t
    shutil.rmtree(t, ignore_errors=True)


@pytest.fixture()
def cleanup(d):
    """cleanup.apps, cleanup.pools: deleted after the test (apps first).
    Needs a fixture `d` (the module's legiond)."""
    c = types.SimpleNamespace(apps=[], pools=[])
    yield c
    for a in c.apps:
        delete(d, a)
    for p in c.pools:
        pool_delete(d, p)


def legiond_help():
    return subprocess.run([LEGIOND, "--help"], capture_output=True, text=True).stdout


def feature_flags():
    """The flags of issue 12 that this legiond knows: a short crash-loop
    backoff and readiness timeout (tests wait for them), and the function
    domain. A feature's test asserts its flag is there (has_flag)."""
    h = legiond_help()
    flags = []
    if "--app-backoff-ms" in h:
        flags += ["--app-backoff-ms", str(BACKOFF_MS)]
    if "--app-ready-timeout-ms" in h:
        flags += ["--app-ready-timeout-ms", str(READY_TIMEOUT_MS)]
    if "--fn-domain" in h:
        flags += ["--fn-domain", DOMAIN]
    return flags


def has_flag(name):
    assert name in legiond_help(), f"legiond has no {name} (not built yet?)"


def build_images():
    """{ref: Image} of the five test images."""
    return {PYWEB: oci_kit.pyweb_image("1"), ENVAPP: oci_kit.envapp_image(), HTTPD: oci_kit.httpd_image(),
            CRASH: oci_kit.crash_image(), SILENT: oci_kit.silent_image()}


def new_legiond(top, name, images=None, args=()):
    """A started legiond with home top/name and the feature flags; images
    ({ref: Image}) imported into its store."""
    home = os.path.join(top, name)
    os.makedirs(home)
    d = Legiond(home, free_port(), [*feature_flags(), *args])
    d.start()
    if images:
        archive = os.path.join(top, name + "-images.tar")
        oci_kit.write_docker_archive(archive, [(img, [ref]) for ref, img in images.items()])
        try:
            d.cli("image", "import", archive, timeout=120)
        except BaseException:
            kill_legiond(d)
            raise
        finally:
            os.unlink(archive)
    return d


def stop(d):
    """SIGKILL legiond, --stop-all its workloads and network, check that no
    process outlived it."""
    kill_legiond(d)


# ---- apps -------------------------------------------------------------------------

def app_path(name, ns="default"):
    return f"/v1/namespaces/{ns}/apps/{name}"


def deploy(d, name, spec, expect=(200, 201), headers=None):
    st, body = d.http("PUT", app_path(name), {"spec": spec}, headers=headers, timeout=180)
    assert st in expect, (st, body)
    return json.loads(body) if body and not (headers or {}).get("Accept") else body


def delete(d, name):
    st, body = d.http("DELETE", app_path(name))
    assert st in (200, 204, 404), body


def call(d, name, path="/", method="GET", body=None, token=None, auth=True, headers=None, timeout=120):
    """(status, headers {lowercase: value}, body) of a data path request."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    h = dict(headers or {})
    if auth:
        h["Authorization"] = "Bearer " + (token or d.token)
    try:
        c.request(method, f"/fn/default/{name}{path}", body=body, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def call_json(d, name, path="/", **kw):
    st, _, body = call(d, name, path, **kw)
    assert st == 200, (st, body)
    return json.loads(body)


def error_of(body):
    """The {"code","message"} of an error answer."""
    doc = json.loads(body)
    assert "error" in doc, doc
    return doc["error"]


def status(d, name):
    return d.app(name)["status"]


def condition(app_or_status, ctype):
    """The condition of type ctype in an app (or its status), or None."""
    st = app_or_status.get("status", app_or_status)
    for c in st.get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def logs(d, name):
    out, _ = d.cli("app", "logs", name)
    return out


def wait_status(d, name, pred, what, timeout=60):
    return d.wait_for(lambda: pred(status(d, name)), timeout=timeout, what=f"{what}: {status(d, name)}")


# ---- pool groups ------------------------------------------------------------------

def pool_put(d, name, spec, expect=(200, 201), headers=None):
    st, body = d.http("PUT", f"/v1/poolgroups/{name}", spec, headers=headers, timeout=180)
    assert st in expect, (st, body)
    return body


def pool(d, name):
    st, body = d.http("GET", f"/v1/poolgroups/{name}")
    assert st == 200, body
    return json.loads(body)


def pool_delete(d, name):
    st, body = d.http("DELETE", f"/v1/poolgroups/{name}")
    assert st in (204, 404), body


def wait_pool(d, name, pred, what, timeout=90):
    return d.wait_for(lambda: pred(pool(d, name).get("status", {})), timeout=timeout,
                      what=f"{what}: {pool(d, name)}")


def sandboxes(d):
    """State dirs of the sandboxes of d whose init still runs, but the job
    pools' (they fill on their own after legiond starts, which would show
    as sandboxes of what a test made)."""
    return set(d.sandbox_inits(roots=("sandboxes-root", "pod-sandboxes")).values())


def restart(d, sig):
    """Stop legiond with sig keeping its workloads, start it again."""
    d.stop(sig, keep=True)
    d.start()

