#!/usr/bin/python3
"""The serverless jobs benchmark's driver (bench/jobs/run.sh starts legiond
and runs this; see run.sh for the whole picture).

Parts, each writing raw JSON into OUT (PART.json, or PART-error.json):
  workload  the fixed Dask workload (bench/jobs/workload.py: a dask.array
            reduction and a dask.bag word count over the job's files) with 4
            executors and the job's own master, interleaved run by run:
            through legiond with warm pools (`warm-dask`: every role from a
            pool of pre-imported Dask processes; `warm`: every role from a
            plain pool), on
            dask-scheduler and dask-worker started as plain processes on the
            host (`plain`), through legiond with the pools empty (`cold`:
            every role made on demand)
  ready     executor readiness: jobs of 4 executors and a driver that only
            reads the scheduler's registrations, on a master deployed once
            (`legion deploy-master`), so that nothing waits for a master's
            start; the same arms but plain, interleaved
  sixteen   the same with 16 executors: until all 16 sandboxes started and
            until all 16 registered with the scheduler
The pools are filled (or emptied) before each run, untimed. The time from
the driver's exit to the job's end (the last role sandbox destroyed:
finishedAt) is read from every job of every part.

Every figure in the report comes from these files."""
import argparse
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
import harness  # noqa: E402

log = harness.logger("bench/jobs")
write, summary = harness.write_json, harness.summary
WORKLOAD = os.path.join(ROOT, "bench", "jobs", "workload.py")
NS = "default"
FINAL = ("Succeeded", "Failed", "Stopped")
MASTER = "bench-master"


class Api(harness.Api):
    timeout = 300
    ok = (200, 201, 202, 204)
    json_headers = True


def ts(s):
    """An RFC3339 time of the status (with milliseconds) in seconds since the epoch."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


# ---- the job's files -------------------------------------------------------------

def make_files(out, files, lines):
    """workload.py and data/part-*.txt (deterministic words) in out/files;
    the package (tar.gz) of them; the word count's expected total and top 5."""
    d = os.path.join(out, "files")
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    r = random.Random(14)
    vocab = [f"w{i}" for i in range(2000)]
    counts = {}
    for f in range(files):
        with open(os.path.join(d, "data", f"part-{f}.txt"), "w") as o:
            for _ in range(lines):
                ws = [r.choice(vocab) for _ in range(10)]
                for w in ws:
                    counts[w] = counts.get(w, 0) + 1
                o.write(" ".join(ws) + "\n")
    with open(WORKLOAD, "rb") as src, open(os.path.join(d, "workload.py"), "wb") as dst:
        dst.write(src.read())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ["workload.py"] + [f"data/part-{f}.txt" for f in range(files)]:
            t.add(os.path.join(d, name), arcname=name)
    top = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:5]
    return d, buf.getvalue(), {"words": sum(counts.values()), "top": [list(x) for x in top]}


def bench_line(text):
    """The workload's `BENCH {json}` line in a driver's output, or None."""
    for line in reversed(text.splitlines()):
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    return None


# ---- legiond: pools, masters, jobs --------------------------------------------------

def pools(api):
    _, doc = api.call("GET", "/v1/jobs/pools")
    items = doc.get("items", []) if isinstance(doc, dict) else doc
    return {p["name"]: p for p in items}


def arm_pools(arm, others, executors):
    """The warm pools (host rootfs) an arm runs with, {name: (kind, ready)},
    for a job whose roles are `others` (master, driver) and `executors`:
    warm: plain warm sandboxes for every role ("default"); warm-dask: every
    role from a pool of pre-imported Dask processes ("dask", kind
    dask-executor: they serve dask-worker, dask-scheduler and the driver);
    cold: both empty."""
    if arm == "warm":
        return {"default": ("plain", others + executors), "dask": ("dask-executor", 0)}
    if arm == "warm-dask":
        return {"default": ("plain", 0), "dask": ("dask-executor", others + executors)}
    return {"default": ("plain", 0), "dask": ("dask-executor", 0)}


def set_pools(api, want, timeout=120):
    """Each pool of want {name: (kind, ready)} at its count, waited for
    (untimed): all made ("readyNow"; "ready" is the target) and nothing
    being made."""
    for name, (kind, ready) in want.items():
        api.call("PUT", f"/v1/jobs/pools/{name}", {"image": "", "kind": kind, "ready": ready})
    deadline = time.monotonic() + timeout
    while True:
        have = pools(api)
        if all(name in have and have[name].get("making", 0) == 0 and have[name].get("readyNow") == ready
               for name, (_, ready) in want.items()):
            return have
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pools did not settle at {want}: {have}")
        time.sleep(0.05)


def deploy_master(api):
    api.call("POST", f"/v1/namespaces/{NS}/masters",
             {"name": MASTER, "engine": "dask", "cpu": "1", "memory": "1Gi", "keepAliveSeconds": 3600})
    deadline = time.monotonic() + 120
    while True:
        m = api.call("GET", f"/v1/namespaces/{NS}/masters/{MASTER}")[1]
        ph = m["status"].get("phase")
        if ph == "Ready":
            return m
        if ph == "Failed" or time.monotonic() > deadline:
            raise RuntimeError(f"master {MASTER}: {m['status']}")
        time.sleep(0.05)


def wait_master_idle(api, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        m = api.call("GET", f"/v1/namespaces/{NS}/masters/{MASTER}")[1]
        if not m["status"].get("job"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"master {MASTER} still busy: {m['status']}")
        time.sleep(0.02)


def run_job(api, name, spec, timeout, logs_dir):
    """Submit (client time before the POST), poll every 50 ms until a final
    phase (the figures come from the status' times, not from the polls),
    read the driver's log, keep every role's log in logs_dir/NAME, delete
    the job. A row of what the report needs."""
    spec = dict(spec, name=name)
    t_submit = time.time()
    api.call("POST", f"/v1/namespaces/{NS}/jobs", spec)
    deadline = time.monotonic() + timeout
    while True:
        job = api.call("GET", f"/v1/namespaces/{NS}/jobs/{name}")[1]
        st = job["status"]
        if st.get("phase") in FINAL and st.get("finishedAt"):
            break
        if time.monotonic() > deadline:
            api.call("POST", f"/v1/namespaces/{NS}/jobs/{name}/stop", ok=())
            raise RuntimeError(f"job {name} did not end in {timeout} s: {st}")
        time.sleep(0.05)
    _, text = api.call("GET", f"/v1/namespaces/{NS}/jobs/{name}/logs?role=driver", raw=True)
    out = bench_line(text.decode(errors="replace"))
    # Every role's log kept (the delete removes them), for a slow run's why.
    logdir = os.path.join(logs_dir, name)
    os.makedirs(logdir, exist_ok=True)
    for r in st.get("roles", []):
        q = f"role={r.get('role')}&index={r.get('index', 0)}"
        code, data = api.call("GET", f"/v1/namespaces/{NS}/jobs/{name}/logs?{q}", raw=True, ok=())
        with open(os.path.join(logdir, f"{r.get('role')}-{r.get('index', 0)}.log"), "wb") as f:
            f.write(data if code == 200 else f"{code}: ".encode() + data)
    api.call("DELETE", f"/v1/namespaces/{NS}/jobs/{name}")
    roles = []
    for r in st.get("roles", []):
        roles.append({"role": r.get("role"), "index": r.get("index"), "warm": r.get("warm"),
                      "ready_ms": r.get("readyMs"), "started": ts(r.get("startedAt")),
                      "finished": ts(r.get("finishedAt")), "exit": r.get("exit"), "state": r.get("state")})
    driver = next((r for r in roles if r["role"] == "driver"), {})
    row = {"job": name, "submit": t_submit, "phase": st.get("phase"), "reason": st.get("reason"),
           "message": st.get("message"), "submitted": ts(st.get("submittedAt")), "started": ts(st.get("startedAt")),
           "finished": ts(st.get("finishedAt")), "master": st.get("master"), "roles": roles,
           "driver_started": driver.get("started"), "driver_finished": driver.get("finished"),
           "out": out, "usage": st.get("usage")}
    if not out:
        row["driver_log_tail"] = text[-600:].decode(errors="replace")
    return row


# ---- plain processes on the host ------------------------------------------------------

def tcp_ready(port, timeout=30):
    """Until 127.0.0.1:port accepts, tried every 1 ms (legiond probes the
    master's port likewise)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dask-scheduler never listened on {port}")
            time.sleep(0.001)


def plain_run(args, files_dir, n_exec, env_extra, logdir, tag):
    """The workload on dask-scheduler and n_exec dask-worker processes on
    the host, with the options legiond gives its master and executors, and
    the driver through the same runtime (runtimes/python dask-driver):
    scheduler first; once its port accepts, the driver then the workers
    (in legiond's order, src/jobs/engine-dask.c); after the driver's exit,
    the workers and the scheduler get SIGKILL (legiond destroys the
    sandboxes)."""
    port = harness.free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = []
    # run.sh finds any process left by this marker.
    penv = dict(os.environ, LEGION_BENCH_JOBS=args.out)
    workdir = tempfile.mkdtemp(prefix=tag + "-", dir=logdir)

    def spawn(argv, logname, env=None):
        f = open(os.path.join(logdir, f"{tag}-{logname}.log"), "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env or penv, cwd=files_dir,
                             start_new_session=True)
        f.close()
        procs.append(p)
        return p

    t_submit = time.time()
    try:
        t_master_spawn = time.time()
        spawn(["dask-scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "master")
        tcp_ready(port)
        t_master = time.time()
        env = dict(penv, DASK_SCHEDULER_ADDRESS=addr, LEGION_NUM_EXECUTORS=str(n_exec),
                   PYTHONPATH=files_dir, PYTHONUNBUFFERED="1", LEGION_ROLE="driver", **env_extra)
        t_driver = time.time()
        drv = spawn(["/usr/bin/python3", args.driver_runtime, "dask-driver", os.path.join(files_dir, "workload.py")],
                    "driver", env=env)
        spawned = {}
        for i in range(n_exec):
            spawned[f"executor-{i}"] = time.time()
            spawn(["dask-worker", addr, "--name", f"executor-{i}", "--nthreads", "1", "--memory-limit",
                   str(1 << 30), "--no-nanny", "--no-dashboard", "--death-timeout", "30",
                   "--local-directory", workdir], f"executor-{i}")
        rc = drv.wait(timeout=args.job_timeout)
        t_driver_exit = time.time()
    finally:
        # SIGKILL, as legiond's destroy of a sandbox (a SIGTERMed
        # dask-worker may spend seconds closing towards a scheduler that
        # is gone).
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.wait()
    t_gone = time.time()
    shutil.rmtree(workdir, ignore_errors=True)
    with open(os.path.join(logdir, f"{tag}-driver.log"), errors="replace") as f:
        text = f.read()
    out = bench_line(text)
    row = {"job": tag, "submit": t_submit, "phase": "Succeeded" if rc == 0 and out else "Failed",
           "master_spawned": t_master_spawn, "master_ready": t_master, "spawned": spawned, "driver_started": t_driver,
           "driver_finished": t_driver_exit, "finished": t_gone, "driver_exit": rc, "out": out}
    if not out or rc:
        row["driver_log_tail"] = text[-600:]
    return row


# ---- the parts ---------------------------------------------------------------------

def check_workload(row, expect):
    """Why a workload run is not right (None: it is)."""
    if row.get("phase") != "Succeeded":
        return f"phase {row.get('phase')}: {row.get('reason')} {row.get('message')} {row.get('driver_log_tail', '')}"
    o = row.get("out")
    if not o:
        return "no BENCH line in the driver's output: " + row.get("driver_log_tail", "")
    if "bag_words" in o and (o["bag_words"] != expect["words"] or o["bag_top"] != expect["top"]):
        return f"word count {o['bag_words']} {o['bag_top']}, expected {expect['words']} {expect['top']}"
    return None


def interleave(args, part, arms, n, run_one, res):
    """run_one(arm, i, tag) -> (row, why) for i in -warmup..n-1, arm by
    arm in each i; a warm-up run that fails ends the part; res["rows"] and
    res["failures"] get the timed ones; written to PART.json."""
    res.update(n=n, warmup=args.warmup, arms=arms, rows={a: [] for a in arms}, failures={a: [] for a in arms})
    t0 = time.monotonic()
    for i in range(-args.warmup, n):
        for arm in arms:
            row, why = run_one(arm, f"{part}-{arm}-{i + args.warmup}")
            row["i"] = i
            if i < 0:
                if why:
                    raise RuntimeError(f"{part} {arm} warm-up run failed: {why}")
                continue
            (res["failures"][arm] if why else res["rows"][arm]).append(dict(row, why=why) if why else row)
        if i >= 0:
            log(f"{part}: {i + 1}/{n} ({time.monotonic() - t0:.0f} s)")
    write(args.out, f"{part}.json", res)


def part_workload(args, api, digest, files_dir, expect):
    spec = {"engine": "dask", "package": digest, "file": "workload.py",
            "env": {"BENCH_ARRAY_N": str(args.array_n)},
            "driver": {"cpu": "1", "memory": "1Gi"},
            "executors": {"count": 4, "cpu": "1", "memory": "1Gi"}}
    logdir = os.path.join(args.out, "logs", "plain")
    os.makedirs(logdir, exist_ok=True)

    def run_one(arm, tag):
        if arm == "plain":
            row = plain_run(args, files_dir, 4, {"BENCH_ARRAY_N": str(args.array_n)}, logdir, tag)
        else:
            set_pools(api, arm_pools(arm, 2, 4))
            row = run_job(api, tag, spec, args.job_timeout, os.path.join(args.out, "logs"))
        why = check_workload(row, expect)
        if not why and arm != "plain" and (row.get("master") or {}).get("reused"):
            why = f"the job reused a kept master instead of starting its own: {row['master']}"
        return row, why

    interleave(args, "workload", [a for a in args.arms.split(",") if a], args.n, run_one,
               {"pools": {a: arm_pools(a, 2, 4) for a in args.arms.split(",")}, "spec": spec,
                "array_n": args.array_n, "expect": expect})


def part_ready(args, api, digest, count, n, part):
    """Jobs of `count` executors on the deployed master with a driver that
    only reads the registrations; arms warm and cold interleaved."""
    spec = {"engine": "dask", "package": digest, "file": "workload.py", "master": {"name": MASTER},
            "driver": {"cpu": "1", "memory": "1Gi"},
            "executors": {"count": count, "cpu": "1", "memory": args.small_memory}}

    def run_one(arm, tag):
        set_pools(api, arm_pools(arm, 1, count))
        wait_master_idle(api)
        s = dict(spec, env={"BENCH_WORKLOAD": "none", "BENCH_SINCE": f"{time.time():.3f}"})
        row = run_job(api, tag, s, args.job_timeout, os.path.join(args.out, "logs"))
        why = check_workload(row, None)
        if not why and len(row["out"].get("registered", {})) != count:
            why = f"{len(row['out'].get('registered', {}))} of {count} registrations found"
        return row, why

    arms = [a for a in args.ready_arms.split(",") if a and a != "plain"]
    interleave(args, part, arms, n, run_one, {"count": count, "pools": {a: arm_pools(a, 1, count) for a in arms},
                                              "spec": spec})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="workload,ready,sixteen")
    ap.add_argument("--arms", default="warm-dask,warm,plain,cold", help="workload part's arms, interleaved in this order")
    ap.add_argument("--ready-arms", default="warm-dask,warm,cold", help="the arms of parts ready and sixteen")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--ready-n", type=int, default=20)
    ap.add_argument("--sixteen-n", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--array-n", type=int, default=12000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--small-memory", default="512Mi")
    ap.add_argument("--job-timeout", type=float, default=180)
    ap.add_argument("--driver-runtime", default=os.path.join(ROOT, "runtimes", "python"))
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    parts = args.parts.split(",")
    files_dir, package, expect = make_files(args.out, args.files, args.lines)
    legion = any(a != "plain" for a in args.arms.split(",")) or parts != ["workload"]
    api = digest = None
    if legion:
        api = Api(args.port, harness.read_token(args.home))
        _, pkg = api.call("POST", f"/v1/namespaces/{NS}/packages", package, ctype="application/gzip")
        digest = pkg["digest"]
    write(args.out, "setup.json", {"package_bytes": len(package), "digest": digest, "expect": expect,
                                   "files": args.files, "lines": args.lines, "array_n": args.array_n,
                                   "pools_at_start": pools(api) if api else None})
    failed = False
    for part in parts:
        try:
            if part == "workload":
                part_workload(args, api, digest, files_dir, expect)
            else:
                if part in ("ready", "sixteen") and not os.path.exists(os.path.join(args.out, "master.json")):
                    write(args.out, "master.json", deploy_master(api))
                if part == "ready":
                    part_ready(args, api, digest, 4, args.ready_n, "ready")
                elif part == "sixteen":
                    part_ready(args, api, digest, 16, args.sixteen_n, "sixteen")
                else:
                    raise RuntimeError(f"unknown part {part}")
        except Exception as e:  # noqa: BLE001 - recorded, the other parts still run
            failed = True
            log(f"{part} failed: {e!r}")
            write(args.out, f"{part}-error.json", {"error": repr(e)})
    if api:
        write(args.out, "pools-at-end.json", pools(api))
        if os.path.exists(os.path.join(args.out, "master.json")):
            # Its log goes with it (jobs_dir/NS/masters/NAME/master.log).
            log_path = os.path.join(args.home, "jobs", NS, "masters", MASTER, "master.log")
            if os.path.exists(log_path):
                os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
                shutil.copy(log_path, os.path.join(args.out, "logs", "master.log"))
            api.call("DELETE", f"/v1/namespaces/{NS}/masters/{MASTER}", ok=())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
