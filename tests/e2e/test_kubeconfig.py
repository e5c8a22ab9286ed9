"""legiond's HTTPS listener and `legion kubeconfig`: kubectl (each one
kube_kit finds) with the printed kubeconfig, namespace tokens, bad tokens,
certificates kept across restarts, ALPN, and what no longer works (the token
in the URL)."""
import base64
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import warnings

import pytest

import kube_kit
from test_legiond import LEGIOND, Legiond, free_port, start_legiond, stop_workloads

KUBECTLS = kube_kit.kubectls()


@pytest.fixture()
def legiond(legion_bin, tmp_path):
    d = start_legiond(tmp_path)
    yield d
    d.stop()


def https(d, method, path, token=None, body=None, alpn=None):
    ctx = ssl.create_default_context(cafile=d.ca_file)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    c = http.client.HTTPSConnection("127.0.0.1", d.tls_port, context=ctx, timeout=60)
    h = {"Authorization": "Bearer " + token} if token else {}
    if body is not None:
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    alpn_sel = c.sock.selected_alpn_protocol()
    c.close()
    return r.status, data, alpn_sel


def kubeconfig(d, tmp_path, *args, name="kubeconfig"):
    out, _ = d.cli("kubeconfig", *args)
    path = tmp_path / name
    path.write_text(out)
    return str(path), out


def test_certificates(legiond, tmp_path):
    tls = os.path.join(legiond.home, "tls")
    for f, mode in (("ca.crt", 0o644), ("ca.key", 0o600), ("server.crt", 0o644), ("server.key", 0o600)):
        assert stat.S_IMODE(os.stat(os.path.join(tls, f)).st_mode) == mode, f
    text = subprocess.run(["openssl", "x509", "-in", os.path.join(tls, "server.crt"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text and "IP Address:0:0:0:0:0:0:0:1" in text
    assert "prime256v1" in text or "P-256" in text
    assert subprocess.run(["openssl", "verify", "-CAfile", legiond.ca_file, os.path.join(tls, "server.crt")],
                          capture_output=True).returncode == 0
    # The same API over both listeners; ALPN never picks h2.
    st, body, alpn = https(legiond, "GET", "/version", token=legiond.token, alpn=["h2", "http/1.1"])
    assert st == 200 and json.loads(body)["major"] == "1" and alpn == "http/1.1"
    st, body, alpn = https(legiond, "GET", "/v1/namespaces", token=legiond.token, alpn=["h2"])
    assert st == 200 and alpn is None
    assert legiond.http("GET", "/v1/namespaces")[0] == 200
    # Certificates are kept across restarts: a kubeconfig stays good.
    before = {f: open(os.path.join(tls, f), "rb").read() for f in os.listdir(tls)}
    legiond.stop()
    legiond.start()
    assert {f: open(os.path.join(tls, f), "rb").read() for f in os.listdir(tls)} == before
    # A broken server certificate is remade by the same CA.
    with open(os.path.join(tls, "server.crt"), "w") as f:
        f.write("garbage")
    legiond.stop()
    legiond.start()
    assert open(legiond.ca_file, "rb").read() == before["ca.crt"]
    assert open(os.path.join(tls, "server.crt"), "rb").read() != before["server.crt"]
    assert https(legiond, "GET", "/version", token=legiond.token)[0] == 200


def test_hostile_clients(legiond):
    # Plain HTTP, garbage and a stalled handshake on the TLS port: each is
    # closed, legiond goes on.
    for data in (b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", os.urandom(3000)):
        s = socket.create_connection(("127.0.0.1", legiond.tls_port), timeout=30)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = s.recv(65536)
            assert not got.startswith(b"HTTP/"), got
        except ConnectionResetError:
            pass
        s.close()
    stalled = socket.create_connection(("127.0.0.1", legiond.tls_port), timeout=30)
    stalled.sendall(b"\x16\x03\x01")
    # TLS 1.1 is refused.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(legiond.ca_file)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with socket.create_connection(("127.0.0.1", legiond.tls_port), timeout=30) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert https(legiond, "GET", "/version", token=legiond.token)[0] == 200
    stalled.close()
    assert legiond.proc.poll() is None


def test_kubeconfig_verb(legiond, tmp_path):
    path, out = kubeconfig(legiond, tmp_path)
    assert f'server: "https://127.0.0.1:{legiond.tls_port}"' in out
    assert f'token: "{legiond.token}"' in out
    ca = [line.split(": ", 1)[1] for line in out.splitlines() if "certificate-authority-data" in line][0]
    assert base64.b64decode(ca) == open(legiond.ca_file, "rb").read()
    assert "namespace: default" in out and "current-context: legion" in out
    # Options: server, name, namespace, token, CA file.
    out, _ = legiond.cli("kubeconfig", "--server", "https://localhost:1234", "--name", "lab", "--ns", "team",
                         "--token", "lgn_x", "--ca", legiond.ca_file)
    assert 'server: "https://localhost:1234"' in out and 'token: "lgn_x"' in out
    assert "namespace: team" in out and "current-context: lab" in out and "cluster: lab" in out
    # Bad input: a clear message, nothing on stdout.
    for args, msg in ((["--server", "http://127.0.0.1:7070"], "https://"),
                      (["--ns", "../x"], "namespace"),
                      (["--token", 'a"b'], "token"),
                      (["--ca", "/etc/hostname"], "no PEM certificate"),
                      (["--ca", "/nonexistent"], "/nonexistent"),
                      (["extra"], "unexpected argument")):
        p = subprocess.run([legiond.env.get("LEGION_BIN", os.path.join(os.path.dirname(LEGIOND), "legion")),
                            "kubeconfig", *args], env=legiond.env, capture_output=True, text=True, timeout=30)
        assert p.returncode in (1, 2) and p.stdout == "" and msg in p.stderr, (args, p.returncode, p.stderr)
    env = dict(legiond.env, LEGION_HOME=str(tmp_path / "nothing"))
    p = subprocess.run([os.path.join(os.path.dirname(LEGIOND), "legion"), "kubeconfig"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "no token" in p.stderr and p.stdout == ""


@pytest.mark.skipif(not KUBECTLS, reason="no kubectl found")
@pytest.mark.parametrize("binary", KUBECTLS, ids=[kube_kit.kubectl_id(k) for k in KUBECTLS])
def test_kubectl_with_kubeconfig(legiond, tmp_path, binary):
    path, _ = kubeconfig(legiond, tmp_path)
    kc = kube_kit.Kubectl(binary, path)
    p = kc("get", "pods")
    assert "No resources found in default namespace" in p.stdout + p.stderr
    p = kc("get", "namespaces", "-o", "name")
    assert "namespace/default" in p.stdout
    p = kc("version", "-o", "json", check=None)
    assert json.loads(p.stdout)["serverVersion"]["gitVersion"].endswith("-legion"), p.stdout

    # A namespace token: its namespace only.
    assert legiond.http("POST", "/v1/namespaces", {"name": "team"})[0] == 201
    st, body = legiond.http("POST", "/v1/namespaces/team/tokens", {"description": "kubectl"})
    assert st == 201, body
    team = json.loads(body)["token"]
    tpath, out = kubeconfig(legiond, tmp_path, "--token", team, "--ns", "team", name="team.kubeconfig")
    assert "namespace: team" in out
    kt = kube_kit.Kubectl(binary, tpath)
    p = kt("get", "pods")
    assert "No resources found in team namespace" in p.stdout + p.stderr
    p = kt("get", "pods", "-n", "default", check=1)
    assert "not found" in p.stderr, p.stderr

    # A bad token is refused; the token really is what kubectl sends.
    bpath, _ = kubeconfig(legiond, tmp_path, "--token", "lgn_" + "0" * 64, name="bad.kubeconfig")
    p = kube_kit.Kubectl(binary, bpath)("get", "pods", check=1)
    assert "Unauthorized" in p.stderr or "must be logged in" in p.stderr, p.stderr

    # The CA must match: another CA's kubeconfig fails verification.
    other = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-days", "1", "-subj", "/CN=other"],
                   capture_output=True, check=True)
    opath, _ = kubeconfig(legiond, tmp_path, "--ca", str(other), name="other.kubeconfig")
    p = kube_kit.Kubectl(binary, opath)("get", "pods", check=1)
    assert "certificate" in p.stderr, p.stderr


def test_no_token_in_urls(legiond):
    # The old /k8s/<token>/ prefix is gone; plain HTTP wants a bearer header.
    st, body = legiond.http("GET", f"/k8s/{legiond.token}/api/v1/namespaces/default/pods", auth=False)
    assert st in (401, 404), body
    st, body = legiond.http("GET", f"/k8s/{legiond.token}/api/v1/namespaces/default/pods")
    assert st == 404, body
    st, body = legiond.http("GET", "/api/v1/namespaces/default/pods", auth=False)
    assert st == 401 and "legion kubeconfig" in json.loads(body)["message"]
    assert legiond.http("GET", "/api/v1/namespaces/default/pods")[0] == 200
    st, body, _ = https(legiond, "GET", "/api/v1/namespaces/default/pods")
    assert st == 401 and json.loads(body)["reason"] == "Unauthorized"


def test_listen_tls_flag(legion_bin, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    d = Legiond(home, free_port())
    # off: no HTTPS listener, no certificates made.
    d.proc = subprocess.Popen([LEGIOND, "--home", home, "--listen", f"127.0.0.1:{d.port}", "--listen-tls", "off",
                               *d.net_args], env=d.env, stdout=d.log, stderr=d.log)
    try:
        d.wait_for(lambda: _up(d), what="legiond")
        assert not os.path.exists(os.path.join(home, "tls"))
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", d.tls_port), timeout=5).close()
    finally:
        d.stop()
    # A bad value is a usage error; a taken port, asked for, is fatal.
    p = subprocess.run([LEGIOND, "--home", home, "--listen-tls", "nope"], env=d.env, capture_output=True, text=True)
    assert p.returncode == 2 and "--listen-tls wants HOST:PORT or off" in p.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        p = subprocess.run([LEGIOND, "--home", home, "--listen", f"127.0.0.1:{free_port()}", "--listen-tls",
                            f"127.0.0.1:{busy.getsockname()[1]}", *d.net_args], env=d.env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 1 and "Address already in use" in p.stderr, p.stderr
    finally:
        busy.close()
        # That legiond set up its network before it failed on the port, and
        # exits without undoing it (sandboxes it adopted would need it).
        stop_workloads(home, d.env, d.log, d.net_args)


def _up(d):
    try:
        return d.http("GET", "/healthz", auth=False)[0] == 200
    except OSError:
        return False
