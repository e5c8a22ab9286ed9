"""Fixtures for end-to-end tests: they drive the built `legion` binary as a
user would, as root, against real sandboxes."""
import os
import shutil
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("LEGION_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))


@pytest.fixture(scope="session")
def legion_bin():
    path = os.path.abspath(os.path.join(BUILD, "legion"))
    if not os.path.exists(path):
        pytest.fail(f"{path} is not built: run `make build` first")
    if os.geteuid() != 0:
        pytest.skip("end-to-end sandbox tests need root (namespaces, cgroups, mounts)")
    return path


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

    def run(*args, input=None, timeout=60, check=None):
        p = subprocess.run([legion_bin, *args], input=input, capture_output=True,
                           timeout=timeout, env=env)
        p.stdout = p.stdout.decode(errors="replace")
        p.stderr = p.stderr.decode(errors="replace")
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    run.env = env
    run.bin = legion_bin
    yield run
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
