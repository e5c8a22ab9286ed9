"""The session worker (runtimes/python/legion_runtime/session/) in real
sandboxes: placeholder, bind, executions in a persistent interpreter (state,
output capture and its cap, errors, timeouts, crashes, memory and fork
bombs), and files under /mnt/data (upload, list, download, delete, traversal, size limits).

A small C driver (worker_driver.c, which can also
bind a writable /mnt/data and set a pids limit) creates each sandbox with a
worker control channel, the listening socket inherited as fd 4, a read-only
root, and relays the legion-init control protocol to the test."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from sandbox_kit import (RUNTIMES, DriverSandbox, UnixHTTPConnection, cgroup_parent,  # noqa: F401
                         driver, env)
from test_runtimes import read_response

ARGV = ["python3", "-I", "/opt/legion/runtime/python", "session"]
MiB = 1 << 20


class Session(DriverSandbox):
    """One session sandbox: placeholder, then bound, then HTTP."""
    read_timeout = 30

    def __init__(self, driver, env, memory=0, pids=0, sandbox_env=()):
        self.dir = tempfile.mkdtemp(prefix="lgs-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.sock_path = os.path.join(self.dir, "http.sock")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        args = [driver, "--bind", f"{RUNTIMES}:/opt/legion/runtime:ro", "--data", self.data,
                "--listen", self.sock_path, "--listen-mode", "inherit",
                "--stdout", self.stdout_path, "--stderr", self.stderr_path]
        if memory:
            args += ["--memory", str(memory)]
        if pids:
            args += ["--pids", str(pids)]
        for e in sandbox_env:
            args += ["--env", e]
        args += ["--", *ARGV]
        self.start(args, env)
        self.conn = None

    def wait_placeholder(self):
        f = super().wait_placeholder()
        assert f.get("runtime") == "session"
        return f

    def bind(self, identifier="sess-1", pool="pool1", env=(), id="b1"):
        fields = [("id", id), ("app", pool), ("identifier", identifier)] + [("env", e) for e in env]
        self.send("specialize", *fields)
        f = self.wait(lambda f: f.get("op") in ("ready", "error", "exit") and f.get("id", id) == id)
        assert f.get("op") == "ready" and f.get("phase") == "specialized", (f, self.stderr())
        assert f.get("identifier") == identifier and f.get("app") == pool
        return f

    # -- HTTP --

    def request(self, method, target, body=None, headers=None, timeout=60):
        c = UnixHTTPConnection(self.sock_path, timeout)
        try:
            c.request(method, target, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            c.close()

    def json(self, method, target, body=None, headers=None, timeout=60):
        st, h, data = self.request(method, target, body, headers, timeout)
        return st, (json.loads(data) if data else None)

    def execute(self, code, timeout=None, http_timeout=None, keep=True):
        body = {"code": code}
        if timeout is not None:
            body["timeoutSeconds"] = timeout
        data = json.dumps(body)
        wait = http_timeout or (timeout or 30) + 30
        if keep:
            # One keep-alive connection, as the host would use.
            if self.conn is None:
                self.conn = UnixHTTPConnection(self.sock_path, wait)
            self.conn.timeout = wait
            if self.conn.sock is not None:
                self.conn.sock.settimeout(wait)
            self.conn.request("POST", "/execute", body=data, headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            st, raw = r.status, r.read()
        else:
            st, _, raw = self.request("POST", "/execute", data, {"Content-Type": "application/json"}, wait)
        assert st == 200, (st, raw)
        return json.loads(raw)

    def raw(self, data, timeout=15):
        """Send bytes as they are; the response status and body."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock_path)
        s.sendall(data)
        status, _, body = read_response(s.makefile("rb"))
        s.close()
        return status, body


    def close(self):
        if self.conn is not None:
            self.conn.close()
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def sessions(driver, env):
    made = []

    def make(bind=True, bind_env=(), **kw):
        s = Session(driver, env, **kw)
        made.append(s)
        s.wait_placeholder()
        if bind:
            s.bind(env=bind_env)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture()
def session(sessions):
    return sessions()


def ok(r):
    assert r["status"] == "Succeeded", r
    return r


# ---- placeholder and bind ---------------------------------------------------------

def test_placeholder_then_bind(sessions):
    s = sessions(bind=False)
    # Nothing is served before the bind: the connection waits in the backlog.
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(0.3)
    c.connect(s.sock_path)
    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(socket.timeout):
        c.recv(1)
    c.close()
    f = s.bind(identifier="user-42", pool="mypool", env=["GREETING=hi there=yes"])
    assert float(f["ms"]) >= 0
    assert "legion: session bound: pool=mypool identifier=user-42" in s.stderr()
    st, h = s.json("GET", "/health")
    assert st == 200 and h["interpreter"] == "running" and h["executions"] == 0
    r = ok(s.execute("import os; os.environ['GREETING'], os.getcwd(), 'LEGION_CONTROL_FD' in os.environ"))
    assert r["result"] == "('hi there=yes', '/mnt/data', False)"
    assert r["identifier"] == "user-42"
    # A second bind is refused; the session goes on.
    s.send("specialize", ("id", "b2"), ("app", "x"), ("identifier", "other"))
    f = s.wait(lambda f: f.get("id") == "b2")
    assert f["op"] == "error" and f["type"] == "AlreadySpecialized"
    assert ok(s.execute("1 + 1"))["result"] == "2"


# ---- executions ---------------------------------------------------------------------

def test_state_imports_and_last_expression(session):
    s = session
    r = ok(s.execute("x = 1"))
    assert r["result"] is None and r["error"] is None and r["stdout"] == "" and not r["interpreterRestarted"]
    assert ok(s.execute("x + 1"))["result"] == "2"
    ok(s.execute("import json as j\ndef f(v):\n    return j.dumps({'v': v})"))
    assert ok(s.execute("f(x)"))["result"] == repr('{"v": 1}')
    assert ok(s.execute("None"))["result"] is None
    assert ok(s.execute("y = [1, 2]\ny"))["result"] == "[1, 2]"
    assert ok(s.execute("'a' * 3; z = 5"))["result"] is None     # last statement is not an expression
    assert ok(s.execute("for i in range(3): pass"))["result"] is None
    assert ok(s.execute("_"))["result"] == "[1, 2]"                # the last result, as in a REPL
    assert ok(s.execute("class P:\n    def __repr__(self): return 'P!'\nP()"))["result"] == "P!"
    assert ok(s.execute("import pickle; pickle.loads(pickle.dumps(P())).__class__.__name__"))["result"] == "'P'"
    assert ok(s.execute("import asyncio\nasync def g(): return 7\nawait g()"))["result"] == "7"
    assert ok(s.execute("__name__"))["result"] == "'__main__'"
    # The OOM killer takes the interpreter first.
    assert ok(s.execute("open('/proc/self/oom_score_adj').read().strip()"))["result"] == "'500'"
    r = ok(s.execute("import os\nr, w = os.pipe()\nif os.fork() == 0:\n    os.write(w, open('/proc/self/oom_score_adj', 'rb').read())\n"
                     "    os._exit(0)\nos.wait()\nos.read(r, 10)"))
    assert r["result"] == "b'1000\\n'"          # forked copies go first
    # The supervisor's descriptors are out of the code's reach.
    for path in ("/proc/%d/fd/3", "/proc/%d/mem"):
        r = s.execute("import os\nopen('%s' %% os.getppid(), 'rb')" % path)
        assert r["status"] == "Failed" and r["error"]["type"] == "PermissionError", r
    assert ok(s.execute("x"))["result"] == "1"
    r = s.execute("")
    assert r["status"] == "Succeeded" and r["result"] is None
    assert r["executionTimeMs"] >= 0 and r["execution"] >= 1


def test_stdout_stderr_capture(session):
    s = session
    r = ok(s.execute(
        "import sys, os, subprocess\n"
        "print('py out')\n"
        "print('py err', file=sys.stderr)\n"
        "os.write(1, b'fd out\\n')\n"
        "subprocess.run(['sh', '-c', 'echo sub out; echo sub err >&2'])\n"
        "sys.stdout.write('no newline')\n"
        "42"))
    assert r["stdout"] == "py out\nfd out\nsub out\nno newline"
    assert r["stderr"] == "py err\nsub err\n"
    assert r["result"] == "42" and r["truncated"] == {"stdout": False, "stderr": False}
    # Each execution has its own output.
    r = ok(s.execute("print('second')"))
    assert r["stdout"] == "second\n" and r["stderr"] == ""
    # User code that replaces sys.stdout or fds 1/2 does not break the next execution.
    r = ok(s.execute("import io, os; sys.stdout = io.StringIO(); os.dup2(os.open('/dev/null', os.O_WRONLY), 1); print('lost')"))
    assert r["stdout"] == ""
    assert ok(s.execute("print('back')"))["stdout"] == "back\n"
    # Output written between executions (a background thread) comes with the next one.
    ok(s.execute("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()"))
    time.sleep(0.5)
    assert ok(s.execute("print('now')"))["stdout"] == "late\nnow\n"
    # Unicode, and invalid UTF-8 from a subprocess.
    r = ok(s.execute("print('h\\u00e9llo \\u2603'); os.write(1, b'\\xff\\xfe\\n')"))
    assert r["stdout"] == "h\u00e9llo \u2603\n\ufffd\ufffd\n"


def test_output_cap(session):
    s = session
    r = ok(s.execute("import sys\nprint('a' * (3 << 20))\nsys.stderr.write('b' * 100)\n'done'"))
    assert len(r["stdout"].encode()) == MiB and set(r["stdout"]) == {"a"}
    assert r["truncated"] == {"stdout": True, "stderr": False}
    assert r["stderr"] == "b" * 100 and r["result"] == "'done'"
    # Many small writes past the cap (and from a subprocess) are cut too.
    r = ok(s.execute("import subprocess\nsubprocess.run(['head', '-c', '5000000', '/dev/zero'])\nfor i in range(200000): print(i, file=sys.stderr)"))
    assert len(r["stdout"]) == MiB and r["truncated"]["stdout"]
    assert len(r["stderr"]) == MiB and r["truncated"]["stderr"] and r["stderr"].startswith("0\n1\n2\n")
    r = ok(s.execute("print('small')"))
    assert r["stdout"] == "small\n" and r["truncated"] == {"stdout": False, "stderr": False}
    # A huge repr is cut as well.
    r = ok(s.execute("'x' * (2 << 20)"))
    assert len(r["result"]) == MiB and r["truncated"].get("result") is True


def test_exceptions_and_tracebacks(session):
    s = session
    ok(s.execute("def inner(v):\n    return 10 / v\n\ndef outer(v):\n    return inner(v)"))
    r = s.execute("print('before')\nouter(0)")
    assert r["status"] == "Failed" and r["stdout"] == "before\n"
    e = r["error"]
    assert e["type"] == "ZeroDivisionError" and e["message"] == "division by zero"
    tb = e["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert 'File "<cell 2>", line 2, in <module>' in tb and "outer(0)" in tb
    assert 'File "<cell 1>", line 5, in outer' in tb and 'File "<cell 1>", line 2, in inner' in tb
    assert "return 10 / v" in tb and "interpreter.py" not in tb and "supervisor.py" not in tb
    r = s.execute("def broken(:\n    pass")
    assert r["status"] == "Failed" and r["error"]["type"] == "SyntaxError"
    assert "<cell 3>" in r["error"]["traceback"] and "^" in r["error"]["traceback"]
    r = s.execute("raise ValueError('bad') from KeyError('k')")
    assert r["error"]["type"] == "ValueError" and "KeyError: 'k'" in r["error"]["traceback"]
    # exit() and sys.exit() fail the execution, not the session.
    r = s.execute("import sys; sys.exit(3)")
    assert r["status"] == "Failed" and r["error"]["type"] == "SystemExit" and r["error"]["message"] == "3"
    r = s.execute("exit()")
    assert r["status"] == "Failed" and r["error"]["type"] == "SystemExit"
    assert not r["interpreterRestarted"]
    assert ok(s.execute("outer(5)"))["result"] == "2.0"
    # Input is /dev/null.
    assert s.execute("input()")["error"]["type"] == "EOFError"


def test_fork_in_code_does_not_answer_twice(session):
    s = session
    r = ok(s.execute(
        "import os\npid = os.fork()\n"
        "if pid == 0:\n    print('child')\nelse:\n    os.waitpid(pid, 0)\n    print('parent')\n'end'"))
    assert r["stdout"] == "child\nparent\n" and r["result"] == "'end'"
    # A child that raises exits with status 1 and its traceback; sys.exit's code is kept.
    r = ok(s.execute("pid = os.fork()\nif pid == 0:\n    raise ValueError('in child')\n"
                     "os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])"))
    assert r["result"] == "1" and "ValueError: in child" in r["stderr"] and '<cell 2>' in r["stderr"]
    assert "interpreter.py" not in r["stderr"]
    r = ok(s.execute("pid = os.fork()\nif pid == 0:\n    import sys; sys.exit(5)\n"
                     "os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])"))
    assert r["result"] == "5"
    assert ok(s.execute("1"))["result"] == "1"


def test_timeout_keeps_the_session(session):
    s = session
    ok(s.execute("x = 41"))
    t0 = time.monotonic()
    r = s.execute("print('spinning')\nwhile True: pass", timeout=1)
    took = time.monotonic() - t0
    assert r["status"] == "TimedOut" and not r["interpreterRestarted"], r
    assert r["stdout"] == "spinning\n"
    assert r["error"]["type"] == "TimeoutError" and "timeout of 1 s" in r["error"]["message"]
    assert "while True: pass" in r["error"]["traceback"]
    assert 0.9 < took < 2.5 and 900 < r["executionTimeMs"] < 2500
    assert ok(s.execute("x + 1"))["result"] == "42"
    r = s.execute("import time\ntime.sleep(100)", timeout=0.5)
    assert r["status"] == "TimedOut" and not r["interpreterRestarted"]
    assert ok(s.execute("x + 1"))["result"] == "42"
    # `except Exception` does not swallow the timeout.
    r = s.execute("while True:\n    try:\n        time.sleep(0.05)\n    except Exception:\n        pass", timeout=0.5)
    assert r["status"] == "TimedOut" and not r["interpreterRestarted"]
    # A subprocess that is still running is stopped as well.
    r = s.execute("import subprocess\nsubprocess.run(['sleep', '100'])", timeout=0.5)
    assert r["status"] == "TimedOut" and not r["interpreterRestarted"]
    assert ok(s.execute("x"))["result"] == "41"
    # Bad timeouts.
    for bad in (0, -1, 601, "5", True):
        st, body = s.json("POST", "/execute", json.dumps({"code": "1", "timeoutSeconds": bad}))
        assert st == 400 and body["error"]["code"] == "BadRequest", (bad, body)
    for body in (b"nope", b"[]", b'{"code": 1}', b"{}"):
        st, doc = s.json("POST", "/execute", body)
        assert st == 400, body


def test_stuck_in_c_code_restarts_the_interpreter(session):
    s = session
    ok(s.execute("x = 1"))
    # SIGINT blocked: as good as a C extension that never checks for signals.
    r = s.execute("import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
                  "print('stuck')\ntime.sleep(100)", timeout=0.5)
    assert r["status"] == "TimedOut" and r["interpreterRestarted"] is True, r
    assert "was killed" in r["error"]["message"] and "lost" in r["message"]
    assert r["stdout"] == "stuck\n"
    r = s.execute("x")
    assert r["status"] == "Failed" and r["error"]["type"] == "NameError" and not r["interpreterRestarted"]
    # A long computation in C that does not look at signals.
    r = s.execute("sum(range(10**13))", timeout=0.5)
    assert r["status"] == "TimedOut" and r["interpreterRestarted"] is True, r
    # Code that catches the interrupt and carries on gets killed too.
    r = s.execute("import time\nwhile True:\n    try:\n        time.sleep(1)\n    except BaseException:\n        pass",
                  timeout=0.5)
    assert r["status"] == "TimedOut" and r["interpreterRestarted"] is True
    assert ok(s.execute("1 + 1"))["result"] == "2"
    st, h = s.json("GET", "/health")
    assert h["interpreter"] == "running" and h["restarts"] == 3


def test_interpreter_death(session):
    s = session
    ok(s.execute("x = 1"))
    r = s.execute("import os\nprint('bye')\nos._exit(3)")
    assert r["status"] == "Failed" and r["interpreterRestarted"] is True, r
    assert r["error"]["type"] == "InterpreterDied" and "exited with status 3" in r["error"]["message"]
    assert r["stdout"] == "bye\n" and "lost" in r["message"]
    assert s.execute("x")["error"]["type"] == "NameError"
    r = s.execute("import ctypes\nctypes.string_at(0)")
    assert r["status"] == "Failed" and r["interpreterRestarted"] is True
    assert "SIGSEGV" in r["error"]["message"] and "segmentation fault" in r["error"]["message"]
    assert "Segmentation fault" in r["stderr"]     # faulthandler's report
    r = s.execute("import os, signal\nos.kill(os.getpid(), signal.SIGABRT)")
    assert r["interpreterRestarted"] and "SIGABRT" in r["error"]["message"]
    assert ok(s.execute("'alive'"))["result"] == "'alive'"


def test_death_between_executions_is_reported(session):
    s = session
    ok(s.execute("import os, threading, time\nv = 1\n"
                 "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(7)), daemon=True).start()"))
    time.sleep(1.5)
    st, h = s.json("GET", "/health")
    assert h["interpreter"] == "running" and h["restarts"] == 1    # restarted at once
    r = s.execute("'v' in globals()")
    assert r["status"] == "Succeeded" and r["result"] == "False" and r["interpreterRestarted"] is True
    assert "between executions" in r["message"] and "status 7" in r["message"]
    assert not s.execute("1")["interpreterRestarted"]


def test_memory_bomb(sessions):
    s = sessions(memory=256 * MiB, sandbox_env=["LEGION_SESSION_MEMORY_LIMIT=%d" % (256 * MiB)])
    ok(s.execute("x = 1"))
    r = s.execute("a = []\nwhile True:\n    a.append(bytearray(16 << 20))", timeout=60)
    assert r["status"] == "Failed" and r["interpreterRestarted"] is True, r
    assert r["error"]["type"] == "InterpreterDied"
    assert "SIGKILL" in r["error"]["message"] and "out of memory" in r["error"]["message"]
    assert "the session's memory limit is 256 MiB" in r["error"]["message"] and "lost" in r["message"]
    assert s.execute("x")["error"]["type"] == "NameError"
    assert ok(s.execute("bytearray(32 << 20) and 'fine'"))["result"] == "'fine'"


def test_fork_bomb(sessions):
    s = sessions(pids=64)
    ok(s.execute("x = 1"))
    r = s.execute("import os\nwhile True:\n    os.fork()", timeout=20)
    assert r["status"] in ("Failed", "TimedOut"), r
    if r["status"] == "Failed":
        assert r["error"]["type"] == "BlockingIOError"
    # One that swallows the errors runs until its timeout; its copies are killed.
    r = s.execute("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=2)
    assert r["status"] == "TimedOut", r
    r = s.execute("import subprocess\nsubprocess.run(['true']).returncode", timeout=10)
    assert r["status"] == "Succeeded" and r["result"] == "0", r
    if not r["interpreterRestarted"]:
        assert ok(s.execute("x"))["result"] == "1"
    st, h = s.json("GET", "/health")
    assert st == 200 and h["interpreter"] == "running"


def test_executions_are_serialized(session):
    s = session
    results = {}

    def slow():
        results["slow"] = s.execute("import time\ntime.sleep(1)\n'slow'", keep=False)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    r = ok(s.execute("'second'", timeout=10, keep=False))
    waited = time.monotonic() - t0
    assert r["result"] == "'second'" and waited > 0.4
    t.join()
    assert results["slow"]["result"] == "'slow'"
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    st, body = s.json("POST", "/execute", json.dumps({"code": "1", "timeoutSeconds": 0.2}))
    assert st == 409 and body["error"]["code"] == "SessionBusy"
    t.join()


def test_restart_endpoint(session):
    s = session
    ok(s.execute("x = 1"))
    st, body = s.json("POST", "/restart")
    assert st == 200 and body["interpreterRestarted"] is True
    assert s.execute("x")["error"]["type"] == "NameError"
    st, _ = s.json("GET", "/restart")
    assert st == 405
    st, body = s.json("GET", "/nope")
    assert st == 404 and body["error"]["code"] == "NotFound"


def test_shutdown(session):
    s = session
    ok(s.execute("import subprocess\np = subprocess.Popen(['sleep', '100'])"))
    s.send("shutdown", ("id", "down"), ("grace", "5"))
    f = s.wait(lambda f: f.get("op") == "exit" and f.get("id") == "down")
    assert f["code"] == "0", f


# ---- files --------------------------------------------------------------------------

def _multipart(files, boundary="----legionTestBoundary7MA4YWxk"):
    out = b""
    for field, name, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n".encode()
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_files_upload_list_download_delete(session):
    s = session
    st, body = s.json("PUT", "/files/hello.txt", b"hello world")
    assert st == 201 and body["name"] == "hello.txt" and body["size"] == 11 and body["modified"].endswith("Z")
    st, body = s.json("PUT", "/files/dir/sub/data.bin", bytes(range(256)) * 4)
    assert st == 201 and body["name"] == "dir/sub/data.bin" and body["size"] == 1024
    # The code sees them, relative to its working directory /mnt/data.
    r = ok(s.execute("open('hello.txt').read(), len(open('/mnt/data/dir/sub/data.bin', 'rb').read())"))
    assert r["result"] == "('hello world', 1024)"
    ok(s.execute("import os\nos.makedirs('out', exist_ok=True)\nopen('out/result.csv', 'w').write('a,b\\n1,2\\n')"))
    st, listing = s.json("GET", "/files")
    assert st == 200
    assert [(f["name"], f["size"]) for f in listing] == [
        ("dir/sub/data.bin", 1024), ("hello.txt", 11), ("out/result.csv", 8)]
    assert all(f["modified"].endswith("Z") for f in listing)
    st, h, data = s.request("GET", "/files/out/result.csv")
    assert st == 200 and data == b"a,b\n1,2\n" and h["content-type"] == "application/octet-stream"
    assert h["content-length"] == "8"
    st, h, data = s.request("GET", "/files/dir/sub/data.bin")
    assert data == bytes(range(256)) * 4
    # Overwrite, chunked upload, an empty file, a name with spaces and unicode.
    st, body = s.json("PUT", "/files/hello.txt", b"bye")
    assert st == 201 and body["size"] == 3
    c = UnixHTTPConnection(s.sock_path)
    c.request("PUT", "/files/chunked.txt", body=iter([b"part1-", b"part2"]), encode_chunked=True)
    r = c.getresponse()
    assert r.status == 201 and json.loads(r.read())["size"] == 11
    c.close()
    assert s.request("GET", "/files/chunked.txt")[2] == b"part1-part2"
    assert s.json("PUT", "/files/empty", b"")[0] == 201
    assert s.request("GET", "/files/empty")[2] == b""
    st, body = s.json("PUT", "/files/my%20file%20%C3%A9.txt", b"x")
    assert st == 201 and body["name"] == "my file \u00e9.txt"
    assert ok(s.execute("open('my file \\u00e9.txt').read()"))["result"] == "'x'"
    # multipart/form-data, two files at once.
    body, headers = _multipart([("file", "a.txt", b"AAA"), ("file", "b.txt", b"B\r\n--notaboundary\r\n"),
                                ("other", "up/c.txt", b"")])
    st, doc = s.json("POST", "/files", body, headers)
    assert st == 201 and [(d["name"], d["size"]) for d in doc] == [("a.txt", 3), ("b.txt", 19), ("up/c.txt", 0)]
    assert s.request("GET", "/files/b.txt")[2] == b"B\r\n--notaboundary\r\n"
    st, doc = s.json("POST", "/files", b"raw", {"Content-Type": "application/octet-stream"})
    assert st == 415
    # Delete.
    assert s.request("DELETE", "/files/hello.txt")[0] == 204
    assert s.json("GET", "/files/hello.txt")[0] == 404
    st, doc = s.json("DELETE", "/files/hello.txt")
    assert st == 404 and doc["error"]["code"] == "NotFound"
    st, doc = s.json("DELETE", "/files/dir")
    assert st == 409 and doc["error"]["code"] == "DirectoryNotEmpty"
    assert s.request("DELETE", "/files/dir/sub/data.bin")[0] == 204
    assert s.request("DELETE", "/files/dir/sub")[0] == 204
    st, doc = s.json("GET", "/files/dir")
    assert st == 400 and doc["error"]["code"] == "IsADirectory"
    st, doc = s.json("PUT", "/files/dir", b"x")
    assert st == 409 and doc["error"]["code"] == "IsADirectory"
    names = [f["name"] for f in s.json("GET", "/files")[1]]
    assert "hello.txt" not in names and "a.txt" in names
    assert not any(".legion-upload-" in n for n in os.listdir(s.data))
    # Files made by the code show, hidden ones too; a FIFO is not read.
    ok(s.execute("os.mkfifo('fifo')"))
    st, doc = s.json("GET", "/files/fifo")
    assert st == 400 and doc["error"]["code"] == "NotARegularFile"


def test_path_traversal_is_rejected(session):
    s = session
    ok(s.execute("open('/tmp/secret', 'w').write('s3cret')\nopen('inside.txt', 'w').write('in')"))
    for target in ("/files/../etc/passwd", "/files/%2e%2e/etc/passwd", "/files/a/../../etc/passwd",
                   "/files/a/%2E%2E/%2e%2E/etc/passwd", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd",
                   "/files/./inside.txt", "/files/a//b", "/files/x%00y", "/files/..", "/files/%2e%2e"):
        for method in ("GET", "PUT", "DELETE"):
            st, body = s.raw(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode())
            assert st == 400, (method, target, st, body)
            assert json.loads(body)["error"]["code"] == "InvalidPath"
    # Symbolic links made by the code: leading out is refused, within is fine.
    ok(s.execute("import os\nos.symlink('/etc', 'etc')\nos.symlink('/tmp/secret', 'secret')\n"
                 "os.symlink('/tmp', 'tmplink')\nos.symlink('inside.txt', 'alias')\nos.symlink('..', 'up')"))
    for target in ("/files/etc/passwd", "/files/secret", "/files/up", "/files/up/etc/passwd", "/files/tmplink/secret"):
        st, body = s.raw(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert st == 403 and json.loads(body)["error"]["code"] == "PathOutsideData", (target, body)
    for target in ("/files/tmplink/planted", "/files/etc/planted", "/files/up/planted"):
        st, body = s.raw(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode())
        assert st == 403, (target, body)
        st, body = s.raw(f"DELETE {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert st == 403, (target, body)
    assert ok(s.execute("import os\nos.path.exists('/tmp/planted'), open('/tmp/secret').read()"))["result"] == \
        "(False, 's3cret')"
    assert s.request("GET", "/files/alias")[2] == b"in"
    assert s.request("GET", "/files/up/data/inside.txt")[2] == b"in"   # out and back in: still inside
    # Replacing a link replaces the link, not what it points to.
    assert s.json("PUT", "/files/secret", b"mine")[0] == 201
    assert ok(s.execute("open('/tmp/secret').read(), os.path.islink('secret')"))["result"] == "('s3cret', False)"
    # Deleting a link deletes the link only.
    assert s.request("DELETE", "/files/etc")[0] == 204
    assert ok(s.execute("os.path.exists('/etc/passwd')"))["result"] == "True"
    # The listing shows regular files only; links are not followed.
    names = [f["name"] for f in s.json("GET", "/files")[1]]
    assert names == ["inside.txt", "secret"], names
    # Multipart file names are checked the same way.
    body, headers = _multipart([("file", "../escape.txt", b"x")])
    st, doc = s.json("POST", "/files", body, headers)
    assert st == 400 and doc["error"]["code"] == "InvalidPath"
    body, headers = _multipart([("file", "/abs.txt", b"x")])
    assert s.json("POST", "/files", body, headers)[0] == 400
    # Over-long names.
    st, doc = s.json("PUT", "/files/" + "n" * 256, b"x")
    assert st == 400 and doc["error"]["code"] == "NameTooLong"
    st, doc = s.json("PUT", "/files/" + "/".join(["d" * 200] * 6), b"x")
    assert st == 400 and doc["error"]["code"] == "NameTooLong"
    st, doc = s.json("PUT", "/files/.legion-upload-x", b"x")
    assert st == 400


def test_file_size_limits(sessions):
    s = sessions(bind_env=["LEGION_SESSION_MAX_FILE=1000", "LEGION_SESSION_MAX_BYTES=2.5K"])
    st, doc = s.json("PUT", "/files/big", b"x" * 1001)
    assert st == 413 and doc["error"]["code"] == "FileTooLarge"
    assert "1000 bytes" in doc["error"]["message"] and doc["error"]["limit"] == 1000
    # Chunked uploads (no length known up front) are cut as the bytes arrive.
    c = UnixHTTPConnection(s.sock_path)
    c.request("PUT", "/files/d", body=iter([b"x" * 700, b"x" * 700]), encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "FileTooLarge"
    c.close()
    assert s.json("PUT", "/files/a", b"x" * 1000)[0] == 201
    assert s.json("PUT", "/files/b", b"x" * 1000)[0] == 201
    st, doc = s.json("PUT", "/files/c", b"x" * 600)
    assert st == 413 and doc["error"]["code"] == "SessionStorageFull", doc
    assert doc["error"]["limit"] == 2500 and doc["error"]["used"] == 2000
    assert "2500 bytes" in doc["error"]["message"] and "2000 bytes are in use" in doc["error"]["message"]
    # Replacing a file counts only the difference.
    assert s.json("PUT", "/files/b", b"y" * 900)[0] == 201
    assert s.json("PUT", "/files/c", b"z" * 500)[0] == 201
    c = UnixHTTPConnection(s.sock_path)
    c.request("PUT", "/files/d", body=iter([b"x" * 60, b"x" * 60]), encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "SessionStorageFull"
    c.close()
    body, headers = _multipart([("file", "m1", b"1" * 90), ("file", "m2", b"2" * 90)])
    st, doc = s.json("POST", "/files", body, headers)
    assert st == 413 and doc["error"]["code"] == "SessionStorageFull"
    # Files the code writes count too.
    ok(s.execute("open('code.bin', 'wb').write(b'q' * 50)"))
    names = sorted(f["name"] for f in s.json("GET", "/files")[1])
    assert names == ["a", "b", "c", "code.bin"]          # nothing half-written left behind
    assert not any(n.startswith(".legion-upload-") for n in os.listdir(s.data))
    st, doc = s.json("PUT", "/files/e", b"x" * 60)
    assert st == 413 and doc["error"]["used"] == 2450
    # A refused upload with Expect: 100-continue never sends the body.
    st, body = s.raw(b"PUT /files/f HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert st == 413


# ---- how fast ------------------------------------------------------------------------

def test_timings(sessions, capsys):
    """Bind (specialize sent -> op=ready phase=specialized), first execution
    after the bind, sequential executions/s on one keep-alive connection,
    and the memory of an idle bound session (cgroup, and the RSS of the
    supervisor + interpreter); reported with -s."""
    rows = []
    for _ in range(3):
        s = sessions(bind=False, memory=512 * MiB)
        started = next(f for f in s.frames if f.get("event") == "started")
        ph = s.frames[-1]
        t_ph = (int(ph["t_ns"]) - int(started["t_ns"])) / 1e6
        time.sleep(0.2)
        mem_ph = int(s.stats()["memory"])
        ready = s.bind()
        sent = next(f for f in s.frames if f.get("event") == "sent")
        t_bind = (int(ready["t_ns"]) - int(sent["sent_ns"])) / 1e6
        t0 = time.monotonic()
        r = ok(s.execute("print(1)"))
        t_first = (time.monotonic() - t0) * 1e3
        assert r["stdout"] == "1\n"
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            ok(s.execute("x = 1 + 1"))
            n += 1
        rate = n / (time.monotonic() - t0)
        time.sleep(0.2)
        mem = int(s.stats()["memory"])
        rss = ok(s.execute(
            "import os\ntotal = 0\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit() and p != '1':\n"
            "        try:\n"
            "            for line in open('/proc/%s/status' % p):\n"
            "                if line.startswith('VmRSS:'): total += int(line.split()[1])\n"
            "        except OSError: pass\n"
            "total"))["result"]
        rows.append((t_ph, t_bind, t_first, rate, mem, int(rss) * 1024, r["executionTimeMs"], mem_ph))
    best = [min(r[i] for r in rows) for i in range(3)] + [max(r[3] for r in rows)]
    with capsys.disabled():
        print(f"\n[session] placeholder ready {best[0]:.1f} ms, bind {best[1]:.2f} ms, "
              f"first print(1) {best[2]:.2f} ms (worker {rows[-1][6]:.2f} ms), {best[3]:.0f} executions/s, "
              f"placeholder memory {rows[-1][7] / MiB:.1f} MiB, idle bound session {rows[-1][4] / MiB:.1f} MiB "
              f"(cgroup), RSS {rows[-1][5] / MiB:.1f} MiB (supervisor + interpreter)")
    assert best[1] < 1000 and best[2] < 1000 and best[3] > 50
