"""Helpers for the jobs end-to-end tests (test_jobs.py, test_jobs_dask.py):
a legiond with fixed job capacity, `legion` run in a directory of job files,
the job and master records over HTTP, waits that poll state, the per-second
metering recomputed from the recorded role times, and the leftover checks
every test ends with (no sandbox of a job left: state dir, cgroup, process,
mount)."""
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from test_legiond import LEGION, LEGIOND, Legiond, free_port, kill_legiond

FINAL = ("Succeeded", "Failed", "Stopped")
NS = "default"
# Generous bounds for a loaded 2-core CI machine: they only stop a hung
# test, they are never what a test checks.
JOB_TIMEOUT = int(os.environ.get("LEGION_E2E_JOB_TIMEOUT", "420"))


def start(top, name, args=()):
    """A legiond for jobs in top/name. Its job capacity is fixed here, not
    taken from the machine, so that the capacity messages and the pending
    test do not depend on the CI machine's size."""
    if os.geteuid() != 0:
        pytest.skip("legiond tests need root")
    if not os.path.exists(LEGIOND):
        pytest.fail(f"{LEGIOND} is not built")
    home = os.path.join(top, name)
    os.makedirs(home)
    d = Legiond(home, free_port(), ["--job-cpu", "8", "--job-memory", "12g", *args])
    d.start()
    d.seen = set()  # every sandbox id a job or master of this legiond was seen with
    return d


def stop(d):
    """Kill legiond; `legiond --stop-all` (kill_legiond) must take the
    jobs' sandboxes too: nothing of them outlives it."""
    kill_legiond(d)
    left = {sid: sandbox_left(d, sid) for sid in d.seen | set(job_sandbox_entries(d))}
    left = {k: v for k, v in left.items() if v}
    assert not left, f"sandboxes outlived legiond --stop-all: {left}"


def cli(d, *args, cwd=None, check=0, timeout=JOB_TIMEOUT):
    """`legion args...` in cwd (relative --file/--files paths are read there)."""
    p = subprocess.run([LEGION, *args], env=d.env, capture_output=True, cwd=cwd, timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if check is not None:
        assert p.returncode == check, (args, p.returncode, out, err)
    return p.returncode, out, err


def popen(d, *args, cwd=None):
    """`legion args...` running in the background (an attached submit)."""
    return subprocess.Popen([LEGION, *args], env=d.env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write_files(top, files):
    """A fresh directory under top holding files {relative path: text}."""
    d = tempfile.mkdtemp(dir=top, prefix="files-")
    for rel, text in files.items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    return d


def note_sandboxes(d, doc):
    st = doc.get("status") or {}
    for r in st.get("roles") or []:
        if r.get("sandbox"):
            d.seen.add(r["sandbox"])
    if st.get("sandbox"):
        d.seen.add(st["sandbox"])


def fetch(d, path, missing_ok=False):
    """GET path: the record (or {"items": [...]}), its sandboxes noted;
    None for 404 when missing_ok."""
    st, body = d.http("GET", path)
    if st == 404 and missing_ok:
        return None
    assert st == 200, (path, st, body)
    doc = json.loads(body)
    for x in doc["items"] if "items" in doc else [doc]:
        note_sandboxes(d, x)
    return doc


def get_job(d, name, ns=NS, missing_ok=False):
    return fetch(d, f"/v1/namespaces/{ns}/jobs/{name}", missing_ok)


def get_master(d, name, ns=NS, missing_ok=True):
    return fetch(d, f"/v1/namespaces/{ns}/masters/{name}", missing_ok)


def list_jobs(d, ns=NS):
    return fetch(d, f"/v1/namespaces/{ns}/jobs")["items"]


def list_masters(d):
    return fetch(d, "/v1/masters")["items"]


def poll(fetch, pred, what, timeout=JOB_TIMEOUT, interval=0.2):
    """Poll fetch() until pred(value) holds; the bound only ends a hung test."""
    deadline = time.time() + timeout
    v = None
    while time.time() < deadline:
        v = fetch()
        if pred(v):
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last seen: {json.dumps(v, indent=1, default=str)[:6000]}")


def final(j):
    return j is not None and j["status"].get("phase") in FINAL and bool(j["status"].get("finishedAt"))


def wait_job(d, name, pred=final, what="a final phase", timeout=JOB_TIMEOUT, ns=NS):
    """(A job submitted by a CLI running in the background may not exist yet.)"""
    return poll(lambda: get_job(d, name, ns, missing_ok=True), lambda j: j is not None and pred(j),
                f"job {name}: {what}", timeout)


def wait_phase(d, name, phase, timeout=JOB_TIMEOUT):
    return wait_job(d, name, lambda j: j["status"].get("phase") == phase, f"phase {phase}", timeout)


def running(d, name, timeout=JOB_TIMEOUT):
    """Running, or already ended (then the caller's next check says why)."""
    return wait_job(d, name, lambda j: j["status"].get("phase") in ("Running",) + FINAL, "Running", timeout)


def roles(j, kind=None):
    return [r for r in j["status"].get("roles") or [] if kind is None or r["role"] == kind]


def log(d, name, role=None, index=None, check=0):
    args = ["job", "logs", name]
    if role:
        args += ["--role", role]
    if index is not None:
        args += ["--index", str(index)]
    return cli(d, *args, check=check)[1]


def result_line(text, tag="RESULT"):
    """The JSON after the last `RESULT ` line a driver printed."""
    lines = [ln for ln in text.splitlines() if ln.startswith(tag + " ")]
    assert lines, f"no {tag} line in:\n{text[-4000:]}"
    return json.loads(lines[-1][len(tag) + 1:])


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# --- metering -------------------------------------------------------------

def metered_bounds(j, exclude_master=False):
    """What status.usage must say, recomputed from the recorded roles: per
    role instance seconds = ceil(finished - started), at least 1. The times
    are recorded to the millisecond, so a role may round either side of a
    whole second: (low, high) bounds per role kind and in total, for
    vcpuSeconds, memoryGiBSeconds and seconds."""
    lo, hi = {}, {}
    for r in roles(j):
        if not r.get("startedAt"):
            continue
        if exclude_master and r["role"] == "master":
            continue
        assert r.get("finishedAt"), f"role {r} of an ended job has no finishedAt"
        dur = ts(r["finishedAt"]) - ts(r["startedAt"])
        assert dur >= 0, r
        for bound, secs in ((lo, max(1, math.ceil(dur - 0.002))), (hi, max(1, math.ceil(dur + 0.002)))):
            for key in (r["role"], "total"):
                b = bound.setdefault(key, {"seconds": 0, "vcpuSeconds": 0.0, "memoryGiBSeconds": 0.0})
                b["seconds"] += secs
                b["vcpuSeconds"] += secs * r["cpuMillis"] / 1000
                b["memoryGiBSeconds"] += secs * r["memoryBytes"] / 2**30
    return lo, hi


def check_usage(j, exclude_master=False):
    """status.usage of an ended job: present, and within the bounds its
    recorded roles give (never less: nothing lost; never more: nothing
    counted twice)."""
    u = j["status"].get("usage")
    assert u, f"job {j['name']} has no status.usage: {j['status']}"
    lo, hi = metered_bounds(j, exclude_master)
    assert lo, f"job {j['name']} recorded no started role"
    eps = 1e-6
    for key in lo:
        got = u if key == "total" else u["byRole"].get(key)
        assert got, (key, u)
        for f in ("seconds", "vcpuSeconds", "memoryGiBSeconds"):
            assert lo[key][f] - eps <= got[f] <= hi[key][f] + eps, \
                f"usage {key}.{f} = {got[f]}, roles give {lo[key][f]}..{hi[key][f]}: {json.dumps(j['status'])}"
    for key in u.get("byRole", {}):
        assert key in lo or u["byRole"][key]["vcpuSeconds"] == 0, (key, u, lo)
    return u


# --- leftovers ------------------------------------------------------------

def cgroup_dirs(d, sid):
    parent = d.env["LEGION_CGROUP_PARENT"]
    found = []
    for root in [os.path.join("/sys/fs/cgroup", c) for c in os.listdir("/sys/fs/cgroup")] + ["/sys/fs/cgroup"]:
        p = os.path.join(root, parent, sid)
        if os.path.isdir(p):
            found.append(p)
    return found


def procs_in(sid):
    """Pids whose cgroup path names the sandbox."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            text = open(f"/proc/{pid}/cgroup").read()
        except OSError:
            continue
        if any(line.endswith("/" + sid) or ("/" + sid + "/") in line for line in text.splitlines()):
            pids.append(int(pid))
    return pids


def mounts_of(d, sid):
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if sid in ln.split()[4] or sid in ln.split()[3]]


def state_dir(d, sid):
    return os.path.join(d.home, "run", "job-sandboxes", "sandboxes", sid)


def sandbox_left(d, sid):
    """What is left of sandbox sid: [] when nothing."""
    left = []
    if os.path.exists(state_dir(d, sid)):
        left.append(state_dir(d, sid))
    left += cgroup_dirs(d, sid)
    left += [f"pid {p}" for p in procs_in(sid)]
    left += [f"mount {m}" for m in mounts_of(d, sid)]
    return left


def master_sandboxes(d):
    return {m["status"].get("sandbox") for m in list_masters(d) if m["status"].get("sandbox")}


def assert_job_gone(d, j):
    """No sandbox of the ended job j is left (but a kept or reused Master's,
    which outlives it by design)."""
    assert final(j), j["status"]
    ids = {r["sandbox"] for r in roles(j) if r.get("sandbox")}
    ids -= master_sandboxes(d)
    for sid in ids:
        left = sandbox_left(d, sid)
        assert not left, f"job {j['name']}: sandbox {sid} left: {left}"
    for r in roles(j):
        if r.get("sandbox") in ids:
            assert r["state"] in ("Exited", "Deleted", "Lost"), f"job {j['name']} role {r} not ended"


def job_sandbox_entries(d):
    top = os.path.join(d.home, "run", "job-sandboxes", "sandboxes")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def sweep(d, allow_masters=False):
    """End of a test: every job ended (a test that left one running failed
    to stop it), every master deleted unless allow_masters, and then no
    sandbox under the jobs' state root but the warm pool's (jw-*), no trace
    of any sandbox a job or master was seen with."""
    problems = []
    for j in list_jobs(d):
        if not final(j):
            problems.append(f"job {j['name']} still {j['status'].get('phase')}")
            d.http("POST", f"/v1/namespaces/{NS}/jobs/{j['name']}/stop")
    for j in list_jobs(d):
        if not final(j):
            wait_job(d, j["name"])
    if not allow_masters:
        for m in list_masters(d):
            st, body = d.http("DELETE", f"/v1/namespaces/{m['namespace']}/masters/{m['name']}")
            assert st == 200, (st, body)
        poll(lambda: list_masters(d), lambda v: v == [], "every master deleted", timeout=120)
    keep = master_sandboxes(d) if allow_masters else set()
    # A job's final phase comes with every destroy done (finishedAt); a
    # master's delete returns when its record is gone, its sandbox may
    # still be going: give that a bound.
    def leftovers():
        out = {}
        for sid in d.seen - keep:
            left = sandbox_left(d, sid)
            if left:
                out[sid] = left
        for e in job_sandbox_entries(d):
            if not e.startswith("jw-") and e not in keep and e not in out:
                out[e] = ["state dir of a sandbox no job or master names"]
        return out
    left = poll(leftovers, lambda v: not v, "no sandbox left", timeout=60) if not problems else leftovers()
    assert not problems and not left, (problems, left)


def env_fixture(top_prefix, args=()):
    """A module's legiond (yields it), killed and checked at the end."""
    top = tempfile.mkdtemp(prefix=top_prefix)
    d = start(top, "home", args)
    d.top = top
    try:
        yield d
    finally:
        stop(d)
        shutil.rmtree(top, ignore_errors=True)


def restart(d, sig=signal.SIGKILL):
    """legiond killed with sig and started again on the same home, its
    sandboxes left running for the new one to adopt."""
    d.stop(sig, keep=True)
    d.start()
