"""Attacks on Legion's isolation, as a tenant would make them (docs/security.md).

Each test makes the attack through the interface a tenant has (a namespace
token, a session, a pod, `legion sandbox run`), and where the attack can be
made outside Legion too it is first calibrated there: the same code run on
the host, or in a sandbox with the defence off, succeeds, so that the
refusal inside means something."""
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import urllib.parse

import pytest

from test_legiond import legiond  # noqa: F401  (the fixture)
from test_sessions import make_pool, run


def ns_token(d, ns="team"):
    st, body = d.http("POST", "/v1/namespaces", body={"name": ns})
    assert st == 201, body
    st, body = d.http("POST", f"/v1/namespaces/{ns}/tokens", body={})
    assert st == 201, body
    return json.loads(body)["token"]


def sessions_in(d, pool, token=None, ns=None):
    q = f"?namespace={ns}" if ns else ""
    st, body = d.http("GET", f"/v1/sessionpools/{pool}/sessions{q}", token=token)
    assert st == 200, body
    return json.loads(body)["items"]


# ---- 1 and 2: the host's network namespace -----------------------------------

def test_session_pool_cannot_ask_for_the_hosts_network(legiond):
    tok = ns_token(legiond)
    # Calibration: legiond's API is there on the host's loopback...
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200
    # ...and a session cannot reach it, without egress (loopback only) or
    # with (a network of its own, never the host's).
    q = urllib.parse.urlencode({"identifier": "probe-01"})
    code = ("import socket\ns = socket.socket(); s.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {legiond.port})); r = 'connected'\n"
            "except OSError as e:\n    r = type(e).__name__\nr")
    for pool, egress in (("net", False), ("egress", True)):
        st, body = legiond.http("PUT", f"/v1/sessionpools/{pool}", body={"egress": egress, "ready": 1}, token=tok)
        if egress and st == 409 and b"networking is off" in body:
            continue  # a legiond without its sandbox network refuses egress
        assert st == 201, body
        legiond.wait_for(lambda: json.loads(legiond.http("GET", f"/v1/sessionpools/{pool}", token=tok)[1])
                         ["status"]["ready"] >= 1, what="a ready session")
        st, body = legiond.http("POST", f"/v1/sessionpools/{pool}/executions?{q}", body={"code": code}, token=tok)
        assert st == 200, body
        assert json.loads(body)["result"] == "'ConnectionRefusedError'", (pool, body)


def host_network_pod(name):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "busybox:1.36",
                                                          "imagePullPolicy": "IfNotPresent"}]}}


def test_host_network_pod_needs_an_admin_token(legiond):
    tok = ns_token(legiond)
    for dry in ("?dryRun=All", ""):
        st, body = legiond.http("POST", f"/api/v1/namespaces/team/pods{dry}", body=host_network_pod("hn"),
                                token=tok)
        assert st == 403, body
        doc = json.loads(body)
        assert doc["kind"] == "Status" and doc["reason"] == "Forbidden" and "hostNetwork" in doc["message"]
    assert legiond.http("GET", "/api/v1/namespaces/team/pods/hn", token=tok)[0] == 404
    # The same pod without the host's network is the tenant's to make, and
    # an admin may ask for the host's network (dry run: nothing is run).
    pod = host_network_pod("own")
    pod["spec"]["hostNetwork"] = False
    st, body = legiond.http("POST", "/api/v1/namespaces/team/pods?dryRun=All", body=pod, token=tok)
    assert st == 201, body
    st, body = legiond.http("POST", "/api/v1/namespaces/team/pods?dryRun=All", body=host_network_pod("hn"))
    assert st == 201, body


# ---- 5: address families ------------------------------------------------------

# socket() of each family; "raw32" passes AF_VSOCK with the upper half of the
# 64-bit register set, which the kernel truncates to the int it takes.
SOCKET_PROBE = textwrap.dedent("""
    import ctypes, json, socket
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    FAMILIES = {"AF_VSOCK": (40, 1, 0), "AF_PACKET": (17, 2, 0), "AF_KEY": (15, 3, 2), "AF_ALG": (38, 5, 0),
                "AF_TIPC": (30, 5, 0), "AF_RDS": (21, 5, 0), "AF_BLUETOOTH": (31, 3, 1),
                "AF_CAN": (29, 3, 1), "AF_XDP": (44, 3, 0), "AF_UNIX": (1, 1, 0), "AF_INET": (2, 2, 0),
                "AF_INET6": (10, 2, 0), "AF_NETLINK": (16, 3, 0)}
    def try_socket(fam, typ, proto):
        fd = libc.syscall(41, ctypes.c_long(fam), typ, proto)
        if fd >= 0:
            libc.close(fd)
            return "ok"
        return ctypes.get_errno()
    out = {k: try_socket(*v) for k, v in FAMILIES.items()}
    out["AF_VSOCK raw32"] = try_socket((1 << 32) | 40, 1, 0)
    print(json.dumps(out))
""")

ALLOWED = {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
EAFNOSUPPORT = 97


def test_sockets_of_other_address_families_are_refused(legion):
    host = json.loads(subprocess.run([sys.executable, "-c", SOCKET_PROBE], capture_output=True, text=True,
                                     check=True).stdout)
    # Calibration: what this kernel lets a process open, on the host and in
    # a sandbox without the seccomp filter (AF_VSOCK at least, whatever the
    # sandbox's network namespace).
    off = json.loads(legion("sandbox", "run", "--no-seccomp", "--", "python3", "-c", SOCKET_PROBE, check=0).stdout)
    assert host["AF_VSOCK"] == "ok" or pytest.skip("this kernel has no AF_VSOCK: the calibration needs it")
    assert off["AF_VSOCK"] == "ok" and off["AF_VSOCK raw32"] == "ok", off
    inside = json.loads(legion("sandbox", "run", "--", "python3", "-c", SOCKET_PROBE, check=0).stdout)
    for fam, res in inside.items():
        if fam in ALLOWED:
            assert res == "ok", (fam, res)
        else:
            assert res == EAFNOSUPPORT, (fam, res)
    # Kept capabilities change nothing here.
    inside = json.loads(legion("sandbox", "run", "--cap", "CAP_NET_RAW", "--cap", "CAP_NET_ADMIN", "--",
                               "python3", "-c", SOCKET_PROBE, check=0).stdout)
    assert inside["AF_PACKET"] == EAFNOSUPPORT and inside["AF_VSOCK raw32"] == EAFNOSUPPORT


# ---- 10: legion-init against its own workload --------------------------------

# Write into the target's memory through /proc/PID/mem and take its fd 3
# with pidfd_getfd; the target is PID (legion-init is 1 in a sandbox).
INIT_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    pid = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    try:
        start = int(next(l for l in open(f"/proc/{pid}/maps") if "rw-p" in l).split("-")[0], 16)
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        os.pwrite(fd, os.pread(fd, 8, start), start)
        os.close(fd)
        out["mem"] = "written"
    except OSError as e:
        out["mem"] = e.errno
    pidfd = libc.syscall(434, pid, 0)
    got = libc.syscall(438, pidfd, 3, 0) if pidfd >= 0 else -1
    out["pidfd_getfd"] = "taken" if got >= 0 else ctypes.get_errno()
    for t in ("mem", "task/1/mem"):
        try:
            os.close(os.open(f"/proc/{pid}/{t}", os.O_RDONLY))
            out["read " + t] = "opened"
        except OSError as e:
            out["read " + t] = e.errno
    print(json.dumps(out))
""")


def test_init_is_protected_from_a_workload_that_kept_cap_sys_ptrace(legion):
    # Calibration: as root on the host (CAP_SYS_PTRACE), the same code
    # writes another process's memory and takes its fd 3.
    target = subprocess.Popen(["sh", "-c", "exec 3</dev/null; exec sleep 60"])
    try:
        while not (os.path.exists(f"/proc/{target.pid}/fd/3") and
                   open(f"/proc/{target.pid}/comm").read().strip() == "sleep"):
            time.sleep(0.01)
        host = json.loads(subprocess.run([sys.executable, "-c", INIT_PROBE, str(target.pid)], capture_output=True,
                                         text=True, check=True).stdout)
    finally:
        target.kill()
        target.wait()
    assert host["mem"] == "written" and host["pidfd_getfd"] == "taken", host
    for caps in ((), ("--cap", "CAP_SYS_PTRACE"), ("--cap", "CAP_SYS_PTRACE", "--cap", "CAP_SYS_ADMIN",
                                                   "--cap", "CAP_DAC_OVERRIDE")):
        p = legion("sandbox", "run", *caps, "--", "python3", "-c", INIT_PROBE, "1", check=0)
        inside = json.loads(p.stdout)
        assert inside["mem"] != "written" and inside["pidfd_getfd"] != "taken", (caps, inside)
        assert inside["read mem"] != "opened" and inside["read task/1/mem"] != "opened", (caps, inside)


# ---- 7: NaN and infinities ----------------------------------------------------

NOT_NUMBERS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "0x10", " 1", "1e3"]


def upload_package(d, token=None, ns="default"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = b"def main(req):\n    return 'ok'\n"
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    st, body = d.http("POST", f"/v1/namespaces/{ns}/packages", body=buf.getvalue(), token=token)
    assert st in (200, 201), body
    return json.loads(body)["digest"]


def set_path(doc, path, value):
    *head, last = path
    for k in head:
        doc = doc[k]
    doc[last] = value


def test_nan_and_infinities_are_refused_in_every_numeric_field(legiond):
    h = legiond.http
    digest = upload_package(legiond)
    cases = []  # (method, url, base body, field path, how the error names it, expected status)
    app = {"runtime": "python3", "package": digest}
    for f in ("concurrency", "minInstances", "maxInstances", "idleTimeoutSeconds", "timeoutSeconds", "cpu",
              "memory"):
        cases.append(("PUT", "/v1/namespaces/default/apps/nan", app, (f,), f, 400))
    pool = {"runtime": "python3", "ready": 0}
    for f in ("ready", "maxSessions", "cooldownSeconds", "cpu", "memory", "maxFileBytes", "maxSessionBytes"):
        cases.append(("PUT", "/v1/sessionpools/nan", pool, (f,), f, 400))
    group = {"runtime": "python3", "ready": 0, "startupBoost": {"cpu": "1", "seconds": 5}}
    for f in (("ready",), ("cpu",), ("memory",), ("startupBoost", "cpu"), ("startupBoost", "seconds")):
        cases.append(("PUT", "/v1/poolgroups/nan", group, f, f[-1], 400))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nan"},
           "spec": {"activeDeadlineSeconds": 60, "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}],
                                    "resources": {"limits": {"cpu": "1", "memory": "64Mi"},
                                                  "requests": {"cpu": "1", "memory": "64Mi"}}}]}}
    ctr = ("spec", "containers", 0)
    for f in (("spec", "activeDeadlineSeconds"), ("spec", "terminationGracePeriodSeconds"),
              ctr + ("ports", 0, "containerPort"), ctr + ("resources", "limits", "cpu"),
              ctr + ("resources", "limits", "memory"), ctr + ("resources", "requests", "cpu"),
              ctr + ("resources", "requests", "memory")):
        cases.append(("POST", "/api/v1/namespaces/default/pods?dryRun=All", pod, f, f[-1], 422))
    # The bodies are valid before the value is spoiled: calibration.
    for method, url, base, path, name, _ in cases:
        if "dryRun" in url:
            st, body = h(method, url, body=base)
            assert st == 201, (url, body)
    for method, url, base, path, name, status in cases:
        for bad in NOT_NUMBERS:
            if bad == "1e3" and "pods" in url:
                continue  # a Kubernetes quantity may have a decimal exponent
            doc = json.loads(json.dumps(base))
            set_path(doc, path, bad)
            st, body = h(method, url, body=doc)
            assert st == status, (path, bad, st, body)
            assert name in body.decode(), (path, bad, body)
        # Not even as JSON numbers: NaN is no JSON, 1e999 overflows.
        for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            text = json.dumps(base).encode()
            doc = json.loads(text)
            set_path(doc, path, "@@")
            st, body = h(method, url, body=json.dumps(doc).encode().replace(b'"@@"', raw))
            assert st == 400, (path, raw, st, body)
    # Nothing was made.
    assert h("GET", "/v1/namespaces/default/apps/nan")[0] == 404
    assert h("GET", "/v1/sessionpools/nan")[0] == 404
    assert h("GET", "/v1/poolgroups/nan")[0] == 404
    assert h("GET", "/api/v1/namespaces/default/pods/nan")[0] == 404
    # And the same fields take numbers written plainly.
    st, body = h("PUT", "/v1/poolgroups/nan", body=dict(group, cpu="0.5", memory="128Mi"))
    assert st == 201, body
    st, body = h("PUT", "/v1/namespaces/default/apps/nan", body=dict(app, cpu="0.25", timeoutSeconds=30))
    assert st == 201, body
    # Numbers in query parameters too.
    for bad in NOT_NUMBERS + ["", "12abc"]:
        q = urllib.parse.quote(bad)
        st, body = h("GET", f"/v1/namespaces/default/apps/nan/logs?tail={q}")
        assert st == 400 and b"tail" in body, (bad, st, body)
        st, body = h("GET", f"/api/v1/namespaces/default/pods?watch=1&timeoutSeconds={q}")
        assert st == 400 and b"timeoutSeconds" in body, (bad, st, body)
    assert h("GET", "/v1/namespaces/default/apps/nan/logs?tail=5")[0] == 200
    assert h("GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1")[0] == 200


def test_cli_refuses_nan_cpus(legion):
    for bad in ("nan", "inf", "1e3", "0x1p2"):
        p = legion("sandbox", "run", "--cpus", bad, "--", "true")
        assert p.returncode == 2 and "--cpus" in p.stderr, (bad, p.stderr)


# ---- 8: a refused request changes nothing ---------------------------------------

def test_refused_session_requests_bind_no_sandbox(legiond):
    make_pool(legiond, maxSessions=1, ready=1)
    q = lambda ident: urllib.parse.urlencode({"identifier": ident})  # noqa: E731
    bad_executions = [b"{not json", b"[]", b'{"code": 7}', b'{"cod": "1"}',
                      b'{"code": "1", "timeoutSeconds": 0}', b'{"code": "1", "timeoutSeconds": "nan"}',
                      b'{"code": "1", "timeoutSeconds": 601}', b'{"code": "1", "timeoutSeconds": true}', b""]
    for i, body in enumerate(bad_executions):
        st, out = legiond.http("POST", f"/v1/sessionpools/py/executions?{q('bad-exec-%d' % i)}", body=body)
        assert st == 400, (body, st, out)
    for name in (".legion-upload-x", "a" * 256, "/".join(["d" * 200] * 6)):
        st, out = legiond.http("PUT", f"/v1/sessionpools/py/files/{urllib.parse.quote(name)}?{q('bad-file')}",
                               body=b"data")
        assert st == 400, (name, st, out)
    assert sessions_in(legiond, "py") == []
    # maxSessions is 1 and untouched: the next good call gets the session.
    r = run(legiond, "good-0001", "6 * 7")
    assert r["result"] == "42"
    assert [s["identifier"] for s in sessions_in(legiond, "py")] == ["good-0001"]
    # A refused call to a session that exists leaves it as it was.
    st, _ = legiond.http("POST", f"/v1/sessionpools/py/executions?{q('good-0001')}", body=b'{"code": 1}')
    assert st == 400
    assert run(legiond, "good-0001", "6 * 7")["result"] == "42"
    # An execution over the code limit is refused by size, and binds nothing.
    # (The head alone: the server answers 413 before reading the body.)
    with socket.create_connection(("127.0.0.1", legiond.port), timeout=30) as c:
        c.sendall((f"POST /v1/sessionpools/py/executions?{q('big-0001')} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {legiond.token}\r\nContent-Length: {17 << 20}\r\n\r\n").encode())
        assert c.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert [s["identifier"] for s in sessions_in(legiond, "py")] == ["good-0001"]
