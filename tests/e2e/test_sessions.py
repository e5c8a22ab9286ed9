"""Dynamic sessions end to end: session pools in the real legiond, hostile
code in real sandboxes. Each test gets its own legiond (fixture shared with
test_legiond.py)."""
import concurrent.futures
import json
import os
import socket
import signal
import subprocess
import time
import urllib.parse

import pytest

from test_legiond import legiond  # noqa: F401  (the fixture)
from test_sandbox_cli import FILE_WATCH, host_watch  # noqa: F401  (host_watch: a fixture)


def make_pool(d, name="py", **spec):
    body = {"runtime": "python3", "ready": 2, "maxSessions": 20, "cooldownSeconds": 300, "memory": "256Mi"}
    body.update(spec)
    st, out = d.http("PUT", f"/v1/sessionpools/{name}", body=body)
    assert st in (200, 201), out
    d.wait_for(lambda: json.loads(d.http("GET", f"/v1/sessionpools/{name}")[1])["status"]["ready"] >= 1,
               timeout=30, what="a ready session")
    return name


def run(d, ident, code, pool="py", timeout=30, expect=200):
    q = urllib.parse.urlencode({"identifier": ident})
    st, body = d.http("POST", f"/v1/sessionpools/{pool}/executions?{q}",
                      body={"code": code, "timeoutSeconds": timeout}, timeout=timeout + 30)
    assert st == expect, (st, body)
    return json.loads(body)


def host_address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent: only picks the source address
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


def test_state_persists_and_result_is_last_expression(legiond):
    make_pool(legiond)
    r = run(legiond, "user-0001", "import math\nx = 41\nprint('hi')")
    assert r["status"] == "Succeeded" and r["stdout"] == "hi\n" and r["result"] is None
    assert r["identifier"] == "user-0001" and r["id"]
    r = run(legiond, "user-0001", "x + 1")
    assert r["result"] == "42"
    r = run(legiond, "user-0001", "math.sqrt(16)")
    assert r["result"] == "4.0"
    r = run(legiond, "user-0001", "1/0")
    assert r["status"] == "Failed" and r["error"]["type"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in r["error"]["traceback"]
    # The session's view shows its deadline; the pool counts it.
    st, body = legiond.http("GET", "/v1/sessionpools/py/sessions/user-0001")
    s = json.loads(body)
    assert st == 200 and s["executions"] == 4 and s["expiresAt"]


def test_files_persist_and_traversal_is_rejected(legiond):
    make_pool(legiond)
    q = "identifier=files-01"
    assert legiond.http("PUT", f"/v1/sessionpools/py/files/data.csv?{q}", body=b"a,b\n1,2\n")[0] in (200, 201)
    r = run(legiond, "files-01", "open('/mnt/data/data.csv').read()")
    assert r["result"] == repr("a,b\n1,2\n")
    run(legiond, "files-01", "open('/mnt/data/out.txt', 'w').write('made inside')")
    st, body = legiond.http("GET", f"/v1/sessionpools/py/files/out.txt?{q}")
    assert st == 200 and body == b"made inside"
    st, body = legiond.http("GET", f"/v1/sessionpools/py/files?{q}")
    names = {f["name"] for f in json.loads(body)}
    assert {"data.csv", "out.txt"} <= names
    for bad in ("../etc/passwd", "%2e%2e/etc/passwd", "a/../../x", "%2F..%2Fx"):
        st, _ = legiond.http("GET", f"/v1/sessionpools/py/files/{bad}?{q}")
        assert st in (400, 404), (bad, st)
    # A symlink made by the code that points outside does not lead out.
    run(legiond, "files-01", "import os; os.symlink('/etc/passwd', '/mnt/data/link')")
    st, _ = legiond.http("GET", f"/v1/sessionpools/py/files/link?{q}")
    assert st in (400, 403, 404)
    assert legiond.http("DELETE", f"/v1/sessionpools/py/files/out.txt?{q}")[0] == 204
    r = run(legiond, "files-01", "import os; os.path.exists('/mnt/data/out.txt')")
    assert r["result"] == "False"


def test_sessions_are_isolated_from_each_other_and_the_host(legiond):
    make_pool(legiond)
    run(legiond, "alice-01", "open('/mnt/data/secret', 'w').write('alice')\nimport time")
    r = run(legiond, "bob-0001",
            "import os, socket\n"
            "seen = os.path.exists('/mnt/data/secret')\n"
            "procs = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "(seen, len(procs) < 10, socket.gethostname())")
    seen, few, host_b = eval(r["result"])
    assert seen is False and few is True
    r = run(legiond, "alice-01", "import socket; socket.gethostname()")
    assert eval(r["result"]) != host_b
    # legiond's state, tokens and the host's secrets are not there.
    r = run(legiond, "bob-0001",
            f"import os\n[os.path.exists(p) for p in ({legiond.home!r}, {legiond.home + '/admin.token'!r}, "
            "'/etc/shadow', '/root/.bash_history')]")
    assert eval(r["result"]) == [False, False, False, False]


def test_sessions_do_not_see_what_the_host_or_other_sessions_run(legiond, host_watch):
    make_pool(legiond)
    on_host = host_watch("/usr/bin/tac")
    run(legiond, "watch-01", FILE_WATCH + "\nfds = watch('/usr/bin/tac')")
    subprocess.run(["/usr/bin/tac"], stdin=subprocess.DEVNULL, check=True)
    assert on_host() != []
    run(legiond, "other-01", "import subprocess; subprocess.run(['/usr/bin/tac'], stdin=subprocess.DEVNULL)")
    assert on_host() != [], "the other session did not open the host's file"
    r = run(legiond, "watch-01",
            "import subprocess\nseen = events(fds)\n"
            "subprocess.run(['/usr/bin/tac'], stdin=subprocess.DEVNULL)\n(seen, events(fds))")
    seen, own = eval(r["result"])
    assert seen == []
    assert own, "the session's watch sees nothing at all"


RUNTIMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "runtimes")
SUPERVISOR = "python/legion_runtime/session/supervisor.py"


def test_sessions_do_not_see_other_sessions_start(legiond, host_watch):
    # Every session sandbox gets the workers' directory at
    # /opt/legion/runtime; a new placeholder opens supervisor.py there.
    make_pool(legiond, ready=1)
    on_host = host_watch(os.path.join(RUNTIMES, SUPERVISOR))
    run(legiond, "watch-02", FILE_WATCH + "\nfds = watch('/opt/legion/runtime/%s')" % SUPERVISOR)
    on_host()
    # Another session takes the ready placeholder; the pool makes a new one,
    # whose worker opens the host's file (the calibration)...
    run(legiond, "other-02", "1")
    legiond.wait_for(lambda: json.loads(legiond.http("GET", "/v1/sessionpools/py")[1])["status"]["ready"] >= 1,
                     timeout=30, what="a new placeholder")
    assert on_host() != [], "no new placeholder opened the host's supervisor.py"
    # ...and the first session's watch saw none of it, only its own open.
    r = run(legiond, "watch-02", "seen = events(fds)\nopen('/opt/legion/runtime/%s').close()\n"
                                 "(seen, events(fds))" % SUPERVISOR)
    seen, own = eval(r["result"])
    assert seen == []
    assert own, "the session's watch sees nothing at all"


def test_no_egress_by_default(legiond):
    make_pool(legiond)
    addr = host_address()
    code = (
        "import socket\n"
        "def tryc(a, p):\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect((a, p)); return 'connected'\n"
        "    except OSError as e:\n        return type(e).__name__\n"
        f"[tryc('1.1.1.1', 80), tryc({addr!r}, {legiond.port}) if {addr!r} != 'None' else 'skip', "
        f"tryc('127.0.0.1', {legiond.port})]")
    r = run(legiond, "net-0001", code)
    out = eval(r["result"])
    assert out[0] != "connected" and out[1] != "connected"
    # Its own loopback only: legiond's port on the host is not reachable.
    assert out[2] == "ConnectionRefusedError"


def test_limits_are_hit_reported_and_contained(legiond):
    make_pool(legiond, memory="128Mi", maxSessionBytes="16Mi")
    # An infinite loop times out; the session and its state survive.
    run(legiond, "loop-001", "keep = 7")
    r = run(legiond, "loop-001", "while True: pass", timeout=1)
    assert r["status"] == "TimedOut"
    assert run(legiond, "loop-001", "keep")["result"] == "7"
    # A memory bomb kills the interpreter, says so, and the session goes on.
    r = run(legiond, "mem-0001", "b = bytearray(1 << 30)")
    assert r["status"] == "Failed" and r.get("interpreterRestarted")
    assert "memory" in (r.get("message", "") + json.dumps(r.get("error"))).lower()
    assert run(legiond, "mem-0001", "1 + 1")["result"] == "2"
    # A fork bomb stops at the pids limit.
    r = run(legiond, "fork-001",
            "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; "
            "time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError as e:\n    err = e.strerror\n(n < 300, err)",
            timeout=60)
    assert r["status"] == "Succeeded", r
    assert eval(r["result"])[0] is True
    # Filling the disk stops at the session's size.
    r = run(legiond, "disk-001",
            "try:\n    f = open('/mnt/data/big', 'wb')\n    while True:\n        f.write(b'x' * (1 << 20))\n"
            "except OSError as e:\n    err = e.strerror\nerr")
    assert "No space" in r["result"]
    # legiond and the other sessions did not notice.
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200
    assert run(legiond, "loop-001", "keep")["result"] == "7"


def test_concurrent_first_calls_bind_exactly_one_sandbox(legiond):
    make_pool(legiond, ready=3)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: run(legiond, "same-id-1", "import socket; socket.gethostname()"), range(8)))
    assert len({r["result"] for r in rs}) == 1
    st, body = legiond.http("GET", "/v1/sessionpools/py/sessions")
    assert [s["identifier"] for s in json.loads(body)["items"]] == ["same-id-1"]


def test_max_sessions_cooldown_and_bad_input(legiond):
    make_pool(legiond, maxSessions=2, cooldownSeconds=2)
    run(legiond, "one-0001", "open('/mnt/data/f', 'w').write('x')\nimport socket; socket.gethostname()")
    run(legiond, "two-0002", "1")
    st, body = legiond.http("POST", "/v1/sessionpools/py/executions?identifier=three-03", body={"code": "1"})
    assert st == 429
    msg = json.loads(body)["error"]["message"]
    assert "maxSessions" in msg and "2" in msg
    for bad in ("abc", "x" * 129, "bad/slash", "sp ace"):
        st, _ = legiond.http("POST", "/v1/sessionpools/py/executions?" + urllib.parse.urlencode(
            {"identifier": bad}), body={"code": "1"})
        assert st == 400, bad
    st, _ = legiond.http("POST", "/v1/sessionpools/py/executions?identifier=four-004", body=b"{not json")
    assert st in (400, 429)
    # Idle past the cooldown: the session is gone, with its files.
    legiond.wait_for(lambda: json.loads(legiond.http("GET", "/v1/sessionpools/py/sessions")[1])["items"] == [],
                     timeout=20, what="the sessions to cool down")
    r = run(legiond, "one-0001", "import os; os.path.exists('/mnt/data/f')")
    assert r["result"] == "False"
    # Another namespace's pools are invisible.
    assert legiond.http("POST", "/v1/namespaces", body={"name": "other"})[0] == 201
    tok = json.loads(legiond.http("POST", "/v1/namespaces/other/tokens", body={})[1])["token"]
    assert legiond.http("GET", "/v1/sessionpools/py", token=tok)[0] == 404
    assert legiond.http("POST", "/v1/sessionpools/py/executions?identifier=x-other", body={"code": "1"},
                        token=tok)[0] == 404


def test_execution_in_flight_when_legiond_stops_is_answered(legiond):
    """SIGTERM while an execution's body is still coming: legiond lets the
    request finish, and the router is gone by then, so it is answered 503
    and legiond exits cleanly (it used to hand the body to the freed router)."""
    make_pool(legiond, ready=1)
    run(legiond, "stop-0001", "x = 1")  # the session is bound
    body = json.dumps({"code": "x + 1"}).encode()
    head = ("POST /v1/sessionpools/py/executions?identifier=stop-0001 HTTP/1.1\r\nHost: legiond\r\n"
            f"Authorization: Bearer {legiond.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", legiond.port), timeout=30)
    s.sendall(head + body[:5])
    # The head must have been read before the signal, or the connection
    # counts as idle and is closed: a health check on another connection
    # goes through the loop after it.
    time.sleep(0.5)
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200
    legiond.proc.send_signal(signal.SIGTERM)
    log = os.path.join(legiond.home, "legiond.log")
    legiond.wait_for(lambda: "shutting down" in open(log).read(), what="legiond to begin stopping")
    s.sendall(body[5:])
    reply = b""
    while True:  # a stopping server closes the connection after it
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
    assert b"legiond is stopping" in reply
    assert legiond.proc.wait(timeout=30) == 0
