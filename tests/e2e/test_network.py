"""The sandbox network end to end (issue 11): addresses, NAT'd egress under
namespace, app, session pool and pod policies, isolation between tenants
and from the host, DNS, VNET injection, and nothing left over after many
sandboxes, kill -9 restarts and --stop-all.

The outside world is net_kit's: network namespaces on this host with an
HTTP and a DNS server on documentation addresses; every test first checks
from the host that the world answers (so that a sandbox's packets that get
through reach it and nothing leaves the machine), and every "cannot reach"
is calibrated by the same request from the host succeeding."""
import ast
import ipaddress
import json
import os
import signal
import time
import urllib.parse

import pytest

import net_kit
import oci_kit
from net_kit import DNS, METADATA, UP_HOST, UPSTREAM, VNET_HOST
from test_legiond import LEGIOND, Legiond, kill_legiond, write_app
from test_sessions import host_address
from oci_kit import free_port

UP80, UP8080 = f"http://{UPSTREAM}/", f"http://{UPSTREAM}:8080/"
IMAGE = "legion.local/netbox:1"

# Fetches URLs and resolves names, all at once (threads), and says what the
# sandbox's network looks like: the same code in a function and a session.
PROBE = r'''
import concurrent.futures, json, socket, urllib.error, urllib.request

def _fetch(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read().decode(errors="replace")
        try:
            return json.loads(body)
        except ValueError:
            return {"status": r.status, "body": body[:200]}
    except urllib.error.HTTPError as e:
        return {"status": e.code}
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}

def _resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)

def _read(path):
    try:
        return open(path).read()
    except OSError as e:
        return "error: %s" % e

def probe(doc):
    urls, names = doc.get("urls", []), doc.get("names", [])
    with concurrent.futures.ThreadPoolExecutor(max(1, len(urls) + len(names))) as ex:
        fs = [ex.submit(_fetch, u, doc.get("timeout", 3)) for u in urls]
        rs = [ex.submit(_resolve, n) for n in names]
        out = {"fetch": {u: f.result() for u, f in zip(urls, fs)},
               "resolve": {n: r.result() for n, r in zip(names, rs)}}
    out["ifaces"] = sorted(n for _, n in socket.if_nameindex())
    out["hostname"] = socket.gethostname()
    out["hosts"] = _read("/etc/hosts")
    out["resolv"] = _read("/etc/resolv.conf")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))  # no packet: the source address the route picks
        out["source"] = s.getsockname()[0]
    except OSError:
        out["source"] = None
    finally:
        s.close()
    return out
'''

FN_APP = PROBE + '''
def main(req):
    return probe(json.loads(req.body or b"{}"))
'''


# ---- fixtures and helpers --------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    w = net_kit.World()
    try:
        w.up()
        yield w
    finally:
        w.down()


def rule_key(r):
    return json.dumps(r, sort_keys=True)


def own_rules(d):
    """legiond's ip rules (protocol 0x4c) but those that were there before d
    started: ip rules carry no table or prefix of ours, and another legiond
    on this host may have some."""
    return [r for r in net_kit.net_rules() if rule_key(r) not in d.foreign_rules]


def mark_rules(d):
    """d's ip rules that route a namespace's marked traffic (VNET)."""
    return [r for r in own_rules(d) if "fwmark" in r]


def scrub(d):
    """What d may have left (after the checks that look for it): its table,
    host links, ip rules."""
    net_kit.sh("nft", "delete", "table", "inet", d.net.table, check=False)
    for link in net_kit.host_links(d.net.prefix):
        net_kit.sh("ip", "link", "del", link, check=False)
    for r in own_rules(d):
        net_kit.sh("ip", "rule", "del", "pref", str(r["priority"]), "protocol", "76", check=False)


def start(tmp_path, listen_host="127.0.0.1"):
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    home = str(tmp_path / "home")
    os.makedirs(home)
    # The harness's Legiond has a network of its own (d.net: table, link
    # prefix, CIDR, gateway); its DNS forwarder asks the fake upstream.
    d = Legiond(home, net_kit.free_port_any() if listen_host == "0.0.0.0" else free_port(), ["--dns-upstream", DNS])
    d.listen_host = listen_host
    d.foreign_rules = {rule_key(r) for r in net_kit.net_rules()}
    try:
        d.start()
    except BaseException:
        scrub(d)
        raise
    return d


@pytest.fixture()
def netd(legion_bin, tmp_path, world):
    d = start(tmp_path)
    try:
        yield d
    finally:
        try:
            kill_legiond(d)
        finally:
            scrub(d)


def calibrate_world():
    """The host reaches the fake upstream: a sandbox's packets that get out
    would reach it (and nothing leaves the machine)."""
    assert net_kit.get(UP80)["server"] == "upstream"
    assert net_kit.dns_query(DNS, "api.example.test") == [UPSTREAM]


def in_cidr(d, ip):
    return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(d.net.cidr)


def ok(res, server="upstream"):
    """A fetch result that reached a kit server (or any HTTP answer)."""
    return isinstance(res, dict) and (res.get("server") == server if server else "error" not in res)


def failed(res):
    return isinstance(res, dict) and "error" in res


def make_ns(d, name, network=None):
    body = {"name": name}
    if network is not None:
        body["network"] = network
    st, out = d.http("POST", "/v1/namespaces", body=body)
    assert st == 201, (st, out)


def deploy_fn(d, tmp_path, name, ns="default", egress=None):
    path = tmp_path / f"fn-{ns}-{name}"
    if not path.exists():
        write_app(tmp_path, f"fn-{ns}-{name}", {"main.py": FN_APP})
    args = ["--ns", ns, "app", "deploy", name, "--runtime", "python3", "--dir", str(path)]
    if egress is not None:
        args += ["--egress", egress]
    d.cli(*args)


def fn_probe(d, name, ns="default", **doc):
    st, body = d.http("POST", f"/fn/{ns}/{name}/", body=doc, timeout=60)
    assert st == 200, (st, body)
    return json.loads(body)


def make_pool(d, name, ns="default", **spec):
    body = {"runtime": "python3", "ready": 1, "maxSessions": 20, "cooldownSeconds": 300, "memory": "256Mi"}
    body.update(spec)
    st, out = d.http("PUT", f"/v1/sessionpools/{name}?namespace={ns}", body=body)
    assert st in (200, 201), (st, out)


def session_run(d, pool, ident, code, ns="default", timeout=60):
    q = urllib.parse.urlencode({"identifier": ident, "namespace": ns})
    st, body = d.http("POST", f"/v1/sessionpools/{pool}/executions?{q}", body={"code": code, "timeoutSeconds": timeout},
                      timeout=timeout + 30)
    assert st == 200, (st, body)
    r = json.loads(body)
    assert r["status"] == "Succeeded", r
    return r


def session_probe(d, pool, ident, ns="default", **doc):
    r = session_run(d, pool, ident, PROBE + f"\njson.dumps(probe({doc!r}))", ns=ns)
    return json.loads(ast.literal_eval(r["result"]))


def session_doc(d, pool, ident, ns="default"):
    st, body = d.http("GET", f"/v1/sessionpools/{pool}/sessions/{ident}?namespace={ns}")
    assert st == 200, (st, body)
    return json.loads(body)


# Pods: busybox with wget and httpd. The container fetches its URLs (all at
# once), prints one line per URL and `PROBE done`, then serves its name on
# port 8080. (`timeout`, not wget -T: Debian 12's busybox wget crashes with -T.)
POD_SCRIPT = r'''
mkdir -p /tmp/www /tmp/probe && echo "$POD" > /tmp/www/index.html
i=0
for u in $URLS; do
  i=$((i+1))
  (if o=$(timeout 3 wget -q -O - "$u" 2>&1); then r=ok; else r=fail; fi
   echo "PROBE $r $u $(echo "$o" | tr '\n' ' ')") > /tmp/probe/$i &
done
wait
cat /tmp/probe/* 2>/dev/null
echo "PROBE done"
exec httpd -f -p 8080 -h /tmp/www
'''


def import_image(d, tmp_path):
    extra = [(f"bin/{a}", "symlink", "busybox") for a in ("tr", "nslookup", "ip", "timeout")]
    img = oci_kit.Image([oci_kit.busybox_layer(extra)], config={"Cmd": ["/bin/sh"]})
    path = str(tmp_path / "netbox.tar")
    oci_kit.write_docker_archive(path, [(img, [IMAGE])])
    with open(path, "rb") as f:
        st, body = d.http("POST", "/v1/images/import", f.read(), headers={"Content-Type": "application/x-tar"},
                          timeout=120)
    assert st in (200, 201), body


def pod_path(ns, name=""):
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


def create_pod(d, name, urls=(), ns="default", egress=None, containers=None):
    meta = {"name": name}
    if egress is not None:
        meta["annotations"] = {"legion.dev/egress": egress}
    main = {"name": "main", "image": IMAGE, "command": ["sh", "-c", POD_SCRIPT],
            "env": [{"name": "POD", "value": name}, {"name": "URLS", "value": " ".join(urls)}],
            "ports": [{"containerPort": 8080}]}
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [main] + list(containers or [])}}
    st, body = d.http("POST", pod_path(ns), doc)
    assert st == 201, (st, body)


def pod_status(d, name, ns="default"):
    st, body = d.http("GET", pod_path(ns, name))
    assert st == 200, (st, body)
    return json.loads(body)["status"]


def pod_log(d, name, ns="default", container=None):
    q = f"?container={container}" if container else ""
    st, body = d.http("GET", pod_path(ns, name) + "/log" + q)
    return body.decode(errors="replace") if st == 200 else ""


def wait_pod(d, name, ns="default"):
    """The pod's IP once it runs and its probes are done, and what they gave:
    (ip, {url: ("ok"|"fail", rest of the line)})."""
    def ready():
        s = pod_status(d, name, ns)
        cs = s.get("containerStatuses", [])
        if s.get("phase") == "Failed" or any("terminated" in c.get("state", {}) for c in cs):
            raise AssertionError(f"pod {ns}/{name} stopped: {s}\n{pod_log(d, name, ns)}")
        return s if cs and all("running" in c["state"] for c in cs) and s.get("podIP") else None

    s = d.wait_for(ready, timeout=60, what=f"pod {ns}/{name} running with an IP")
    log = d.wait_for(lambda: (lambda t: t if "PROBE done" in t else None)(pod_log(d, name, ns, "main")),
                     timeout=60, what=f"pod {ns}/{name}'s probes")
    res = {}
    for line in log.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == "PROBE" and parts[1] in ("ok", "fail"):
            res[parts[2]] = (parts[1], parts[3] if len(parts) > 3 else "")
    return s["podIP"], s, res


def pod_ok(res, url, server="upstream"):
    st, rest = res[url]
    if st != "ok":
        return False
    if server is None:
        return True
    try:
        return json.loads(rest)["server"] == server
    except ValueError:
        return False


def pod_url(ip):
    return f"http://{ip}:8080/"


# ---- egress: functions, sessions, pods ----------------------------------------------

def test_function_egress_on_off_allowlist_nat_and_dns(netd, tmp_path):
    d = netd
    calibrate_world()
    deploy_fn(d, tmp_path, "fn-on")
    deploy_fn(d, tmp_path, "fn-off", egress="off")
    deploy_fn(d, tmp_path, "fn-allow", egress="198.51.100.0/24:8080")
    doc = {"urls": [UP80, UP8080], "names": ["api.example.test", "nope.example.test"]}

    on = fn_probe(d, "fn-on", **doc)
    assert ok(on["fetch"][UP80]) and ok(on["fetch"][UP8080]), on
    src = on["source"]
    assert in_cidr(d, src), on
    # NAT: the upstream sees the host end of its link, not the sandbox.
    assert on["fetch"][UP80]["client"] == UP_HOST, on
    assert on["ifaces"] == ["eth0", "lo"], on
    # DNS: the resolver is the gateway, which forwards to the upstream's server.
    assert on["resolve"]["api.example.test"] == [UPSTREAM], on
    assert isinstance(on["resolve"]["nope.example.test"], str), on
    assert f"nameserver {d.net.gateway}" in on["resolv"], on
    assert any(line.split() == [src, on["hostname"]] for line in on["hosts"].splitlines()), on
    status = d.app("fn-on")["status"]
    assert src in status.get("addresses", []), status

    off = fn_probe(d, "fn-off", **doc)
    assert failed(off["fetch"][UP80]) and failed(off["fetch"][UP8080]), off
    assert in_cidr(d, off["source"]), off
    assert off["resolve"]["api.example.test"] == [UPSTREAM], off  # DNS is allowed whatever the egress

    allow = fn_probe(d, "fn-allow", **doc)
    assert ok(allow["fetch"][UP8080]) and allow["fetch"][UP8080]["client"] == UP_HOST, allow
    assert failed(allow["fetch"][UP80]), allow

    # Deployed again with egress on.
    deploy_fn(d, tmp_path, "fn-off", egress="on")
    again = fn_probe(d, "fn-off", **doc)
    assert ok(again["fetch"][UP80]), again
    assert d.app("fn-off")["spec"].get("egress") in ("on", None), d.app("fn-off")["spec"]


def test_session_egress_off_on_allowlist_and_the_namespace_policy(netd):
    d = netd
    calibrate_world()
    doc = {"urls": [UP80, UP8080], "names": ["api.example.test"]}
    make_pool(d, "quiet")  # default: no egress, no network at all
    make_pool(d, "open", egress=True)
    make_pool(d, "narrow", egress={"allow": ["198.51.100.1/32:8080"]})

    quiet = session_probe(d, "quiet", "quiet-01", **doc)
    assert failed(quiet["fetch"][UP80]), quiet
    assert quiet["ifaces"] == ["lo"] and quiet["source"] is None, quiet
    assert "address" not in session_doc(d, "quiet", "quiet-01")

    opened = session_probe(d, "open", "open-01", **doc)
    assert ok(opened["fetch"][UP80]) and opened["fetch"][UP80]["client"] == UP_HOST, opened
    assert opened["resolve"]["api.example.test"] == [UPSTREAM], opened
    # Its own network, not the host's: only lo and eth0.
    assert opened["ifaces"] == ["eth0", "lo"], opened
    assert in_cidr(d, opened["source"]) and session_doc(d, "open", "open-01").get("address") == opened["source"]

    narrow = session_probe(d, "narrow", "narrow-01", **doc)
    assert ok(narrow["fetch"][UP8080]) and failed(narrow["fetch"][UP80]), narrow

    # `egress: true` is the namespace's policy: off in this namespace, until
    # the namespace changes it (its sandboxes follow at once).
    make_ns(d, "closed", {"egress": "off"})
    make_pool(d, "open", ns="closed", egress="on")
    before = session_probe(d, "open", "closed-01", ns="closed", **doc)
    assert failed(before["fetch"][UP80]) and in_cidr(d, before["source"]), before
    st, body = d.http("PUT", "/v1/namespaces/closed", body={"network": {"egress": "on"}})
    assert st == 200, (st, body)
    st, body = d.http("GET", "/v1/namespaces/closed")
    assert json.loads(body)["network"]["egress"] == "on", body
    after = session_probe(d, "open", "closed-01", ns="closed", **doc)
    assert ok(after["fetch"][UP80]) and after["source"] == before["source"], after


def test_pod_egress_pod_ip_and_pod_to_pod(netd, tmp_path):
    d = netd
    calibrate_world()
    import_image(d, tmp_path)
    create_pod(d, "web")
    web_ip, web, _ = wait_pod(d, "web")
    assert in_cidr(d, web_ip) and web.get("podIPs") == [{"ip": web_ip}], web
    # The pod's container port, from the host.
    assert net_kit.get(pod_url(web_ip)).get("body") == "web\n"

    urls = [UP80, UP8080, pod_url(web_ip)]
    by_name = "http://api.example.test/"  # the pod's resolv.conf names the node's DNS forwarder
    create_pod(d, "p-on", urls + [by_name])
    create_pod(d, "p-off", urls, egress="off")
    create_pod(d, "p-allow", urls, egress="198.51.100.1:8080")
    _, _, on = wait_pod(d, "p-on")
    assert pod_ok(on, UP80) and json.loads(on[UP80][1])["client"] == UP_HOST, on
    assert pod_ok(on, pod_url(web_ip), None) and "web" in on[pod_url(web_ip)][1], on  # pod to pod
    assert pod_ok(on, by_name), on  # DNS from an image's rootfs
    _, _, off = wait_pod(d, "p-off")
    assert off[UP80][0] == "fail" and off[UP8080][0] == "fail", off
    assert off[pod_url(web_ip)][0] == "ok", off  # egress off still reaches its namespace
    _, _, allow = wait_pod(d, "p-allow")
    assert pod_ok(allow, UP8080) and allow[UP80][0] == "fail", allow

    # Containers of a pod share its address.
    side = {"name": "side", "image": IMAGE, "command": ["sh", "-c",
            "for i in $(seq 100); do timeout 3 wget -q -O - http://127.0.0.1:8080/ && break; sleep 0.2; done; "
            "ip -o -4 addr show dev eth0; sleep 3600"]}
    create_pod(d, "pair", containers=[side])
    pair_ip, _, _ = wait_pod(d, "pair")
    log = d.wait_for(lambda: (lambda t: t if "eth0" in t else None)(pod_log(d, "pair", container="side")),
                     what="the side container's output")
    assert "pair" in log and f"{pair_ip}/" in log, log


def test_namespaces_are_isolated_both_ways(netd, tmp_path):
    d = netd
    calibrate_world()
    import_image(d, tmp_path)
    make_ns(d, "team-a")
    make_ns(d, "team-b")
    make_ns(d, "team-c", {"isolation": "sandbox"})
    ips = {}
    for ns, name in (("team-a", "a1"), ("team-b", "b1"), ("team-c", "c1")):
        create_pod(d, name, ns=ns)
    for ns, name in (("team-a", "a1"), ("team-b", "b1"), ("team-c", "c1")):
        ips[name] = wait_pod(d, name, ns)[0]
        assert net_kit.get(pod_url(ips[name]))["body"] == f"{name}\n"  # calibration: the host reaches each
    targets = [pod_url(ips[n]) for n in ("a1", "b1", "c1")]
    create_pod(d, "a2", targets, ns="team-a")
    create_pod(d, "b2", targets, ns="team-b")
    create_pod(d, "c2", targets, ns="team-c")
    a2, b2, c2 = (wait_pod(d, n, ns)[2] for n, ns in (("a2", "team-a"), ("b2", "team-b"), ("c2", "team-c")))
    a1, b1, c1 = targets
    assert a2[a1][0] == "ok" and a2[b1][0] == "fail" and a2[c1][0] == "fail", a2
    assert b2[b1][0] == "ok" and b2[a1][0] == "fail" and b2[c1][0] == "fail", b2
    # isolation: sandbox: not even its own namespace.
    assert c2[c1][0] == "fail" and c2[a1][0] == "fail" and c2[b1][0] == "fail", c2
    # Functions too: team-b's reaches team-b's pod, not team-a's.
    deploy_fn(d, tmp_path, "fn", ns="team-b")
    r = fn_probe(d, "fn", ns="team-b", urls=[a1, b1])
    assert ok(r["fetch"][b1], None) and failed(r["fetch"][a1]), r


# ---- the host, loopback and metadata are out of reach ----------------------------------

def test_no_sandbox_reaches_the_host_its_loopback_or_metadata(legion_bin, tmp_path, world):
    d = start(tmp_path, listen_host="0.0.0.0")  # so that the API answers on every host address
    try:
        calibrate_world()
        host = host_address()
        api = [f"http://{a}:{d.port}/healthz" for a in ("127.0.0.1", d.net.gateway, UP_HOST, host) if a]
        anyp = [f"http://{a}:{world.any_port}/" for a in (d.net.gateway, UP_HOST, host) if a]
        lo = [f"http://127.0.0.1:{world.lo_port}/", f"http://{d.net.gateway}:{world.lo_port}/"]
        attacks = api + anyp + lo + [f"http://{METADATA}/"]
        # Calibration: each answers the host (the loopback server only on loopback).
        for url in api:
            assert net_kit.get(url), url  # an answer (urllib raises on anything but 2xx)
        for url in anyp:
            assert net_kit.get(url)["server"] == "host-any", url
        assert net_kit.get(lo[0])["server"] == "host-lo"
        assert net_kit.get(f"http://{METADATA}/")["server"] == "metadata"

        deploy_fn(d, tmp_path, "fn")
        make_pool(d, "open", egress=True)
        seen = {"function": fn_probe(d, "fn", urls=attacks + [UP80])["fetch"],
                "session": session_probe(d, "open", "attack-01", urls=attacks + [UP80])["fetch"]}
        # Each sandbox has egress: the upstream answers it.
        assert ok(seen["function"][UP80]) and ok(seen["session"][UP80]), seen
        reached = {(who, url): res for who, got in seen.items() for url, res in got.items()
                   if url != UP80 and not failed(res)}
        assert reached == {}
        import_image(d, tmp_path)
        create_pod(d, "pod", attacks + [UP80])
        _, _, pod = wait_pod(d, "pod")
        assert pod_ok(pod, UP80), pod
        reached = {url: res for url, res in pod.items() if url != UP80 and res[0] != "fail"}
        assert reached == {}
    finally:
        try:
            kill_legiond(d)
        finally:
            scrub(d)


# ---- VNET injection -------------------------------------------------------------------

def test_vnet_injection_through_a_second_uplink(netd, tmp_path, world):
    d = netd
    calibrate_world()
    assert net_kit.get(f"http://{net_kit.VNET_PEER}/")["server"] == "vnet"
    d.cli("ns", "create", "tenant-v", "--via-interface", world.vnet_if, "--via-gateway", net_kit.VNET_PEER)
    st, body = d.http("GET", "/v1/namespaces/tenant-v")
    assert json.loads(body)["network"]["via"] == {"interface": world.vnet_if, "gateway": net_kit.VNET_PEER}, body
    assert mark_rules(d), ("no ip rule for the namespace's routing", own_rules(d))
    deploy_fn(d, tmp_path, "fn", ns="tenant-v")
    deploy_fn(d, tmp_path, "fn")
    doc = {"urls": [UP80], "names": ["api.example.test"]}
    v = fn_probe(d, "fn", ns="tenant-v", **doc)
    assert v["fetch"][UP80].get("server") == "vnet" and v["fetch"][UP80]["client"] == VNET_HOST, v
    assert v["resolve"]["api.example.test"] == [UPSTREAM], v
    plain = fn_probe(d, "fn", **doc)
    assert plain["fetch"][UP80].get("server") == "upstream" and plain["fetch"][UP80]["client"] == UP_HOST, plain
    # Sessions of the namespace go the same way.
    make_pool(d, "open", ns="tenant-v", egress=True)
    s = session_probe(d, "open", "vnet-01", ns="tenant-v", **doc)
    assert s["fetch"][UP80].get("server") == "vnet", s
    # Within the namespace and from the host, its sandboxes are reached
    # directly, not through its uplink.
    import_image(d, tmp_path)
    create_pod(d, "web", ns="tenant-v")
    web_ip = wait_pod(d, "web", ns="tenant-v")[0]
    v = fn_probe(d, "fn", ns="tenant-v", urls=[pod_url(web_ip)])
    assert v["fetch"][pod_url(web_ip)].get("body") == "web\n", v
    assert net_kit.get(pod_url(web_ip))["body"] == "web\n"
    # Deleting the namespace removes its routing.
    d.cli("--ns", "tenant-v", "app", "delete", "fn")
    assert d.http("DELETE", pod_path("tenant-v", "web"))[0] in (200, 202)
    d.wait_for(lambda: d.http("GET", pod_path("tenant-v", "web"))[0] == 404, what="the pod gone")
    assert d.http("DELETE", "/v1/sessionpools/open?namespace=tenant-v")[0] == 204
    st, body = d.http("DELETE", "/v1/namespaces/tenant-v")
    assert st in (200, 204), (st, body)
    assert mark_rules(d) == []


def test_bad_network_input_is_refused_and_changes_nothing(netd):
    d = netd
    table = net_kit.nft_table(d.net.table)
    assert table is not None, "legiond made no nft table"
    rules = own_rules(d)
    for network in ({"via": {"interface": "nosuchif0"}}, {"egress": {"allow": ["198.51.100.1/24"]}},
                    {"egress": {"allow": ["198.51.100.0/24:0"]}}, {"egress": {"allow": ["198.51.100.0/24:9-8"]}},
                    {"egress": "maybe"}, {"isolation": "none"}, {"snat": "not-an-ip"}):
        st, body = d.http("POST", "/v1/namespaces", body={"name": "bad-net", "network": network})
        assert 400 <= st < 500 and json.loads(body)["error"]["message"], (network, st, body)
        assert d.http("GET", "/v1/namespaces/bad-net")[0] == 404, network
    st, body = d.http("PUT", "/v1/sessionpools/bad?namespace=default",
                      body={"runtime": "python3", "ready": 1, "egress": {"allow": ["300.1.1.1/32"]}})
    assert 400 <= st < 500, (st, body)
    assert net_kit.nft_table(d.net.table) == table
    assert own_rules(d) == rules


# ---- nothing left over ------------------------------------------------------------------

def live_addresses(d):
    """Address of every live sandbox of d with a network."""
    found = {}
    for pid in d.sandbox_inits():
        a = net_kit.sandbox_address(pid)
        if a:
            found[a] = pid
    return found


def leftovers(d, fresh_rules):
    """What of the network belongs to no live sandbox (empty when all is
    well): host links, routes, set elements, and the rule count."""
    live = live_addresses(d)
    bad = {}
    net = ipaddress.ip_network(d.net.cidr)
    links = [l for l in net_kit.host_links(d.net.prefix) if l != f"{d.net.prefix}0"]
    want = {f"{d.net.prefix}{int(ipaddress.ip_address(a)) - int(net.network_address)}" for a in live}
    if set(links) != want:
        bad["links"] = (sorted(set(links) - want), sorted(want - set(links)))
    routes = {dst for dst in net_kit.host_routes(d.net.prefix) if "/" not in dst and ipaddress.ip_address(dst) in net}
    if routes != set(live):
        bad["routes"] = (sorted(routes - set(live)), sorted(set(live) - routes))
    table = net_kit.nft_table(d.net.table)
    if table is None:
        bad["table"] = "missing"
    else:
        if table["rules"] != fresh_rules:
            bad["rules"] = (table["rules"], fresh_rules)
        for name, elems in table["sets"].items():
            orphans = sorted({a for e in elems for a in net_kit.element_addresses(e)
                              if ipaddress.ip_address(a) in net and a not in live})
            if orphans:
                bad[f"set {name}"] = orphans
    return bad, live


def unreachable_routes(cidr):
    """The host's unreachable routes of legiond's (protocol 76) for cidr."""
    return [r for r in net_kit.ipj("route", "show", "proto", "76", "type", "unreachable") if r.get("dst") == cidr]


def test_nothing_left_after_200_cycles_and_20_kill_9_restarts(netd, tmp_path, world):
    d = netd
    fresh = net_kit.nft_table(d.net.table)
    assert fresh is not None and fresh["rules"] > 0, fresh
    # Live sandboxes across the restarts: a function instance, a session, a
    # pod, in a namespace with VNET routing (an ip rule) and in default.
    d.cli("ns", "create", "tenant-v", "--via-interface", world.vnet_if, "--via-gateway", net_kit.VNET_PEER)
    deploy_fn(d, tmp_path, "fn")
    deploy_fn(d, tmp_path, "fn", ns="tenant-v")
    make_pool(d, "cyc", ready=2, maxSessions=50, egress=True)
    import_image(d, tmp_path)
    create_pod(d, "keeper")
    pod_ip = wait_pod(d, "keeper")[0]
    rules = sorted(map(rule_key, own_rules(d)))
    assert mark_rules(d), ("no ip rule for tenant-v's routing", own_rules(d))
    session_run(d, "cyc", "keep-01", "x = 41")
    keep_addr = session_doc(d, "cyc", "keep-01")["address"]
    assert ok(fn_probe(d, "fn", urls=[UP80])["fetch"][UP80])

    def cycle(i):
        session_run(d, "cyc", f"cyc-{i:04d}", "1")
        st, _ = d.http("DELETE", f"/v1/sessionpools/cyc/sessions/cyc-{i:04d}")
        assert st == 204

    restarts = 0
    for i in range(200):
        cycle(i)
        if i % 10 == 9:
            # Right after a delete: its teardown may be under way.
            d.stop(signal.SIGKILL, keep=True)
            d.start()
            restarts += 1
    assert restarts == 20

    # The sandboxes that lived through it still have their network.
    r = session_run(d, "cyc", "keep-01", "x + 1")
    assert r["result"] == "42"
    s = session_probe(d, "cyc", "keep-01", urls=[UP80])
    assert ok(s["fetch"][UP80]) and s["source"] == keep_addr, s
    assert ok(fn_probe(d, "fn", urls=[UP80])["fetch"][UP80])
    assert fn_probe(d, "fn", ns="tenant-v", urls=[UP80])["fetch"][UP80].get("server") == "vnet"
    assert pod_status(d, "keeper")["podIP"] == pod_ip
    assert net_kit.get(pod_url(pod_ip))["body"] == "keeper\n"

    # Nothing that belongs to no live sandbox (pools refill meanwhile: a
    # leak stays, a sandbox being made or ended settles).
    deadline = time.time() + 30
    while True:
        bad, live = leftovers(d, fresh["rules"])
        if not bad or time.time() > deadline:
            break
        time.sleep(1)
    assert bad == {}, (bad, live)
    assert {keep_addr, pod_ip} <= set(live)
    assert sorted(map(rule_key, own_rules(d))) == rules  # none lost, none added twice

    # The CIDR's unreachable route: one, however many restarts set it again.
    assert len(unreachable_routes(d.net.cidr)) == 1, unreachable_routes(d.net.cidr)

    # --stop-all takes the rest: links, routes, table, ip rules. (A host end
    # goes with its sandbox's network namespace, which the kernel removes a
    # little after the sandbox is gone.)
    d.stop(signal.SIGTERM)
    assert d.sandbox_inits() == {}
    deadline = time.time() + 15
    while (net_kit.host_links(d.net.prefix) or net_kit.host_routes(d.net.prefix)) and time.time() < deadline:
        time.sleep(0.5)
    assert net_kit.host_links(d.net.prefix) == []
    assert net_kit.host_routes(d.net.prefix) == {}
    assert net_kit.nft_table(d.net.table) is None
    assert own_rules(d) == []
    assert unreachable_routes(d.net.cidr) == []
