"""Jobs (issue 14) end to end with the `dask` engine, as a user runs them:
the real legiond, real sandboxes, the host's Dask (Debian's
python3-distributed: dask-scheduler as the master, dask-worker as each
executor), `legion submit`, `legion deploy-master`, `legion job` and the
HTTP API (docs/jobs.md).

A dask.array reduction and a dask.bag word count over uploaded files on 4
executors, results checked exactly, every role's log read after its sandbox
is gone; a deployed master reused with --master (busy: the next job waits);
--keep-alive (the master kept, reused by the next submit, deleted when idle);
a driver that raises (DriverFailed); an executor OOM-killed (ExecutorLost);
--max-duration (DeadlineExceeded); stop while pending and while running; the
attached client killed; legiond killed with SIGKILL mid-job and restarted,
and the driver ending while legiond is down;
per-second metering (status.usage within what the recorded roles give, kept
across a restart, never counted twice). After every test no sandbox of a job
is left (jobs_kit.sweep)."""
import collections
import json
import os
import random
import re
import signal
import subprocess

import pytest

import jobs_kit as jk
from jobs_kit import cli, get_job, roles


def dask_missing():
    try:
        subprocess.run(["/usr/bin/python3", "-c", "import distributed, dask.array, dask.bag"], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"the host's python3 has no Dask (apt-get install python3-distributed python3-numpy): {e}"
    return None


# Small executors: 4 of them, a driver and a master fit the 2-core CI
# machine (CPU quotas are limits, not reservations).
EXEC = ["--executor-cores", "0.5", "--executor-memory", "512Mi", "--driver-cores", "0.5", "--driver-memory", "512Mi"]

APP = r'''
import json, os, socket, sys
import dask.array as da
import dask.bag as db
from dask.distributed import Client

from wordutil import words

client = Client()  # DASK_SCHEDULER_ADDRESS
want = int(os.environ["LEGION_NUM_EXECUTORS"])
client.wait_for_workers(want, timeout=600)

x = da.arange(3_000_000, chunks=250_000, dtype="int64")
total = int((x * x).sum().compute())

paths = sorted(os.path.join(d, f) for d, _, fs in os.walk("/job") for f in fs if f.endswith(".txt"))
counts = db.read_text(paths, blocksize=None).map(words).flatten().frequencies().compute()

info = client.scheduler_info()["workers"].values()
print("RESULT " + json.dumps({
    "sum": total,
    "counts": dict(counts),
    "paths": [os.path.relpath(p, "/job") for p in paths],
    "argv": sys.argv[1:],
    "scheduler": os.environ["DASK_SCHEDULER_ADDRESS"],
    "driver_env": {k: os.environ.get(k) for k in ("LEGION_ROLE", "LEGION_JOB_NAME", "LEGION_JOB_NAMESPACE", "GREETING")},
    "workers": sorted([w["name"], w["nthreads"], w["memory_limit"]] for w in info),
    "worker_env": sorted(client.run(lambda: [socket.gethostname(), os.environ.get("LEGION_ROLE"),
                                             os.environ.get("PYTHONPATH"), os.environ.get("GREETING")]).values()),
}), flush=True)
'''

WORDUTIL = r'''
import re

def words(line):
    """Lower-case words of a line, punctuation dropped (runs on the executors:
    they import this module from /job)."""
    return re.findall(r"[a-z]+", line.lower())
'''

ARRAY = r'''
import json, os, sys
import dask.array as da
from dask.distributed import Client

client = Client()
x = da.arange(1_000_000, chunks=100_000, dtype="int64")
print("RESULT " + json.dumps({"sum": int((x * x).sum().compute()), "scheduler": os.environ["DASK_SCHEDULER_ADDRESS"],
                              "workers": len(client.scheduler_info()["workers"])}), flush=True)
'''

SLEEPER = r'''
import time
print("sleeping", flush=True)
time.sleep(3600)
'''

RAISES = r'''
from dask.distributed import Client
client = Client()
print("about to fail", flush=True)
def f():
    raise ValueError("boom 42")
f()
'''

OOM = r'''
from dask.distributed import Client
client = Client()
client.wait_for_workers(2, timeout=600)

def hog():
    b = b"\x01" * (2 << 30)  # 2 GiB, written: far past the executor's memory
    return len(b)

print("hogging", flush=True)
print(client.submit(hog, pure=False).result(), flush=True)
'''

# A computation in 40 steps of about a second each: long enough that
# legiond is killed in the middle of it (the test waits for the step it
# prints before killing legiond).
STEPS = r'''
import json, time
from dask.distributed import Client
client = Client()
total = 0
for i in range(40):
    total += client.submit(lambda v: v * v, i, pure=False).result()
    print(f"step {i}", flush=True)
    time.sleep(1)
print("RESULT " + json.dumps({"sum": total}), flush=True)
'''

SUM_SQUARES_1M = sum(i * i for i in range(1_000_000))


@pytest.fixture(scope="module")
def env():
    why = dask_missing()
    if why:
        pytest.skip(why)
    yield from jk.env_fixture("lg-jobs-dask-")


@pytest.fixture()
def d(env):
    yield env
    jk.sweep(env)


def corpus(seed=14):
    """Three text files (two in a subdirectory) of words from a small
    vocabulary with capitals and punctuation, and their exact word counts."""
    rnd = random.Random(seed)
    vocab = ["legion", "dask", "job", "executor", "driver", "master", "sandbox", "bag", "array", "word"]
    files, counts = {}, collections.Counter()
    for name in ("data/a.txt", "data/more/b.txt", "data/more/c.txt"):
        lines = []
        for _ in range(400):
            ws = [rnd.choice(vocab) for _ in range(rnd.randint(0, 12))]
            counts.update(ws)
            lines.append(" ".join(w.capitalize() if rnd.random() < 0.3 else w + rnd.choice(["", ",", "."])
                                  for w in ws))
        files[name] = "\n".join(lines) + "\n"
    return files, dict(counts)


def app_files(d, **scripts):
    return jk.write_files(d.top, {f"{k}.py": v for k, v in scripts.items()})


def submit(d, cwd, name, *args, check=0):
    return cli(d, "submit", "--name", name, *args, cwd=cwd, check=check)


def test_array_and_word_count_on_four_executors(d):
    files, counts = corpus()
    top = jk.write_files(d.top, dict(files, **{"app.py": APP, "wordutil.py": WORDUTIL}))
    rc, out, err = submit(d, top, "wc", "--num-executors", "4", *EXEC, "--env", "GREETING=hej",
                          "--file", "app.py", "--files", "data", "--files", "wordutil.py", "--", "alpha", "beta",
                          check=None)
    j = get_job(d, "wc")
    assert rc == 0, (rc, out[-3000:], err, j["status"])
    assert "job wc submitted" in out + err, (out, err)
    st = j["status"]
    assert st["phase"] == "Succeeded" and st["reason"] == "Completed", st
    res = jk.result_line(out)  # the attached submit follows the driver's log
    assert res == jk.result_line(jk.log(d, "wc", "driver"))
    assert res["sum"] == sum(i * i for i in range(3_000_000))
    assert res["counts"] == counts
    assert sorted(res["paths"]) == sorted(files), res["paths"]
    assert res["argv"] == ["alpha", "beta"]
    assert res["driver_env"] == {"LEGION_ROLE": "driver", "LEGION_JOB_NAME": "wc", "LEGION_JOB_NAMESPACE": "default",
                                 "GREETING": "hej"}
    # 4 executors, each a dask-worker with the executor's cores and memory.
    assert res["workers"] == [[f"executor-{i}", 1, 512 << 20] for i in range(4)], res["workers"]
    hosts = {w[0] for w in res["worker_env"]}
    assert len(hosts) == 4, res["worker_env"]  # four sandboxes, not four processes in one
    assert all(w[1:] == ["executor", "/job", "hej"] for w in res["worker_env"]), res["worker_env"]
    assert res["scheduler"] == st["master"]["address"] and res["scheduler"].endswith(":8786"), (res, st["master"])
    assert st["master"]["reused"] is False and st["master"]["kept"] is False, st["master"]

    kinds = collections.Counter(r["role"] for r in roles(j))
    assert kinds == {"master": 1, "driver": 1, "executor": 4}, roles(j)
    for r in roles(j, "executor"):
        assert r["cpuMillis"] == 500 and r["memoryBytes"] == 512 << 20, r
    jk.assert_job_gone(d, j)
    # Every role's log, read after its sandbox is gone.
    assert "Scheduler at:" in jk.log(d, "wc", "master")
    for i in range(4):
        text = jk.log(d, "wc", "executor", i)
        assert "Start worker" in text and "Registered to:" in text, (i, text[-2000:])
    u = jk.check_usage(j)
    assert set(u["byRole"]) >= {"master", "driver", "executor"}, u
    _, out, _ = cli(d, "job", "show", "wc")
    assert "Succeeded" in out and "executor" in out, out


def test_a_deployed_master_is_reused_and_serves_one_job_at_a_time(d):
    top = app_files(d, array=ARRAY, sleeper=SLEEPER)
    cli(d, "deploy-master", "m1", "--cpu", "0.5", "--memory", "512Mi")
    m = jk.poll(lambda: jk.get_master(d, "m1"), lambda m: m and m["status"].get("phase") == "Ready", "m1 Ready")
    addr, msb = m["status"]["address"], m["status"]["sandbox"]
    assert addr.startswith("tcp://") and addr.endswith(":8786"), m["status"]
    _, out, _ = cli(d, "master", "list")
    assert "m1" in out, out

    submit(d, top, "busy", "--master", "m1", "--num-executors", "1", *EXEC, "--file", "sleeper.py", "--detach")
    j = jk.running(d, "busy")
    assert j["status"]["phase"] == "Running" and j["status"]["master"]["name"] == "m1", j["status"]
    assert j["status"]["master"]["address"] == addr and j["status"]["master"]["reused"] is True, j["status"]
    assert not roles(j, "master") or all(r["sandbox"] == msb for r in roles(j, "master")), roles(j)
    assert jk.get_master(d, "m1")["status"]["job"] == "busy"
    # In use: not deleted.
    st, body = d.http("DELETE", "/v1/namespaces/default/masters/m1")
    assert st == 409, (st, body)
    # A second job on m1 waits for it.
    submit(d, top, "next", "--master", "m1", "--num-executors", "2", *EXEC, "--file", "array.py", "--detach")
    n = jk.wait_job(d, "next", lambda j: j["status"].get("waitingFor"), "waitingFor")
    assert n["status"]["phase"] == "Pending", n["status"]
    assert "m1" in n["status"]["waitingFor"] and "busy" in n["status"]["waitingFor"], n["status"]
    cli(d, "job", "stop", "busy")
    b = jk.wait_job(d, "busy")
    assert b["status"]["phase"] == "Stopped", b["status"]
    jk.assert_job_gone(d, b)

    n = jk.wait_job(d, "next")
    assert n["status"]["phase"] == "Succeeded", n["status"]
    res = jk.result_line(jk.log(d, "next", "driver"))
    assert res["sum"] == SUM_SQUARES_1M and res["scheduler"] == addr, res
    jk.assert_job_gone(d, n)
    jk.check_usage(n, exclude_master=True)
    # The master outlives its jobs, idle again, its sandbox alive.
    m = jk.get_master(d, "m1")
    assert m["status"]["phase"] == "Ready" and m["status"]["job"] == "" and m["status"]["sandbox"] == msb, m
    assert jk.sandbox_left(d, msb), "the deployed master's sandbox is gone"
    cli(d, "master", "delete", "m1")
    assert jk.get_master(d, "m1") is None
    jk.poll(lambda: jk.sandbox_left(d, msb), lambda v: not v, "m1's sandbox gone", timeout=60)


def test_keep_alive_keeps_the_master_for_the_next_submit_until_idle(d):
    top = app_files(d, array=ARRAY)
    submit(d, top, "ka1", "--keep-alive=20", "--num-executors", "2", *EXEC, "--file", "array.py")
    j1 = get_job(d, "ka1")
    assert j1["status"]["phase"] == "Succeeded", j1["status"]
    assert j1["status"]["master"]["kept"] is True and j1["status"]["master"]["name"] == "ka1-master", j1["status"]
    m = jk.get_master(d, "ka1-master")
    assert m and m["status"]["phase"] == "Ready" and m["status"]["job"] == "", m
    assert m["spec"]["keepAliveSeconds"] == 20, m["spec"]
    msb, addr = m["status"]["sandbox"], m["status"]["address"]
    jk.assert_job_gone(d, j1)  # the executors and driver are gone, the kept master is not
    assert jk.sandbox_left(d, msb)

    # The next submit without --master takes the idle kept master.
    submit(d, top, "ka2", "--num-executors", "2", *EXEC, "--file", "array.py")
    j2 = get_job(d, "ka2")
    assert j2["status"]["phase"] == "Succeeded", j2["status"]
    assert j2["status"]["master"]["reused"] is True and j2["status"]["master"]["name"] == "ka1-master", j2["status"]
    assert jk.result_line(jk.log(d, "ka2", "driver"))["scheduler"] == addr
    jk.assert_job_gone(d, j2)

    # Idle for its keep-alive: deleted, its sandbox too.
    m = jk.poll(lambda: jk.get_master(d, "ka1-master"), lambda m: m is None or m["status"].get("usage"),
                "the kept master's usage")
    jk.poll(lambda: jk.get_master(d, "ka1-master"), lambda m: m is None, "the idle master deleted")
    jk.poll(lambda: jk.sandbox_left(d, msb), lambda v: not v, "its sandbox gone", timeout=60)
    # Its log stays with the job that made it.
    assert "Scheduler at:" in jk.log(d, "ka1", "master")


def test_a_driver_that_raises_fails_the_job(d):
    top = app_files(d, raises=RAISES)
    rc, out, err = submit(d, top, "boom", "--num-executors", "1", *EXEC, "--file", "raises.py", check=None)
    assert rc == 1, (rc, out, err)
    j = get_job(d, "boom")
    st = j["status"]
    assert st["phase"] == "Failed" and st["reason"] == "DriverFailed", st
    assert st["message"].startswith("driver exited with 1") and "ValueError: boom 42" in st["message"], st
    assert "job boom Failed: DriverFailed:" in err and "ValueError: boom 42" in err, err
    text = jk.log(d, "boom", "driver")
    assert "about to fail" in text and "Traceback" in text and "ValueError: boom 42" in text, text
    jk.assert_job_gone(d, j)
    jk.check_usage(j)


def test_an_executor_killed_by_oom_loses_the_job(d):
    top = app_files(d, oom=OOM)
    submit(d, top, "oom", "--num-executors", "2", "--executor-cores", "0.5", "--executor-memory", "400Mi",
           "--file", "oom.py", "--detach")
    j = jk.wait_job(d, "oom")
    st = j["status"]
    assert st["phase"] == "Failed" and st["reason"] == "ExecutorLost", st
    m = re.search(r"executor (\d+): OOMKilled", st["message"])
    assert m, st["message"]
    lost = [r for r in roles(j, "executor") if r["index"] == int(m.group(1))]
    assert lost and lost[0]["exit"] == "OOMKilled", roles(j)
    assert "hogging" in jk.log(d, "oom", "driver")
    _, out, _ = cli(d, "job", "show", "oom")
    assert "ExecutorLost" in out and "OOMKilled" in out, out
    jk.assert_job_gone(d, j)
    jk.check_usage(j)


def test_max_duration_ends_the_job(d):
    top = app_files(d, sleeper=SLEEPER)
    submit(d, top, "late", "--num-executors", "1", *EXEC, "--max-duration", "10s", "--file", "sleeper.py",
           "--detach")
    j = jk.wait_job(d, "late")
    st = j["status"]
    assert st["phase"] == "Failed" and st["reason"] == "DeadlineExceeded", st
    assert j["spec"]["maxDurationSeconds"] == 10
    assert "sleeping" in jk.log(d, "late", "driver")
    jk.assert_job_gone(d, j)
    jk.check_usage(j)


def test_stop_while_pending_and_while_running(d):
    top = app_files(d, sleeper=SLEEPER)
    # a: 0.5 + 0.5 + its master 1 = 2 vCPU of the node's 8.
    submit(d, top, "a", "--num-executors", "1", *EXEC, "--file", "sleeper.py", "--detach")
    a = jk.running(d, "a")
    assert a["status"]["phase"] == "Running", a["status"]
    # b: 0.5 + 8 x 0.75 + 1 = 7.5 vCPU: fits the node, not beside a.
    submit(d, top, "b", "--num-executors", "8", "--executor-cores", "0.75", "--executor-memory", "512Mi",
           "--driver-cores", "0.5", "--driver-memory", "512Mi", "--file", "sleeper.py", "--detach")
    b = jk.wait_job(d, "b", lambda j: j["status"].get("waitingFor"), "waitingFor")
    assert b["status"]["phase"] == "Pending", b["status"]
    assert "vCPU" in b["status"]["waitingFor"] and "free now" in b["status"]["waitingFor"], b["status"]
    _, out, _ = cli(d, "job", "show", "b")
    assert "Pending" in out and b["status"]["waitingFor"] in out, out
    cli(d, "job", "stop", "b")
    b = jk.wait_job(d, "b")
    assert b["status"]["phase"] == "Stopped" and b["status"]["message"] == "stopped by the user", b["status"]
    assert not [r for r in roles(b) if r.get("startedAt")], roles(b)
    jk.assert_job_gone(d, b)

    # c waits for a; a stopped while running lets c in.
    cli(d, "submit", "--engine", "indexed", "--name", "c", "--completions", "1", "--executor-cores", "7",
        "--detach", "--", "true")
    c = jk.wait_job(d, "c", lambda j: j["status"].get("waitingFor"), "waitingFor")
    assert c["status"]["phase"] == "Pending", c["status"]
    # While running, usage is written every 10 s: it grows.
    first = jk.get_job(d, "a")["status"].get("usage", {}).get("vcpuSeconds", 0)
    a = jk.wait_job(d, "a", lambda j: j["status"]["phase"] != "Running" or
                    j["status"].get("usage", {}).get("vcpuSeconds", 0) > first, "usage growing while Running")
    assert a["status"]["phase"] == "Running", a["status"]
    cli(d, "job", "stop", "a")
    a = jk.wait_job(d, "a")
    st = a["status"]
    assert st["phase"] == "Stopped" and st["reason"] == "Stopped" and st["message"] == "stopped by the user", st
    assert all(r["state"] in ("Exited", "Deleted") for r in roles(a)), roles(a)
    jk.assert_job_gone(d, a)
    jk.check_usage(a)
    c = jk.wait_job(d, "c")
    assert c["status"]["phase"] == "Succeeded", c["status"]
    jk.assert_job_gone(d, c)


def test_the_attached_client_killed_stops_the_job(d):
    top = app_files(d, sleeper=SLEEPER)
    p = jk.popen(d, "submit", "--name", "gone", "--num-executors", "1", *EXEC, "--file", "sleeper.py", cwd=top)
    try:
        j = jk.running(d, "gone")
        assert j["status"]["phase"] == "Running", j["status"]
        p.kill()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    j = jk.wait_job(d, "gone")
    st = j["status"]
    assert st["phase"] == "Stopped" and st["reason"] == "Stopped" and st["message"] == "client disconnected", st
    jk.assert_job_gone(d, j)
    jk.check_usage(j)


def test_legiond_killed_mid_job_and_restarted(d):
    top = app_files(d, steps=STEPS)
    submit(d, top, "survive", "--num-executors", "2", *EXEC, "--file", "steps.py", "--detach")
    jk.running(d, "survive")
    # Mid-computation: the driver has done a step with the executors.
    jk.poll(lambda: jk.log(d, "survive", "driver"), lambda t: "step 2" in t, "the driver's third step")
    # A job waiting for capacity (7 vCPU; survive holds 2.5 of 8) when legiond dies.
    cli(d, "submit", "--engine", "indexed", "--name", "blocked", "--completions", "1", "--executor-cores", "7",
        "--detach", "--", "true")
    b = jk.wait_job(d, "blocked", lambda j: j["status"].get("waitingFor"), "waitingFor")
    assert b["status"]["phase"] == "Pending", b["status"]
    before = get_job(d, "survive")
    assert before["status"]["phase"] == "Running", before["status"]
    jk.restart(d, signal.SIGKILL)
    b = get_job(d, "blocked")
    assert b["status"]["phase"] in ("Pending", "Starting", "Running", "Succeeded"), b["status"]
    j = jk.wait_job(d, "survive")
    st = j["status"]
    assert st["phase"] == "Succeeded", st  # the roles were adopted, the job went on to its real end
    text = jk.log(d, "survive", "driver")
    assert jk.result_line(text)["sum"] == sum(i * i for i in range(40)), text[-2000:]
    assert "step 39" in text
    # The same sandboxes all along: adopted, not made again.
    assert {r["sandbox"] for r in roles(before)} <= {r["sandbox"] for r in roles(j)}, (roles(before), roles(j))
    jk.assert_job_gone(d, j)
    u = jk.check_usage(j)  # not lost while legiond was down, not counted twice
    # The pending job was still queued: admitted once survive's capacity came back.
    b = jk.wait_job(d, "blocked")
    assert b["status"]["phase"] == "Succeeded", b["status"]
    # Not before survive's end gave the capacity back (restore takes the
    # running jobs' capacity before it admits anyone).
    drv = roles(j, "driver")[0]
    assert jk.ts(b["status"]["startedAt"]) >= jk.ts(drv["finishedAt"]), (b["status"], drv)
    jk.assert_job_gone(d, b)

    # Ended jobs keep their usage and logs across a restart.
    jk.restart(d, signal.SIGTERM)
    again = get_job(d, "survive")
    assert again["status"]["usage"] == u and again["status"]["phase"] == "Succeeded", again["status"]
    assert "Scheduler at:" in jk.log(d, "survive", "master")
    for i in range(2):
        assert "Start worker" in jk.log(d, "survive", "executor", i)
    jk.assert_job_gone(d, again)


def test_the_driver_ends_while_legiond_is_down(d):
    top = app_files(d, steps=STEPS)
    submit(d, top, "down", "--num-executors", "2", *EXEC, "--file", "steps.py", "--detach")
    jk.running(d, "down")
    # The driver's log is written by the sandbox itself: readable on disk
    # while legiond is down.
    path = os.path.join(d.home, "jobs", "default", "down", "driver.log")
    jk.poll(lambda: open(path).read() if os.path.exists(path) else "", lambda t: "step 2" in t,
            "the driver's third step")
    before = get_job(d, "down")
    d.stop(signal.SIGKILL, keep=True)
    assert "RESULT" not in open(path).read()  # killed mid-job (the driver has 37 steps to go)
    jk.poll(lambda: open(path).read(), lambda t: "RESULT" in t, "the driver's end while legiond is down")
    d.start()
    j = jk.wait_job(d, "down")
    st = j["status"]
    assert st["phase"] == "Succeeded" and st["reason"] == "Completed", st  # its exit status was kept for us
    assert jk.result_line(jk.log(d, "down", "driver"))["sum"] == sum(i * i for i in range(40))
    assert {r["sandbox"] for r in roles(before)} <= {r["sandbox"] for r in roles(j)}, (roles(before), roles(j))
    # The executors, still running after the driver's end, are gone.
    assert all(r["state"] in ("Exited", "Deleted") for r in roles(j, "executor")), roles(j)
    jk.assert_job_gone(d, j)
    jk.check_usage(j)


def test_a_dask_job_larger_than_the_node_is_refused(d):
    top = app_files(d, array=ARRAY)
    rc, out, err = submit(d, top, "huge", "--num-executors", "4", "--executor-cores", "3", "--file", "array.py",
                          "--detach", check=None)
    assert rc != 0 and "vCPU" in err and "--job-cpu" in err, (rc, out, err)
    assert get_job(d, "huge", missing_ok=True) is None
