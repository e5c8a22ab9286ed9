"""legiond keeps the tokens it has found in a cache (src/store/token-cache.c),
so that a function call costs no database read: a deleted token must still be
refused at the very next call, also on a keep-alive connection that used it a
moment before, and a cached token keeps its namespace."""
import http.client
import json

from test_legiond import PY_APP, legiond, write_app  # noqa: F401  (legiond: the fixture)


def call(conn, path, token):
    conn.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    return r.status, r.read()


def test_deleted_token_is_refused_at_the_next_call(legiond, tmp_path):
    h = legiond.http
    for ns in ("team-a", "team-b"):
        assert h("POST", "/v1/namespaces", body={"name": ns})[0] == 201
    st, body = h("POST", "/v1/namespaces/team-a/tokens", body={"description": "to delete"})
    assert st == 201, body
    tok = json.loads(body)
    st, body = h("POST", "/v1/namespaces/team-a/tokens", body={"description": "to keep"})
    keep = json.loads(body)["token"]
    d = write_app(tmp_path, "fn", {"main.py": PY_APP})
    legiond.cli("--ns", "team-a", "app", "deploy", "fn", "--runtime", "python3", "--dir", d)
    legiond.cli("--ns", "team-b", "app", "deploy", "fn", "--runtime", "python3", "--dir", d)

    conn = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=60)
    # Several calls: the token is in the cache from the second on.
    for _ in range(3):
        st, body = call(conn, "/fn/team-a/fn/", tok["token"])
        assert st == 200, body
    # A cached token still opens only its own namespace.
    st, body = call(conn, "/fn/team-b/fn/", tok["token"])
    assert st == 404, body
    assert h("GET", "/fn/team-b/fn/")[0] == 200  # calibration: the app is there

    st, body = h("DELETE", f"/v1/namespaces/team-a/tokens/{tok['id']}")
    assert st == 204, body
    st, body = call(conn, "/fn/team-a/fn/", tok["token"])
    assert st == 401, body
    assert json.loads(body)["error"]["message"] == "invalid token"
    # The API refuses it as well, and the namespace's other token works.
    assert h("GET", "/v1/namespaces/team-a/apps", token=tok["token"])[0] == 401
    conn = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=60)
    st, body = call(conn, "/fn/team-a/fn/", keep)
    assert st == 200, body
