"""legiond's API connections against a client that hoards them (docs/api.md,
"Connections"): one client address cannot lock the admin out, and
connections that never sent a valid token are closed sooner than
authenticated ones. The attacker connects from 127.0.0.2 and the admin from
127.0.0.1 (all of 127.0.0.0/8 is loopback), so the per-address limit is
tested for real; the lock-out is first shown to work with the limit off."""
import http.client
import json
import resource
import socket

import pytest

from test_legiond import kill_legiond, start_legiond
from test_security import ns_token


@pytest.fixture()
def start(legion_bin, tmp_path):
    """start(*flags): a legiond with those flags, killed after the test."""
    started = []

    def run(*args):
        d = start_legiond(tmp_path / f"d{len(started)}", args)
        started.append(d)
        return d

    yield run
    for d in started:
        kill_legiond(d)


@pytest.fixture(autouse=True)
def enough_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(d, src):
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10, source_address=(src, 0))
    c.connect()
    return c


def ask(c, path, token=None):
    """One keep-alive request on c: (status, parsed body or None)."""
    c.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
    r = c.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data.startswith(b"{") else None


def hoard(d, n, path, token=None):
    """Open n connections from 127.0.0.2, one request each, and keep those
    let in: (open connections, refusals as (status, error))."""
    held, refused = [], []
    for _ in range(n):
        c = connect(d, "127.0.0.2")
        st, doc = ask(c, path, token)
        if st == 200:
            held.append(c)
        else:
            refused.append((st, doc["error"]))
            c.close()
    return held, refused


def closed_by_server(c):
    """True when the server closes c within 10 s (EOF or reset)."""
    c.sock.settimeout(10)
    try:
        return c.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_one_address_cannot_lock_out_the_admin(start):
    # Calibration: without the per-address limit a tenant's authenticated
    # idle connections (nothing may be closed to make room for others) fill
    # the server, and the admin is refused.
    d = start("--max-connections", "64", "--max-connections-per-addr", "0")
    token = ns_token(d)
    held, refused = hoard(d, 70, "/v1/namespaces/team", token)
    assert len(held) == 64 and len(refused) == 6
    assert all(st == 503 and e["code"] == "TooManyConnections" and "limit of 64 connections" in e["message"]
               for st, e in refused), refused
    admin = connect(d, "127.0.0.1")
    st, doc = ask(admin, "/v1/namespaces", d.token)
    assert st == 503 and "limit of 64 connections" in doc["error"]["message"]
    for c in held + [admin]:
        c.close()

    # With it, the same attack gets the tenant its 16 and the admin in.
    d = start("--max-connections", "64", "--max-connections-per-addr", "16")
    token = ns_token(d)
    held, refused = hoard(d, 70, "/v1/namespaces/team", token)
    assert len(held) == 16 and len(refused) == 54
    st, e = refused[0]
    assert st == 429 and e["code"] == "TooManyConnections", refused[0]
    assert e["message"] == "127.0.0.2 already has 16 connections open, the limit per client address"
    admin = connect(d, "127.0.0.1")
    assert ask(admin, "/v1/namespaces", d.token)[0] == 200
    for c in held + [admin]:
        c.close()


def test_the_reported_attack_with_the_defaults(start):
    # No token, many idle keep-alive connections (the idle timeout of
    # unauthenticated ones is raised so that a slow machine cannot make
    # room for the attacker while it opens them).
    d = start("--unauth-idle-timeout-ms", "600000")
    held, refused = hoard(d, 300, "/healthz")
    assert len(held) == 256 and len(refused) == 44
    assert all(st == 429 and "the limit per client address" in e["message"] for st, e in refused)
    admin = connect(d, "127.0.0.1")
    assert ask(admin, "/v1/namespaces", d.token)[0] == 200
    # The attacker's connections were kept (it is not a matter of timing).
    assert ask(held[0], "/healthz")[0] == 200
    for c in held + [admin]:
        c.close()


def test_unauthenticated_connections_idle_less(start):
    d = start("--unauth-idle-timeout-ms", "1000")
    # The authenticated ones go idle first: with the short timeout they
    # would be closed before the others.
    api = connect(d, "127.0.0.1")
    assert ask(api, "/v1/namespaces", d.token)[0] == 200
    kube = connect(d, "127.0.0.1")  # the Kubernetes API checks tokens itself
    assert ask(kube, "/api/v1/namespaces/default/pods", d.token)[0] == 200
    health = connect(d, "127.0.0.1")
    assert ask(health, "/healthz")[0] == 200
    bad = connect(d, "127.0.0.1")
    assert ask(bad, "/v1/namespaces", "lg_not-a-token")[0] == 401
    silent = connect(d, "127.0.0.1")
    for c in (health, bad, silent):
        assert closed_by_server(c)
    assert ask(api, "/v1/namespaces", d.token)[0] == 200
    assert ask(kube, "/api/v1/namespaces/default/pods", d.token)[0] == 200
    for c in (api, kube, health, bad, silent):
        c.close()
