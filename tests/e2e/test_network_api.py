"""The network's API shapes (docs/networking.md, docs/api.md): a namespace's
network (POST, PUT, GET), the egress policy of apps, session pools and pods,
the addresses in their status. Bad input gets a 4xx naming the problem and
changes nothing. What the policies do to traffic is tests/e2e/test_network.py's."""
import ipaddress
import json
import os
import time

import pytest

import oci_kit
from test_legiond import PY_APP, legiond, write_app  # noqa: F401  (the fixture)

DEFAULTS = {"egress": "on", "isolation": "namespace"}


def ns_get(d, name, token=None):
    st, body = d.http("GET", f"/v1/namespaces/{name}", token=token)
    assert st == 200, body
    return json.loads(body)


def message(body):
    return json.loads(body)["error"]["message"]


def needs_network(d):
    """Skip unless d has its sandbox network (legiond --network on): a
    session pool with egress is refused without one."""
    st, body = d.http("PUT", "/v1/sessionpools/netprobe", body={"egress": True, "ready": 0})
    if st == 409 and "networking is off" in message(body):
        pytest.skip("legiond runs without its sandbox network")
    assert st == 201, body
    assert d.http("DELETE", "/v1/sessionpools/netprobe")[0] == 204


def test_namespace_network_shapes(legiond):
    h = legiond.http
    # Defaults, also for the namespace legiond made itself.
    assert ns_get(legiond, "default")["network"] == DEFAULTS
    st, body = h("POST", "/v1/namespaces", body={"name": "team-a"})
    assert st == 201, body
    assert json.loads(body)["network"] == DEFAULTS
    net = {"egress": {"allow": ["198.51.100.0/24", "203.0.113.5:443", "10.0.0.0/8:8000-8999"]},
           "isolation": "sandbox", "snat": "192.0.2.10"}
    st, body = h("POST", "/v1/namespaces", body={"name": "team-b", "network": net})
    assert st == 201, body
    assert ns_get(legiond, "team-b")["network"] == net
    # PUT changes it; a namespace token reads it but cannot change it.
    st, body = h("PUT", "/v1/namespaces/team-a", body={"network": {"egress": "off"}})
    assert st == 200, body
    assert json.loads(body)["network"] == {"egress": "off", "isolation": "namespace"}
    st, body = h("POST", "/v1/namespaces/team-a/tokens", body={})
    tok = json.loads(body)["token"]
    assert ns_get(legiond, "team-a", token=tok)["network"]["egress"] == "off"
    st, body = h("PUT", "/v1/namespaces/team-a", body={"network": {"egress": "on"}}, token=tok)
    assert st == 403, body
    assert ns_get(legiond, "team-a")["network"]["egress"] == "off"
    items = json.loads(h("GET", "/v1/namespaces")[1])["items"]
    assert {i["name"]: i["network"]["egress"] for i in items} == {"default": "on", "team-a": "off",
                                                                  "team-b": net["egress"]}
    # POST of an existing namespace without a network keeps what it has.
    assert h("POST", "/v1/namespaces", body={"name": "team-a"})[0] == 200
    assert ns_get(legiond, "team-a")["network"]["egress"] == "off"
    assert h("PUT", "/v1/namespaces/nope", body={"network": {}})[0] == 404
    # Deleting removes it; the name is free again, with the defaults.
    assert h("DELETE", "/v1/namespaces/team-b")[0] == 204
    assert h("GET", "/v1/namespaces/team-b")[0] == 404
    st, body = h("POST", "/v1/namespaces", body={"name": "team-b"})
    assert st == 201 and json.loads(body)["network"] == DEFAULTS


BAD_NETWORKS = [
    ({"egress": {"allow": ["198.51.100.0/33"]}}, "network.egress"),
    ({"egress": {"allow": ["198.51.100.1/24"]}}, "network.egress"),
    ({"egress": {"allow": ["198.51.100.0/24:0"]}}, "network.egress"),
    ({"egress": {"allow": ["198.51.100.0/24:70000"]}}, "network.egress"),
    ({"egress": {"allow": ["example.com"]}}, "network.egress"),
    ({"egress": {"allow": "198.51.100.0/24"}}, "allow"),
    ({"egress": {"allow": [f"198.51.100.{i}" for i in range(65)]}}, "at most 64"),
    ({"egress": "maybe"}, "network.egress"),
    ({"egress": True}, "network.egress"),
    ({"isolation": "none"}, "network.isolation"),
    ({"snat": "192.0.2.300"}, "network.snat"),
    ({"via": {"interface": "eth0", "table": 100}}, "network.via"),
    ({"via": {"table": 254}}, "network.via.table"),
    ({"via": {"interface": "../x"}}, "network.via.interface"),
    ({"via": {"table": 100, "gateway": "192.0.2.1"}}, "network.via.gateway"),
    ({"egres": "on"}, "egres"),
    ("on", "network"),
]


@pytest.mark.parametrize("net,says", BAD_NETWORKS)
def test_bad_network_is_refused_and_changes_nothing(legiond, net, says):
    h = legiond.http
    st, body = h("POST", "/v1/namespaces", body={"name": "team-c", "network": net})
    assert st == 400 and says in message(body), (st, body)
    assert h("GET", "/v1/namespaces/team-c")[0] == 404
    before = ns_get(legiond, "default")
    st, body = h("PUT", "/v1/namespaces/default", body={"network": net})
    assert st == 400 and says in message(body), (st, body)
    assert ns_get(legiond, "default") == before


def test_unknown_interface_is_refused(legiond):
    """Only the node's network knows its interfaces: 400 naming it, and
    nothing stored."""
    h = legiond.http
    needs_network(legiond)
    net = {"via": {"interface": "lgtnoneth9"}}
    st, body = h("POST", "/v1/namespaces", body={"name": "team-d", "network": net})
    assert st == 400 and "lgtnoneth9" in message(body), (st, body)
    assert h("GET", "/v1/namespaces/team-d")[0] == 404
    before = ns_get(legiond, "default")
    st, body = h("PUT", "/v1/namespaces/default", body={"network": net})
    assert st == 400 and "lgtnoneth9" in message(body), (st, body)
    assert ns_get(legiond, "default") == before


def test_app_egress(legiond, tmp_path):
    h = legiond.http
    d = write_app(tmp_path, "py", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "web", "--runtime", "python3", "--dir", d)
    spec = legiond.app("web")["spec"]
    assert "egress" not in spec
    for bad, says in (("198.51.100.0/24", "`egress`"), (True, "`egress`"), ({"allow": ["198.51.100.0/33"]}, "/33"),
                      ({"allow": []}, "`egress`"), ({"deny": ["198.51.100.0/24"]}, "deny")):
        st, body = h("PUT", "/v1/namespaces/default/apps/web", body=dict(spec, egress=bad))
        assert st == 400 and says in message(body), (bad, st, body)
    assert "egress" not in legiond.app("web")["spec"]
    allow = {"allow": ["198.51.100.0/24:80"]}
    st, body = h("PUT", "/v1/namespaces/default/apps/web", body=dict(spec, egress=allow))
    assert st == 200, body
    app = legiond.app("web")
    assert app["spec"]["egress"] == allow
    # The policy changes in place: no new revision.
    assert app["status"]["revision"] == 1
    st, body = h("GET", "/fn/default/web/")
    assert st == 200, body


def test_session_pool_egress(legiond):
    h = legiond.http
    for bad in ("maybe", 1, {"allow": ["example.com"]}, {"allow": []}):
        st, body = h("PUT", "/v1/sessionpools/p", body={"egress": bad, "ready": 0})
        assert st == 400 and "egress" in message(body), (bad, st, body)
        assert h("GET", "/v1/sessionpools/p")[0] == 404
    needs_network(legiond)
    for good in (False, "off", True, "on", {"allow": ["198.51.100.0/24:443"]}):
        st, body = h("PUT", "/v1/sessionpools/p", body={"egress": good, "ready": 0})
        assert st in (200, 201), (good, st, body)
        st, body = h("GET", "/v1/sessionpools/p")
        assert json.loads(body)["spec"]["egress"] == good


def test_cli_namespace_network(legiond):
    cli = legiond.cli
    out, _ = cli("ns", "create", "team-e", "--egress", "198.51.100.0/24, 203.0.113.5:443", "--isolation", "sandbox",
                 "--via-table", "100")
    assert out == "created namespace team-e\n"
    net = ns_get(legiond, "team-e")["network"]
    assert net == {"egress": {"allow": ["198.51.100.0/24", "203.0.113.5:443"]}, "isolation": "sandbox",
                   "via": {"table": 100}}
    out, _ = cli("ns", "get", "team-e")
    assert "egress:     allow 198.51.100.0/24, 203.0.113.5:443\n" in out
    assert "isolation:  sandbox\n" in out and "via:        route table 100\n" in out
    # set changes what it is given and keeps the rest.
    out, _ = cli("ns", "set", "team-e", "--egress", "off", "--via-table", "none", "--snat", "203.0.113.9")
    assert "egress:     off\n" in out and "snat:       203.0.113.9\n" in out and "the host's routes" in out
    assert ns_get(legiond, "team-e")["network"] == {"egress": "off", "isolation": "sandbox", "snat": "203.0.113.9"}
    # Refused by the CLI, or by legiond naming the field; nothing changed.
    for args in (["--egress", "maybe"], ["--isolation", "none"], ["--via-table", "x"], ["--via-gateway", "1.2.3.4"],
                 []):
        _, err = cli("ns", "set", "team-e", *args, check=2)
        assert err
    _, err = cli("ns", "set", "team-e", "--egress", "198.51.100.1/24", check=1)
    assert "network.egress" in err
    _, err = cli("ns", "create", "team-f", "--snat", "300.1.1.1", check=1)
    assert "network.snat" in err
    assert legiond.http("GET", "/v1/namespaces/team-f")[0] == 404
    assert ns_get(legiond, "team-e")["network"]["egress"] == "off"


def test_cli_app_egress(legiond, tmp_path):
    d = write_app(tmp_path, "py", {"main.py": PY_APP})
    legiond.cli("app", "deploy", "web", "--runtime", "python3", "--dir", d, "--egress", "198.51.100.0/24:80-90")
    assert legiond.app("web")["spec"]["egress"] == {"allow": ["198.51.100.0/24:80-90"]}
    out, _ = legiond.cli("app", "show", "web")
    assert "egress:       allow 198.51.100.0/24:80-90\n" in out
    legiond.cli("app", "deploy", "web", "--runtime", "python3", "--dir", d)
    out, _ = legiond.cli("app", "show", "web")
    assert "egress:       the namespace's\n" in out
    legiond.cli("app", "deploy", "web", "--runtime", "python3", "--dir", d, "--egress", "sometimes", check=2)


PODS = "/api/v1/namespaces/default/pods"


def pod_doc(name, annotations=None, **spec):
    md = {"name": name}
    if annotations is not None:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": dict({"containers": [{"name": "c", "image": "lgt/busybox:1", "command": ["sleep", "600"]},
                                         {"name": "d", "image": "lgt/busybox:1", "command": ["sleep", "600"]}]},
                         **spec)}


def test_pod_egress_annotation_and_pod_ip(legiond, tmp_path):
    h = legiond.http
    # A bad annotation: 422 naming it, nothing stored.
    for bad in ("maybe", "198.51.100.1/24", "198.51.100.0/24:0", "", "on,off"):
        st, body = h("POST", PODS, body=pod_doc("p", {"legion.dev/egress": bad}))
        assert st == 422, (bad, st, body)
        assert "metadata.annotations[legion.dev/egress]" in body.decode(), body
        assert h("GET", f"{PODS}/p")[0] == 404
    if not os.path.exists(oci_kit.BUSYBOX):
        pytest.skip("needs busybox-static")
    needs_network(legiond)
    img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    archive = str(tmp_path / "bb.tar")
    oci_kit.write_docker_archive(archive, [(img, ["lgt/busybox:1"])])
    legiond.cli("image", "import", archive)
    for name, ann in (("p1", None), ("p2", {"legion.dev/egress": "198.51.100.0/24, 203.0.113.5:443"}),
                      ("p3", {"legion.dev/egress": "off"})):
        st, body = h("POST", PODS, body=pod_doc(name, ann))
        assert st == 201, body
    ips = set()
    for name in ("p1", "p2", "p3"):
        deadline, pod = time.time() + 60, None
        while time.time() < deadline:
            pod = json.loads(h("GET", f"{PODS}/{name}")[1])
            if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
                break
            time.sleep(0.1)
        st = pod["status"]
        assert st.get("phase") == "Running" and st.get("podIP"), st
        assert st["podIPs"] == [{"ip": st["podIP"]}]
        assert st["podIP"] != st["hostIP"]
        assert ipaddress.ip_address(st["podIP"]).is_private
        ips.add(st["podIP"])
    assert len(ips) == 3
