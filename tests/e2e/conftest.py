"""Fixtures for end-to-end tests: they drive the built `legion` binary as a
user would, as root, against real sandboxes."""
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import ThreadingHTTPServer

import pytest

BUILD = os.environ.get("LEGION_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))


def runner(binary, env, timeout, cwd=None):
    """run(*args) runs binary with env (plus env_extra), stdout and stderr
    decoded (stdout left as bytes with binary_out), the exit status checked
    when check is given. run.env and run.bin are what it runs with."""
    def run(*args, input=None, check=None, env_extra=None, cwd=cwd, timeout=timeout, binary_out=False):
        p = subprocess.run([binary, *args], input=input, capture_output=True, timeout=timeout,
                           env=dict(env, **(env_extra or {})), cwd=cwd)
        if not binary_out:
            p.stdout = p.stdout.decode(errors="replace")
        p.stderr = p.stderr.decode(errors="replace")
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    run.env = env
    run.bin = binary
    return run


@pytest.fixture(scope="session")
def legion_client_bin():
    """The built `legion`, for tests that need no root (a fake legiond)."""
    path = os.path.abspath(os.path.join(BUILD, "legion"))
    if not os.path.exists(path):
        pytest.fail(f"{path} is not built: run `make build` first")
    return path


@pytest.fixture(scope="session")
def legion_bin(legion_client_bin):
    if os.geteuid() != 0:
        pytest.skip("end-to-end sandbox tests need root (namespaces, cgroups, mounts)")
    return legion_client_bin


@pytest.fixture()
def serve_fake():
    """serve_fake(handler, api): an HTTP server on 127.0.0.1 whose handler
    finds api as self.server.api; returns api with api.url set. Shut down
    after the test."""
    servers = []

    def serve(handler, api):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        srv.api = api
        api.url = "http://127.0.0.1:%d" % srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return api

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture()
def run_dir():
    """A private state root and cgroup parent per test, removed after."""
    d = tempfile.mkdtemp(prefix="lg-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def legion(legion_bin, run_dir):
    env = dict(os.environ)
    env["LEGION_RUN_DIR"] = run_dir
    env["LEGION_CGROUP_PARENT"] = "legion-e2e-%d" % os.getpid()
    env.setdefault("LEGION_INIT", os.path.join(os.path.dirname(legion_bin), "legion-init"))
    yield runner(legion_bin, env, timeout=60)
    # The per-test cgroup parent is left empty by destroy; remove it.
    for ctrl in ("memory", "cpu", "cpuacct", "pids", "freezer", "unified", ""):
        d = os.path.join("/sys/fs/cgroup", ctrl, env["LEGION_CGROUP_PARENT"])
        try:
            os.rmdir(d)
        except OSError:
            pass


@pytest.fixture(scope="session", autouse=True)
def remove_cgroup_parents():
    """legiond killed with SIGKILL cannot remove its sandboxes' cgroups (the
    sandboxes die with it; a legiond restarted on the same home would collect
    them). Tests use throwaway homes, so remove this run's cgroup parents,
    deepest first, once every test is done: thousands of empty cgroups make
    every later cgroup operation on the host slower."""
    yield
    pid = os.getpid()
    names = (f"legion-e2e-{pid}", f"legion-e2e-d{pid}")
    for root in ["/sys/fs/cgroup/" + c for c in os.listdir("/sys/fs/cgroup")] + ["/sys/fs/cgroup"]:
        for name in names:
            top = os.path.join(root, name)
            if not os.path.isdir(top):
                continue
            for d, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
