"""Public endpoints (issue 12): an app's `auth` -- token (the default),
keys (its own app keys) or none (anyone) -- decided before legiond's 401,
changed in place without a new revision; app keys that open one app's URL
and nothing else; Host routing on `legiond --fn-domain`. Function apps on
the python3 runtime, one legiond for the module (with --fn-domain)."""
import http.client
import json
import os
import signal
import subprocess

import pytest

from test_legiond import LEGIOND, kill_legiond, start_legiond, write_app

DOMAIN = "apps.test"

ECHO = '''
import socket
def main(req):
    return {"instance": socket.gethostname(), "path": req.path,
            "headers": {k.lower(): v for k, v in dict(req.headers).items()}}
'''


@pytest.fixture(scope="module")
def legiond(legion_bin, tmp_path_factory):
    d = start_legiond(tmp_path_factory.mktemp("public"), ["--fn-domain", DOMAIN])
    d.src = write_app(tmp_path_factory.mktemp("src"), "echo", {"main.py": ECHO})
    yield d
    kill_legiond(d)


def deploy(d, name, *flags, ns="default"):
    out, _ = d.cli("--ns", ns, "app", "deploy", name, "--runtime", "python3", "--dir", d.src, *flags)
    return out


def call(d, path, headers=None, conn=None, method="GET"):
    """An anonymous request unless headers carry a credential."""
    c = conn or http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    c.request(method, path, headers=dict(headers or {}))
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, body


def bearer(secret):
    return {"Authorization": "Bearer " + secret}


def new_key(d, app, ns="default", with_id=False):
    """A new key of app (the secret alone on stdout; stderr names its id)."""
    out, err = d.cli("--ns", ns, "app", "keys", "create", app, "--description", "test")
    key = out.strip()
    assert key.startswith("lgk_") and len(key) == 68 and "shown only now" in err, (out, err)
    return (key, err.split()[1]) if with_id else key


def error_of(body):
    return json.loads(body)["error"]


def test_none_app_needs_no_token(legiond):
    deploy(legiond, "pub", "--auth", "none")
    st, body = call(legiond, "/fn/default/pub/hi")
    assert st == 200, body
    assert json.loads(body)["path"] == "/hi"
    # Anything presented is let through, and never reaches the function.
    st, body = call(legiond, "/fn/default/pub/", {**bearer("lgn_" + "0" * 64), "x-legion-key": "lgk_x"})
    assert st == 200, body
    headers = json.loads(body)["headers"]
    assert "authorization" not in headers and "x-legion-key" not in headers
    # The API stays closed to an anonymous client.
    assert call(legiond, "/v1/namespaces/default/apps")[0] == 401
    assert json.loads(legiond.http("GET", "/v1/namespaces/default/apps/pub")[1])["spec"]["auth"] == "none"


def test_token_app_answers_as_an_unknown_app(legiond):
    deploy(legiond, "priv")
    assert legiond.http("GET", "/fn/default/priv/")[0] == 200  # calibration: it is there and serves
    # No token, a wrong token: the answers of an app that does not exist,
    # byte for byte, so that names do not leak.
    for headers in ({}, bearer("lgn_" + "1" * 64), {"x-legion-key": "lgk_" + "2" * 64}, bearer("garbage")):
        st, body = call(legiond, "/fn/default/priv/", headers)
        st2, body2 = call(legiond, "/fn/default/no-such-app/", headers)
        st3, body3 = call(legiond, "/fn/no-such-ns/priv/", headers)
        assert st == st2 == st3 == 401, (headers, body)
        assert body == body2 == body3, (body, body2, body3)
    # A token of another namespace: 404 (never 403), as for any app there.
    assert legiond.http("POST", "/v1/namespaces", body={"name": "other"})[0] == 201
    tok = json.loads(legiond.http("POST", "/v1/namespaces/other/tokens", body={})[1])["token"]
    st, body = call(legiond, "/fn/default/priv/", bearer(tok))
    assert st == 404, body
    assert body == call(legiond, "/fn/default/no-such-app/", bearer(tok))[1]


def test_keys_app_opens_with_its_key_only(legiond):
    deploy(legiond, "kapp", "--auth", "keys")
    deploy(legiond, "kapp2", "--auth", "keys")
    deploy(legiond, "tok-app")
    key = new_key(legiond, "kapp")
    for headers in ({"x-legion-key": key}, bearer(key), {"X-Legion-Key": key}):
        st, body = call(legiond, "/fn/default/kapp/k", headers)
        assert st == 200, (headers, body)
        h = json.loads(body)["headers"]
        assert "x-legion-key" not in h and "authorization" not in h
    # Without it: 401; a token of the namespace still opens it.
    st, body = call(legiond, "/fn/default/kapp/")
    assert st == 401, body
    assert legiond.http("GET", "/fn/default/kapp/")[0] == 200
    st, body = call(legiond, "/fn/default/kapp/", {"x-legion-key": key[:-1] + "0"})
    assert st == 401 and error_of(body)["message"] == "invalid app key", body
    # The key opens nothing else: another keys app, a token app, an app
    # that does not exist -- the same answer for each -- nor the API.
    answers = set()
    for path in ("/fn/default/kapp2/", "/fn/default/tok-app/", "/fn/default/nothing/", "/fn/other/kapp/"):
        for headers in ({"x-legion-key": key}, bearer(key)):
            st, body = call(legiond, path, headers)
            assert st == 401, (path, body)
            answers.add(body)
    assert len(answers) == 1, answers
    for method, path in (("GET", "/v1/namespaces/default/apps"), ("GET", "/v1/namespaces/default/apps/kapp"),
                         ("GET", "/v1/namespaces/default/apps/kapp/keys"), ("GET", "/v1/namespaces"),
                         ("DELETE", "/v1/namespaces/default/apps/kapp")):
        st, body = call(legiond, path, bearer(key), method=method)
        assert st == 401, (path, body)
        assert "only its app's URL" in error_of(body)["message"]
    st, body = call(legiond, "/api/v1/namespaces/default/pods", bearer(key))
    assert st == 401, body
    assert legiond.app("kapp")  # not deleted by the refused DELETE
    # Listed without secrets; not among the namespace's tokens.
    out, _ = legiond.cli("app", "keys", "list", "kapp")
    assert "test" in out and key not in out
    keys = json.loads(legiond.http("GET", "/v1/namespaces/default/apps/kapp/keys")[1])["items"]
    assert len(keys) == 1 and "key" not in keys[0] and keys[0]["app"] == "kapp"
    toks = json.loads(legiond.http("GET", "/v1/namespaces/default/tokens")[1])["items"]
    assert keys[0]["id"] not in [t["id"] for t in toks]
    # A key id of another app cannot be deleted through this one.
    assert legiond.http("DELETE", f"/v1/namespaces/default/apps/kapp2/keys/{keys[0]['id']}")[0] == 404


def test_deleted_key_is_refused_at_the_next_request(legiond):
    deploy(legiond, "kdel", "--auth", "keys")
    (key, kid), keep = new_key(legiond, "kdel", with_id=True), new_key(legiond, "kdel")
    conn = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=60)
    for _ in range(3):  # cached from the second on
        assert call(legiond, "/fn/default/kdel/", {"x-legion-key": key}, conn)[0] == 200
    out, _ = legiond.cli("app", "keys", "delete", "kdel", kid)
    assert f"deleted key {kid}" in out
    # The same keep-alive connection, the very next request.
    st, body = call(legiond, "/fn/default/kdel/", {"x-legion-key": key}, conn)
    assert st == 401 and error_of(body)["message"] == "invalid app key", body
    assert call(legiond, "/fn/default/kdel/", {"x-legion-key": keep})[0] == 200
    legiond.cli("app", "keys", "delete", "kdel", kid, check=1)  # gone already: 404
    # Deleting the app deletes its keys: the same name made again opens to none of them.
    legiond.cli("app", "delete", "kdel")
    deploy(legiond, "kdel", "--auth", "keys")
    assert legiond.http("GET", "/fn/default/kdel/")[0] == 200  # calibration: back, and serving
    st, body = call(legiond, "/fn/default/kdel/", {"x-legion-key": keep})
    assert st == 401, body
    assert json.loads(legiond.http("GET", "/v1/namespaces/default/apps/kdel/keys")[1])["items"] == []


def test_auth_changes_in_place_without_a_new_revision(legiond):
    out = deploy(legiond, "flip", "--min", "1")
    assert "revision 1" in out
    st, body = legiond.http("GET", "/fn/default/flip/")
    assert st == 200, body
    instance = json.loads(body)["instance"]
    assert call(legiond, "/fn/default/flip/")[0] == 401
    out, _ = legiond.cli("app", "set", "flip", "--auth", "none")
    assert "revision 1" in out, out
    st, body = call(legiond, "/fn/default/flip/")
    assert st == 200, body
    assert json.loads(body)["instance"] == instance  # the same instance: nothing restarted
    app = legiond.app("flip")
    assert app["status"]["revision"] == 1 and app["spec"]["auth"] == "none"
    out, _ = legiond.cli("app", "show", "flip")
    assert "auth:         none" in out
    legiond.cli("app", "set", "flip", "--auth", "keys")
    assert call(legiond, "/fn/default/flip/")[0] == 401
    key = new_key(legiond, "flip")
    assert call(legiond, "/fn/default/flip/", {"x-legion-key": key})[0] == 200
    legiond.cli("app", "set", "flip", "--auth", "token")
    st, body = call(legiond, "/fn/default/flip/", {"x-legion-key": key})
    assert st == 401, body  # a key opens its app only while the app takes keys
    assert legiond.app("flip")["status"]["revision"] == 1
    # A bad value changes nothing.
    st, body = legiond.http("PUT", "/v1/namespaces/default/apps/flip",
                            body={**legiond.app("flip")["spec"], "auth": "public"})
    assert st == 400 and "`auth` must be token, keys or none" in error_of(body)["message"], body
    _, err = legiond.cli("app", "set", "flip", "--auth", "anyone", check=2)
    assert "--auth is token, keys or none" in err
    assert legiond.app("flip")["spec"]["auth"] == "token"


def test_host_routing_on_the_domain(legiond):
    deploy(legiond, "site", "--auth", "none")
    deploy(legiond, "hpriv")
    port = legiond.port
    for host in (f"site.default.{DOMAIN}:{port}", f"site.default.{DOMAIN}", f"Site.Default.APPS.test:{port}",
                 f"site.default.{DOMAIN}.:{port}"):
        st, body = call(legiond, "/a/b?c=d", {"Host": host})
        assert st == 200, (host, body)
        assert json.loads(body)["path"] == "/a/b"
    # Every path is the app's, also those legiond serves itself elsewhere.
    for path in ("/healthz", "/api/v1/namespaces/default/pods", "/apis", "/version", "/openapi/v2",
                 "/v1/namespaces", "/fn/default/site/"):
        st, body = call(legiond, path, {"Host": f"site.default.{DOMAIN}"})
        assert st == 200 and json.loads(body)["path"] == path, (path, body)
    # A token app through the domain: as on /fn/, 401 without a token.
    assert call(legiond, "/x", {"Host": f"hpriv.default.{DOMAIN}"})[0] == 401
    st, body = call(legiond, "/x", {"Host": f"hpriv.default.{DOMAIN}", **bearer(legiond.token)})
    assert st == 200, body
    # Not an app host: the API answers (401 anonymous; with a token, no
    # such endpoint), so nothing reaches the app.
    for host in (f"x.site.default.{DOMAIN}", f"default.{DOMAIN}", f"site.default.fn.localhost:{port}",
                 f"site.default.{DOMAIN}x", f"site.default.x{DOMAIN}", "site.default.apps", f"[::1]:{port}",
                 f"site.default.{DOMAIN}:http", f".default.{DOMAIN}", f"site..{DOMAIN}"):
        assert call(legiond, "/a", {"Host": host})[0] == 401, host
        st, body = call(legiond, "/a", {"Host": host, **bearer(legiond.token)})
        assert st == 404 and error_of(body)["message"] == "no such endpoint `/a`", (host, body)


def test_auth_survives_a_restart(legiond):
    deploy(legiond, "rpub", "--auth", "none")
    deploy(legiond, "rkeys", "--auth", "keys")
    key = new_key(legiond, "rkeys")
    legiond.stop(signal.SIGKILL, keep=True)
    legiond.start()
    st, body = call(legiond, "/fn/default/rpub/")
    assert st == 200, body
    assert call(legiond, "/fn/default/rkeys/", {"x-legion-key": key})[0] == 200
    assert call(legiond, "/fn/default/rkeys/")[0] == 401


def test_bad_fn_domain_is_refused_at_start(tmp_path):
    for bad in ("apps..test", ".apps.test", "*.apps.test", "apps.test:80", ""):
        p = subprocess.run([LEGIOND, "--home", str(tmp_path), "--fn-domain", bad], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 2 and "--fn-domain" in p.stderr, (bad, p.returncode, p.stderr)
    assert not os.path.exists(tmp_path / "legion.db")  # refused before anything was made
